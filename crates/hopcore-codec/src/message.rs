//! The owned representation of a message ([`Message`]), with its option list ([`Options`]).
//!
//! Options are kept in wire order (ascending by number, repeats in insertion order) in one
//! contiguous buffer, so a message costs two allocations however many options it has.

use crate::builder::{MessageBuilder, OptionWriter};
use crate::code::{Code, MsgType};
use crate::error::{EncodeError, FormatError};
use crate::registry::Registry;
use crate::token::Token;
use crate::uint;
use crate::view::{MessageView, OptionRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    number: u16,
    start: u32,
    len: u32,
}

/// An ordered multiset of options.
#[derive(Clone, Default)]
pub struct Options {
    entries: Vec<Entry>,
    data: Vec<u8>,
}

impl Options {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn clear(&mut self) {
        self.entries.clear();
        self.data.clear();
    }
    fn value(&self, e: &Entry) -> &[u8] {
        &self.data[e.start as usize..(e.start + e.len) as usize]
    }
    /// Adds an occurrence after any existing occurrences of the same number.
    pub fn push(&mut self, number: u16, value: &[u8]) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(value);
        let e = Entry { number, start, len: value.len() as u32 };
        // Fast path: appending in order.
        let idx = self.entries.partition_point(|x| x.number <= number);
        self.entries.insert(idx, e);
    }
    pub fn push_uint(&mut self, number: u16, value: u32) {
        let (b, l) = uint::encode(value);
        self.push(number, &b[..l]);
    }
    /// Replaces all occurrences of `number` with one.
    pub fn set(&mut self, number: u16, value: &[u8]) {
        self.remove(number);
        self.push(number, value);
    }
    pub fn set_uint(&mut self, number: u16, value: u32) {
        let (b, l) = uint::encode(value);
        self.set(number, &b[..l]);
    }
    /// Removes all occurrences; returns how many there were.
    pub fn remove(&mut self, number: u16) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| e.number != number);
        before - self.entries.len()
    }
    /// Keeps only the options for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(u16, &[u8]) -> bool) {
        let data = &self.data;
        self.entries.retain(|e| keep(e.number, &data[e.start as usize..(e.start + e.len) as usize]));
    }
    pub fn get(&self, number: u16) -> Option<&[u8]> {
        let idx = self.entries.partition_point(|x| x.number < number);
        self.entries.get(idx).filter(|e| e.number == number).map(|e| self.value(e))
    }
    pub fn get_uint(&self, number: u16) -> Option<u32> {
        self.get(number).and_then(uint::decode)
    }
    pub fn get_str(&self, number: u16) -> Option<&str> {
        self.get(number).and_then(|v| std::str::from_utf8(v).ok())
    }
    pub fn get_all(&self, number: u16) -> impl Iterator<Item = &[u8]> {
        let idx = self.entries.partition_point(|x| x.number < number);
        self.entries[idx..].iter().take_while(move |e| e.number == number).map(|e| self.value(e))
    }
    pub fn contains(&self, number: u16) -> bool {
        self.get(number).is_some()
    }
    pub fn iter(&self) -> impl Iterator<Item = OptionRef<'_>> + Clone {
        self.entries.iter().map(|e| OptionRef { number: e.number, value: self.value(e) })
    }
    /// Writes the options delta-encoded (RFC 7252 §3.1).
    pub fn write(&self, w: &mut OptionWriter<'_>) -> Result<(), EncodeError> {
        for o in self.iter() {
            w.option(o.number, o.value)?;
        }
        Ok(())
    }
    /// Encodes the options as a bare option sequence.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write(&mut OptionWriter::new(out))
    }
    /// Compacts the value buffer after removals.
    pub fn compact(&mut self) {
        let mut data = Vec::with_capacity(self.entries.iter().map(|e| e.len as usize).sum());
        for e in &mut self.entries {
            let start = data.len() as u32;
            data.extend_from_slice(&self.data[e.start as usize..(e.start + e.len) as usize]);
            e.start = start;
        }
        self.data = data;
    }
    /// A human-readable rendering with option names, e.g. for `-v` output.
    pub fn describe(&self, registry: &Registry) -> Vec<(String, String)> {
        self.iter().map(|o| (registry.name(o.number).into_owned(), describe_value(registry, o))).collect()
    }
}

/// Renders an option value by its format.
pub fn describe_value(registry: &Registry, o: OptionRef<'_>) -> String {
    use crate::registry::ValueFormat;
    match registry.format(o.number) {
        ValueFormat::Empty if o.value.is_empty() => String::new(),
        ValueFormat::Uint => match uint::decode_u64(o.value) {
            Some(v) => v.to_string(),
            None => hex(o.value),
        },
        ValueFormat::String => match std::str::from_utf8(o.value) {
            Ok(s) => format!("{s:?}"),
            Err(_) => hex(o.value),
        },
        _ => hex(o.value),
    }
}

fn hex(v: &[u8]) -> String {
    let mut s = String::from("h'");
    for b in v {
        s.push_str(&format!("{b:02x}"));
    }
    s.push('\'');
    s
}

/// Equality is by content (numbers and values in order), not by buffer layout.
impl PartialEq for Options {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}
impl Eq for Options {}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reg = Registry::standard();
        f.debug_list()
            .entries(self.iter().map(|o| format!("{}: {}", reg.name(o.number), describe_value(reg, o))))
            .finish()
    }
}

impl<'a> FromIterator<OptionRef<'a>> for Options {
    fn from_iter<T: IntoIterator<Item = OptionRef<'a>>>(iter: T) -> Self {
        let mut o = Options::new();
        for r in iter {
            o.push(r.number, r.value);
        }
        o
    }
}

/// A CoAP message with owned fields (the parsed representation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub mtype: MsgType,
    pub code: Code,
    pub message_id: u16,
    pub token: Token,
    pub options: Options,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn new(mtype: MsgType, code: Code) -> Message {
        Message { mtype, code, message_id: 0, token: Token::EMPTY, options: Options::new(), payload: Vec::new() }
    }
    /// A request with the given method.
    pub fn request(code: Code) -> Message {
        Message::new(MsgType::Con, code)
    }
    /// A response with the given code (type and IDs filled in by the messaging layer).
    pub fn response(code: Code) -> Message {
        Message::new(MsgType::Ack, code)
    }
    pub fn parse(buf: &[u8]) -> Result<Message, FormatError> {
        Ok(Message::from_view(&MessageView::parse(buf)?))
    }
    pub fn from_view(v: &MessageView<'_>) -> Message {
        Message {
            mtype: v.mtype(),
            code: v.code(),
            message_id: v.message_id(),
            token: v.token(),
            options: v.options().collect(),
            payload: v.payload().to_vec(),
        }
    }
    /// Encodes into `out` (cleared first).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut b = MessageBuilder::new(out, self.mtype, self.code, self.message_id, self.token);
        for o in self.options.iter() {
            b.option(o.number, o.value)?;
        }
        b.payload(&self.payload)
    }
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(16 + self.payload.len());
        self.encode_into(&mut out)?;
        Ok(out)
    }
    pub fn with_option(mut self, number: u16, value: &[u8]) -> Self {
        self.options.push(number, value);
        self
    }
    pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }
    /// The Uri-Path segments joined with '/', with a leading '/'.
    pub fn path(&self) -> String {
        let mut s = String::new();
        for seg in self.options.get_all(crate::registry::num::URI_PATH) {
            s.push('/');
            s.push_str(&String::from_utf8_lossy(seg));
        }
        if s.is_empty() {
            s.push('/');
        }
        s
    }
    /// Sets Uri-Path from a '/'-separated path ("/a/b" → "a", "b").
    pub fn set_path(&mut self, path: &str) {
        self.options.remove(crate::registry::num::URI_PATH);
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            self.options.push(crate::registry::num::URI_PATH, seg.as_bytes());
        }
    }
}
