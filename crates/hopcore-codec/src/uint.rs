//! The uint option format (RFC 7252 §3.2).

/// Minimal big-endian encoding: no leading zero bytes, 0 is the empty string (RFC 7252 §3.2).
/// Returns the buffer and the used length.
#[inline]
pub fn encode(value: u32) -> ([u8; 4], usize) {
    let bytes = value.to_be_bytes();
    let len = 4 - (value.leading_zeros() / 8) as usize;
    let mut out = [0u8; 4];
    out[..len].copy_from_slice(&bytes[4 - len..]);
    (out, len)
}

/// Decodes up to 4 bytes; leading zero bytes are accepted (RFC 7252 §3.2: a recipient MUST be
/// prepared to process them). `None` if longer than 4 bytes.
#[inline]
pub fn decode(value: &[u8]) -> Option<u32> {
    if value.len() > 4 {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, &b| (acc << 8) | b as u32))
}

/// Decodes up to 8 bytes.
pub fn decode_u64(value: &[u8]) -> Option<u64> {
    if value.len() > 8 {
        return None;
    }
    Some(value.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn minimal() {
        assert_eq!(encode(0).1, 0);
        assert_eq!(encode(1), ([1, 0, 0, 0], 1));
        assert_eq!(encode(256), ([1, 0, 0, 0], 2));
        assert_eq!(encode(u32::MAX), ([0xff; 4], 4));
        assert_eq!(decode(&[]), Some(0));
        assert_eq!(decode(&[0, 0, 5]), Some(5));
        assert_eq!(decode(&[1, 2, 3, 4, 5]), None);
        for v in [0u32, 1, 255, 256, 65535, 65536, 1 << 24, u32::MAX] {
            let (b, l) = encode(v);
            assert_eq!(decode(&b[..l]), Some(v));
        }
    }
}
