//! Codec tests: every format error, known encodings, and property tests.

use crate::*;
use proptest::prelude::*;

#[test]
fn rfc7252_figure_16_get_with_uri_path() {
    // CON GET, MID 0x7d34, no token, Uri-Path "temperature" (RFC 7252 Appendix A, Figure 16).
    let bytes = [0x40, 0x01, 0x7d, 0x34, 0xbb, b't', b'e', b'm', b'p', b'e', b'r', b'a', b't', b'u', b'r', b'e'];
    let v = MessageView::parse(&bytes).unwrap();
    assert_eq!(v.mtype(), MsgType::Con);
    assert_eq!(v.code(), Code::GET);
    assert_eq!(v.message_id(), 0x7d34);
    assert!(v.token().is_empty());
    assert_eq!(v.option(num::URI_PATH), Some(&b"temperature"[..]));
    let m = Message::from_view(&v);
    assert_eq!(m.to_bytes().unwrap(), bytes);
}

#[test]
fn extended_delta_and_length() {
    let long = vec![b'x'; 300];
    let mut m = Message::request(Code::POST);
    m.message_id = 1;
    m.token = Token::from_slice(&[9; 8]).unwrap();
    m.options.push(num::URI_PATH, b"a");
    m.options.push(num::URI_PATH, b"");
    m.options.push(num::PROXY_URI, &long); // delta 24 → 13-form, length 300 → 14-form
    m.options.push(num::REQUEST_TAG, b"t"); // delta 257 → 13-form
    m.options.push(2000, b"z"); // delta 1708 → 14-form
    m.payload = b"body".to_vec();
    let bytes = m.to_bytes().unwrap();
    let back = Message::parse(&bytes).unwrap();
    assert_eq!(back, m);
    let numbers: Vec<u16> = MessageView::parse(&bytes).unwrap().options().map(|o| o.number).collect();
    assert_eq!(numbers, vec![11, 11, 35, 292, 2000]);
}

#[test]
fn each_format_error() {
    use FormatError::*;
    assert_eq!(MessageView::parse(&[0x40, 1, 0]).unwrap_err(), TooShort(3));
    assert_eq!(MessageView::parse(&[0x80, 1, 0, 0]).unwrap_err(), Version(2));
    assert_eq!(MessageView::parse(&[0x49, 1, 0, 0]).unwrap_err(), TokenLength(9));
    assert_eq!(MessageView::parse(&[0x4f, 1, 0, 0]).unwrap_err(), TokenLength(15));
    assert_eq!(MessageView::parse(&[0x42, 1, 0, 0, 1]).unwrap_err(), TruncatedToken(2));
    // Delta nibble 15 with a length nibble other than 15.
    assert_eq!(MessageView::parse(&[0x40, 1, 0, 0, 0xf0]).unwrap_err(), ReservedDelta);
    // Length nibble 15.
    assert_eq!(MessageView::parse(&[0x40, 1, 0, 0, 0x1f]).unwrap_err(), ReservedLength);
    // Extended delta byte missing, extended length bytes missing, value truncated.
    assert_eq!(MessageView::parse(&[0x40, 1, 0, 0, 0xd0]).unwrap_err(), TruncatedOption);
    assert_eq!(MessageView::parse(&[0x40, 1, 0, 0, 0x0e, 0]).unwrap_err(), TruncatedOption);
    assert_eq!(MessageView::parse(&[0x40, 1, 0, 0, 0x03, b'a']).unwrap_err(), TruncatedOption);
    // Option number above 65535: 14-form delta 0xffff+269 → overflow.
    assert_eq!(MessageView::parse(&[0x40, 1, 0, 0, 0xe0, 0xff, 0xff]).unwrap_err(), OptionNumberOverflow);
    // Payload marker with empty payload.
    assert_eq!(MessageView::parse(&[0x40, 1, 0, 0, 0xff]).unwrap_err(), EmptyPayload);
    // Empty message with a token / trailing bytes.
    assert_eq!(MessageView::parse(&[0x41, 0, 0, 0, 7]).unwrap_err(), NonEmptyEmptyMessage);
    assert_eq!(MessageView::parse(&[0x60, 0, 0, 0, 0xff, 1]).unwrap_err(), NonEmptyEmptyMessage);
    // ...while a bare Empty ACK is fine.
    assert_eq!(MessageView::parse(&[0x60, 0, 0x12, 0x34]).unwrap().mtype(), MsgType::Ack);
}

#[test]
fn builder_rejects_descending_options() {
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, MsgType::Con, Code::GET, 1, Token::EMPTY);
    b.option(11, b"a").unwrap();
    assert_eq!(b.option(3, b"h").unwrap_err(), EncodeError::OptionOutOfOrder { prev: 11, next: 3 });
}

#[test]
fn option_set_keeps_order_and_repeats() {
    let mut o = Options::new();
    o.push(num::URI_PATH, b"b");
    o.push(num::URI_HOST, b"h");
    o.push(num::URI_PATH, b"c");
    o.push(num::URI_PATH, b"d");
    o.push(num::CONTENT_FORMAT, &[]);
    let got: Vec<(u16, &[u8])> = o.iter().map(|r| (r.number, r.value)).collect();
    assert_eq!(got, vec![(3, &b"h"[..]), (11, b"b"), (11, b"c"), (11, b"d"), (12, b"")]);
    o.set(num::URI_PATH, b"x");
    assert_eq!(o.get_all(num::URI_PATH).collect::<Vec<_>>(), vec![&b"x"[..]]);
    assert_eq!(o.remove(num::URI_HOST), 1);
    o.compact();
    assert_eq!(o.len(), 2);
}

#[test]
fn option_sequence_parser() {
    let mut o = Options::new();
    o.push(num::URI_PATH, b"x");
    o.push_uint(num::CONTENT_FORMAT, 60);
    let mut bytes = Vec::new();
    o.encode_into(&mut bytes).unwrap();
    let parsed: Vec<_> = view::parse_option_sequence(&bytes).collect::<Result<_, _>>().unwrap();
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[1].number, num::CONTENT_FORMAT);
    // Garbage yields one error and stops.
    let errs: Vec<_> = view::parse_option_sequence(&[0xf0, 0x11]).collect();
    assert_eq!(errs, vec![Err(FormatError::ReservedDelta)]);
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        0u8..4,
        any::<u8>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..=8),
        proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..12),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(t, code, mid, token, opts, payload)| {
            let code = if code == 0 { 1 } else { code };
            let mut m = Message::new(MsgType::from_bits(t), Code(code));
            m.message_id = mid;
            m.token = Token::from_slice(&token).unwrap_or_default();
            for (n, v) in opts {
                m.options.push(n, &v);
            }
            m.payload = payload;
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip(m in arb_message()) {
        let bytes = m.to_bytes().unwrap();
        let back = Message::parse(&bytes).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(v) = MessageView::parse(&bytes) {
            // Everything reachable from a valid view is consistent and re-encodes identically.
            let m = Message::from_view(&v);
            let _ = v.payload();
            let _ = v.uint_option(num::OBSERVE);
            prop_assert_eq!(&m.to_bytes().unwrap(), &bytes);
        }
        for r in view::parse_option_sequence(&bytes) { let _ = r; }
        let _ = Registry::standard().first_bad_critical(
            MessageView::parse(&bytes).map(|v| v.options().map(|o| (o.number, o.value)).collect::<Vec<_>>()).unwrap_or_default());
    }

    #[test]
    fn mutated_messages_never_panic(m in arb_message(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = m.to_bytes().unwrap();
        for (i, x) in flips { let n = bytes.len(); bytes[i % n] ^= x; }
        if let Ok(v) = MessageView::parse(&bytes) {
            prop_assert_eq!(&Message::from_view(&v).to_bytes().unwrap(), &bytes);
        }
    }

    #[test]
    fn uri_parse_never_panics(s in "\\PC{0,80}") {
        if let Ok(u) = CoapUri::parse(&s) {
            let again = CoapUri::parse(&u.compose());
            prop_assert!(again.is_ok(), "composed {:?} from {:?} does not parse", u.compose(), s);
        }
    }
}
