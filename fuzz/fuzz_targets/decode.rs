//! Fuzzes the datagram decoder: parsing never panics, and whatever parses re-encodes to the
//! same bytes (the wire format has exactly one encoding per message).
#![no_main]

use hopcore_codec::{view, Message, MessageView, Registry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = MessageView::parse(data) {
        let m = Message::from_view(&v);
        let bytes = m.to_bytes().expect("a parsed message encodes");
        assert_eq!(bytes, data);
        let _ = Registry::standard().first_bad_critical(v.options().map(|o| (o.number, o.value)));
    }
    for r in view::parse_option_sequence(data) {
        let _ = r;
    }
});
