//! The token (RFC 7252 §5.3.1): 0-8 opaque bytes, kept inline.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Token {
    len: u8,
    bytes: [u8; 8],
}

impl Token {
    pub const EMPTY: Token = Token { len: 0, bytes: [0; 8] };

    /// `None` if longer than 8 bytes.
    pub fn from_slice(s: &[u8]) -> Option<Token> {
        if s.len() > 8 {
            return None;
        }
        let mut bytes = [0u8; 8];
        bytes[..s.len()].copy_from_slice(s);
        Some(Token { len: s.len() as u8, bytes })
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for Token {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(empty)");
        }
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
