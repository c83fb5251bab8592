//! Message types and codes (RFC 7252 §3, §12.1).

use std::fmt;

/// The 2-bit message type (RFC 7252 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    Con = 0,
    Non = 1,
    Ack = 2,
    Rst = 3,
}

impl MsgType {
    pub fn from_bits(bits: u8) -> MsgType {
        match bits & 0b11 {
            0 => MsgType::Con,
            1 => MsgType::Non,
            2 => MsgType::Ack,
            _ => MsgType::Rst,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            MsgType::Con => "CON",
            MsgType::Non => "NON",
            MsgType::Ack => "ACK",
            MsgType::Rst => "RST",
        }
    }
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A CoAP code `c.dd` packed as on the wire (3-bit class, 5-bit detail).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u8);

impl Code {
    pub const fn new(class: u8, detail: u8) -> Code {
        Code((class << 5) | (detail & 0x1f))
    }
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }
    pub const fn detail(self) -> u8 {
        self.0 & 0x1f
    }
    /// 0.00: an Empty message (RFC 7252 §4.1).
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// 0.01-0.31 (RFC 7252 §12.1.1).
    pub const fn is_request(self) -> bool {
        self.class() == 0 && self.detail() != 0
    }
    /// 2.xx-5.xx (RFC 7252 §12.1.2).
    pub const fn is_response(self) -> bool {
        matches!(self.class(), 2..=5)
    }
    pub const fn is_success(self) -> bool {
        self.class() == 2
    }
    /// Method codes whose requests are safe and idempotent (GET, FETCH: RFC 8132 §2).
    pub const fn is_safe_method(self) -> bool {
        self.0 == Code::GET.0 || self.0 == Code::FETCH.0
    }

    pub const EMPTY: Code = Code::new(0, 0);
    pub const GET: Code = Code::new(0, 1);
    pub const POST: Code = Code::new(0, 2);
    pub const PUT: Code = Code::new(0, 3);
    pub const DELETE: Code = Code::new(0, 4);
    pub const FETCH: Code = Code::new(0, 5);
    pub const PATCH: Code = Code::new(0, 6);
    pub const IPATCH: Code = Code::new(0, 7);

    pub const CREATED: Code = Code::new(2, 1);
    pub const DELETED: Code = Code::new(2, 2);
    pub const VALID: Code = Code::new(2, 3);
    pub const CHANGED: Code = Code::new(2, 4);
    pub const CONTENT: Code = Code::new(2, 5);
    pub const CONTINUE: Code = Code::new(2, 31);

    pub const BAD_REQUEST: Code = Code::new(4, 0);
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    pub const BAD_OPTION: Code = Code::new(4, 2);
    pub const FORBIDDEN: Code = Code::new(4, 3);
    pub const NOT_FOUND: Code = Code::new(4, 4);
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    pub const NOT_ACCEPTABLE: Code = Code::new(4, 6);
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    pub const CONFLICT: Code = Code::new(4, 9);
    pub const PRECONDITION_FAILED: Code = Code::new(4, 12);
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code::new(4, 15);

    pub const INTERNAL_SERVER_ERROR: Code = Code::new(5, 0);
    pub const NOT_IMPLEMENTED: Code = Code::new(5, 1);
    pub const BAD_GATEWAY: Code = Code::new(5, 2);
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);
    pub const GATEWAY_TIMEOUT: Code = Code::new(5, 4);
    pub const PROXYING_NOT_SUPPORTED: Code = Code::new(5, 5);
    /// RFC 8768 §3.
    pub const HOP_LIMIT_REACHED: Code = Code::new(5, 8);

    /// The registered name of the code, if any.
    pub fn name(self) -> Option<&'static str> {
        Some(match (self.class(), self.detail()) {
            (0, 0) => "Empty",
            (0, 1) => "GET",
            (0, 2) => "POST",
            (0, 3) => "PUT",
            (0, 4) => "DELETE",
            (0, 5) => "FETCH",
            (0, 6) => "PATCH",
            (0, 7) => "iPATCH",
            (2, 1) => "Created",
            (2, 2) => "Deleted",
            (2, 3) => "Valid",
            (2, 4) => "Changed",
            (2, 5) => "Content",
            (2, 31) => "Continue",
            (4, 0) => "Bad Request",
            (4, 1) => "Unauthorized",
            (4, 2) => "Bad Option",
            (4, 3) => "Forbidden",
            (4, 4) => "Not Found",
            (4, 5) => "Method Not Allowed",
            (4, 6) => "Not Acceptable",
            (4, 8) => "Request Entity Incomplete",
            (4, 9) => "Conflict",
            (4, 12) => "Precondition Failed",
            (4, 13) => "Request Entity Too Large",
            (4, 15) => "Unsupported Content-Format",
            (5, 0) => "Internal Server Error",
            (5, 1) => "Not Implemented",
            (5, 2) => "Bad Gateway",
            (5, 3) => "Service Unavailable",
            (5, 4) => "Gateway Timeout",
            (5, 5) => "Proxying Not Supported",
            (5, 8) => "Hop Limit Reached",
            _ => return None,
        })
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())?;
        if let Some(name) = self.name() {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Code {
    type Err = String;
    /// Parses `c.dd` (e.g. "4.04").
    fn from_str(s: &str) -> Result<Code, String> {
        let (c, d) = s.split_once('.').ok_or_else(|| format!("code {s:?} is not c.dd"))?;
        let c: u8 = c.parse().map_err(|_| format!("bad code class in {s:?}"))?;
        let d: u8 = d.parse().map_err(|_| format!("bad code detail in {s:?}"))?;
        if c > 7 || d > 31 {
            return Err(format!("code {s:?} out of range"));
        }
        Ok(Code::new(c, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_parts_and_display() {
        assert_eq!(Code::CONTENT.0, 0x45);
        assert_eq!(Code::NOT_FOUND.0, 0x84);
        assert_eq!(Code::HOP_LIMIT_REACHED.to_string(), "5.08 Hop Limit Reached");
        assert!(Code::GET.is_request() && !Code::GET.is_response());
        assert!(Code::EMPTY.is_empty() && !Code::EMPTY.is_request());
        assert_eq!("4.04".parse::<Code>(), Ok(Code::NOT_FOUND));
        assert!("8.00".parse::<Code>().is_err());
    }
}
