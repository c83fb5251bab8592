//! OscoreServer over loopback UDP, with a hand-written OSCORE client: the nesting engine's
//! client side (`protect_request_layers` / `unprotect_response_layers`) over `Endpoint::request`
//! and `Endpoint::observe`.

use std::net::SocketAddr;
use std::time::Duration;

use hopcore_codec::{num, BlockValue, Code, Message, Token};
use hopcore_endpoint::oscore_server::{OscoreServer, OscoreServerHandle, OSCORE_REQUIRED};
use hopcore_endpoint::server::demo::{demo_server, large_payload};
use hopcore_endpoint::server::{resource::text, resource_fn};
use hopcore_endpoint::Endpoint;
use hopcore_layers::{
    protect_request_layers, unprotect_response_layers, ClientStack, ContextList, LayerError, SecurityContexts,
};
use hopcore_oscore::{ContextInput, OscoreOption, ReplayWindow, SecurityContext};

const SECRET: [u8; 16] =
    [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10];
const SALT: [u8; 8] = [0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40];

fn context(sender: &[u8], recipient: &[u8]) -> SecurityContext {
    SecurityContext::derive(&ContextInput::new(&SECRET, sender, recipient).master_salt(&SALT)).unwrap()
}

/// A server with the demo resources, /whoami, and /private/whoami (OSCORE required), knowing
/// the client with Sender ID 01 as ":client1".
fn server<C: SecurityContexts + Send + 'static>(contexts: C) -> OscoreServer<C> {
    let mut s = demo_server();
    s.add_resource("/whoami", resource_fn(|req| text(req.identity.clone().unwrap_or_else(|| "anonymous".into()))));
    s.add_resource("/private/whoami", resource_fn(|req| text(req.identity.clone().unwrap_or_default())));
    OscoreServer::new(s, contexts).require_oscore("/private")
}

fn server_contexts() -> ContextList {
    let mut list = ContextList::new();
    list.add(context(&[0x02], &[0x01]), ":client1");
    list
}

async fn start<C: SecurityContexts + Send + 'static>(contexts: C) -> OscoreServerHandle<C> {
    server(contexts).start("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// The client: an endpoint and its context for the server (Sender ID 01).
struct Client {
    endpoint: Endpoint,
    contexts: ContextList,
    server: SocketAddr,
}

impl Client {
    async fn new(server: SocketAddr) -> Client {
        let (endpoint, _incoming) = Endpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut contexts = ContextList::new();
        contexts.add(context(&[0x01], &[0x02]), "server");
        Client { endpoint, contexts, server }
    }

    fn protect(&mut self, req: &Message) -> (Message, ClientStack<usize>) {
        protect_request_layers(req, &mut self.contexts, &[0], 4).unwrap()
    }

    /// Sends `wire` and returns the raw response.
    async fn send(&self, wire: Message) -> Message {
        tokio::time::timeout(Duration::from_secs(10), self.endpoint.request(self.server, wire))
            .await
            .expect("a response in time")
            .expect("a response")
    }

    /// A protected exchange: the verified response, or the client-side layer error.
    async fn exchange(&mut self, req: &Message) -> Result<Message, LayerError> {
        let (wire, mut stack) = self.protect(req);
        let raw = self.send(wire).await;
        unprotect_response_layers(&raw, &mut self.contexts, &mut stack)
    }
}

fn get(path: &str) -> Message {
    let mut m = Message::request(Code::GET);
    m.set_path(path);
    m
}

#[tokio::test]
async fn protected_get_hello() {
    let h = start(server_contexts()).await;
    let mut c = Client::new(h.local_addr()).await;
    let (wire, mut stack) = c.protect(&get("/hello"));
    let raw = c.send(wire).await;
    // RFC 8613 §4.2: Outer code 2.04; the real code is inside.
    assert_eq!(raw.code, Code::CHANGED);
    assert!(raw.options.contains(num::OSCORE));
    assert!(!raw.options.contains(num::CONTENT_FORMAT), "Content-Format is Class E");
    let r = unprotect_response_layers(&raw, &mut c.contexts, &mut stack).unwrap();
    assert_eq!(r.code, Code::CONTENT);
    assert_eq!(r.payload, b"Hello from hopcore");
    h.shutdown();
}

#[tokio::test]
async fn identity_is_visible_to_resources() {
    let h = start(server_contexts()).await;
    let mut c = Client::new(h.local_addr()).await;
    let r = c.exchange(&get("/whoami")).await.unwrap();
    assert_eq!(r.payload, b":client1");
    let r = c.exchange(&get("/private/whoami")).await.unwrap();
    assert_eq!((r.code, &r.payload[..]), (Code::CONTENT, &b":client1"[..]));
    // Plain CoAP: no identity.
    let r = c.send(get("/whoami")).await;
    assert_eq!(r.payload, b"anonymous");
    h.shutdown();
}

#[tokio::test]
async fn plain_request_to_protected_prefix_gets_4_01() {
    let h = start(server_contexts()).await;
    let c = Client::new(h.local_addr()).await;
    let r = c.send(get("/private/whoami")).await;
    assert_eq!(r.code, Code::UNAUTHORIZED);
    assert_eq!(r.payload, OSCORE_REQUIRED.as_bytes());
    // Outside the prefix, plain CoAP still works.
    let r = c.send(get("/hello")).await;
    assert_eq!(r.code, Code::CONTENT);
    h.shutdown();
}

#[tokio::test]
async fn unknown_kid_gets_an_unprotected_4_01_with_max_age_0() {
    let h = start(server_contexts()).await;
    let mut c = Client::new(h.local_addr()).await;
    // A context the server does not have (Sender ID 07).
    c.contexts = ContextList::new();
    c.contexts.add(context(&[0x07], &[0x02]), "server");
    let (wire, mut stack) = c.protect(&get("/hello"));
    let raw = c.send(wire).await;
    // RFC 8613 §8.2 step 2: 4.01, unprotected; Max-Age 0 (it must not be cached).
    assert_eq!(raw.code, Code::UNAUTHORIZED);
    assert!(!raw.options.contains(num::OSCORE));
    assert_eq!(raw.options.get_uint(num::MAX_AGE), Some(0));
    assert_eq!(raw.payload, b"Security context not found");
    assert!(matches!(
        unprotect_response_layers(&raw, &mut c.contexts, &mut stack),
        Err(LayerError::Unprotected { code: Code::UNAUTHORIZED, .. })
    ));
    h.shutdown();
}

#[tokio::test]
async fn replayed_request_gets_4_01() {
    let h = start(server_contexts()).await;
    let mut c = Client::new(h.local_addr()).await;
    let (wire, mut stack) = c.protect(&get("/hello"));
    let first = c.send(wire.clone()).await;
    assert_eq!(unprotect_response_layers(&first, &mut c.contexts, &mut stack).unwrap().code, Code::CONTENT);
    // The same OSCORE request again (new Message ID: not a message-layer duplicate).
    let again = c.send(wire).await;
    assert_eq!(again.code, Code::UNAUTHORIZED);
    assert!(!again.options.contains(num::OSCORE));
    assert_eq!(again.payload, b"Replay detected");
    assert_eq!(again.options.get_uint(num::MAX_AGE), Some(0));
    // The context still works for fresh requests.
    assert_eq!(c.exchange(&get("/hello")).await.unwrap().code, Code::CONTENT);
    h.shutdown();
}

#[tokio::test]
async fn block2_large_over_oscore() {
    let h = start(server_contexts()).await;
    let mut c = Client::new(h.local_addr()).await;
    let mut body = Vec::new();
    let mut etag = None;
    // RFC 8613 §4.1.3.4.1: Block2 is Inner; each block is its own OSCORE exchange.
    for num in 0.. {
        let mut req = get("/large");
        req.options.set_uint(num::BLOCK2, BlockValue::new(num, false, 256).unwrap().to_uint());
        let (wire, mut stack) = c.protect(&req);
        let raw = c.send(wire).await;
        assert!(!raw.options.contains(num::BLOCK2), "no Outer Block2");
        let r = unprotect_response_layers(&raw, &mut c.contexts, &mut stack).unwrap();
        assert_eq!(r.code, Code::CONTENT);
        let b = BlockValue::decode(r.options.get(num::BLOCK2).expect("Block2")).unwrap();
        assert_eq!((b.num, b.size()), (num, 256));
        let tag = r.options.get(num::ETAG).map(<[u8]>::to_vec);
        assert!(etag.is_none() || etag == tag, "the representation did not change");
        etag = tag;
        body.extend_from_slice(&r.payload);
        if !b.more {
            break;
        }
        assert!(num < 64, "too many blocks");
    }
    assert_eq!(body, large_payload());
    h.shutdown();
}

async fn next(n: &mut hopcore_endpoint::Notifications) -> Message {
    tokio::time::timeout(Duration::from_secs(5), n.next()).await.expect("in time").expect("open").unwrap()
}

#[tokio::test]
async fn observe_time_over_oscore() {
    let h = start(server_contexts()).await;
    let mut c = Client::new(h.local_addr()).await;
    let mut req = get("/time");
    req.options.set_uint(num::OBSERVE, 0);
    req.token = Token::from_slice(&[0x0b, 0x5e]).unwrap();
    let (wire, mut stack) = c.protect(&req);
    // RFC 8613 §4.1.3.5: Outer code FETCH for a request with Observe.
    assert_eq!(wire.code, Code::FETCH);
    let mut notifications = c.endpoint.observe(c.server, wire).unwrap();
    let first = next(&mut notifications).await;
    let r = unprotect_response_layers(&first, &mut c.contexts, &mut stack).unwrap();
    assert_eq!(r.code, Code::CONTENT);
    assert!(r.options.contains(num::OBSERVE), "registered");
    assert_eq!(h.observer_count(), 1);

    let mut last_piv = None;
    for _ in 0..3 {
        let raw = next(&mut notifications).await;
        assert_eq!(raw.code, Code::CONTENT, "Outer 2.05 for a notification (RFC 8613 §4.2)");
        assert!(raw.options.contains(num::OBSERVE), "Outer Observe");
        let opt = OscoreOption::parse(raw.options.get(num::OSCORE).unwrap()).unwrap();
        // RFC 8613 §8.3.1: every notification after the first response has its own Partial IV.
        let piv = opt.partial_iv.expect("own Partial IV").to_sequence();
        assert!(last_piv.is_none_or(|l| piv > l), "Partial IV {piv} after {last_piv:?}");
        last_piv = Some(piv);
        let n = unprotect_response_layers(&raw, &mut c.contexts, &mut stack).unwrap();
        assert_eq!(n.code, Code::CONTENT);
        assert_eq!(n.payload.len(), 20, "a UTC time: {:?}", String::from_utf8_lossy(&n.payload));
    }

    // Deregistration (RFC 7641 §3.6), protected, with the same token: the observation and its
    // layers end.
    drop(notifications);
    c.endpoint.forget(c.server, req.token);
    let mut dereg = get("/time");
    dereg.options.set_uint(num::OBSERVE, 1);
    dereg.token = req.token;
    let r = c.exchange(&dereg).await.unwrap();
    assert!(!r.options.contains(num::OBSERVE));
    assert_eq!(h.observer_count(), 0);
    h.shutdown();
}

/// Contexts with the Echo exchange (RFC 8613 App. B.1.2) and a replay window that starts
/// unsynchronized, as after a reboot that lost it.
struct LostState {
    list: ContextList,
    issued: Vec<Vec<u8>>,
}

impl SecurityContexts for LostState {
    type Id = usize;
    fn lookup_recipient(&self, kid: &[u8], kc: Option<&[u8]>) -> Option<usize> {
        self.list.lookup_recipient(kid, kc)
    }
    fn context_mut(&mut self, id: usize) -> Option<&mut SecurityContext> {
        self.list.context_mut(id)
    }
    fn prepare_send(&mut self, id: usize) -> Result<&mut SecurityContext, String> {
        self.list.prepare_send(id)
    }
    fn label(&self, id: usize) -> String {
        self.list.label(id)
    }
    fn issue_echo(&mut self, _id: usize) -> Option<Vec<u8>> {
        let v = vec![0xec; 8];
        self.issued.push(v.clone());
        Some(v)
    }
    fn verify_echo(&mut self, _id: usize, echo: &[u8]) -> bool {
        self.issued.iter().any(|v| v == echo)
    }
}

#[tokio::test]
async fn lost_replay_state_is_recovered_with_echo() {
    let mut list = ContextList::new();
    list.add(context(&[0x02], &[0x01]).with_replay_window(ReplayWindow::unsynchronized(32).unwrap()), ":client1");
    let h = start(LostState { list, issued: Vec::new() }).await;
    let mut c = Client::new(h.local_addr()).await;
    let challenge = c.exchange(&get("/whoami")).await.unwrap();
    assert_eq!(challenge.code, Code::UNAUTHORIZED);
    let echo = challenge.options.get(num::ECHO).expect("Echo").to_vec();
    let mut again = get("/whoami");
    again.options.set(num::ECHO, &echo);
    let r = c.exchange(&again).await.unwrap();
    assert_eq!((r.code, &r.payload[..]), (Code::CONTENT, &b":client1"[..]));
    h.shutdown();
}

/// A client that forgets its observation answers the next notification with RST (RFC 7641
/// §3.6): the server ends the observation and drops its layers.
#[tokio::test]
async fn reset_notification_ends_the_protected_observation() {
    let h = start(server_contexts()).await;
    let mut c = Client::new(h.local_addr()).await;
    let mut req = get("/time");
    req.options.set_uint(num::OBSERVE, 0);
    let (wire, mut stack) = c.protect(&req);
    let mut notifications = c.endpoint.observe(c.server, wire).unwrap();
    let first = next(&mut notifications).await;
    assert!(unprotect_response_layers(&first, &mut c.contexts, &mut stack).unwrap().options.contains(num::OBSERVE));
    assert_eq!(h.observer_count(), 1);
    drop(notifications);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.observer_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the observation survived a RST");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.shutdown();
}
