//! Errors of the message-level layer and their CoAP error responses (RFC 8613 §8.2, §8.4).

use hopcore_codec::{Code, EncodeError, Message, UriError};
use thiserror::Error;

use crate::error::{Error, OptionError};
use crate::protect::{RequestBinding, RequestInfo};

/// Why a message could not be protected. Nothing is sent; the security context's sender
/// sequence number may have advanced (a skipped number is harmless, RFC 8613 §7.2).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtectError {
    /// The code is not a request code (for `protect_request`) or not a response code (for
    /// `protect_response`); signaling codes 7.xx are accepted for both (RFC 8613 §4.3).
    #[error("code {0} cannot be protected as this kind of message")]
    WrongCode(Code),
    /// The message already has an OSCORE option and the class policy does not make it Class E
    /// (RFC 8613 §4.1.3.7: "If OSCORE processing detects an OSCORE option in the original CoAP
    /// message, then processing SHALL be stopped"; CP §2.2 lifts this for nested layers).
    #[error("message already carries an OSCORE option and nesting is not enabled by the class policy")]
    NestedOscore,
    /// `Layer::outer_options` contains the OSCORE option, which protection adds itself.
    #[error("extra outer options must not contain the OSCORE option")]
    OscoreInOuterOptions,
    /// The Proxy-Uri cannot be decomposed (RFC 8613 §4.1.3.3, RFC 7252 §6.4).
    #[error("Proxy-Uri cannot be decomposed: {0}")]
    ProxyUri(UriError),
    /// Proxy-Uri together with Proxy-Scheme or Uri-* options (RFC 7252 §5.10.2: those "MUST
    /// NOT be included in a request containing the Proxy-Uri Option").
    #[error("Proxy-Uri is combined with Proxy-Scheme or Uri-* options")]
    ProxyUriConflict,
    /// The binding was made by the other side: `protect_response` needs the server's binding
    /// from `unprotect_request`.
    #[error("request binding belongs to the other role")]
    WrongBindingRole,
    /// A response without Partial IV would use the request nonce a second time (or for a
    /// request whose freshness was not verified). The AEAD nonce MUST NOT be used twice with
    /// the same key (RFC 8613 §7.2, §8.3.1, App. B.1.2, App. D.4): use the own Partial IV.
    #[error("the request nonce was already used for a response; protect with an own Partial IV")]
    RequestNonceUsed,
    /// The options cannot be encoded.
    #[error("encoding failed: {0}")]
    Encode(EncodeError),
    /// Sequence number (exhausted, persistence required), kid context length, AEAD errors.
    #[error(transparent)]
    Crypto(#[from] Error),
}

impl From<EncodeError> for ProtectError {
    fn from(e: EncodeError) -> Self {
        ProtectError::Encode(e)
    }
}

/// A request that decrypted correctly while the replay window has no state (RFC 8613 §7.5,
/// App. B.1.2). Its freshness is unknown, so it must not be acted upon. The server either finds
/// a valid Echo option in [`message`](Self::message), calls
/// `ctx.replay_window_mut().synchronize(info.partial_iv().to_sequence())` and processes the
/// request, or answers with a protected 4.01 carrying an Echo option, using
/// [`binding`](Self::binding) with its own Partial IV (the request nonce is not available for
/// such a request).
#[derive(Debug)]
pub struct UnverifiedRequest {
    /// The decrypted request.
    pub message: Message,
    /// The binding for the response (own Partial IV required).
    pub binding: RequestBinding,
    /// Who sent it and its Partial IV.
    pub info: RequestInfo,
}

/// Why a message could not be unprotected. Nothing changed in the security context: the replay
/// window and the per-request response state are updated only after success.
///
/// For requests, [`code`](Self::code) and [`diagnostic`](Self::diagnostic) give the unprotected
/// error response of RFC 8613 §8.2 (see [`error_response`](crate::protect::error_response)).
/// For responses the client just stops processing (§8.4 step 8); no error is sent.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UnprotectError {
    /// No OSCORE option: not an OSCORE message.
    #[error("message has no OSCORE option")]
    NoOscoreOption,
    /// The OSCORE option occurs more than once (it is not repeatable, RFC 8613 §2).
    #[error("OSCORE option occurs more than once")]
    RepeatedOscoreOption,
    /// The OSCORE option value does not decode (RFC 8613 §6.1, §8.2 step 2).
    #[error("malformed OSCORE option: {0}")]
    MalformedOption(OptionError),
    /// A request without 'Partial IV' (RFC 8613 §5: "SHALL be present in requests").
    #[error("request OSCORE option has no Partial IV")]
    MissingPartialIv,
    /// A request without 'kid' (RFC 8613 §5: "SHALL be present in requests").
    #[error("request OSCORE option has no kid")]
    MissingKid,
    /// OSCORE option but no payload (RFC 8613 §2: such a message is malformed).
    #[error("OSCORE message without payload")]
    EmptyPayload,
    /// No Recipient Context for the 'kid' (and 'kid context') (RFC 8613 §8.2 step 2).
    #[error("security context not found")]
    ContextNotFound,
    /// The Partial IV was received before or is older than the replay window (RFC 8613 §7.4,
    /// §8.2 step 3). Carries [`Error::Replay`] or [`Error::ReplayTooOld`].
    #[error("replay detected: {0}")]
    Replay(Error),
    /// The request is authentic but the replay window is not synchronized (App. B.1.2).
    #[error("request freshness unverified: replay window not synchronized")]
    FreshnessUnverified(Box<UnverifiedRequest>),
    /// AEAD verification failed (RFC 8613 §8.2 step 6, §8.4 step 5).
    #[error("decryption failed")]
    DecryptFailed,
    /// The decrypted plaintext is not `Code || options || [0xFF payload]` (RFC 8613 §5.3), or
    /// its code does not fit the message kind.
    #[error("malformed plaintext: {0}")]
    MalformedPlaintext(&'static str),
    /// The plaintext carries an OSCORE option and the class policy does not allow nesting
    /// (RFC 8613 §4.1.3.7).
    #[error("nested OSCORE option not supported")]
    NestedOscore,
    /// The Outer Proxy-Uri does not parse or conflicts with Inner Uri-Path/Uri-Query.
    #[error("bad Proxy-Uri: {0}")]
    ProxyUri(UriError),
    /// The Outer Proxy-Uri has a path or query although Inner Uri-Path or Uri-Query options are
    /// present (the sender did not decompose it as RFC 8613 §4.1.3.3 requires).
    #[error("Outer Proxy-Uri with a path or query next to Inner Uri-Path/Uri-Query")]
    ProxyUriConflict,
    /// An Outer option cannot be re-encoded for the AAD (longer than CoAP can carry).
    #[error("option encoding failed: {0}")]
    Encode(EncodeError),
    /// A second response without Partial IV for one request, or one after responses with
    /// Partial IV (RFC 8613 §7.4.1: at most one, treated as the oldest; §8.4.2; CP §2.6).
    #[error("response without Partial IV not acceptable (request nonce already used or older)")]
    ResponseNonceReused,
    /// A response Partial IV that is not greater than the highest one accepted for this
    /// request (the Notification Number, RFC 8613 §7.4.1).
    #[error("response Partial IV {seq} is not greater than the highest accepted ({highest})")]
    ResponseReplay {
        /// The received Partial IV as a number.
        seq: u64,
        /// The Notification Number.
        highest: u64,
    },
    /// A response with an Inner Observe option to a request without Observe (RFC 8613
    /// §4.1.3.5.2: the client "stops processing the message").
    #[error("Inner Observe in a response to a non-Observe request")]
    UnexpectedObserve,
    /// The binding was made by the other side: `unprotect_response` needs the client's
    /// binding from `protect_request`.
    #[error("request binding belongs to the other role")]
    WrongBindingRole,
    /// An internal error of the OSCORE core (nonce construction, ...).
    #[error(transparent)]
    Crypto(Error),
}

impl UnprotectError {
    /// The CoAP code of the unprotected error response (RFC 8613 §8.2). Meaningful for
    /// requests; responses that fail are dropped silently (§8.4).
    pub fn code(&self) -> Code {
        match self {
            // RFC 8613 §8.2 step 2: "If either the decompression or the COSE message fails to
            // decode, the server MAY respond with a 4.02 (Bad Option) error message."
            UnprotectError::NoOscoreOption
            | UnprotectError::RepeatedOscoreOption
            | UnprotectError::MalformedOption(_)
            | UnprotectError::MissingPartialIv
            | UnprotectError::MissingKid
            | UnprotectError::EmptyPayload
            | UnprotectError::NestedOscore
            | UnprotectError::ProxyUri(_)
            | UnprotectError::ProxyUriConflict
            | UnprotectError::Encode(_) => Code::BAD_OPTION,
            // RFC 8613 §8.2 step 2: no Recipient Context → 4.01 (Unauthorized);
            // §7.4: replay → 4.01; App. B.1.2: unverified freshness → 4.01 (with Echo).
            UnprotectError::ContextNotFound
            | UnprotectError::Replay(_)
            | UnprotectError::FreshnessUnverified(_)
            | UnprotectError::ResponseNonceReused
            | UnprotectError::ResponseReplay { .. } => Code::UNAUTHORIZED,
            // RFC 8613 §8.2 step 6: decryption failed → 4.00 (Bad Request).
            UnprotectError::DecryptFailed
            | UnprotectError::MalformedPlaintext(_)
            | UnprotectError::UnexpectedObserve
            | UnprotectError::WrongBindingRole => Code::BAD_REQUEST,
            UnprotectError::Crypto(_) => Code::INTERNAL_SERVER_ERROR,
        }
    }

    /// The diagnostic payload of the error response: the strings of RFC 8613 §7.4 and §8.2
    /// where the RFC gives one.
    pub fn diagnostic(&self) -> &'static str {
        match self {
            UnprotectError::NoOscoreOption
            | UnprotectError::RepeatedOscoreOption
            | UnprotectError::MalformedOption(_)
            | UnprotectError::MissingPartialIv
            | UnprotectError::MissingKid
            | UnprotectError::EmptyPayload
            | UnprotectError::Encode(_) => "Failed to decode COSE",
            UnprotectError::ContextNotFound => "Security context not found",
            UnprotectError::Replay(_) | UnprotectError::ResponseNonceReused | UnprotectError::ResponseReplay { .. } => {
                "Replay detected"
            }
            UnprotectError::FreshnessUnverified(_) => "Freshness not verified",
            UnprotectError::DecryptFailed => "Decryption failed",
            UnprotectError::MalformedPlaintext(_) => "Failed to decode plaintext",
            UnprotectError::NestedOscore => "Nested OSCORE not supported",
            UnprotectError::ProxyUri(_) | UnprotectError::ProxyUriConflict => "Bad Proxy-Uri",
            UnprotectError::UnexpectedObserve => "Unexpected Observe",
            UnprotectError::WrongBindingRole | UnprotectError::Crypto(_) => "Internal error",
        }
    }
}
