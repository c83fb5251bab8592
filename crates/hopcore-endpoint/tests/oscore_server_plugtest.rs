//! The plugtest resources behind OscoreServer, with the plugtest's contexts (aiocoap's
//! `contrib/oscore-plugtest/common-context`: a/b without, c/d with an ID Context), driven by a
//! hand-written client over loopback.

use std::net::SocketAddr;
use std::time::Duration;

use hopcore_codec::{num, Code, Message};
use hopcore_endpoint::oscore_server::{OscoreServer, OscoreServerHandle};
use hopcore_endpoint::server::plugtest::{plugtest_server, HELLO, PROTECTED_PREFIXES};
use hopcore_endpoint::Endpoint;
use hopcore_layers::{protect_request_layers, unprotect_response_layers, ContextList};
use hopcore_oscore::{protect_request, unprotect_response, ContextInput, Layer, OscoreOption, SecurityContext};

const SECRET: [u8; 16] =
    [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10];
const SALT: [u8; 8] = [0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40];
const ID_CONTEXT: [u8; 8] = [0x37, 0xcb, 0xf3, 0x21, 0x00, 0x17, 0xa2, 0xd3];

fn context(sender: &[u8], recipient: &[u8], id_context: Option<&[u8]>) -> SecurityContext {
    let mut input = ContextInput::new(&SECRET, sender, recipient).master_salt(&SALT);
    if let Some(c) = id_context {
        input = input.id_context(c);
    }
    SecurityContext::derive(&input).unwrap()
}

async fn start() -> OscoreServerHandle<ContextList> {
    let mut contexts = ContextList::new();
    // b: the server for a; d: the server for c (same IDs, with an ID Context).
    contexts.add(context(&[0x01], &[], None), ":b");
    contexts.add(context(&[0x01], &[], Some(&ID_CONTEXT)), ":d");
    let mut s = OscoreServer::new(plugtest_server(), contexts);
    for p in PROTECTED_PREFIXES {
        s = s.require_oscore(p);
    }
    s.start("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

async fn client() -> Endpoint {
    Endpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap().0
}

async fn send(ep: &Endpoint, to: SocketAddr, m: Message) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ep.request(to, m)).await.expect("in time").expect("a response")
}

fn get(path: &str) -> Message {
    let mut m = Message::request(Code::GET);
    m.set_path(path);
    m
}

#[tokio::test]
async fn hello_plain_and_through_both_contexts() {
    let h = start().await;
    let ep = client().await;
    // Test 0: plain.
    let r = send(&ep, h.local_addr(), get("/oscore/hello/coap")).await;
    assert_eq!((r.code, &r.payload[..]), (Code::CONTENT, HELLO.as_bytes()));
    // Test 17: plain to a protected resource.
    let r = send(&ep, h.local_addr(), get("/oscore/hello/1")).await;
    assert_eq!(r.code, Code::UNAUTHORIZED);

    // Test 1: context a (no kid context).
    let mut a = ContextList::new();
    a.add(context(&[], &[0x01], None), "b");
    let (wire, mut stack) = protect_request_layers(&get("/oscore/hello/1"), &mut a, &[0], 4).unwrap();
    let raw = send(&ep, h.local_addr(), wire).await;
    let r = unprotect_response_layers(&raw, &mut a, &mut stack).unwrap();
    assert_eq!((r.code, &r.payload[..]), (Code::CONTENT, HELLO.as_bytes()));
    assert_eq!(r.options.get_uint(num::CONTENT_FORMAT), Some(0));

    // Test 2: context c, which sends its ID Context as 'kid context' (RFC 8613 §5.1) so that
    // the server picks d over b (both have Recipient ID "").
    let mut c = context(&[], &[0x01], Some(&ID_CONTEXT));
    let layer = Layer::RFC8613.with_kid_context(true);
    let (wire, mut binding) = protect_request(&get("/oscore/hello/1"), &mut c, &layer).unwrap();
    let opt = OscoreOption::parse(wire.options.get(num::OSCORE).unwrap()).unwrap();
    assert_eq!(opt.kid_context, Some(&ID_CONTEXT[..]));
    let raw = send(&ep, h.local_addr(), wire).await;
    let r = unprotect_response(&raw, &c, &mut binding, &layer).unwrap();
    assert_eq!((r.code, &r.payload[..]), (Code::CONTENT, HELLO.as_bytes()));
    h.shutdown();
}

/// Test 6: "one", "two", then a final 5.00 "Terminate Observe", each protected, the
/// notifications with increasing Partial IVs; the observation is gone afterwards.
#[tokio::test]
async fn observe1_over_oscore_ends_with_the_error_notification() {
    let h = start().await;
    let ep = client().await;
    let mut a = ContextList::new();
    a.add(context(&[], &[0x01], None), "b");
    let mut req = get("/oscore/observe1");
    req.options.set_uint(num::OBSERVE, 0);
    let (wire, mut stack) = protect_request_layers(&req, &mut a, &[0], 4).unwrap();
    let mut n = ep.observe(h.local_addr(), wire).unwrap();
    let mut seen = Vec::new();
    let mut pivs = Vec::new();
    while seen.len() < 3 {
        let raw =
            tokio::time::timeout(Duration::from_secs(5), n.next()).await.expect("in time").expect("open").unwrap();
        if let Some(piv) = OscoreOption::parse(raw.options.get(num::OSCORE).unwrap()).unwrap().partial_iv {
            pivs.push(piv.to_sequence());
        }
        let m = unprotect_response_layers(&raw, &mut a, &mut stack).unwrap();
        seen.push((m.code, String::from_utf8_lossy(&m.payload).into_owned()));
    }
    assert_eq!(
        seen,
        [
            (Code::CONTENT, "one".to_string()),
            (Code::CONTENT, "two".to_string()),
            (Code::INTERNAL_SERVER_ERROR, "Terminate Observe".to_string())
        ]
    );
    assert_eq!(pivs.len(), 2, "both notifications carry their own Partial IV");
    assert!(pivs[0] < pivs[1]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.observer_count(), 0);
    h.shutdown();
}
