//! Block1/Block2 option values (RFC 7959 §2.2).

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BlockError {
    #[error("block option longer than 3 bytes")]
    TooLong,
    #[error("SZX 7 is reserved (RFC 7959 §2.2)")]
    ReservedSzx,
    #[error("block number {0} exceeds 2^20-1")]
    NumTooLarge(u32),
}

/// A decoded block option: NUM, M and SZX (block size 2^(SZX+4)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockValue {
    pub num: u32,
    pub more: bool,
    pub szx: u8,
}

impl BlockValue {
    pub fn new(num: u32, more: bool, size: usize) -> Result<BlockValue, BlockError> {
        if num > 0xF_FFFF {
            return Err(BlockError::NumTooLarge(num));
        }
        Ok(BlockValue { num, more, szx: szx_for_size(size) })
    }
    /// Block size in bytes.
    pub fn size(&self) -> usize {
        1usize << (self.szx as usize + 4)
    }
    /// Byte offset of this block.
    pub fn offset(&self) -> usize {
        self.num as usize * self.size()
    }
    pub fn decode(value: &[u8]) -> Result<BlockValue, BlockError> {
        let v = crate::uint::decode(value).filter(|_| value.len() <= 3).ok_or(BlockError::TooLong)?;
        let szx = (v & 0x7) as u8;
        if szx == 7 {
            return Err(BlockError::ReservedSzx);
        }
        Ok(BlockValue { num: v >> 4, more: v & 0x8 != 0, szx })
    }
    pub fn to_uint(&self) -> u32 {
        (self.num << 4) | ((self.more as u32) << 3) | self.szx as u32
    }
}

/// The largest SZX whose size does not exceed `size` (16..=1024).
pub fn szx_for_size(size: usize) -> u8 {
    let mut szx = 6u8;
    while szx > 0 && (1usize << (szx + 4)) > size {
        szx -= 1;
    }
    szx
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn roundtrip() {
        let b = BlockValue::new(5, true, 64).unwrap();
        assert_eq!(b.szx, 2);
        assert_eq!(b.size(), 64);
        assert_eq!(b.offset(), 320);
        let (bytes, l) = crate::uint::encode(b.to_uint());
        assert_eq!(BlockValue::decode(&bytes[..l]), Ok(b));
        assert_eq!(BlockValue::decode(&[0x07]), Err(BlockError::ReservedSzx));
        assert_eq!(BlockValue::decode(&[1, 2, 3, 4]), Err(BlockError::TooLong));
        assert_eq!(BlockValue::decode(&[]), Ok(BlockValue { num: 0, more: false, szx: 0 }));
        assert_eq!(szx_for_size(1024), 6);
        assert_eq!(szx_for_size(5000), 6);
        assert_eq!(szx_for_size(16), 0);
        assert!(BlockValue::new(1 << 20, false, 16).is_err());
    }
}
