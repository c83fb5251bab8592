//! AEAD and HKDF algorithms (RFC 8613 §3.1, §3.2).
//!
//! The AEAD operations work in place on caller buffers through the RustCrypto
//! `AeadInPlace` detached API: no heap allocation per call. The cipher (AES key schedule) is
//! built from the key on every call so that a security context only has to hold the raw keys
//! (see `SecurityContext` for the memory budget).

use aes::{Aes128, Aes256};
use aes_gcm::AesGcm;
use ccm::aead::consts::{U12, U13, U8};
use ccm::aead::generic_array::GenericArray;
use ccm::aead::{AeadCore, AeadInPlace, KeyInit};
use ccm::Ccm;
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use sha2::{Sha256, Sha512};

use crate::error::Error;

/// AES-CCM with a 64-bit tag and 13-byte nonce (COSE "AES-CCM-16-64-128", RFC 8152 §10.2).
type AesCcm16_64_128 = Ccm<Aes128, U8, U13>;
/// AES-GCM with a 128-bit key and 12-byte nonce (COSE "A128GCM").
type A128Gcm = AesGcm<Aes128, U12>;
/// AES-GCM with a 256-bit key and 12-byte nonce (COSE "A256GCM").
type A256Gcm = AesGcm<Aes256, U12>;

/// Largest key length of any supported AEAD algorithm.
pub const MAX_KEY_LEN: usize = 32;
/// Largest nonce length of any supported AEAD algorithm.
pub const MAX_NONCE_LEN: usize = 13;
/// Largest tag length of any supported AEAD algorithm.
pub const MAX_TAG_LEN: usize = 16;
/// Largest Sender/Recipient ID length of any supported algorithm (RFC 8613 §3.3: nonce length − 6).
pub const MAX_ID_LEN: usize = MAX_NONCE_LEN - 6;

/// AES-CCM with L = 2 (15 − 13-byte nonce) limits the message to 2^16 − 1 bytes (RFC 3610 §2).
const CCM_MAX_PLAINTEXT: usize = (1 << 16) - 1;

/// An AEAD algorithm usable with OSCORE, identified by its COSE algorithm id (RFC 8613 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AeadAlgorithm {
    /// AES-CCM-16-64-128, COSE id 10. The default (RFC 8613 §3.2) and mandatory to implement (§12.1).
    #[default]
    AesCcm16_64_128,
    /// A128GCM, COSE id 1.
    A128Gcm,
    /// A256GCM, COSE id 3.
    A256Gcm,
    /// ChaCha20/Poly1305, COSE id 24.
    ChaCha20Poly1305,
}

impl AeadAlgorithm {
    /// All supported algorithms.
    pub const ALL: [AeadAlgorithm; 4] = [
        AeadAlgorithm::AesCcm16_64_128,
        AeadAlgorithm::A128Gcm,
        AeadAlgorithm::A256Gcm,
        AeadAlgorithm::ChaCha20Poly1305,
    ];

    /// Looks up an algorithm by COSE algorithm id (RFC 8152 §10, RFC 9053).
    pub const fn from_cose_id(id: i64) -> Result<Self, Error> {
        match id {
            10 => Ok(AeadAlgorithm::AesCcm16_64_128),
            1 => Ok(AeadAlgorithm::A128Gcm),
            3 => Ok(AeadAlgorithm::A256Gcm),
            24 => Ok(AeadAlgorithm::ChaCha20Poly1305),
            id => Err(Error::UnknownAlgorithm { id }),
        }
    }

    /// The COSE algorithm id, as used for `alg_aead` in the HKDF `info` (RFC 8613 §3.2.1) and in
    /// the `algorithms` array of the AAD (§5.4).
    pub const fn cose_id(self) -> u8 {
        match self {
            AeadAlgorithm::AesCcm16_64_128 => 10,
            AeadAlgorithm::A128Gcm => 1,
            AeadAlgorithm::A256Gcm => 3,
            AeadAlgorithm::ChaCha20Poly1305 => 24,
        }
    }

    /// Key length in bytes (`L` for the Sender/Recipient Key, RFC 8613 §3.2.1).
    pub const fn key_len(self) -> usize {
        match self {
            AeadAlgorithm::AesCcm16_64_128 | AeadAlgorithm::A128Gcm => 16,
            AeadAlgorithm::A256Gcm | AeadAlgorithm::ChaCha20Poly1305 => 32,
        }
    }

    /// Nonce length in bytes (`L` for the Common IV, RFC 8613 §3.2.1).
    pub const fn nonce_len(self) -> usize {
        match self {
            AeadAlgorithm::AesCcm16_64_128 => 13,
            AeadAlgorithm::A128Gcm | AeadAlgorithm::A256Gcm | AeadAlgorithm::ChaCha20Poly1305 => 12,
        }
    }

    /// Authentication tag length in bytes (ciphertext expansion).
    pub const fn tag_len(self) -> usize {
        match self {
            AeadAlgorithm::AesCcm16_64_128 => 8,
            AeadAlgorithm::A128Gcm | AeadAlgorithm::A256Gcm | AeadAlgorithm::ChaCha20Poly1305 => 16,
        }
    }

    /// Maximum Sender/Recipient ID length: nonce length − 6 (RFC 8613 §3.3, §5.2).
    pub const fn max_id_len(self) -> usize {
        // RFC 8613 §3.3: "The maximum length of Sender ID in bytes equals the length of the AEAD
        // nonce minus 6"; 7 bytes for AES-CCM-16-64-128.
        self.nonce_len() - 6
    }

    /// Largest plaintext the algorithm accepts in one message.
    pub const fn max_plaintext_len(self) -> usize {
        match self {
            AeadAlgorithm::AesCcm16_64_128 => CCM_MAX_PLAINTEXT,
            // GCM and ChaCha20/Poly1305 allow far more than any CoAP message.
            _ => usize::MAX,
        }
    }

    /// Encrypts `buf` in place and writes the tag into `tag` (exactly [`tag_len`](Self::tag_len) bytes).
    pub fn seal_in_place_detached(
        self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        buf: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), Error> {
        self.check_lengths(key, nonce)?;
        if tag.len() != self.tag_len() {
            return Err(Error::BufferTooSmall { needed: self.tag_len(), available: tag.len() });
        }
        if buf.len() > self.max_plaintext_len() {
            return Err(Error::EncryptFailed);
        }
        match self {
            AeadAlgorithm::AesCcm16_64_128 => seal_detached::<AesCcm16_64_128>(key, nonce, aad, buf, tag),
            AeadAlgorithm::A128Gcm => seal_detached::<A128Gcm>(key, nonce, aad, buf, tag),
            AeadAlgorithm::A256Gcm => seal_detached::<A256Gcm>(key, nonce, aad, buf, tag),
            AeadAlgorithm::ChaCha20Poly1305 => seal_detached::<ChaCha20Poly1305>(key, nonce, aad, buf, tag),
        }
    }

    /// Verifies `tag` and decrypts `buf` in place. On failure `buf` is zeroed, so unverified
    /// plaintext never leaves this function.
    pub fn open_in_place_detached(
        self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), Error> {
        self.check_lengths(key, nonce)?;
        if tag.len() != self.tag_len() {
            return Err(Error::DecryptFailed);
        }
        let result = if buf.len() > self.max_plaintext_len() {
            Err(Error::DecryptFailed)
        } else {
            match self {
                AeadAlgorithm::AesCcm16_64_128 => open_detached::<AesCcm16_64_128>(key, nonce, aad, buf, tag),
                AeadAlgorithm::A128Gcm => open_detached::<A128Gcm>(key, nonce, aad, buf, tag),
                AeadAlgorithm::A256Gcm => open_detached::<A256Gcm>(key, nonce, aad, buf, tag),
                AeadAlgorithm::ChaCha20Poly1305 => open_detached::<ChaCha20Poly1305>(key, nonce, aad, buf, tag),
            }
        };
        if result.is_err() {
            buf.fill(0);
        }
        result
    }

    /// Encrypts in place where `in_out` is `plaintext || tag space`: the last
    /// [`tag_len`](Self::tag_len) bytes are overwritten with the tag, the rest becomes ciphertext.
    /// The result is the OSCORE payload (RFC 8613 §6.2).
    pub fn seal_in_place(self, key: &[u8], nonce: &[u8], aad: &[u8], in_out: &mut [u8]) -> Result<(), Error> {
        let tag_len = self.tag_len();
        let Some(pt_len) = in_out.len().checked_sub(tag_len) else {
            return Err(Error::BufferTooSmall { needed: tag_len, available: in_out.len() });
        };
        let (buf, tag) = in_out.split_at_mut(pt_len);
        self.seal_in_place_detached(key, nonce, aad, buf, tag)
    }

    /// Opens `ciphertext || tag` in place and returns the plaintext length; the plaintext is
    /// `in_out[..len]`. On failure the buffer is zeroed.
    pub fn open_in_place(self, key: &[u8], nonce: &[u8], aad: &[u8], in_out: &mut [u8]) -> Result<usize, Error> {
        let tag_len = self.tag_len();
        let Some(pt_len) = in_out.len().checked_sub(tag_len) else {
            return Err(Error::CiphertextTooShort { len: in_out.len(), tag_len });
        };
        let (buf, tag) = in_out.split_at_mut(pt_len);
        self.open_in_place_detached(key, nonce, aad, buf, tag)?;
        Ok(pt_len)
    }

    /// Encrypts the whole of `buf` and appends the tag. Allocates only if `buf` lacks capacity
    /// for the tag.
    pub fn seal_vec(self, key: &[u8], nonce: &[u8], aad: &[u8], buf: &mut Vec<u8>) -> Result<(), Error> {
        let pt_len = buf.len();
        buf.resize(pt_len + self.tag_len(), 0);
        let result = self.seal_in_place(key, nonce, aad, buf);
        if result.is_err() {
            buf.truncate(pt_len);
        }
        result
    }

    /// Verifies and decrypts `ciphertext || tag` in `buf`, leaving only the plaintext.
    /// On failure the buffer is cleared.
    pub fn open_vec(self, key: &[u8], nonce: &[u8], aad: &[u8], buf: &mut Vec<u8>) -> Result<(), Error> {
        match self.open_in_place(key, nonce, aad, buf) {
            Ok(len) => {
                buf.truncate(len);
                Ok(())
            }
            Err(e) => {
                buf.fill(0);
                buf.clear();
                Err(e)
            }
        }
    }

    fn check_lengths(self, key: &[u8], nonce: &[u8]) -> Result<(), Error> {
        if key.len() != self.key_len() {
            return Err(Error::InvalidKeyLength { len: key.len(), expected: self.key_len() });
        }
        if nonce.len() != self.nonce_len() {
            return Err(Error::InvalidNonceLength { len: nonce.len(), expected: self.nonce_len() });
        }
        Ok(())
    }
}

impl TryFrom<i64> for AeadAlgorithm {
    type Error = Error;
    fn try_from(id: i64) -> Result<Self, Error> {
        Self::from_cose_id(id)
    }
}

fn seal_detached<A: AeadInPlace + KeyInit>(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    buf: &mut [u8],
    tag_out: &mut [u8],
) -> Result<(), Error> {
    let cipher =
        A::new_from_slice(key).map_err(|_| Error::InvalidKeyLength { len: key.len(), expected: A::key_size() })?;
    let nonce = nonce_array::<A>(nonce)?;
    let tag = cipher.encrypt_in_place_detached(&nonce, aad, buf).map_err(|_| Error::EncryptFailed)?;
    if tag.len() != tag_out.len() {
        return Err(Error::BufferTooSmall { needed: tag.len(), available: tag_out.len() });
    }
    tag_out.copy_from_slice(&tag);
    Ok(())
}

fn open_detached<A: AeadInPlace + KeyInit>(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), Error> {
    let cipher =
        A::new_from_slice(key).map_err(|_| Error::InvalidKeyLength { len: key.len(), expected: A::key_size() })?;
    let nonce = nonce_array::<A>(nonce)?;
    let tag = GenericArray::<u8, <A as AeadCore>::TagSize>::from_exact_iter(tag.iter().copied())
        .ok_or(Error::DecryptFailed)?;
    cipher.decrypt_in_place_detached(&nonce, aad, buf, &tag).map_err(|_| Error::DecryptFailed)
}

fn nonce_array<A: AeadCore>(nonce: &[u8]) -> Result<ccm::aead::Nonce<A>, Error> {
    let expected = <A::NonceSize as ccm::aead::generic_array::typenum::Unsigned>::USIZE;
    GenericArray::from_exact_iter(nonce.iter().copied()).ok_or(Error::InvalidNonceLength { len: nonce.len(), expected })
}

/// The HKDF algorithm of a security context (RFC 8613 §3.1, §3.2.1). HKDF SHA-256 is the
/// default and mandatory to implement (§3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HkdfAlgorithm {
    /// HKDF with SHA-256 (RFC 5869).
    #[default]
    Sha256,
    /// HKDF with SHA-512 (RFC 5869).
    Sha512,
}

impl HkdfAlgorithm {
    /// `HKDF(salt, IKM, info, L)` = HKDF-Expand(HKDF-Extract(salt, IKM), info, L), RFC 8613 §3.2.1.
    ///
    /// `info` is given in pieces that are concatenated, so callers need not allocate. An empty
    /// `salt` is the OSCORE default (RFC 8613 §3.2: "Default is the empty byte string"), which
    /// HMAC pads to a string of zeros exactly like RFC 5869's absent salt (§3.2.1).
    pub fn derive(self, salt: &[u8], ikm: &[u8], info: &[&[u8]], okm: &mut [u8]) -> Result<(), Error> {
        let len = okm.len();
        let err = |_| Error::KeyDerivation { len };
        match self {
            HkdfAlgorithm::Sha256 => Hkdf::<Sha256>::new(Some(salt), ikm).expand_multi_info(info, okm).map_err(err),
            HkdfAlgorithm::Sha512 => Hkdf::<Sha512>::new(Some(salt), ikm).expand_multi_info(info, okm).map_err(err),
        }
    }

    /// Output length of the underlying hash in bytes.
    pub const fn hash_len(self) -> usize {
        match self {
            HkdfAlgorithm::Sha256 => 32,
            HkdfAlgorithm::Sha512 => 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    // RFC 8613 Appendix C.4: sender key, nonce, AAD, plaintext and ciphertext (test-vectors.md).
    const C4_KEY: [u8; 16] = hex!("f0910ed7295e6ad4b54fc793154302ff");
    const C4_NONCE: [u8; 13] = hex!("4622d4dd6d944168eefb549868");
    const C4_AAD: [u8; 20] = hex!("8368456e63727970743040488501810a40411440");
    const C4_PT: [u8; 5] = hex!("01b3747631");
    const C4_CT: [u8; 13] = hex!("612f1092f1776f1c1668b3825e");

    #[test]
    fn parameters_per_algorithm() {
        use AeadAlgorithm::*;
        let table = [
            (AesCcm16_64_128, 10u8, 16usize, 13usize, 8usize, 7usize),
            (A128Gcm, 1, 16, 12, 16, 6),
            (A256Gcm, 3, 32, 12, 16, 6),
            (ChaCha20Poly1305, 24, 32, 12, 16, 6),
        ];
        for (alg, id, k, n, t, max_id) in table {
            assert_eq!(alg.cose_id(), id);
            assert_eq!(AeadAlgorithm::from_cose_id(i64::from(id)), Ok(alg));
            assert_eq!(alg.key_len(), k);
            assert_eq!(alg.nonce_len(), n);
            assert_eq!(alg.tag_len(), t);
            assert_eq!(alg.max_id_len(), max_id);
        }
        assert_eq!(AeadAlgorithm::default(), AesCcm16_64_128);
        assert_eq!(AeadAlgorithm::try_from(-7), Err(Error::UnknownAlgorithm { id: -7 }));
        assert_eq!(AeadAlgorithm::from_cose_id(11), Err(Error::UnknownAlgorithm { id: 11 }));
    }

    #[test]
    fn ccm_seal_matches_c4() {
        let alg = AeadAlgorithm::AesCcm16_64_128;
        let mut buf = C4_PT.to_vec();
        alg.seal_vec(&C4_KEY, &C4_NONCE, &C4_AAD, &mut buf).unwrap();
        assert_eq!(buf, C4_CT);

        // Same through the slice API with tag space reserved by the caller.
        let mut in_out = [0u8; 13];
        in_out[..5].copy_from_slice(&C4_PT);
        alg.seal_in_place(&C4_KEY, &C4_NONCE, &C4_AAD, &mut in_out).unwrap();
        assert_eq!(in_out, C4_CT);

        let len = alg.open_in_place(&C4_KEY, &C4_NONCE, &C4_AAD, &mut in_out).unwrap();
        assert_eq!(&in_out[..len], &C4_PT);
    }

    #[test]
    fn open_rejects_tampering_and_zeroes_buffer() {
        let alg = AeadAlgorithm::AesCcm16_64_128;
        for i in 0..C4_CT.len() {
            let mut buf = C4_CT.to_vec();
            buf[i] ^= 0x01;
            assert_eq!(alg.open_vec(&C4_KEY, &C4_NONCE, &C4_AAD, &mut buf), Err(Error::DecryptFailed));
            assert!(buf.is_empty());
        }
        let mut buf = C4_CT;
        let mut aad = C4_AAD;
        aad[19] ^= 0x80;
        assert_eq!(alg.open_in_place(&C4_KEY, &C4_NONCE, &aad, &mut buf), Err(Error::DecryptFailed));
        assert_eq!(buf[..5], [0u8; 5], "unverified plaintext must not leak");
    }

    #[test]
    fn wrong_lengths_are_errors_not_panics() {
        for alg in AeadAlgorithm::ALL {
            let key = vec![0u8; alg.key_len()];
            let nonce = vec![0u8; alg.nonce_len()];
            let mut buf = vec![0u8; 4];
            let mut in_out = vec![0u8; 4 + alg.tag_len()];
            assert_eq!(
                alg.seal_in_place(&key[1..], &nonce, b"", &mut in_out),
                Err(Error::InvalidKeyLength { len: alg.key_len() - 1, expected: alg.key_len() })
            );
            assert_eq!(
                alg.seal_vec(&key, &nonce[1..], b"", &mut buf),
                Err(Error::InvalidNonceLength { len: alg.nonce_len() - 1, expected: alg.nonce_len() })
            );
            assert_eq!(buf.len(), 4, "failed seal_vec must not grow the buffer");
            let mut short = vec![0u8; alg.tag_len() - 1];
            assert_eq!(
                alg.open_in_place(&key, &nonce, b"", &mut short),
                Err(Error::CiphertextTooShort { len: alg.tag_len() - 1, tag_len: alg.tag_len() })
            );
            assert!(matches!(alg.seal_in_place(&key, &nonce, b"", &mut short), Err(Error::BufferTooSmall { .. })));
        }
    }

    #[test]
    fn ccm_rejects_oversized_plaintext() {
        let alg = AeadAlgorithm::AesCcm16_64_128;
        let mut buf = vec![0u8; CCM_MAX_PLAINTEXT + 1];
        assert_eq!(alg.seal_vec(&C4_KEY, &C4_NONCE, b"", &mut buf), Err(Error::EncryptFailed));
        assert_eq!(buf.len(), CCM_MAX_PLAINTEXT + 1);
    }

    #[test]
    fn every_algorithm_roundtrips_and_detects_tag_forgery() {
        for alg in AeadAlgorithm::ALL {
            let key: Vec<u8> = (0..alg.key_len() as u8).collect();
            let nonce: Vec<u8> = (0..alg.nonce_len() as u8).map(|b| b ^ 0x5a).collect();
            let mut buf = b"hello OSCORE".to_vec();
            alg.seal_vec(&key, &nonce, b"aad", &mut buf).unwrap();
            assert_eq!(buf.len(), 12 + alg.tag_len());
            assert_ne!(&buf[..12], b"hello OSCORE");
            let mut forged = buf.clone();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            assert_eq!(alg.open_vec(&key, &nonce, b"aad", &mut forged), Err(Error::DecryptFailed));
            // The slice API zeroes the would-be plaintext on failure for every algorithm (GCM
            // and ChaCha20/Poly1305 would leave the ciphertext there themselves).
            let mut forged = buf.clone();
            forged[0] ^= 1;
            assert_eq!(alg.open_in_place(&key, &nonce, b"aad", &mut forged), Err(Error::DecryptFailed));
            assert_eq!(forged[..12], [0u8; 12], "{alg:?}");
            alg.open_vec(&key, &nonce, b"aad", &mut buf).unwrap();
            assert_eq!(buf, b"hello OSCORE");
        }
    }

    #[test]
    fn hkdf_sha256_rfc5869_case1() {
        // RFC 5869 Appendix A.1, to pin the salt/IKM argument order.
        let ikm = hex!("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        let salt = hex!("000102030405060708090a0b0c");
        let info = hex!("f0f1f2f3f4f5f6f7f8f9");
        let mut okm = [0u8; 42];
        HkdfAlgorithm::Sha256.derive(&salt, &ikm, &[&info[..4], &info[4..]], &mut okm).unwrap();
        assert_eq!(okm, hex!("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"));
    }

    #[test]
    fn hkdf_sha512_differs_and_rejects_too_long_output() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        HkdfAlgorithm::Sha256.derive(b"", b"secret", &[b"x"], &mut a).unwrap();
        HkdfAlgorithm::Sha512.derive(b"", b"secret", &[b"x"], &mut b).unwrap();
        assert_ne!(a, b);
        let mut too_long = vec![0u8; 255 * 32 + 1];
        assert_eq!(
            HkdfAlgorithm::Sha256.derive(b"", b"s", &[], &mut too_long),
            Err(Error::KeyDerivation { len: 255 * 32 + 1 })
        );
    }
}
