//! The messages and security contexts the micro-benchmarks and the memory figures share, so
//! that the numbers of different runs refer to the same bytes.

use hopcore_codec::{num, Code, Message, MsgType, Token};
use hopcore_layers::ContextList;
use hopcore_oscore::{ContextInput, SecurityContext};

/// The payload sizes of the OSCORE benchmarks (issue #5).
pub const PAYLOAD_SIZES: [usize; 4] = [0, 64, 512, 1024];

/// RFC 8613 Appendix C.1 master secret and salt, so that the figures use standard inputs.
pub const MASTER_SECRET: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
pub const MASTER_SALT: [u8; 8] = [0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40];

/// A typical request: CON POST with a 4-byte token, Uri-Path `sensors/temp`, Content-Format 0
/// and `payload_len` bytes of payload (none for 0).
pub fn request(payload_len: usize) -> Message {
    let mut m = Message::new(MsgType::Con, Code::POST);
    m.message_id = 0x1234;
    m.token = Token::from_slice(&[0xde, 0xad, 0xbe, 0xef]).unwrap_or_default();
    m.set_path("/sensors/temp");
    if payload_len > 0 {
        m.options.set_uint(num::CONTENT_FORMAT, 0);
    }
    m.payload = payload(payload_len);
    m
}

/// A typical response: ACK 2.05 Content with Content-Format 0, Max-Age 60 and `payload_len`
/// bytes of payload.
pub fn response(payload_len: usize) -> Message {
    let mut m = Message::new(MsgType::Ack, Code::CONTENT);
    m.message_id = 0x1234;
    m.token = Token::from_slice(&[0xde, 0xad, 0xbe, 0xef]).unwrap_or_default();
    m.options.set_uint(num::CONTENT_FORMAT, 0);
    m.options.set_uint(num::MAX_AGE, 60);
    m.payload = payload(payload_len);
    m
}

/// `len` bytes of printable payload.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A client context (Sender ID `sender`, Recipient ID `recipient`) derived from the RFC 8613
/// Appendix C.1 master secret and salt with AES-CCM-16-64-128.
pub fn context(sender: &[u8], recipient: &[u8]) -> SecurityContext {
    SecurityContext::derive(&ContextInput::new(&MASTER_SECRET, sender, recipient).master_salt(&MASTER_SALT))
        .expect("fixed inputs derive")
}

/// A client and a server context of one pair (client Sender ID `[0x10 + i]`, server Sender
/// ID `[0x20 + i]`).
pub fn pair(i: u8) -> (SecurityContext, SecurityContext) {
    (context(&[0x10 + i], &[0x20 + i]), context(&[0x20 + i], &[0x10 + i]))
}

/// `n` layers: the client's contexts (route order: end-to-end first) and the server's, in one
/// list each.
pub fn layer_contexts(n: usize) -> (ContextList, ContextList, Vec<usize>) {
    let mut client = ContextList::new();
    let mut server = ContextList::new();
    let mut route = Vec::with_capacity(n);
    for i in 0..n {
        let (c, s) = pair(i as u8);
        route.push(client.add(c, format!("layer{i}")));
        server.add(s, format!(":client-layer{i}"));
    }
    (client, server, route)
}
