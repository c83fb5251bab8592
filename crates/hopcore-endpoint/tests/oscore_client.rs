//! The OSCORE client (RFC 8613 §8.1, §8.4) against a small OSCORE server written directly with
//! the nesting engine (`hopcore_layers::process_request` / `protect_response_layers`) on
//! `Endpoint` + `Incoming`, over real loopback sockets.

#[path = "client_support.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopcore_codec::{num, BlockValue, Code, Message, MsgType};
use hopcore_endpoint::client::{Client, ClientConfig, ClientError, OscoreProtector, RequestProtector};
use hopcore_endpoint::{Endpoint, ResponseHandle};
use hopcore_layers::{
    process_request, protect_response_layers, ContextList, HopPolicy, Incoming, Limits, SecurityContexts, ServerStack,
};
use hopcore_oscore::{ContextInput, ReplayWindow, SecurityContext};
use support::{block, block2_response, body, lo, within};

const SECRET: [u8; 16] =
    [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10];
const CLIENT_ID: &[u8] = &[0x01];
const SERVER_ID: &[u8] = &[0x02];

fn client_context() -> SecurityContext {
    SecurityContext::derive(&ContextInput::new(&SECRET, CLIENT_ID, SERVER_ID)).unwrap()
}

fn server_context() -> SecurityContext {
    SecurityContext::derive(&ContextInput::new(&SECRET, SERVER_ID, CLIENT_ID)).unwrap()
}

/// How the test server's store answers Echo questions (RFC 8613 App. B.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EchoMode {
    /// Echo values it issued are accepted.
    Accept,
    /// No Echo value is ever accepted: every request is challenged.
    Never,
}

/// The server's contexts, with Echo support.
struct Store {
    list: ContextList,
    echo: EchoMode,
    issued: Vec<Vec<u8>>,
}

impl SecurityContexts for Store {
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
        let v = vec![0xec, 0x40, self.issued.len() as u8];
        self.issued.push(v.clone());
        Some(v)
    }
    fn verify_echo(&mut self, _id: usize, echo: &[u8]) -> bool {
        self.echo == EchoMode::Accept && self.issued.iter().any(|v| v == echo)
    }
}

/// A hop that serves its own authority when addressed as a forward proxy (CP §2.4 Step 4), so
/// that a request with an Outer Proxy-Uri reaches the application after its layer is removed.
struct SelfProxy;

impl HopPolicy for SelfProxy {
    fn forward_proxy(&self) -> bool {
        true
    }
    fn is_own_authority(&self, _request: &Message) -> bool {
        true
    }
}

#[derive(Default)]
struct Knobs {
    /// Flip a ciphertext bit in this many of the next responses.
    tamper: usize,
}

struct Shared {
    store: Store,
    knobs: Knobs,
    /// Every request as received (the OSCORE messages).
    raw: Vec<Message>,
    /// Every request as the application saw it (the layers removed).
    app: Vec<Message>,
    /// The body of the last Block1 upload.
    upload: Vec<u8>,
}

struct OscoreServer {
    addr: SocketAddr,
    endpoint: Endpoint,
    shared: Arc<Mutex<Shared>>,
}

impl OscoreServer {
    fn raw(&self) -> Vec<Message> {
        self.shared.lock().unwrap().raw.clone()
    }
    fn app(&self) -> Vec<Message> {
        self.shared.lock().unwrap().app.clone()
    }
    fn tamper(&self, n: usize) {
        self.shared.lock().unwrap().knobs.tamper = n;
    }
}

const LARGE: usize = 4096;

/// The application behind the OSCORE layer: `/hello`, `/echo` (POST, Block1), `/large`
/// (Block2), `/obs` (Observe, notifications sent by [`notify`]).
fn app(shared: &mut Shared, req: &Message) -> Message {
    match (req.code, req.path().as_str()) {
        (Code::GET, "/hello") => Message::response(Code::CONTENT).with_payload("Hello OSCORE"),
        (Code::POST, "/echo") => match block(req, num::BLOCK1) {
            None => {
                shared.upload = req.payload.clone();
                Message::response(Code::CHANGED).with_payload(format!("{} bytes", req.payload.len()))
            }
            Some(b) => {
                if b.num == 0 {
                    shared.upload.clear();
                }
                if shared.upload.len() != b.offset() {
                    return Message::response(Code::REQUEST_ENTITY_INCOMPLETE);
                }
                shared.upload.extend_from_slice(&req.payload);
                let ack = BlockValue { num: b.num, more: b.more, szx: b.szx };
                let mut m = if b.more {
                    Message::response(Code::CONTINUE)
                } else {
                    Message::response(Code::CHANGED).with_payload(format!("{} bytes", shared.upload.len()))
                };
                m.options.set_uint(num::BLOCK1, ack.to_uint());
                m
            }
        },
        (Code::GET, "/large") => block2_response(req, &body(LARGE, 7), 1024, None),
        (Code::GET, "/obs") => {
            let mut m = Message::response(Code::CONTENT).with_payload("n=0");
            if req.options.get_uint(num::OBSERVE) == Some(0) {
                m.options.set_uint(num::OBSERVE, 0);
            }
            m
        }
        _ => Message::response(Code::NOT_FOUND),
    }
}

/// Flips the last ciphertext bit (inside the AEAD tag) of a protected message.
fn tampered(mut m: Message) -> Message {
    if let Some(last) = m.payload.last_mut() {
        *last ^= 0x01;
    }
    m
}

/// An observer registered at the server: where notifications go and the layers to protect
/// them with (CP §2.5.1).
struct Observer {
    peer: SocketAddr,
    token: hopcore_codec::Token,
    layers: ServerStack<usize>,
}

/// Starts the OSCORE server with these contexts.
async fn oscore_server(
    list: ContextList,
    echo: EchoMode,
) -> (OscoreServer, tokio::sync::mpsc::UnboundedReceiver<Observer>) {
    let (endpoint, mut incoming) = Endpoint::bind(lo()).await.unwrap();
    let shared = Arc::new(Mutex::new(Shared {
        store: Store { list, echo, issued: Vec::new() },
        knobs: Knobs::default(),
        raw: Vec::new(),
        app: Vec::new(),
        upload: Vec::new(),
    }));
    let (obs_tx, obs_rx) = tokio::sync::mpsc::unbounded_channel();
    let ep = endpoint.clone();
    let sh = Arc::clone(&shared);
    tokio::spawn(async move {
        while let Some(req) = incoming.next().await {
            let handle: ResponseHandle = req.handle;
            let wire = {
                let mut guard = sh.lock().unwrap();
                let s = &mut *guard;
                s.raw.push(req.message.clone());
                match process_request(req.message, &mut s.store, &SelfProxy, &Limits::default()) {
                    Incoming::Deliver { request, mut layers } => {
                        s.app.push(request.clone());
                        let response = app(s, &request);
                        let wire = protect_response_layers(&response, &mut s.store, &mut layers).unwrap();
                        if response.options.contains(num::OBSERVE) {
                            let _ = obs_tx.send(Observer { peer: handle.peer, token: handle.token, layers });
                        }
                        wire
                    }
                    // RFC 8613 §8.2 errors go out unprotected (no layer removed); the Echo
                    // challenge is protected with the request's layer (App. B.1.2).
                    Incoming::Reply { response, mut layers, .. } => {
                        if layers.is_empty() {
                            response
                        } else {
                            protect_response_layers(&response, &mut s.store, &mut layers).unwrap()
                        }
                    }
                    Incoming::Forward { .. } => Message::response(Code::PROXYING_NOT_SUPPORTED),
                }
            };
            let wire = {
                let mut s = sh.lock().unwrap();
                if s.knobs.tamper > 0 {
                    s.knobs.tamper -= 1;
                    tampered(wire)
                } else {
                    wire
                }
            };
            ep.respond(handle, wire);
        }
    });
    (OscoreServer { addr: endpoint.local_addr(), endpoint, shared }, obs_rx)
}

/// The server's contexts: the peer of the client context, labelled ":client1".
fn server_list() -> ContextList {
    let mut list = ContextList::new();
    list.add(server_context(), ":client1");
    list
}

/// A client protecting every request with the client context, labelled "server".
async fn oscore_client(config: ClientConfig) -> (Client, Arc<OscoreProtector<ContextList>>) {
    let mut list = ContextList::new();
    let id = list.add(client_context(), "server");
    let protector = Arc::new(OscoreProtector::new(Arc::new(Mutex::new(list)), vec![id]));
    let (endpoint, _incoming) = Endpoint::bind(lo()).await.unwrap();
    (Client::with_security(endpoint, config, protector.clone()), protector)
}

fn get(path: &str) -> Message {
    let mut m = Message::request(Code::GET);
    m.set_path(path);
    m
}

/// Every raw request is an OSCORE request: POST or FETCH outside, OSCORE option, no Uri-Path.
fn assert_all_protected(raw: &[Message]) {
    for m in raw {
        assert!(m.options.contains(num::OSCORE), "unprotected request on the wire: {m:?}");
        assert!(matches!(m.code, Code::POST | Code::FETCH), "outer code {}", m.code);
        assert!(!m.options.contains(num::URI_PATH), "Uri-Path is Class E");
        assert!(!m.options.contains(num::BLOCK1) && !m.options.contains(num::BLOCK2), "inner block-wise only");
    }
}

fn short() -> ClientConfig {
    ClientConfig { request_timeout: Duration::from_secs(5), ..ClientConfig::default() }
}

#[tokio::test]
async fn get_is_protected_and_verified() {
    let (server, _) = oscore_server(server_list(), EchoMode::Accept).await;
    let (client, protector) = oscore_client(short()).await;
    assert_eq!(protector.describe(), "context 'server' (kid 01)");

    let resp = within(client.request(server.addr, get("/hello"))).await.unwrap();
    assert_eq!(resp.code, Code::CONTENT);
    assert_eq!(resp.payload, b"Hello OSCORE");
    assert!(!resp.options.contains(num::OSCORE), "the verified response has no OSCORE option");

    let raw = server.raw();
    assert_eq!(raw.len(), 1);
    assert_all_protected(&raw);
    assert!(raw[0].payload.len() > 8, "ciphertext with tag");
    let app = server.app();
    assert_eq!(app[0].code, Code::GET);
    assert_eq!(app[0].path(), "/hello");
    // The token on the wire is the one the endpoint tracked: the response arrived. Another
    // request works too (new Partial IV, the server's replay window accepts it).
    let resp = within(client.request(server.addr, get("/hello"))).await.unwrap();
    assert_eq!(resp.payload, b"Hello OSCORE");
    let raw = server.raw();
    assert_ne!(raw[0].options.get(num::OSCORE), raw[1].options.get(num::OSCORE), "new Partial IV");
    assert_ne!(raw[0].token, raw[1].token);
}

#[tokio::test]
async fn post_3000_bytes_goes_in_inner_block1_requests() {
    let (server, _) = oscore_server(server_list(), EchoMode::Accept).await;
    let (client, _) = oscore_client(short()).await;
    let payload = body(3000, 3);
    let mut req = Message::request(Code::POST);
    req.set_path("/echo");
    req.payload = payload.clone();
    let resp = within(client.request(server.addr, req)).await.unwrap();
    assert_eq!(resp.code, Code::CHANGED);
    assert_eq!(resp.payload, b"3000 bytes");
    assert_eq!(server.shared.lock().unwrap().upload, payload);

    // RFC 8613 §4.1.3.4.1: each block is its own OSCORE request, Block1 inside.
    let raw = server.raw();
    assert_eq!(raw.len(), 3, "3 blocks of 1024");
    assert_all_protected(&raw);
    let pivs: Vec<_> = raw.iter().map(|m| m.options.get(num::OSCORE).unwrap().to_vec()).collect();
    assert!(pivs[0] != pivs[1] && pivs[1] != pivs[2], "a Partial IV per block");
    let app = server.app();
    let nums: Vec<_> = app.iter().map(|m| block(m, num::BLOCK1).unwrap().num).collect();
    assert_eq!(nums, [0, 1, 2]);
    assert_eq!(app[0].options.get_uint(num::SIZE1), Some(3000));
}

#[tokio::test]
async fn get_4096_bytes_comes_in_inner_block2_responses() {
    let (server, _) = oscore_server(server_list(), EchoMode::Accept).await;
    let (client, _) = oscore_client(ClientConfig { block_size: 512, ..short() }).await;
    let resp = within(client.request(server.addr, get("/large"))).await.unwrap();
    assert_eq!(resp.code, Code::CONTENT);
    assert_eq!(resp.payload, body(LARGE, 7));
    assert!(!resp.options.contains(num::BLOCK2));

    let raw = server.raw();
    assert_eq!(raw.len(), 8, "8 blocks of 512");
    assert_all_protected(&raw);
    let app = server.app();
    let nums: Vec<_> = app.iter().map(|m| block(m, num::BLOCK2).unwrap().num).collect();
    assert_eq!(nums, (0..8).collect::<Vec<_>>());
}

/// Sends a notification on `obs`'s token, protected with its own Partial IV (CP §2.5.1).
fn notification(server: &OscoreServer, obs: &mut Observer, n: u32) -> Message {
    let mut m = Message::new(MsgType::Non, Code::CONTENT);
    m.token = obs.token;
    m.options.set_uint(num::OBSERVE, n);
    m.payload = format!("n={n}").into_bytes();
    let mut s = server.shared.lock().unwrap();
    protect_response_layers(&m, &mut s.store, &mut obs.layers).unwrap()
}

#[tokio::test]
async fn observe_with_three_verified_notifications() {
    let (server, mut observers) = oscore_server(server_list(), EchoMode::Accept).await;
    let (client_endpoint, _incoming) = Endpoint::bind(lo()).await.unwrap();
    let mut list = ContextList::new();
    let id = list.add(client_context(), "server");
    let protector = Arc::new(OscoreProtector::new(Arc::new(Mutex::new(list)), vec![id]));
    let client = Client::with_security(client_endpoint.clone(), short(), protector);

    let mut obs = within(client.observe(server.addr, get("/obs"))).await.unwrap();
    let first = within(obs.next()).await.unwrap().unwrap();
    assert_eq!(first.payload, b"n=0");
    assert!(first.options.contains(num::OBSERVE));
    let raw = server.raw();
    assert_eq!(raw.len(), 1);
    assert_all_protected(&raw);
    assert_eq!(raw[0].code, Code::FETCH, "RFC 8613 §4.1.3.5: FETCH outside with Observe");

    let mut o = within(observers.recv()).await.unwrap();
    let n1 = notification(&server, &mut o, 1);
    let n2 = notification(&server, &mut o, 2);
    let n3 = notification(&server, &mut o, 3);
    let sender = &server.endpoint;
    let to = o.peer;
    assert_eq!(to, client_endpoint.local_addr());
    // In order, with a forgery and a replay in between: both are dropped, the observation goes
    // on (RFC 8613 §8.4 step 8, §7.4.1).
    sender.send(to, n1.clone());
    tokio::time::sleep(Duration::from_millis(30)).await;
    sender.send(to, tampered(n2.clone()));
    tokio::time::sleep(Duration::from_millis(30)).await;
    sender.send(to, n1.clone());
    tokio::time::sleep(Duration::from_millis(30)).await;
    sender.send(to, n2);
    tokio::time::sleep(Duration::from_millis(30)).await;
    sender.send(to, n3);

    let mut got = Vec::new();
    for _ in 0..3 {
        let m = within(obs.next()).await.unwrap().unwrap();
        assert_eq!(m.code, Code::CONTENT);
        got.push(String::from_utf8(m.payload.clone()).unwrap());
    }
    assert_eq!(got, ["n=1", "n=2", "n=3"]);
    assert!(!obs.is_ended());
    obs.cancel().await;
}

#[tokio::test]
async fn a_tampered_response_is_dropped_and_reported() {
    let (server, _) = oscore_server(server_list(), EchoMode::Accept).await;
    let (client, _) = oscore_client(short()).await;
    server.tamper(1);
    let err = within(client.request(server.addr, get("/hello"))).await.unwrap_err();
    assert!(matches!(err, ClientError::Verification { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("response from {} failed OSCORE verification: ", server.addr)), "{text}");
    assert!(text.contains("decryption failed"), "{text}");
    // The next exchange is fine.
    let resp = within(client.request(server.addr, get("/hello"))).await.unwrap();
    assert_eq!(resp.payload, b"Hello OSCORE");
}

#[tokio::test]
async fn an_unprotected_401_is_reported_with_code_and_text() {
    // The server knows no context for the client's kid (RFC 8613 §8.2 step 2).
    let (server, _) = oscore_server(ContextList::new(), EchoMode::Accept).await;
    let (client, _) = oscore_client(short()).await;
    let err = within(client.request(server.addr, get("/hello"))).await.unwrap_err();
    match &err {
        ClientError::Unprotected { code, diagnostic, peer } => {
            assert_eq!(*code, Code::UNAUTHORIZED);
            assert_eq!(diagnostic, "Security context not found");
            assert_eq!(*peer, server.addr);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().starts_with("server answered unprotected 4.01 Unauthorized: Security context not found"),
        "{err}"
    );
    assert!(server.app().is_empty());
}

/// A server that lost its replay state (RFC 8613 §7.5.1, App. B.1.2).
fn unsynchronized_list() -> ContextList {
    let mut list = ContextList::new();
    list.add(server_context().with_replay_window(ReplayWindow::unsynchronized(32).unwrap()), ":client1");
    list
}

#[tokio::test]
async fn the_echo_challenge_is_answered_transparently() {
    let (server, _) = oscore_server(unsynchronized_list(), EchoMode::Accept).await;
    let (client, _) = oscore_client(short()).await;
    let resp = within(client.request(server.addr, get("/hello"))).await.unwrap();
    assert_eq!(resp.code, Code::CONTENT);
    assert_eq!(resp.payload, b"Hello OSCORE");
    let raw = server.raw();
    assert_eq!(raw.len(), 2, "the request and its repetition with Echo");
    assert_all_protected(&raw);
    assert_ne!(raw[0].token, raw[1].token, "the repetition is a new request");
    assert_eq!(server.app().len(), 1, "only the fresh request reached the application");
    // The window is synchronized now: no more challenges.
    let resp = within(client.request(server.addr, get("/hello"))).await.unwrap();
    assert_eq!(resp.payload, b"Hello OSCORE");
    assert_eq!(server.raw().len(), 3);
}

#[tokio::test]
async fn the_echo_challenge_in_the_middle_of_block1() {
    let (server, _) = oscore_server(unsynchronized_list(), EchoMode::Accept).await;
    let (client, _) = oscore_client(short()).await;
    let mut req = Message::request(Code::POST);
    req.set_path("/echo");
    req.payload = body(2500, 1);
    let resp = within(client.request(server.addr, req)).await.unwrap();
    assert_eq!(resp.payload, b"2500 bytes");
    assert_eq!(server.raw().len(), 4, "block 0 twice (challenge), then blocks 1 and 2");
}

#[tokio::test]
async fn the_echo_challenge_of_an_observe_registration() {
    let (server, _observers) = oscore_server(unsynchronized_list(), EchoMode::Accept).await;
    let (client, _) = oscore_client(short()).await;
    let mut obs = within(client.observe(server.addr, get("/obs"))).await.unwrap();
    let first = within(obs.next()).await.unwrap().unwrap();
    assert_eq!(first.payload, b"n=0");
    assert!(first.options.contains(num::OBSERVE));
    assert_eq!(server.raw().len(), 2);
}

#[tokio::test]
async fn a_second_challenge_is_an_error() {
    let (server, _) = oscore_server(unsynchronized_list(), EchoMode::Never).await;
    let (client, _) = oscore_client(short()).await;
    let err = within(client.request(server.addr, get("/hello"))).await.unwrap_err();
    assert_eq!(err, ClientError::EchoRepeated { peer: server.addr });
    assert_eq!(server.raw().len(), 2, "repeated once, not more");
    assert!(server.app().is_empty());
}

/// Through a forward proxy (here the server addresses itself, CP §2.4 Step 4), the oscore
/// layer decomposes the Proxy-Uri: scheme and authority stay Outer, the path goes Inner
/// (RFC 8613 §4.1.3.3).
#[tokio::test]
async fn proxy_uri_is_decomposed() {
    let (server, _) = oscore_server(server_list(), EchoMode::Accept).await;
    let (client, _) = oscore_client(short()).await;
    let uri = hopcore_codec::CoapUri::parse(&format!("coap://{}/hello", server.addr)).unwrap();
    let req = hopcore_endpoint::client::build_request(Code::GET, &uri, hopcore_endpoint::client::Target::ProxyUri);
    let resp = within(client.request(server.addr, req)).await.unwrap();
    assert_eq!(resp.payload, b"Hello OSCORE");
    let raw = server.raw();
    assert_eq!(raw[0].options.get_str(num::PROXY_URI), Some(format!("coap://{}", server.addr).as_str()));
    assert!(!raw[0].options.contains(num::URI_PATH));
    assert_eq!(server.app()[0].path(), "/hello");
}

/// Without a security hook nothing changes: the same server answers plain requests with 4.04
/// from its application, unprotected.
#[tokio::test]
async fn plain_client_unchanged() {
    let (server, _) = oscore_server(server_list(), EchoMode::Accept).await;
    let (endpoint, _incoming) = Endpoint::bind(lo()).await.unwrap();
    let client = Client::new(endpoint, short());
    assert!(client.protector().is_none());
    let resp = within(client.request(server.addr, get("/hello"))).await.unwrap();
    // A plain request reaches the application directly (CP §2.4 Step 5).
    assert_eq!(resp.payload, b"Hello OSCORE");
    assert!(!server.raw()[0].options.contains(num::OSCORE));
}

/// A route of two contexts (end-to-end first, then the hop's, CP §2.3): the server removes
/// both layers (CP §2.4 Step 6 twice) and protects the response with both in reverse order.
#[tokio::test]
async fn two_layers_end_to_end_first() {
    let hop_secret = [0x42u8; 16];
    let mut slist = server_list();
    slist.add(SecurityContext::derive(&ContextInput::new(&hop_secret, b"H", b"h")).unwrap(), ":hop");
    let (server, _) = oscore_server(slist, EchoMode::Accept).await;

    let mut list = ContextList::new();
    let e2e = list.add(client_context(), "server");
    let hop = list.add(SecurityContext::derive(&ContextInput::new(&hop_secret, b"h", b"H")).unwrap(), "hop");
    let protector = Arc::new(OscoreProtector::new(Arc::new(Mutex::new(list)), vec![e2e, hop]));
    assert_eq!(protector.describe(), "contexts 'server' (kid 01), 'hop' (kid 68) (end-to-end first)");
    let (endpoint, _incoming) = Endpoint::bind(lo()).await.unwrap();
    let client = Client::with_security(endpoint, short(), protector);

    let resp = within(client.request(server.addr, get("/large"))).await.unwrap();
    assert_eq!(resp.payload, body(LARGE, 7));
    let raw = server.raw();
    assert_all_protected(&raw);
    assert_eq!(raw.len(), 4);
    // The outer OSCORE option names the hop's context ('kid' "h").
    let outer = raw[0].options.get(num::OSCORE).unwrap();
    assert_eq!(outer.last(), Some(&b'h'));
}
