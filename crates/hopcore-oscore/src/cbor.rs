//! Minimal deterministic CBOR writer (RFC 8949 §3) for the few fixed structures OSCORE
//! serializes: the HKDF `info` array (RFC 8613 §3.2.1) and the AAD (§5.4). Heads always use the
//! shortest form (RFC 8949 §4.2.1), which is what the RFC 8613 Appendix C vectors use.

use crate::error::Error;

/// Major type 0: unsigned integer.
pub(crate) const MAJOR_UINT: u8 = 0;
/// Major type 2: byte string.
pub(crate) const MAJOR_BSTR: u8 = 2;
/// Major type 3: text string.
pub(crate) const MAJOR_TSTR: u8 = 3;
/// Major type 4: array.
pub(crate) const MAJOR_ARRAY: u8 = 4;
/// Simple value null (`f6`).
pub(crate) const NULL: u8 = 0xf6;

/// A CBOR head (initial byte plus argument), at most 9 bytes.
#[derive(Clone, Copy)]
pub(crate) struct Head {
    bytes: [u8; 9],
    len: u8,
}

impl Head {
    /// The shortest head for `major` with argument `value` (RFC 8949 §3, §4.2.1).
    pub(crate) fn new(major: u8, value: u64) -> Self {
        let mt = major << 5;
        let mut bytes = [0u8; 9];
        let len = if value < 24 {
            // The argument fits in the 5 low bits of the initial byte (`value < 24`).
            bytes[0] = mt | (value as u8);
            1
        } else if let Ok(v) = u8::try_from(value) {
            bytes[0] = mt | 24;
            bytes[1] = v;
            2
        } else if let Ok(v) = u16::try_from(value) {
            bytes[0] = mt | 25;
            bytes[1..3].copy_from_slice(&v.to_be_bytes());
            3
        } else if let Ok(v) = u32::try_from(value) {
            bytes[0] = mt | 26;
            bytes[1..5].copy_from_slice(&v.to_be_bytes());
            5
        } else {
            bytes[0] = mt | 27;
            bytes[1..9].copy_from_slice(&value.to_be_bytes());
            9
        };
        Head { bytes, len }
    }

    /// Head of a byte string of `len` bytes.
    pub(crate) fn bstr(len: usize) -> Self {
        Self::new(MAJOR_BSTR, len as u64)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
    }
}

/// Writes into a caller slice and fails cleanly when it is too small.
pub(crate) struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        SliceWriter { buf, pos: 0 }
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .filter(|&end| end <= self.buf.len())
            .ok_or(Error::BufferTooSmall { needed: self.pos.saturating_add(bytes.len()), available: self.buf.len() })?;
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
        Ok(())
    }

    pub(crate) fn head(&mut self, major: u8, value: u64) -> Result<(), Error> {
        self.put(Head::new(major, value).as_bytes())
    }

    pub(crate) fn bstr(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.put(Head::bstr(bytes.len()).as_bytes())?;
        self.put(bytes)
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_heads() {
        // RFC 8949 Appendix A examples.
        assert_eq!(Head::new(MAJOR_UINT, 0).as_bytes(), [0x00]);
        assert_eq!(Head::new(MAJOR_UINT, 23).as_bytes(), [0x17]);
        assert_eq!(Head::new(MAJOR_UINT, 24).as_bytes(), [0x18, 0x18]);
        assert_eq!(Head::new(MAJOR_UINT, 255).as_bytes(), [0x18, 0xff]);
        assert_eq!(Head::new(MAJOR_UINT, 256).as_bytes(), [0x19, 0x01, 0x00]);
        assert_eq!(Head::new(MAJOR_UINT, 65536).as_bytes(), [0x1a, 0, 1, 0, 0]);
        assert_eq!(
            Head::new(MAJOR_UINT, 1_000_000_000_000).as_bytes(),
            [0x1b, 0x00, 0x00, 0x00, 0xe8, 0xd4, 0xa5, 0x10, 0x00]
        );
        assert_eq!(Head::bstr(0).as_bytes(), [0x40]);
        assert_eq!(Head::bstr(8).as_bytes(), [0x48]);
        assert_eq!(Head::bstr(300).as_bytes(), [0x59, 0x01, 0x2c]);
        assert_eq!(Head::new(MAJOR_TSTR, 3).as_bytes(), [0x63]);
        assert_eq!(Head::new(MAJOR_ARRAY, 5).as_bytes(), [0x85]);
    }

    #[test]
    fn writer_reports_overflow() {
        let mut buf = [0u8; 3];
        let mut w = SliceWriter::new(&mut buf);
        w.bstr(&[1, 2]).unwrap();
        assert_eq!(w.position(), 3);
        assert_eq!(w.put(&[9]), Err(Error::BufferTooSmall { needed: 4, available: 3 }));
        assert_eq!(buf, [0x42, 1, 2]);
    }
}
