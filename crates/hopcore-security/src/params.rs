//! The preestablished input parameters of a security context (RFC 8613 §3.2), owned.
//!
//! [`SecurityContext`] deliberately forgets the Master Secret once the keys are derived
//! (RFC 8613 §3.1). Deriving *again* — with another ID Context, as Appendix B.2 does — needs
//! it, so [`ContextParams`] keeps the inputs: the secret and salt in zeroizing memory, never
//! shown by `Debug`.

use core::fmt;

use hopcore_oscore::{AeadAlgorithm, ContextInput, Error as OscoreError, HkdfAlgorithm, ReplayWindow, SecurityContext};
use zeroize::Zeroizing;

/// The input parameters of a security context (RFC 8613 §3.2): Master Secret, Sender ID and
/// Recipient ID (required), and Master Salt, ID Context, AEAD and HKDF algorithm and replay
/// window size (defaults of §3.2 when absent).
///
/// `Debug` shows identifiers and algorithms; the Master Secret and Master Salt only as their
/// lengths.
#[derive(Clone)]
pub struct ContextParams {
    master_secret: Zeroizing<Vec<u8>>,
    master_salt: Option<Zeroizing<Vec<u8>>>,
    sender_id: Vec<u8>,
    recipient_id: Vec<u8>,
    id_context: Option<Vec<u8>>,
    aead: AeadAlgorithm,
    hkdf: HkdfAlgorithm,
    replay_window: Option<u32>,
}

impl ContextParams {
    /// The required inputs (RFC 8613 §3.2: "SHALL be preestablished"), everything else default.
    pub fn new(master_secret: &[u8], sender_id: &[u8], recipient_id: &[u8]) -> Self {
        ContextParams {
            master_secret: Zeroizing::new(master_secret.to_vec()),
            master_salt: None,
            sender_id: sender_id.to_vec(),
            recipient_id: recipient_id.to_vec(),
            id_context: None,
            aead: AeadAlgorithm::default(),
            hkdf: HkdfAlgorithm::default(),
            replay_window: None,
        }
    }

    /// Sets the Master Salt (RFC 8613 §3.2: default empty).
    pub fn with_master_salt(mut self, salt: &[u8]) -> Self {
        self.master_salt = Some(Zeroizing::new(salt.to_vec()));
        self
    }

    /// Sets the ID Context (RFC 8613 §3.1, §5.1). `None` (absent) and `Some(&[])` (present,
    /// empty) derive different keys (§3.2.1: nil versus an empty bstr in the `info`).
    pub fn with_id_context(mut self, id_context: Option<&[u8]>) -> Self {
        self.id_context = id_context.map(<[u8]>::to_vec);
        self
    }

    /// Sets the AEAD Algorithm (RFC 8613 §3.2: default AES-CCM-16-64-128).
    pub fn with_aead(mut self, aead: AeadAlgorithm) -> Self {
        self.aead = aead;
        self
    }

    /// Sets the HKDF Algorithm (RFC 8613 §3.2: default HKDF SHA-256).
    pub fn with_hkdf(mut self, hkdf: HkdfAlgorithm) -> Self {
        self.hkdf = hkdf;
        self
    }

    /// Sets the replay window size (RFC 8613 §3.2.2: default 32).
    pub fn with_replay_window(mut self, size: u32) -> Self {
        self.replay_window = Some(size);
        self
    }

    /// Own Sender ID.
    pub fn sender_id(&self) -> &[u8] {
        &self.sender_id
    }

    /// The peer's Sender ID.
    pub fn recipient_id(&self) -> &[u8] {
        &self.recipient_id
    }

    /// The preestablished ID Context, if any.
    pub fn id_context(&self) -> Option<&[u8]> {
        self.id_context.as_deref()
    }

    /// The AEAD Algorithm.
    pub fn aead(&self) -> AeadAlgorithm {
        self.aead
    }

    /// The HKDF Algorithm.
    pub fn hkdf(&self) -> HkdfAlgorithm {
        self.hkdf
    }

    /// The configured replay window size, if not the default.
    pub fn replay_window(&self) -> Option<u32> {
        self.replay_window
    }

    /// The parameters as the OSCORE crate's borrowed input, with `id_context` instead of the
    /// preestablished one.
    pub fn input_with_id_context<'a>(&'a self, id_context: Option<&'a [u8]>) -> ContextInput<'a> {
        let mut input =
            ContextInput::new(&self.master_secret, &self.sender_id, &self.recipient_id).aead(self.aead).hkdf(self.hkdf);
        if let Some(salt) = &self.master_salt {
            input = input.master_salt(salt);
        }
        if let Some(ctx) = id_context {
            input = input.id_context(ctx);
        }
        input
    }

    /// Derives the security context (RFC 8613 §3.2.1) with the preestablished ID Context,
    /// a fresh sender sequence (§3.2.2) and a fresh replay window of the configured size.
    pub fn derive(&self) -> Result<SecurityContext, OscoreError> {
        self.derive_with_id_context(self.id_context())
    }

    /// Derives a security context from these parameters but with another ID Context
    /// (RFC 8613 App. B.2: the ID Contexts `R1`, `R2 || ID1`, `R2 || R3`).
    pub fn derive_with_id_context(&self, id_context: Option<&[u8]>) -> Result<SecurityContext, OscoreError> {
        let ctx = SecurityContext::derive(&self.input_with_id_context(id_context))?;
        match self.replay_window {
            Some(size) => Ok(ctx.with_replay_window(ReplayWindow::new(size)?)),
            None => Ok(ctx),
        }
    }
}

impl fmt::Debug for ContextParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextParams")
            .field("master_secret", &Redacted(self.master_secret.len()))
            .field("master_salt", &self.master_salt.as_ref().map(|s| Redacted(s.len())))
            .field("sender_id", &Hex(&self.sender_id))
            .field("recipient_id", &Hex(&self.recipient_id))
            .field("id_context", &self.id_context.as_deref().map(Hex))
            .field("aead", &self.aead)
            .field("hkdf", &self.hkdf)
            .field("replay_window", &self.replay_window)
            .finish()
    }
}

/// Shows a secret as its length only.
pub(crate) struct Redacted(pub(crate) usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0)
    }
}

/// Shows bytes as CBOR-diagnostic-style hex, `h'0a0b'`.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("h'")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str("'")
    }
}

/// Lower-case hex without decoration.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The COSE names of the AEAD algorithms the OSCORE crate supports (RFC 9053 §4, §5; the
/// same strings aiocoap uses in `settings.json`).
pub const AEAD_NAMES: [(&str, AeadAlgorithm); 4] = [
    ("AES-CCM-16-64-128", AeadAlgorithm::AesCcm16_64_128),
    ("A128GCM", AeadAlgorithm::A128Gcm),
    ("A256GCM", AeadAlgorithm::A256Gcm),
    ("ChaCha20/Poly1305", AeadAlgorithm::ChaCha20Poly1305),
];

/// COSE algorithm names aiocoap knows but the OSCORE crate does not implement, so that the
/// error can say "unsupported" rather than "unknown".
const KNOWN_UNSUPPORTED_AEAD: [&str; 9] = [
    "AES-CCM-16-64-256",
    "AES-CCM-64-64-128",
    "AES-CCM-64-64-256",
    "AES-CCM-16-128-128",
    "AES-CCM-16-128-256",
    "AES-CCM-64-128-128",
    "AES-CCM-64-128-256",
    "A192GCM",
    "A128CBC",
];

/// Why an algorithm name or number was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlgorithmLookupError {
    /// A real COSE AEAD algorithm that this implementation does not support.
    Unsupported(String),
    /// Not a COSE AEAD algorithm name or number at all.
    Unknown(String),
}

/// Looks up an AEAD algorithm by COSE name (case-insensitive) as in [`AEAD_NAMES`].
pub fn aead_from_name(name: &str) -> Result<AeadAlgorithm, AlgorithmLookupError> {
    if let Some((_, alg)) = AEAD_NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return Ok(*alg);
    }
    if KNOWN_UNSUPPORTED_AEAD.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        return Err(AlgorithmLookupError::Unsupported(name.to_string()));
    }
    Err(AlgorithmLookupError::Unknown(name.to_string()))
}

/// Looks up an AEAD algorithm by COSE algorithm number (10, 1, 3, 24).
pub fn aead_from_number(id: i64) -> Result<AeadAlgorithm, AlgorithmLookupError> {
    AeadAlgorithm::from_cose_id(id).map_err(|_| {
        // RFC 9053 AEAD numbers that exist but are not implemented here.
        if matches!(id, 2 | 11 | 12 | 13 | 30 | 31 | 32 | 33) {
            AlgorithmLookupError::Unsupported(id.to_string())
        } else {
            AlgorithmLookupError::Unknown(id.to_string())
        }
    })
}

/// The COSE name of an algorithm.
pub fn aead_name(alg: AeadAlgorithm) -> &'static str {
    AEAD_NAMES.iter().find(|(_, a)| *a == alg).map_or("?", |(n, _)| n)
}

/// Looks up an HKDF hash by the names aiocoap's `kdf-hashfun` and the TOML `hkdf` use:
/// `sha256` or `sha512` (case-insensitive; `SHA-256` and `HKDF-SHA-256` spellings too).
pub fn hkdf_from_name(name: &str) -> Result<HkdfAlgorithm, AlgorithmLookupError> {
    let norm: String = name.chars().filter(|c| *c != '-' && *c != '_').collect::<String>().to_ascii_lowercase();
    match norm.trim_start_matches("hkdf") {
        "sha256" => Ok(HkdfAlgorithm::Sha256),
        "sha512" => Ok(HkdfAlgorithm::Sha512),
        "sha384" => Err(AlgorithmLookupError::Unsupported(name.to_string())),
        _ => Err(AlgorithmLookupError::Unknown(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secret_and_salt() {
        let p = ContextParams::new(b"super-secret-value", &[1], &[]).with_master_salt(b"salty-salt");
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("super"), "{dbg}");
        assert!(!dbg.contains("salty"), "{dbg}");
        assert!(!dbg.contains(&to_hex(b"super-secret-value")), "{dbg}");
        assert!(dbg.contains("<redacted 18 bytes>"), "{dbg}");
        assert!(dbg.contains("h'01'"), "{dbg}");
    }

    #[test]
    fn derive_matches_oscore_crate() {
        let secret = [7u8; 16];
        let p = ContextParams::new(&secret, &[1], &[2]).with_master_salt(&[3]).with_id_context(Some(&[4, 5]));
        let a = p.derive().unwrap();
        let b = SecurityContext::derive(&ContextInput::new(&secret, &[1], &[2]).master_salt(&[3]).id_context(&[4, 5]))
            .unwrap();
        assert_eq!(a.sender_key(), b.sender_key());
        assert_eq!(a.recipient_key(), b.recipient_key());
        assert_eq!(a.common_iv(), b.common_iv());
        let c = p.derive_with_id_context(None).unwrap();
        assert_ne!(a.sender_key(), c.sender_key());
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(aead_from_name("aes-ccm-16-64-128"), Ok(AeadAlgorithm::AesCcm16_64_128));
        assert_eq!(aead_from_name("ChaCha20/Poly1305"), Ok(AeadAlgorithm::ChaCha20Poly1305));
        assert!(matches!(aead_from_name("A192GCM"), Err(AlgorithmLookupError::Unsupported(_))));
        assert!(matches!(aead_from_name("ROT13"), Err(AlgorithmLookupError::Unknown(_))));
        assert_eq!(aead_from_number(24), Ok(AeadAlgorithm::ChaCha20Poly1305));
        assert!(matches!(aead_from_number(11), Err(AlgorithmLookupError::Unsupported(_))));
        assert!(matches!(aead_from_number(-7), Err(AlgorithmLookupError::Unknown(_))));
        for (name, alg) in AEAD_NAMES {
            assert_eq!(aead_name(alg), name);
        }
        assert_eq!(hkdf_from_name("sha256"), Ok(HkdfAlgorithm::Sha256));
        assert_eq!(hkdf_from_name("HKDF-SHA-512"), Ok(HkdfAlgorithm::Sha512));
        assert!(matches!(hkdf_from_name("sha384"), Err(AlgorithmLookupError::Unsupported(_))));
        assert!(matches!(hkdf_from_name("md5"), Err(AlgorithmLookupError::Unknown(_))));
    }
}
