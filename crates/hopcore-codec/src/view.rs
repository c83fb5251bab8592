//! Zero-copy decoding of a CoAP datagram (RFC 7252 §3).
//!
//! [`MessageView::parse`] validates the whole datagram once; afterwards the accessors and the
//! option iterator cannot fail and never allocate.

use crate::code::{Code, MsgType};
use crate::error::FormatError;
use crate::token::Token;
use crate::uint;

const PAYLOAD_MARKER: u8 = 0xff;

/// One option occurrence: its number and a borrowed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionRef<'a> {
    pub number: u16,
    pub value: &'a [u8],
}

/// A validated view over the bytes of a CoAP message.
#[derive(Clone, Copy)]
pub struct MessageView<'a> {
    buf: &'a [u8],
    token_len: u8,
    /// Offset of the first byte after the options (the payload marker, or the end).
    options_end: usize,
}

/// Reads one extended delta/length field (RFC 7252 §3.1).
#[inline]
fn read_ext(nibble: u8, buf: &[u8], pos: &mut usize, reserved: FormatError) -> Result<u32, FormatError> {
    match nibble {
        0..=12 => Ok(nibble as u32),
        13 => {
            let b = *buf.get(*pos).ok_or(FormatError::TruncatedOption)?;
            *pos += 1;
            Ok(b as u32 + 13)
        }
        14 => {
            let b = buf.get(*pos..*pos + 2).ok_or(FormatError::TruncatedOption)?;
            *pos += 2;
            Ok(u16::from_be_bytes([b[0], b[1]]) as u32 + 269)
        }
        _ => Err(reserved),
    }
}

/// Decodes the option at `pos` (which must not be the payload marker).
/// Returns (delta, value range) and advances `pos` past the option.
#[inline]
fn read_option(buf: &[u8], pos: &mut usize) -> Result<(u32, usize, usize), FormatError> {
    let head = buf[*pos];
    *pos += 1;
    let delta_nibble = head >> 4;
    let len_nibble = head & 0x0f;
    // RFC 7252 §3.1: 15 in the delta nibble is reserved except in the payload marker.
    if delta_nibble == 15 {
        return Err(FormatError::ReservedDelta);
    }
    let delta = read_ext(delta_nibble, buf, pos, FormatError::ReservedDelta)?;
    // RFC 7252 §3.1: 15 in the length nibble is reserved.
    let len = read_ext(len_nibble, buf, pos, FormatError::ReservedLength)? as usize;
    let start = *pos;
    let end = start.checked_add(len).ok_or(FormatError::TruncatedOption)?;
    if end > buf.len() {
        return Err(FormatError::TruncatedOption);
    }
    *pos = end;
    Ok((delta, start, end))
}

impl<'a> MessageView<'a> {
    /// Parses and validates a datagram.
    pub fn parse(buf: &'a [u8]) -> Result<MessageView<'a>, FormatError> {
        // RFC 7252 §3: fixed 4-byte header.
        if buf.len() < 4 {
            return Err(FormatError::TooShort(buf.len()));
        }
        let version = buf[0] >> 6;
        if version != 1 {
            return Err(FormatError::Version(version));
        }
        let token_len = buf[0] & 0x0f;
        // RFC 7252 §3: lengths 9-15 are reserved and MUST be processed as a format error.
        if token_len > 8 {
            return Err(FormatError::TokenLength(token_len));
        }
        // RFC 7252 §4.1: an Empty message has nothing after the Message ID.
        if buf[1] == 0 && buf.len() > 4 {
            return Err(FormatError::NonEmptyEmptyMessage);
        }
        let mut pos = 4 + token_len as usize;
        if pos > buf.len() {
            return Err(FormatError::TruncatedToken(token_len));
        }
        let mut number: u32 = 0;
        while pos < buf.len() {
            if buf[pos] == PAYLOAD_MARKER {
                // RFC 7252 §3: a marker followed by a zero-length payload is a format error.
                if pos + 1 == buf.len() {
                    return Err(FormatError::EmptyPayload);
                }
                break;
            }
            let (delta, _, _) = read_option(buf, &mut pos)?;
            number += delta;
            if number > u16::MAX as u32 {
                return Err(FormatError::OptionNumberOverflow);
            }
        }
        Ok(MessageView { buf, token_len, options_end: pos })
    }

    /// The bytes this view was parsed from.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    pub fn mtype(&self) -> MsgType {
        MsgType::from_bits(self.buf[0] >> 4)
    }
    pub fn code(&self) -> Code {
        Code(self.buf[1])
    }
    pub fn message_id(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }
    pub fn token_bytes(&self) -> &'a [u8] {
        &self.buf[4..4 + self.token_len as usize]
    }
    pub fn token(&self) -> Token {
        // Length is at most 8, checked by parse.
        Token::from_slice(self.token_bytes()).unwrap_or_default()
    }
    /// The raw bytes of all options (between token and payload marker).
    pub fn option_bytes(&self) -> &'a [u8] {
        &self.buf[4 + self.token_len as usize..self.options_end]
    }
    /// The options in wire order (ascending numbers, repeats in their order).
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter { buf: self.buf, pos: 4 + self.token_len as usize, end: self.options_end, number: 0 }
    }
    /// The first occurrence of option `number`.
    pub fn option(&self, number: u16) -> Option<&'a [u8]> {
        self.options().take_while(|o| o.number <= number).find(|o| o.number == number).map(|o| o.value)
    }
    /// All occurrences of option `number`, in order.
    pub fn options_numbered(&self, number: u16) -> impl Iterator<Item = &'a [u8]> {
        self.options().skip_while(move |o| o.number < number).take_while(move |o| o.number == number).map(|o| o.value)
    }
    pub fn has_option(&self, number: u16) -> bool {
        self.option(number).is_some()
    }
    /// The first occurrence of a uint option, decoded; `None` if absent or longer than 4 bytes.
    pub fn uint_option(&self, number: u16) -> Option<u32> {
        self.option(number).and_then(uint::decode)
    }
    pub fn payload(&self) -> &'a [u8] {
        if self.options_end < self.buf.len() {
            &self.buf[self.options_end + 1..]
        } else {
            &[]
        }
    }
}

impl std::fmt::Debug for MessageView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageView")
            .field("type", &self.mtype())
            .field("code", &self.code())
            .field("mid", &self.message_id())
            .field("token", &self.token())
            .field("options", &self.options().collect::<Vec<_>>())
            .field("payload_len", &self.payload().len())
            .finish()
    }
}

/// Iterator over the options of a validated message.
#[derive(Clone)]
pub struct OptionIter<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    number: u32,
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = OptionRef<'a>;
    #[inline]
    fn next(&mut self) -> Option<OptionRef<'a>> {
        if self.pos >= self.end {
            return None;
        }
        // The message was validated by `parse`, so this cannot fail; stop rather than panic
        // if it ever did.
        let (delta, start, end) = read_option(self.buf, &mut self.pos).ok()?;
        self.number += delta;
        Some(OptionRef { number: self.number as u16, value: &self.buf[start..end] })
    }
}

/// Iterates over a raw option sequence (as produced by [`crate::OptionWriter`]), e.g. the
/// options inside an OSCORE plaintext. Yields an error and stops at the first malformed option.
pub fn parse_option_sequence(bytes: &[u8]) -> impl Iterator<Item = Result<OptionRef<'_>, FormatError>> {
    let mut pos = 0usize;
    let mut number: u32 = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= bytes.len() {
            return None;
        }
        match read_option(bytes, &mut pos) {
            Ok((delta, start, end)) => {
                number += delta;
                if number > u16::MAX as u32 {
                    failed = true;
                    return Some(Err(FormatError::OptionNumberOverflow));
                }
                Some(Ok(OptionRef { number: number as u16, value: &bytes[start..end] }))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}
