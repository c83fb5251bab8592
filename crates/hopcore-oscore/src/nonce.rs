//! AEAD nonce construction (RFC 8613 §5.2).
//!
//! ```text
//!      <- nonce length minus 6 B -> <-- 5 bytes -->
//! +---+-------------------+--------+---------+-----+
//! | S |      padding      | ID_PIV | padding | PIV |  XOR  Common IV  =  Nonce
//! +---+-------------------+--------+---------+-----+
//! ```

use core::fmt;

use crate::alg::MAX_NONCE_LEN;
use crate::error::{Error, IdRole};
use crate::option::MAX_PIV_LEN;

/// Shortest nonce OSCORE supports (RFC 8613 §5.2: "only AEAD algorithms that use nonces equal or
/// greater than 7 bytes are supported").
pub const MIN_NONCE_LEN: usize = 7;

/// An AEAD nonce of 7 to 13 bytes, held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce {
    bytes: [u8; MAX_NONCE_LEN],
    len: u8,
}

impl Nonce {
    /// Builds the nonce from the Common IV, the Sender ID of the endpoint that generated the
    /// Partial IV (`id_piv`) and the Partial IV (RFC 8613 §5.2). The nonce length is the
    /// Common IV length.
    ///
    /// `id_piv` may be at most nonce length − 6 bytes and `piv` at most 5 bytes; an empty
    /// `piv` is padded like any other (value 0), but OSCORE always sends at least one byte.
    pub fn new(common_iv: &[u8], id_piv: &[u8], piv: &[u8]) -> Result<Self, Error> {
        let nonce_len = common_iv.len();
        if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce_len) {
            return Err(Error::InvalidNonceLength { len: nonce_len, expected: MAX_NONCE_LEN });
        }
        // RFC 8613 §5.2 step 2: ID_PIV is left-padded to exactly nonce length − 6 bytes, so it
        // can be no longer than that (§3.3).
        let id_field = nonce_len - 6;
        if id_piv.len() > id_field {
            return Err(Error::IdTooLong { role: IdRole::IdPiv, len: id_piv.len(), max: id_field });
        }
        // RFC 8613 §5.2 step 1: the PIV is left-padded to exactly 5 bytes.
        if piv.len() > MAX_PIV_LEN {
            return Err(Error::InvalidPartialIv { len: piv.len() });
        }

        let mut bytes = [0u8; MAX_NONCE_LEN];
        // RFC 8613 §5.2 step 3: S (one byte, the length of ID_PIV) || padded ID_PIV || padded PIV.
        bytes[0] = id_piv.len() as u8;
        let id_end = 1 + id_field;
        bytes[id_end - id_piv.len()..id_end].copy_from_slice(id_piv);
        bytes[nonce_len - piv.len()..nonce_len].copy_from_slice(piv);
        // RFC 8613 §5.2 step 4: XOR with the Common IV.
        for (b, iv) in bytes.iter_mut().zip(common_iv) {
            *b ^= iv;
        }
        Ok(Nonce { bytes, len: nonce_len as u8 })
    }

    /// The nonce bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for Nonce {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonce(")?;
        crate::option::write_hex(f, self.as_bytes())?;
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    const IV_C1: [u8; 13] = hex!("4622d4dd6d944168eefb54987c");
    const IV_C2: [u8; 13] = hex!("be35ae297d2dace910c52e99f9");
    const IV_C3: [u8; 13] = hex!("2ca58fb85ff1b81c0b7181b85e");

    fn nonce(iv: &[u8], id: &[u8], piv: &[u8]) -> Vec<u8> {
        Nonce::new(iv, id, piv).unwrap().as_bytes().to_vec()
    }

    #[test]
    fn appendix_c_nonces_for_piv_0() {
        // C.1.1 / C.1.2: sender h'' and recipient 01 with PIV 00.
        assert_eq!(nonce(&IV_C1, &[], &[0]), hex!("4622d4dd6d944168eefb54987c"));
        assert_eq!(nonce(&IV_C1, &[1], &[0]), hex!("4722d4dd6d944169eefb54987c"));
        // C.2.1 / C.2.2: ids 00 and 01.
        assert_eq!(nonce(&IV_C2, &[0], &[0]), hex!("bf35ae297d2dace910c52e99f9"));
        assert_eq!(nonce(&IV_C2, &[1], &[0]), hex!("bf35ae297d2dace810c52e99f9"));
        // C.3.1 / C.3.2
        assert_eq!(nonce(&IV_C3, &[], &[0]), hex!("2ca58fb85ff1b81c0b7181b85e"));
        assert_eq!(nonce(&IV_C3, &[1], &[0]), hex!("2da58fb85ff1b81d0b7181b85e"));
    }

    #[test]
    fn appendix_c_message_nonces() {
        // C.4: client id h'', PIV 14.
        assert_eq!(nonce(&IV_C1, &[], &[0x14]), hex!("4622d4dd6d944168eefb549868"));
        // C.5: client id 00, PIV 14.
        assert_eq!(nonce(&IV_C2, &[0], &[0x14]), hex!("bf35ae297d2dace910c52e99ed"));
        // C.6: client id h'' (ID context only changes the Common IV), PIV 14.
        assert_eq!(nonce(&IV_C3, &[], &[0x14]), hex!("2ca58fb85ff1b81c0b7181b84a"));
        // C.7: response without PIV reuses the request nonce (ID_PIV = client id, PIV of the request).
        assert_eq!(nonce(&IV_C1, &[], &[0x14]), hex!("4622d4dd6d944168eefb549868"));
        // C.8: response with its own PIV 00 uses the server's Sender ID 01.
        assert_eq!(nonce(&IV_C1, &[1], &[0x00]), hex!("4722d4dd6d944169eefb54987c"));
    }

    #[test]
    fn layout_with_zero_iv() {
        // With an all-zero Common IV the nonce is the plain S || pad(ID) || pad(PIV) layout.
        let zero13 = [0u8; 13];
        assert_eq!(nonce(&zero13, &hex!("aabbcc"), &hex!("0102")), hex!("03 00000000aabbcc 0000000102"));
        assert_eq!(nonce(&zero13, &hex!("01020304050607"), &hex!("0102030405")), hex!("07 01020304050607 0102030405"));
        let zero12 = [0u8; 12];
        assert_eq!(nonce(&zero12, &hex!("aa"), &hex!("ff")), hex!("01 0000000000aa 00000000ff"));
    }

    #[test]
    fn length_errors() {
        let iv13 = [0u8; 13];
        let iv12 = [0u8; 12];
        assert_eq!(Nonce::new(&iv13, &[0; 8], &[0]), Err(Error::IdTooLong { role: IdRole::IdPiv, len: 8, max: 7 }));
        assert_eq!(Nonce::new(&iv12, &[0; 7], &[0]), Err(Error::IdTooLong { role: IdRole::IdPiv, len: 7, max: 6 }));
        assert_eq!(Nonce::new(&iv13, &[], &[0; 6]), Err(Error::InvalidPartialIv { len: 6 }));
        assert!(matches!(Nonce::new(&[0u8; 6], &[], &[0]), Err(Error::InvalidNonceLength { len: 6, .. })));
        assert!(matches!(Nonce::new(&[0u8; 14], &[], &[0]), Err(Error::InvalidNonceLength { len: 14, .. })));
        assert_eq!(format!("{:?}", Nonce::new(&[0u8; 7], &[], &[1]).unwrap()), "Nonce(h'00000000000001')");
    }

    proptest! {
        #[test]
        fn never_panics(iv in proptest::collection::vec(any::<u8>(), 0..16),
                        id in proptest::collection::vec(any::<u8>(), 0..10),
                        piv in proptest::collection::vec(any::<u8>(), 0..8)) {
            let _ = Nonce::new(&iv, &id, &piv);
        }

        /// Distinct (ID_PIV, PIV) pairs give distinct nonces (RFC 8613 App. D.4), including
        /// IDs that differ only by leading zeros, thanks to the S byte.
        #[test]
        fn injective(id_a in proptest::collection::vec(any::<u8>(), 0..=7),
                     id_b in proptest::collection::vec(any::<u8>(), 0..=7),
                     a in 0u64..(1 << 40), b in 0u64..(1 << 40)) {
            let iv = hex!("4622d4dd6d944168eefb54987c");
            let pa = crate::option::PartialIv::from_sequence(a).unwrap();
            let pb = crate::option::PartialIv::from_sequence(b).unwrap();
            let na = Nonce::new(&iv, &id_a, pa.as_bytes()).unwrap();
            let nb = Nonce::new(&iv, &id_b, pb.as_bytes()).unwrap();
            prop_assert_eq!(na == nb, id_a == id_b && a == b);
        }
    }
}
