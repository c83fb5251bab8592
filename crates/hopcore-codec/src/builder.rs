//! Encoding: [`OptionWriter`] writes an ascending option sequence with delta encoding
//! (RFC 7252 §3.1) into a caller's buffer; [`MessageBuilder`] writes a whole message.
//!
//! Neither allocates beyond growing the caller's `Vec`.

use crate::code::{Code, MsgType};
use crate::error::EncodeError;
use crate::token::Token;
use crate::uint;

/// Largest encodable option delta or length: 14 → 2 extension bytes + 269 (RFC 7252 §3.1).
const MAX_EXT: usize = 65535 + 269;

#[inline]
fn nibble(v: usize) -> (u8, [u8; 2], usize) {
    if v < 13 {
        (v as u8, [0, 0], 0)
    } else if v < 269 {
        (13, [(v - 13) as u8, 0], 1)
    } else {
        let e = ((v - 269) as u16).to_be_bytes();
        (14, e, 2)
    }
}

/// Appends one option with the given delta (RFC 7252 §3.1).
#[inline]
pub fn write_option(out: &mut Vec<u8>, delta: u16, value: &[u8]) -> Result<(), EncodeError> {
    if value.len() > MAX_EXT {
        return Err(EncodeError::ValueTooLong(value.len()));
    }
    let (dn, de, dl) = nibble(delta as usize);
    let (ln, le, ll) = nibble(value.len());
    out.push((dn << 4) | ln);
    out.extend_from_slice(&de[..dl]);
    out.extend_from_slice(&le[..ll]);
    out.extend_from_slice(value);
    Ok(())
}

/// Writes options in ascending order into a buffer, delta-encoded.
#[derive(Debug)]
pub struct OptionWriter<'b> {
    out: &'b mut Vec<u8>,
    last: u16,
}

impl<'b> OptionWriter<'b> {
    pub fn new(out: &'b mut Vec<u8>) -> Self {
        OptionWriter { out, last: 0 }
    }
    /// The number of the last option written (0 if none).
    pub fn last_number(&self) -> u16 {
        self.last
    }
    /// Appends an option; numbers must not decrease.
    #[inline]
    pub fn option(&mut self, number: u16, value: &[u8]) -> Result<&mut Self, EncodeError> {
        if number < self.last {
            return Err(EncodeError::OptionOutOfOrder { prev: self.last, next: number });
        }
        write_option(self.out, number - self.last, value)?;
        self.last = number;
        Ok(self)
    }
    /// Appends a uint option in minimal encoding (RFC 7252 §3.2).
    pub fn uint_option(&mut self, number: u16, value: u32) -> Result<&mut Self, EncodeError> {
        let (b, l) = uint::encode(value);
        self.option(number, &b[..l])
    }
    /// The buffer written so far.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.out
    }
}

/// Builds a complete message into a caller-provided buffer.
///
/// ```
/// use hopcore_codec::{MessageBuilder, MsgType, Code, Token, num, MessageView};
/// let mut buf = Vec::new();
/// let mut b = MessageBuilder::new(&mut buf, MsgType::Con, Code::GET, 0x1234, Token::from_slice(&[1, 2]).unwrap());
/// b.option(num::URI_PATH, b"hello").unwrap();
/// b.payload(b"").unwrap();
/// let v = MessageView::parse(&buf).unwrap();
/// assert_eq!(v.option(num::URI_PATH), Some(&b"hello"[..]));
/// ```
#[derive(Debug)]
pub struct MessageBuilder<'b> {
    writer: OptionWriter<'b>,
    payload_written: bool,
}

impl<'b> MessageBuilder<'b> {
    /// Clears `out` and writes the header and token (RFC 7252 §3).
    pub fn new(out: &'b mut Vec<u8>, mtype: MsgType, code: Code, message_id: u16, token: Token) -> Self {
        out.clear();
        out.push(0x40 | ((mtype as u8) << 4) | token.len() as u8);
        out.push(code.0);
        out.extend_from_slice(&message_id.to_be_bytes());
        out.extend_from_slice(token.as_slice());
        MessageBuilder { writer: OptionWriter::new(out), payload_written: false }
    }
    pub fn option(&mut self, number: u16, value: &[u8]) -> Result<&mut Self, EncodeError> {
        if self.payload_written {
            return Err(EncodeError::PayloadWritten);
        }
        self.writer.option(number, value)?;
        Ok(self)
    }
    pub fn uint_option(&mut self, number: u16, value: u32) -> Result<&mut Self, EncodeError> {
        let (b, l) = uint::encode(value);
        self.option(number, &b[..l])
    }
    /// Writes the payload marker and payload; an empty payload writes nothing (RFC 7252 §3).
    pub fn payload(&mut self, payload: &[u8]) -> Result<(), EncodeError> {
        if self.payload_written {
            return Err(EncodeError::PayloadWritten);
        }
        self.payload_written = true;
        if !payload.is_empty() {
            let out = self.writer.buffer();
            out.push(0xff);
            out.extend_from_slice(payload);
        }
        Ok(())
    }
}

/// Encodes an Empty message (ACK or RST) (RFC 7252 §4.1).
pub fn empty_message(out: &mut Vec<u8>, mtype: MsgType, message_id: u16) {
    out.clear();
    out.push(0x40 | ((mtype as u8) << 4));
    out.push(0);
    out.extend_from_slice(&message_id.to_be_bytes());
}
