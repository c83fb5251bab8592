//! Typed errors of the wire format.

use thiserror::Error;

/// Why a datagram is not a well-formed CoAP message (RFC 7252 §3, §4.1).
///
/// Each variant names what the sender did wrong, so that logs can say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FormatError {
    #[error("datagram of {0} bytes is shorter than the 4-byte CoAP header")]
    TooShort(usize),
    #[error("unknown CoAP version {0} (only version 1 exists)")]
    Version(u8),
    #[error("token length {0} is reserved (RFC 7252 §3: 9-15 are a format error)")]
    TokenLength(u8),
    #[error("datagram ends inside the {0}-byte token")]
    TruncatedToken(u8),
    #[error("option delta nibble 15 outside the payload marker (RFC 7252 §3.1)")]
    ReservedDelta,
    #[error("option length nibble 15 (RFC 7252 §3.1)")]
    ReservedLength,
    #[error("datagram ends inside an option")]
    TruncatedOption,
    #[error("option number exceeds 65535")]
    OptionNumberOverflow,
    #[error("payload marker followed by a zero-length payload (RFC 7252 §3)")]
    EmptyPayload,
    #[error("Empty message (code 0.00) carries bytes after the Message ID (RFC 7252 §4.1)")]
    NonEmptyEmptyMessage,
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("option {next} added after option {prev}: options must be written in ascending order")]
    OptionOutOfOrder { prev: u16, next: u16 },
    #[error("option value of {0} bytes exceeds the encodable maximum of 65804")]
    ValueTooLong(usize),
    #[error("payload already written")]
    PayloadWritten,
}
