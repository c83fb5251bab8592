//! [`ClientError`]: why a client operation produced no response.
//!
//! The messages are meant to be printed as they are by a command-line tool, e.g.
//! "no response from 127.0.0.1:5683 after 93 s".

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use hopcore_codec::{Code, EncodeError};
use hopcore_messaging::RequestError;

use super::security::SecurityError;
use crate::endpoint::EndpointError;

/// Why a [`crate::client::Client`] operation failed. An error *response* (4.xx, 5.xx) is not
/// an error here: it is returned as the response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No response arrived (after the retransmissions of a CON, RFC 7252 §4.2, or within the
    /// client's request timeout).
    #[error("no response from {peer} after {}", Secs(*elapsed))]
    Timeout { peer: SocketAddr, elapsed: Duration },
    /// The peer answered the request with a Reset message (RFC 7252 §4.2, §4.3).
    #[error("{peer} rejected the request with a Reset message")]
    Reset { peer: SocketAddr },
    /// The server broke the rules of a block-wise transfer (RFC 7959).
    #[error("bad block-wise transfer from {peer}: {reason}")]
    BadBlock { peer: SocketAddr, reason: String },
    /// The representation kept changing (its ETag differed between blocks) during a
    /// block-wise transfer (RFC 7959 §2.4), and the transfer could not be restarted.
    #[error("the resource at {peer} changed during a block-wise transfer (ETag {} became {})", Hex(old), Hex(new))]
    EtagChanged { peer: SocketAddr, old: Vec<u8>, new: Vec<u8> },
    /// A reassembled response body would exceed [`crate::client::ClientConfig::max_body_size`].
    #[error("the response body from {peer} exceeds the limit of {limit} bytes")]
    BodyTooLarge { peer: SocketAddr, limit: usize },
    /// The request body needs more than 2^20 blocks (RFC 7959 §2.2).
    #[error("a request body of {size} bytes is too large to send in blocks of {block_size} bytes")]
    RequestTooLarge { size: usize, block_size: usize },
    /// The request cannot be encoded.
    #[error("the request cannot be encoded: {0}")]
    Encode(EncodeError),
    /// The request was abandoned by the message layer.
    #[error("the request to {peer} was cancelled")]
    Cancelled { peer: SocketAddr },
    /// The endpoint behind the client has shut down.
    #[error("the CoAP endpoint has shut down")]
    Closed,
    /// A host name could not be resolved.
    #[error("cannot resolve host {host:?}: {reason}")]
    Resolve { host: String, reason: String },
    /// The security layer could not protect the request (e.g. no usable OSCORE context,
    /// sequence numbers exhausted); nothing was sent.
    #[error("cannot protect the request to {peer}: {reason}")]
    Protect { peer: SocketAddr, reason: String },
    /// The response failed OSCORE verification (RFC 8613 §8.4 step 8): it was dropped.
    #[error("response from {peer} failed OSCORE verification: {reason}")]
    Verification { peer: SocketAddr, reason: String },
    /// A protected request was answered without protection (RFC 8613 §8.2: the server could
    /// not process the OSCORE request; or an intermediary's own error). The response is not
    /// delivered; its code and diagnostic payload are here.
    #[error("server answered unprotected {code}{} (from {peer})", Diag(diagnostic))]
    Unprotected { peer: SocketAddr, code: Code, diagnostic: String },
    /// The server challenged the freshness of a request again after it was repeated with the
    /// Echo value of the first challenge (RFC 9175 §2.3, RFC 8613 App. B.1.2).
    #[error("{peer} challenged the request with Echo again after it was repeated with the Echo value")]
    EchoRepeated { peer: SocketAddr },
}

impl ClientError {
    /// Maps an endpoint error of an exchange with `peer` that started `elapsed` ago.
    pub(crate) fn from_endpoint(e: EndpointError, peer: SocketAddr, elapsed: Duration) -> ClientError {
        match e {
            EndpointError::Request(r) => ClientError::from_request(r, peer, elapsed),
            EndpointError::Closed => ClientError::Closed,
        }
    }

    pub(crate) fn from_request(e: RequestError, peer: SocketAddr, elapsed: Duration) -> ClientError {
        match e {
            RequestError::Timeout => ClientError::Timeout { peer, elapsed },
            RequestError::Reset => ClientError::Reset { peer },
            RequestError::Cancelled => ClientError::Cancelled { peer },
        }
    }

    /// Maps a failure of the client's security hook in an exchange with `peer`.
    pub(crate) fn from_security(e: SecurityError, peer: SocketAddr) -> ClientError {
        match e {
            SecurityError::Protect(reason) => ClientError::Protect { peer, reason },
            SecurityError::Verify(reason) | SecurityError::Stale(reason) => ClientError::Verification { peer, reason },
            SecurityError::Unprotected { code, diagnostic } => ClientError::Unprotected { peer, code, diagnostic },
        }
    }

    pub(crate) fn bad_block(peer: SocketAddr, reason: impl Into<String>) -> ClientError {
        ClientError::BadBlock { peer, reason: reason.into() }
    }

    /// True for the errors that mean "no answer" (timeout, reset), as opposed to a protocol
    /// violation or a local problem.
    pub fn is_no_response(&self) -> bool {
        matches!(self, ClientError::Timeout { .. } | ClientError::Reset { .. })
    }
}

/// Seconds, readably: "93 s", "2.5 s".
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs_f64();
        if s >= 10.0 || self.0.subsec_millis() == 0 {
            write!(f, "{} s", s.round() as u64)
        } else {
            write!(f, "{s:.1} s")
        }
    }
}

/// ": diagnostic", or nothing for an empty one.
struct Diag<'a>(&'a str);

impl fmt::Display for Diag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, ": {}", self.0)
        }
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_well() {
        let peer: SocketAddr = "127.0.0.1:5683".parse().unwrap();
        let e = ClientError::Timeout { peer, elapsed: Duration::from_millis(93_200) };
        assert_eq!(e.to_string(), "no response from 127.0.0.1:5683 after 93 s");
        let e = ClientError::Timeout { peer, elapsed: Duration::from_millis(2_500) };
        assert_eq!(e.to_string(), "no response from 127.0.0.1:5683 after 2.5 s");
        let e = ClientError::EtagChanged { peer, old: vec![1, 2], new: vec![] };
        assert_eq!(
            e.to_string(),
            "the resource at 127.0.0.1:5683 changed during a block-wise transfer (ETag 0102 became (none))"
        );
        let v6: SocketAddr = "[::1]:5683".parse().unwrap();
        assert_eq!(ClientError::Reset { peer: v6 }.to_string(), "[::1]:5683 rejected the request with a Reset message");
        let e = ClientError::Unprotected {
            peer,
            code: Code::UNAUTHORIZED,
            diagnostic: "Security context not found".into(),
        };
        assert_eq!(
            e.to_string(),
            "server answered unprotected 4.01 Unauthorized: Security context not found (from 127.0.0.1:5683)"
        );
        let e = ClientError::Verification { peer, reason: "decryption failed".into() };
        assert_eq!(e.to_string(), "response from 127.0.0.1:5683 failed OSCORE verification: decryption failed");
    }
}
