//! Additional Authenticated Data (RFC 8613 §5.4).
//!
//! ```text
//! aad_array = [ oscore_version : 1, algorithms : [ alg_aead ], request_kid : bstr,
//!               request_piv : bstr, options : bstr ]
//! external_aad = bstr .cbor aad_array
//! AAD = Enc_structure = [ "Encrypt0", h'', external_aad ]
//! ```
//!
//! Written by hand into a caller buffer: the structure is fixed and tiny, and this avoids
//! allocation on the per-message path.

use crate::alg::AeadAlgorithm;
use crate::cbor::{Head, SliceWriter, MAJOR_ARRAY, MAJOR_UINT};
use crate::error::Error;

/// OSCORE version in the `aad_array` (RFC 8613 §5.4: "Implementations of this specification
/// MUST set this field to 1").
pub const OSCORE_VERSION: u8 = 1;

/// The fixed first 11 bytes of the AAD: `83` (array of 3), `68 "Encrypt0"` (context string,
/// RFC 8152 §5.3), `40` (empty protected header, h''). RFC 8613 §5.4: "the AAD consists of a
/// fixed string of 11 bytes concatenated with the external_aad".
pub const ENC_STRUCTURE_PREFIX: [u8; 11] = [0x83, 0x68, b'E', b'n', b'c', b'r', b'y', b'p', b't', b'0', 0x40];

/// The inputs of the `aad_array` (RFC 8613 §5.4).
///
/// `request_kid` and `request_piv` always come from the **request**, also when protecting or
/// verifying the response and even if the response carries its own Partial IV (RFC 8613 §5.4,
/// §7.1; C.7 and C.8 use the AAD of C.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExternalAad<'a> {
    /// The AEAD algorithm of the security context (`algorithms = [alg_aead]`).
    pub alg: AeadAlgorithm,
    /// The 'kid' of the request (the client's Sender ID).
    pub request_kid: &'a [u8],
    /// The 'Partial IV' of the request, as sent.
    pub request_piv: &'a [u8],
    /// The Class I options, already option-encoded with deltas counted among Class I options
    /// only (RFC 8613 §4.1.2, §5.4). Empty in plain RFC 8613.
    pub class_i_options: &'a [u8],
}

impl<'a> ExternalAad<'a> {
    /// AAD inputs without Class I options.
    pub fn new(alg: AeadAlgorithm, request_kid: &'a [u8], request_piv: &'a [u8]) -> Self {
        ExternalAad { alg, request_kid, request_piv, class_i_options: &[] }
    }

    /// Sets the encoded Class I options.
    pub fn with_class_i_options(mut self, class_i_options: &'a [u8]) -> Self {
        self.class_i_options = class_i_options;
        self
    }

    /// Length of the serialized `aad_array`.
    pub fn aad_array_len(&self) -> usize {
        let alg = Head::new(MAJOR_UINT, u64::from(self.alg.cose_id()));
        // 85 | 01 | 81 alg | bstr kid | bstr piv | bstr options
        1 + 1 + 1 + alg.len() + bstr_len(self.request_kid) + bstr_len(self.request_piv) + bstr_len(self.class_i_options)
    }

    /// Length of the complete AAD (the serialized Enc_structure).
    pub fn aad_len(&self) -> usize {
        let array = self.aad_array_len();
        ENC_STRUCTURE_PREFIX.len() + Head::bstr(array).len() + array
    }

    /// Writes the `aad_array` (RFC 8613 §5.4) into `out` and returns its length.
    pub fn write_aad_array(&self, out: &mut [u8]) -> Result<usize, Error> {
        let mut w = SliceWriter::new(out);
        self.write_array_into(&mut w)?;
        Ok(w.position())
    }

    /// Writes the AAD = `["Encrypt0", h'', external_aad]` into `out` and returns its length.
    pub fn write_aad(&self, out: &mut [u8]) -> Result<usize, Error> {
        let needed = self.aad_len();
        if out.len() < needed {
            return Err(Error::BufferTooSmall { needed, available: out.len() });
        }
        let mut w = SliceWriter::new(out);
        // RFC 8613 §5.4: AAD = Enc_structure = [ "Encrypt0", h'', external_aad ]
        w.put(&ENC_STRUCTURE_PREFIX)?;
        // RFC 8613 §5.4: external_aad = bstr .cbor aad_array, i.e. the array wrapped in a bstr.
        w.put(Head::bstr(self.aad_array_len()).as_bytes())?;
        self.write_array_into(&mut w)?;
        Ok(w.position())
    }

    /// Appends the AAD to `out`.
    pub fn write_aad_to_vec(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        out.resize(start + self.aad_len(), 0);
        match self.write_aad(&mut out[start..]) {
            Ok(len) => {
                out.truncate(start + len);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    fn write_array_into(&self, w: &mut SliceWriter<'_>) -> Result<(), Error> {
        // RFC 8613 §5.4: aad_array has five elements.
        w.head(MAJOR_ARRAY, 5)?;
        // oscore_version : uint = 1
        w.head(MAJOR_UINT, u64::from(OSCORE_VERSION))?;
        // algorithms : [ alg_aead ] is an array even with one entry (test-vectors §8.4).
        w.head(MAJOR_ARRAY, 1)?;
        w.head(MAJOR_UINT, u64::from(self.alg.cose_id()))?;
        // request_kid : bstr, request_piv : bstr, options : bstr
        w.bstr(self.request_kid)?;
        w.bstr(self.request_piv)?;
        w.bstr(self.class_i_options)
    }
}

fn bstr_len(bytes: &[u8]) -> usize {
    Head::bstr(bytes.len()).len() + bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    fn aad(input: &ExternalAad<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        input.write_aad_to_vec(&mut v).unwrap();
        assert_eq!(v.len(), input.aad_len());
        v
    }

    fn array(input: &ExternalAad<'_>) -> Vec<u8> {
        let mut buf = [0u8; 600];
        let len = input.write_aad_array(&mut buf).unwrap();
        assert_eq!(len, input.aad_array_len());
        buf[..len].to_vec()
    }

    const CCM: AeadAlgorithm = AeadAlgorithm::AesCcm16_64_128;

    #[test]
    fn rfc8613_section_5_4_example() {
        let input = ExternalAad::new(CCM, &[0x00], &[0x25]);
        assert_eq!(array(&input), hex!("8501810a4100412540"));
        assert_eq!(aad(&input), hex!("8368456e63727970743040498501810a4100412540"));
    }

    #[test]
    fn appendix_c4_to_c8() {
        // C.4 and C.6: request_kid h'', request_piv 14 (the kid context is not in the AAD).
        let c4 = ExternalAad::new(CCM, &[], &[0x14]);
        assert_eq!(array(&c4), hex!("8501810a40411440"));
        assert_eq!(aad(&c4), hex!("8368456e63727970743040488501810a40411440"));
        // C.5: request_kid 00.
        let c5 = ExternalAad::new(CCM, &[0x00], &[0x14]);
        assert_eq!(array(&c5), hex!("8501810a4100411440"));
        assert_eq!(aad(&c5), hex!("8368456e63727970743040498501810a4100411440"));
        // C.7 and C.8 (responses) use the request's kid and PIV, so their AAD is C.4's; the
        // response flows are checked end to end in context.rs.
    }

    #[test]
    fn algorithm_ids_and_long_fields() {
        // ChaCha20/Poly1305 = 24 needs a two-byte uint (18 18).
        let chacha = ExternalAad::new(AeadAlgorithm::ChaCha20Poly1305, &[1], &[2]);
        assert_eq!(array(&chacha), hex!("850181181841014102 40"));
        let gcm = ExternalAad::new(AeadAlgorithm::A256Gcm, &[], &[0]);
        assert_eq!(array(&gcm), hex!("8501810340410040"));

        // Class I options of 30 bytes → 58 1e header; the array is then > 23 bytes, so the
        // external_aad wrapper is 58 xx.
        let opts = [0xabu8; 30];
        let input = ExternalAad::new(CCM, &[], &[0x14]).with_class_i_options(&opts);
        let a = array(&input);
        assert_eq!(&a[..8], hex!("8501810a40411458"));
        assert_eq!(a[8], 30);
        assert_eq!(a.len(), 9 + 30);
        let full = aad(&input);
        assert_eq!(&full[..11], &ENC_STRUCTURE_PREFIX);
        assert_eq!(&full[11..13], &[0x58, a.len() as u8]);
        assert_eq!(&full[13..], &a[..]);
    }

    #[test]
    fn buffer_too_small() {
        let input = ExternalAad::new(CCM, &[0x00], &[0x25]);
        let mut small = [0u8; 20];
        assert_eq!(input.write_aad(&mut small), Err(Error::BufferTooSmall { needed: 21, available: 20 }));
        let mut tiny = [0u8; 8];
        assert!(matches!(input.write_aad_array(&mut tiny), Err(Error::BufferTooSmall { .. })));
    }

    /// Reference encoding with minicbor, an independent CBOR implementation.
    fn minicbor_aad(alg: u8, kid: &[u8], piv: &[u8], opts: &[u8]) -> Vec<u8> {
        let mut arr = minicbor::Encoder::new(Vec::new());
        arr.array(5)
            .unwrap()
            .u8(1)
            .unwrap()
            .array(1)
            .unwrap()
            .u8(alg)
            .unwrap()
            .bytes(kid)
            .unwrap()
            .bytes(piv)
            .unwrap()
            .bytes(opts)
            .unwrap();
        let arr = arr.into_writer();
        let mut enc = minicbor::Encoder::new(Vec::new());
        enc.array(3).unwrap().str("Encrypt0").unwrap().bytes(&[]).unwrap().bytes(&arr).unwrap();
        enc.into_writer()
    }

    proptest! {
        #[test]
        fn matches_minicbor(alg_idx in 0usize..4,
                            kid in proptest::collection::vec(any::<u8>(), 0..=7),
                            piv in proptest::collection::vec(any::<u8>(), 1..=5),
                            opts in proptest::collection::vec(any::<u8>(), 0..400)) {
            let alg = AeadAlgorithm::ALL[alg_idx];
            let input = ExternalAad::new(alg, &kid, &piv).with_class_i_options(&opts);
            prop_assert_eq!(aad(&input), minicbor_aad(alg.cose_id(), &kid, &piv, &opts));
        }
    }
}
