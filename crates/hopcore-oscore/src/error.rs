//! Error types of the OSCORE core.
//!
//! Every variant says *what* went wrong and carries the numbers needed to log it; none carries
//! key material. Both enums are `Copy` so they can be matched and compared cheaply by the
//! message layer (which maps them to 4.01 / 4.02 responses, RFC 8613 §8.2 / §8.4).

use thiserror::Error;

/// Which identifier a length error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdRole {
    /// The Sender ID of a security context.
    Sender,
    /// The Recipient ID of a security context.
    Recipient,
    /// The ID of the party that generated a Partial IV (`ID_PIV`, RFC 8613 §5.2).
    IdPiv,
}

impl core::fmt::Display for IdRole {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IdRole::Sender => "Sender ID",
            IdRole::Recipient => "Recipient ID",
            IdRole::IdPiv => "ID_PIV",
        })
    }
}

/// A field of the OSCORE option value (RFC 8613 §6.1), used in [`OptionError::Truncated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptionField {
    /// The `n` bytes of the Partial IV.
    PartialIv,
    /// The one-byte length `s` of the kid context.
    KidContextLength,
    /// The `s` bytes of the kid context.
    KidContext,
}

impl core::fmt::Display for OptionField {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            OptionField::PartialIv => "Partial IV",
            OptionField::KidContextLength => "kid context length",
            OptionField::KidContext => "kid context",
        })
    }
}

/// A malformed OSCORE option value (RFC 8613 §6.1). Any of these means decompression failed:
/// the message layer answers 4.02 Bad Option (RFC 8613 §8.2 step 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum OptionError {
    /// One of the reserved flag bits (0x20, 0x40, 0x80) is set (RFC 8613 §6.1).
    #[error("reserved OSCORE flag bits set: flags {flags:#04x}")]
    ReservedFlagBits {
        /// The whole flag byte.
        flags: u8,
    },
    /// Partial IV length `n` is 6 or 7, which are reserved (RFC 8613 §6.1).
    #[error("reserved Partial IV length n = {n}")]
    ReservedPivLength {
        /// The `n` field of the flag byte.
        n: u8,
    },
    /// The flag byte is 0x00 but the option value is not empty (RFC 8613 §2).
    #[error("OSCORE flag byte is zero but the option value has {len} bytes (must be empty)")]
    ZeroFlagsNotEmpty {
        /// Length of the option value.
        len: usize,
    },
    /// The value ended inside a field.
    #[error("OSCORE option value truncated in the {field}: need {needed} bytes, have {available}")]
    Truncated {
        /// The field being read.
        field: OptionField,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// Bytes remain after the last field but the `k` flag is not set, so there is no kid to take them
    /// (RFC 8613 §6.1: the kid, when present, is the remainder of the value).
    #[error("{len} trailing bytes in the OSCORE option value without the kid flag")]
    TrailingBytes {
        /// Number of unexplained bytes.
        len: usize,
    },
}

/// Everything that can go wrong in the OSCORE core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum Error {
    /// The COSE algorithm id is not one of the supported AEAD algorithms.
    #[error("unsupported AEAD algorithm (COSE id {id})")]
    UnknownAlgorithm {
        /// The COSE algorithm id.
        id: i64,
    },
    /// A Sender ID, Recipient ID or ID_PIV is longer than the nonce length minus 6 (RFC 8613 §3.3, §5.2).
    #[error("{role} is {len} bytes, maximum for this algorithm is {max}")]
    IdTooLong {
        /// Which identifier.
        role: IdRole,
        /// Its length.
        len: usize,
        /// Nonce length − 6.
        max: usize,
    },
    /// Sender ID and Recipient ID are equal: both directions would share one key and one nonce
    /// space (RFC 8613 §3.3: the Sender ID SHALL be unique per Master Secret, Master Salt and
    /// ID Context, and the peer's Sender ID is our Recipient ID).
    #[error("Sender ID and Recipient ID must differ")]
    SameSenderAndRecipientId,
    /// A key of the wrong length was given to an AEAD operation.
    #[error("AEAD key is {len} bytes, the algorithm needs {expected}")]
    InvalidKeyLength {
        /// Given length.
        len: usize,
        /// Required length.
        expected: usize,
    },
    /// A nonce or Common IV of the wrong length was given.
    #[error("AEAD nonce / Common IV is {len} bytes, the algorithm needs {expected}")]
    InvalidNonceLength {
        /// Given length.
        len: usize,
        /// Required length.
        expected: usize,
    },
    /// A Partial IV longer than 5 bytes, or empty where one is required (RFC 8613 §6.1, §5.2).
    #[error("Partial IV is {len} bytes, must be 1 to 5")]
    InvalidPartialIv {
        /// Given length.
        len: usize,
    },
    /// A sequence number does not fit in a 5-byte Partial IV (RFC 8613 §7.2.1: less than 2^40).
    #[error("sequence number {seq} is not below 2^40")]
    SequenceTooLarge {
        /// The value.
        seq: u64,
    },
    /// The Sender Sequence Number space is used up (RFC 8613 §7.2.1): a new security context is needed.
    #[error("Sender Sequence Number exhausted (2^40 - 1 used); derive a new security context")]
    SequenceExhausted,
    /// The next sequence number is not durably reserved yet (RFC 8613 App. B.1.1): persist
    /// `reserve_until` and call `confirm_reserved` before sending.
    #[error("sequence number {next} is not reserved; persist {reserve_until} before sending")]
    PersistRequired {
        /// The number that would be used next.
        next: u64,
        /// The value to store durably (exclusive upper bound of the new reservation).
        reserve_until: u64,
    },
    /// The kid context does not fit the one-byte length field of the OSCORE option (RFC 8613 §6.1).
    #[error("kid context is {len} bytes, the OSCORE option allows at most 255")]
    KidContextTooLong {
        /// Its length.
        len: usize,
    },
    /// The caller's buffer is too small for the output.
    #[error("buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The buffer to open is shorter than the authentication tag.
    #[error("ciphertext of {len} bytes is shorter than the {tag_len}-byte tag")]
    CiphertextTooShort {
        /// Given length.
        len: usize,
        /// Tag length of the algorithm.
        tag_len: usize,
    },
    /// The AEAD refused to encrypt (e.g. the plaintext is longer than AES-CCM with L = 2 allows).
    #[error("AEAD encryption failed (input too long for the algorithm)")]
    EncryptFailed,
    /// Authentication failed (RFC 8613 §8.2 step 6 / §8.4 step 5): wrong key, nonce, AAD or tampered data.
    #[error("AEAD decryption failed")]
    DecryptFailed,
    /// HKDF-Expand refused the output length (cannot happen for the supported algorithms).
    #[error("HKDF expand failed for output length {len}")]
    KeyDerivation {
        /// Requested output length.
        len: usize,
    },
    /// The sequence number was already received (RFC 8613 §7.4).
    #[error("replayed sequence number {seq}")]
    Replay {
        /// The received sequence number.
        seq: u64,
    },
    /// The sequence number is below the replay window (RFC 8613 §7.4): it may be a replay.
    #[error("sequence number {seq} is older than the replay window (highest seen {highest}, window {window})")]
    ReplayTooOld {
        /// The received sequence number.
        seq: u64,
        /// Highest sequence number accepted so far.
        highest: u64,
        /// Window size.
        window: u32,
    },
    /// The replay window has no state (e.g. after a reboot, RFC 8613 App. B.1.2) and must be
    /// synchronized, e.g. with the Echo option, before requests are accepted.
    #[error("replay window not synchronized; challenge with Echo (RFC 8613 App. B.1.2)")]
    ReplayWindowUnsynchronized,
    /// A replay window size outside 1..=128.
    #[error("replay window size {size} is not in 1..=128")]
    InvalidWindowSize {
        /// Requested size.
        size: u32,
    },
    /// A reservation step `K` of zero (RFC 8613 App. B.1.1 requires a positive integer).
    #[error("sequence number reservation step K must be positive")]
    InvalidReservationStep,
    /// A malformed OSCORE option value.
    #[error("malformed OSCORE option: {0}")]
    Option(#[from] OptionError),
}
