//! The OSCORE option value (RFC 8613 §6.1) and the Partial IV encoding of sequence numbers
//! (RFC 8613 §5, §7.2.1).
//!
//! ```text
//!  0 1 2 3 4 5 6 7 <------------- n bytes -------------->
//! +-+-+-+-+-+-+-+-+--------------------------------------
//! |0 0 0|h|k|  n  |       Partial IV (if any) ...
//! +-+-+-+-+-+-+-+-+--------------------------------------
//!  <- 1 byte -> <----- s bytes ------>
//! +------------+----------------------+------------------+
//! | s (if any) | kid context (if any) | kid (if any) ... |
//! +------------+----------------------+------------------+
//! ```

use core::fmt;

use crate::cbor::SliceWriter;
use crate::error::{Error, OptionError, OptionField};

/// Maximum Partial IV length in bytes (RFC 8613 §6.1: n = 6, 7 reserved; §5.2: PIV padded to 5).
pub const MAX_PIV_LEN: usize = 5;
/// Largest usable sequence number, 2^40 − 1 (RFC 8613 §7.2.1: "SHALL be less than 2^40").
pub const MAX_SEQUENCE_NUMBER: u64 = (1 << 40) - 1;
/// Largest kid context that the one-byte `s` field can carry (RFC 8613 §6.1).
pub const MAX_KID_CONTEXT_LEN: usize = u8::MAX as usize;

/// Mask of `n`, the Partial IV length (RFC 8613 §6.1: the three least significant bits).
const FLAG_N_MASK: u8 = 0b0000_0111;
/// `k`: kid present (RFC 8613 §6.1: fourth least significant bit).
const FLAG_K: u8 = 0b0000_1000;
/// `h`: kid context present (RFC 8613 §6.1: fifth least significant bit).
const FLAG_H: u8 = 0b0001_0000;
/// Reserved bits (RFC 8613 §6.1: sixth to eighth least significant bits; 0x20 is the Group Flag
/// of Group OSCORE, which plain OSCORE treats as reserved).
const FLAG_RESERVED: u8 = 0b1110_0000;

/// A Partial IV: 1 to 5 bytes in network byte order (RFC 8613 §5, §6.1).
///
/// [`from_sequence`](Self::from_sequence) produces the canonical encoding (leading zero bytes
/// removed, 0 is `00`). [`from_bytes`](Self::from_bytes) keeps the received bytes as they are,
/// because `request_piv` in the AAD is the value *as sent* (RFC 8613 §5.4); a non-minimal PIV
/// therefore cannot collide with the minimal one, as the AAD differs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartialIv {
    bytes: [u8; MAX_PIV_LEN],
    len: u8,
}

impl PartialIv {
    /// Encodes a sequence number: big-endian, leading zero bytes removed, except that 0 is the
    /// single byte `00` (RFC 8613 §5 "Partial IV"). Numbers of 2^40 and above do not fit in
    /// 5 bytes (RFC 8613 §7.2.1).
    pub fn from_sequence(seq: u64) -> Result<Self, Error> {
        if seq > MAX_SEQUENCE_NUMBER {
            return Err(Error::SequenceTooLarge { seq });
        }
        let be = seq.to_be_bytes();
        // RFC 8613 §5: "All leading bytes of value zero SHALL be removed when encoding the
        // Partial IV, except in the case of Partial IV value 0, which is encoded to the byte
        // string 0x00."
        let significant = (8 - (seq.leading_zeros() / 8) as usize).max(1);
        let mut bytes = [0u8; MAX_PIV_LEN];
        bytes[..significant].copy_from_slice(&be[8 - significant..]);
        Ok(PartialIv { bytes, len: significant as u8 })
    }

    /// Takes a Partial IV as received: 1 to 5 bytes (RFC 8613 §6.1, n ∈ 1..=5).
    pub fn from_bytes(piv: &[u8]) -> Result<Self, Error> {
        if piv.is_empty() || piv.len() > MAX_PIV_LEN {
            return Err(Error::InvalidPartialIv { len: piv.len() });
        }
        let mut bytes = [0u8; MAX_PIV_LEN];
        bytes[..piv.len()].copy_from_slice(piv);
        Ok(PartialIv { bytes, len: piv.len() as u8 })
    }

    /// The bytes as they go into the option, nonce and AAD.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Length in bytes (the `n` of the flag byte).
    // A Partial IV is never empty, so `is_empty` would always be false.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The sequence number this Partial IV encodes (for the replay window, RFC 8613 §7.4).
    pub fn to_sequence(&self) -> u64 {
        self.as_bytes().iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }
}

impl fmt::Debug for PartialIv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PartialIv(")?;
        write_hex(f, self.as_bytes())?;
        f.write_str(")")
    }
}

pub(crate) fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str("h'")?;
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    f.write_str("'")
}

/// The decoded OSCORE option value: the compressed COSE header parameters (RFC 8613 §6.1).
///
/// Parsing borrows from the option value, so no allocation happens on the receive path.
/// `OscoreOption::default()` (nothing present) encodes to the empty value used by responses
/// without Partial IV (RFC 8613 §2, C.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OscoreOption<'a> {
    /// 'Partial IV' parameter (RFC 8613 §5): present in requests, in notifications and in
    /// responses that do not reuse the request nonce.
    pub partial_iv: Option<PartialIv>,
    /// 'kid context' parameter (RFC 8613 §5.1): the ID Context, when the sender includes it.
    pub kid_context: Option<&'a [u8]>,
    /// 'kid' parameter (RFC 8613 §5): the sender's Sender ID; may be present and empty.
    pub kid: Option<&'a [u8]>,
}

impl<'a> OscoreOption<'a> {
    /// A request option: Partial IV and kid (RFC 8613 §5: both SHALL be present in requests),
    /// plus an optional kid context.
    pub fn request(partial_iv: PartialIv, kid: &'a [u8], kid_context: Option<&'a [u8]>) -> Self {
        OscoreOption { partial_iv: Some(partial_iv), kid_context, kid: Some(kid) }
    }

    /// Decodes an option value (RFC 8613 §6.1). The empty value means no parameters (§2).
    pub fn parse(value: &'a [u8]) -> Result<Self, OptionError> {
        let Some((&flags, mut rest)) = value.split_first() else {
            // RFC 8613 §2: flag bits all zero are sent as an empty option value.
            return Ok(OscoreOption::default());
        };
        // RFC 8613 §6.1: reserved bits set → "the message is considered to be malformed".
        if flags & FLAG_RESERVED != 0 {
            return Err(OptionError::ReservedFlagBits { flags });
        }
        // RFC 8613 §2: "If the OSCORE flag bits are all zero (0x00), the option value SHALL be
        // empty (Option Length = 0)."
        if flags == 0 {
            return Err(OptionError::ZeroFlagsNotEmpty { len: value.len() });
        }
        let n = flags & FLAG_N_MASK;
        // RFC 8613 §6.1: "The values n = 6 and n = 7 are reserved."
        if usize::from(n) > MAX_PIV_LEN {
            return Err(OptionError::ReservedPivLength { n });
        }

        // RFC 8613 §6.1: "The following n bytes encode the value of the Partial IV".
        let partial_iv = if n == 0 {
            None
        } else {
            let (piv, tail) = take(rest, usize::from(n), OptionField::PartialIv)?;
            rest = tail;
            // n is 1..=5 here, so this cannot fail; map it anyway instead of unwrapping.
            Some(PartialIv::from_bytes(piv).map_err(|_| OptionError::ReservedPivLength { n })?)
        };

        // RFC 8613 §6.1: if h = 1, one byte s, then s bytes of kid context.
        let kid_context = if flags & FLAG_H != 0 {
            let (s, tail) = take(rest, 1, OptionField::KidContextLength)?;
            let s = s.first().copied().map_or(0, usize::from);
            let (ctx, tail) = take(tail, s, OptionField::KidContext)?;
            rest = tail;
            Some(ctx)
        } else {
            None
        };

        // RFC 8613 §6.1: "The remaining bytes encode the value of the 'kid', if the 'kid' is
        // present (k = 1)"; the kid is always the last field.
        let kid = if flags & FLAG_K != 0 {
            Some(rest)
        } else if !rest.is_empty() {
            return Err(OptionError::TrailingBytes { len: rest.len() });
        } else {
            None
        };

        Ok(OscoreOption { partial_iv, kid_context, kid })
    }

    /// The flag byte for these parameters (RFC 8613 §6.1).
    pub fn flags(&self) -> u8 {
        let mut flags = 0;
        if let Some(piv) = &self.partial_iv {
            flags |= piv.len() as u8 & FLAG_N_MASK;
        }
        if self.kid.is_some() {
            flags |= FLAG_K;
        }
        if self.kid_context.is_some() {
            flags |= FLAG_H;
        }
        flags
    }

    /// Length of the encoded value.
    pub fn encoded_len(&self) -> usize {
        if self.flags() == 0 {
            // RFC 8613 §2: all-zero flags → empty value.
            return 0;
        }
        1 + self.partial_iv.map_or(0, |p| p.len())
            + self.kid_context.map_or(0, |c| 1 + c.len())
            + self.kid.map_or(0, <[u8]>::len)
    }

    /// Encodes the value into `out` and returns its length (RFC 8613 §6.1).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        let flags = self.flags();
        if flags == 0 {
            // RFC 8613 §2: "If the OSCORE flag bits are all zero (0x00), the option value SHALL be
            // empty".
            return Ok(0);
        }
        let kid_context_len = match self.kid_context {
            // RFC 8613 §6.1: `s` is one byte.
            Some(ctx) => Some(u8::try_from(ctx.len()).map_err(|_| Error::KidContextTooLong { len: ctx.len() })?),
            None => None,
        };
        let needed = self.encoded_len();
        if out.len() < needed {
            return Err(Error::BufferTooSmall { needed, available: out.len() });
        }
        let mut w = SliceWriter::new(out);
        w.put(&[flags])?;
        if let Some(piv) = &self.partial_iv {
            w.put(piv.as_bytes())?;
        }
        if let (Some(s), Some(ctx)) = (kid_context_len, self.kid_context) {
            w.put(&[s])?;
            w.put(ctx)?;
        }
        if let Some(kid) = self.kid {
            // RFC 8613 §6.1: the kid MUST be the last field.
            w.put(kid)?;
        }
        Ok(w.position())
    }

    /// Appends the encoded value to `out`.
    pub fn encode_to_vec(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        out.resize(start + self.encoded_len(), 0);
        match self.encode(&mut out[start..]) {
            Ok(len) => {
                out.truncate(start + len);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}

fn take(buf: &[u8], n: usize, field: OptionField) -> Result<(&[u8], &[u8]), OptionError> {
    if buf.len() < n {
        return Err(OptionError::Truncated { field, needed: n, available: buf.len() });
    }
    Ok(buf.split_at(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;
    use proptest::prelude::*;

    fn piv(bytes: &[u8]) -> PartialIv {
        PartialIv::from_bytes(bytes).unwrap()
    }

    fn encode(opt: &OscoreOption<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        opt.encode_to_vec(&mut v).unwrap();
        assert_eq!(v.len(), opt.encoded_len());
        v
    }

    /// Checks both directions against a vector: encoding gives `value`, parsing `value` gives `opt`.
    fn check_vector(opt: OscoreOption<'_>, value: &[u8]) {
        assert_eq!(encode(&opt), value);
        assert_eq!(OscoreOption::parse(value), Ok(opt));
        if let Some(&flags) = value.first() {
            assert_eq!(opt.flags(), flags);
        }
    }

    #[test]
    fn rfc8613_section_6_3_examples() {
        // 6.3-1: kid 25, PIV 05 → 090525
        check_vector(OscoreOption::request(piv(&[0x05]), &[0x25], None), &hex!("090525"));
        // 6.3-2: kid empty, PIV 00 → 0900
        check_vector(OscoreOption::request(piv(&[0x00]), &[], None), &hex!("0900"));
        // 6.3-3: kid empty, PIV 05, kid context 44616c656b → 19050544616c656b
        check_vector(OscoreOption::request(piv(&[0x05]), &[], Some(&hex!("44616c656b"))), &hex!("19050544616c656b"));
        // 6.3-4: response without PIV → empty value
        check_vector(OscoreOption::default(), &[]);
        // 6.3-5: response with PIV 07 → 0107
        check_vector(OscoreOption { partial_iv: Some(piv(&[0x07])), ..Default::default() }, &hex!("0107"));
    }

    #[test]
    fn rfc8613_appendix_c_option_values() {
        // C.4: PIV 14, kid h'' → 0914
        check_vector(OscoreOption::request(piv(&[0x14]), &[], None), &hex!("0914"));
        // C.5: PIV 14, kid 00 → 091400
        check_vector(OscoreOption::request(piv(&[0x14]), &[0x00], None), &hex!("091400"));
        // C.6: PIV 14, kid h'', kid context 37cbf3210017a2d3 → 19140837cbf3210017a2d3
        check_vector(
            OscoreOption::request(piv(&[0x14]), &[], Some(&hex!("37cbf3210017a2d3"))),
            &hex!("19140837cbf3210017a2d3"),
        );
        // C.7: response without PIV → empty
        check_vector(OscoreOption::default(), &hex!(""));
        // C.8: response with PIV 00 → 0100
        check_vector(
            OscoreOption { partial_iv: Some(PartialIv::from_sequence(0).unwrap()), ..Default::default() },
            &hex!("0100"),
        );
    }

    #[test]
    fn empty_kid_is_distinct_from_absent_kid() {
        // RFC 8613 §6.1 / test-vectors §8.3: 0914 is PIV 14 with kid h'', 0114 has no kid.
        let with = OscoreOption::parse(&hex!("0914")).unwrap();
        let without = OscoreOption::parse(&hex!("0114")).unwrap();
        assert_eq!(with.kid, Some(&[][..]));
        assert_eq!(without.kid, None);
    }

    #[test]
    fn kid_context_without_kid_and_empty_kid_context() {
        check_vector(OscoreOption { partial_iv: None, kid_context: Some(&[]), kid: None }, &hex!("1000"));
        check_vector(
            OscoreOption {
                partial_iv: Some(piv(&hex!("0102030405"))),
                kid_context: Some(&hex!("aa")),
                kid: Some(&hex!("bbcc")),
            },
            &hex!("1d010203040501aabbcc"),
        );
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        for flags in [0x20u8, 0x40, 0x80, 0xe9, 0x29] {
            assert_eq!(OscoreOption::parse(&[flags, 0x00]), Err(OptionError::ReservedFlagBits { flags }));
        }
        assert_eq!(OscoreOption::parse(&[0x06, 1, 2, 3, 4, 5, 6]), Err(OptionError::ReservedPivLength { n: 6 }));
        assert_eq!(OscoreOption::parse(&[0x0f]), Err(OptionError::ReservedPivLength { n: 7 }));
        assert_eq!(OscoreOption::parse(&[0x00]), Err(OptionError::ZeroFlagsNotEmpty { len: 1 }));
        assert_eq!(
            OscoreOption::parse(&[0x03, 0x01]),
            Err(OptionError::Truncated { field: OptionField::PartialIv, needed: 3, available: 1 })
        );
        assert_eq!(
            OscoreOption::parse(&[0x11, 0x01]),
            Err(OptionError::Truncated { field: OptionField::KidContextLength, needed: 1, available: 0 })
        );
        assert_eq!(
            OscoreOption::parse(&[0x18, 0x04, 0xaa]),
            Err(OptionError::Truncated { field: OptionField::KidContext, needed: 4, available: 1 })
        );
        assert_eq!(OscoreOption::parse(&[0x01, 0x05, 0x25]), Err(OptionError::TrailingBytes { len: 1 }));
        // Converts into the crate error.
        let e: Error = OptionError::TrailingBytes { len: 1 }.into();
        assert_eq!(e, Error::Option(OptionError::TrailingBytes { len: 1 }));
    }

    #[test]
    fn encode_errors() {
        let ctx = [0u8; 256];
        let opt = OscoreOption::request(piv(&[1]), &[], Some(&ctx));
        let mut out = [0u8; 300];
        assert_eq!(opt.encode(&mut out), Err(Error::KidContextTooLong { len: 256 }));
        let mut v = vec![7];
        assert_eq!(opt.encode_to_vec(&mut v), Err(Error::KidContextTooLong { len: 256 }));
        assert_eq!(v, [7], "failed encode must not leave partial output");

        let ok = OscoreOption::request(piv(&[1]), &[2, 3], None);
        let mut small = [0u8; 3];
        assert_eq!(ok.encode(&mut small), Err(Error::BufferTooSmall { needed: 4, available: 3 }));
        let ctx255 = [0u8; 255];
        let max = OscoreOption::request(piv(&[1]), &[], Some(&ctx255));
        assert_eq!(encode(&max).len(), 1 + 1 + 1 + 255);
    }

    #[test]
    fn partial_iv_from_sequence_is_minimal() {
        let cases: [(u64, &[u8]); 9] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (20, &[0x14]),
            (0xff, &[0xff]),
            (0x100, &[0x01, 0x00]),
            (0xffff, &[0xff, 0xff]),
            (0x01_0000, &[0x01, 0x00, 0x00]),
            (0x01_0000_0000, &[0x01, 0x00, 0x00, 0x00, 0x00]),
            (MAX_SEQUENCE_NUMBER, &[0xff; 5]),
        ];
        for (seq, bytes) in cases {
            let p = PartialIv::from_sequence(seq).unwrap();
            assert_eq!(p.as_bytes(), bytes, "seq {seq}");
            assert_eq!(p.len(), bytes.len());
            assert_eq!(p.to_sequence(), seq);
        }
        assert_eq!(PartialIv::from_sequence(1 << 40), Err(Error::SequenceTooLarge { seq: 1 << 40 }));
        assert_eq!(PartialIv::from_sequence(u64::MAX), Err(Error::SequenceTooLarge { seq: u64::MAX }));
    }

    #[test]
    fn partial_iv_from_bytes_bounds_and_non_minimal() {
        assert_eq!(PartialIv::from_bytes(&[]), Err(Error::InvalidPartialIv { len: 0 }));
        assert_eq!(PartialIv::from_bytes(&[0; 6]), Err(Error::InvalidPartialIv { len: 6 }));
        // A non-minimal PIV keeps its bytes (they are authenticated in the AAD) but maps to the
        // same number.
        let p = PartialIv::from_bytes(&[0x00, 0x05]).unwrap();
        assert_eq!(p.as_bytes(), [0x00, 0x05]);
        assert_eq!(p.to_sequence(), 5);
        assert_ne!(p, PartialIv::from_sequence(5).unwrap());
        assert_eq!(format!("{p:?}"), "PartialIv(h'0005')");
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_valid_values_roundtrip(value in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(opt) = OscoreOption::parse(&value) {
                // Parsing is injective: re-encoding gives back exactly the same bytes.
                prop_assert_eq!(encode(&opt), value);
            }
        }

        #[test]
        fn parse_prefixed_with_valid_flags_never_panics(flags in 0u8..0x20, tail in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut value = vec![flags];
            value.extend_from_slice(&tail);
            let _ = OscoreOption::parse(&value);
        }

        #[test]
        fn encode_then_parse_roundtrips(
            seq in proptest::option::of(0u64..=MAX_SEQUENCE_NUMBER),
            ctx in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=255)),
            kid in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
        ) {
            let opt = OscoreOption {
                partial_iv: seq.map(|s| PartialIv::from_sequence(s).unwrap()),
                kid_context: ctx.as_deref(),
                kid: kid.as_deref(),
            };
            let bytes = encode(&opt);
            prop_assert_eq!(OscoreOption::parse(&bytes), Ok(opt));
        }

        #[test]
        fn sequence_roundtrips_through_partial_iv(seq in 0u64..=MAX_SEQUENCE_NUMBER) {
            let p = PartialIv::from_sequence(seq).unwrap();
            prop_assert_eq!(p.to_sequence(), seq);
            prop_assert!(p.as_bytes()[0] != 0 || p.len() == 1, "leading zero in {:?}", p);
        }
    }
}
