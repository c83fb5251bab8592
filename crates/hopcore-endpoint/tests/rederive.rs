//! RFC 8613 App. B.2 (context re-derivation) between the hopcore client hook
//! (`RederiveProtector`) and `OscoreServer::with_rederivation`, over real loopback sockets:
//! the client-initiated run, the runs the server starts (client or server lost the
//! re-derived context, sequence numbers exhausted, replay window lost), and the failure
//! cases (tampered request #2, a server context without the flag, old keys after a run).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopcore_codec::{num, Code, Message, MsgType, Token};
use hopcore_endpoint::client::security::{RederiveProtector, RederiveStart};
use hopcore_endpoint::client::{Client, ClientConfig, ClientError, OscoreProtector, RequestProtector};
use hopcore_endpoint::oscore_server::{OscoreServer, OscoreServerHandle};
use hopcore_endpoint::server::resource::{resource_fn, text};
use hopcore_endpoint::server::Server;
use hopcore_endpoint::{Endpoint, EndpointConfig, Tapped};
use hopcore_oscore::{Layer, OscoreOption, ReplayWindow, SecurityContext, SenderSequence, MAX_SEQUENCE_NUMBER};
use hopcore_security::rederive::{Initiator, KidContextEncoding};
use hopcore_security::{ContextId, ContextMeta, ContextParams, ContextStore};
use rand::rngs::OsRng;
use tokio::sync::mpsc;

const SECRET: [u8; 16] = [0x0f; 16];
const SALT: [u8; 8] = [0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40];
const CLIENT_ID: &[u8] = &[0x01];
const SERVER_ID: &[u8] = &[0x02];
const TIMEOUT: Duration = Duration::from_secs(5);

fn client_params() -> ContextParams {
    ContextParams::new(&SECRET, CLIENT_ID, SERVER_ID).with_master_salt(&SALT)
}

fn server_params() -> ContextParams {
    ContextParams::new(&SECRET, SERVER_ID, CLIENT_ID).with_master_salt(&SALT)
}

/// A volatile store with the preestablished context of `params`, re-derivable if `flag`;
/// `adjust` changes the derived context before it goes in (state-loss scenarios).
fn store_with(
    params: ContextParams,
    label: &str,
    flag: bool,
    adjust: impl FnOnce(SecurityContext) -> SecurityContext,
) -> (Arc<Mutex<ContextStore>>, ContextId) {
    let mut store = ContextStore::volatile();
    let id = store.add(adjust(params.derive().unwrap()), ContextMeta::new(label)).unwrap();
    store.set_params(id, params).unwrap();
    store.set_rederive(id, flag).unwrap();
    (Arc::new(Mutex::new(store)), id)
}

struct TestServer {
    handle: OscoreServerHandle<ContextStore>,
    store: Arc<Mutex<ContextStore>>,
    id: ContextId,
    /// How often /hello ran (requests the application acted on).
    served: Arc<AtomicUsize>,
}

impl TestServer {
    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }
    fn id_context(&self) -> Option<Vec<u8>> {
        self.store.lock().unwrap().get(self.id).unwrap().id_context().map(<[u8]>::to_vec)
    }
    fn keys(&self) -> Vec<u8> {
        self.store.lock().unwrap().get(self.id).unwrap().recipient_key().to_vec()
    }
}

async fn server_with(flag: bool, adjust: impl FnOnce(SecurityContext) -> SecurityContext) -> TestServer {
    let (store, id) = store_with(server_params(), ":client1", flag, adjust);
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let mut resources = Server::new();
    resources.add_resource(
        "/hello",
        resource_fn(move |_req| {
            counter.fetch_add(1, Ordering::SeqCst);
            text("Hello, B.2")
        }),
    );
    resources.add_resource("/who", resource_fn(|req| text(req.identity.clone().unwrap_or_else(|| "-".into()))));
    let handle = OscoreServer::with_shared_contexts(resources, store.clone())
        .require_oscore("/")
        .with_rederivation()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    TestServer { handle, store, id, served }
}

async fn server(flag: bool) -> TestServer {
    server_with(flag, |c| c).await
}

/// A client endpoint whose datagrams are copied to the returned receiver.
async fn tapped_endpoint() -> (Endpoint, mpsc::UnboundedReceiver<Tapped>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let config = EndpointConfig { tap: Some(tx), ..EndpointConfig::default() };
    let (endpoint, _incoming) = Endpoint::bind_with("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    (endpoint, rx)
}

fn get(path: &str) -> Message {
    let mut m = Message::request(Code::GET);
    m.set_path(path);
    m
}

/// The 'kid context' of each OSCORE message (`None`: absent), in order.
type KidContexts = Vec<Option<Vec<u8>>>;

/// The kid contexts of the tapped OSCORE datagrams, split into requests the client sent and
/// responses it received.
fn oscore_options(rx: &mut mpsc::UnboundedReceiver<Tapped>) -> (KidContexts, KidContexts) {
    let (mut requests, mut responses) = (Vec::new(), Vec::new());
    while let Ok(t) = rx.try_recv() {
        let Ok(m) = Message::parse(&t.bytes) else { continue };
        let Some(value) = m.options.get(num::OSCORE) else { continue };
        let kid_context = OscoreOption::parse(value).unwrap().kid_context.map(<[u8]>::to_vec);
        if m.code.is_request() {
            requests.push(kid_context);
        } else if m.code.is_response() {
            responses.push(kid_context);
        }
    }
    (requests, responses)
}

fn client(endpoint: Endpoint, protector: Arc<RederiveProtector<ContextStore>>) -> Client {
    let config = ClientConfig { request_timeout: TIMEOUT, ..ClientConfig::default() };
    Client::with_security(endpoint, config, protector)
}

#[tokio::test]
async fn client_initiated_run_replaces_the_context_on_both_sides() {
    let server = server(true).await;
    let old_server_keys = server.keys();
    let (store, id) = store_with(client_params(), "server", true, |c| c);
    let old_client_key = store.lock().unwrap().get(id).unwrap().sender_key().to_vec();
    let protector = Arc::new(RederiveProtector::new(store.clone(), id));
    assert!(protector.rederivable());
    let (endpoint, mut tap) = tapped_endpoint().await;

    let (run, response) = protector.rederive(&endpoint, server.addr(), &get("/hello"), TIMEOUT).await.unwrap();
    // Request #2 is served normally; request #1 is not acted on (App. B.2 step 2, 4).
    assert_eq!(response.code, Code::CONTENT);
    assert_eq!(response.payload, b"Hello, B.2");
    assert_eq!(server.served.load(Ordering::SeqCst), 1);
    assert_eq!(run.started_by, RederiveStart::Client);

    // The wire: request #1 carries bstr(R1), response #1 bstr(R2), request #2 bstr(R2 || R3)
    // (CBOR bstr is the library default), response #2 no kid context.
    let (requests, responses) = oscore_options(&mut tap);
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(responses.len(), 2, "{responses:?}");
    let enc = KidContextEncoding::CborBstr;
    let kc1 = requests[0].clone().expect("request #1 has a kid context");
    assert_eq!(kc1[0], 0x48, "bstr of 8 bytes");
    let r1 = enc.decode(&kc1).unwrap();
    let kc_r2 = responses[0].clone().expect("response #1 has a kid context");
    assert_eq!(kc_r2[0], 0x48);
    let r2 = enc.decode(&kc_r2).unwrap();
    let kc3 = requests[1].clone().expect("request #2 has a kid context");
    assert_eq!(kc3[0], 0x50, "bstr of 16 bytes");
    let id3 = enc.decode(&kc3).unwrap();
    assert_eq!(id3.len(), 16);
    assert_eq!(&id3[..8], &r2[..], "ID3 = R2 || R3");
    assert_ne!(&id3[8..], &r1[..]);
    assert_eq!(responses[1], None);

    // Both sides now use ID Context R2 || R3, with new keys.
    assert_eq!(run.id_context, id3);
    assert_eq!(server.id_context(), Some(id3.clone()));
    let client_ctx_id = store.lock().unwrap().get(id).unwrap().id_context().map(<[u8]>::to_vec);
    assert_eq!(client_ctx_id, Some(id3.clone()));
    assert_ne!(server.keys(), old_server_keys);
    assert_ne!(store.lock().unwrap().get(id).unwrap().sender_key(), &old_client_key[..]);
    assert!(protector.describe().contains("re-derived (started by the client)"), "{}", protector.describe());

    // Ordinary requests continue with the new context (kid context R2 || R3 as it is).
    let c = client(endpoint, protector.clone());
    let who = c.request(server.addr(), get("/who")).await.unwrap();
    assert_eq!(who.payload, b":client1");
    let (requests, _) = oscore_options(&mut tap);
    assert_eq!(requests, vec![Some(id3.clone())]);

    // The old keys stop working: a client still holding the preestablished context (without
    // the flag, so it cannot follow the server's B.2 challenge) gets nothing served.
    let mut old = ContextStore::volatile();
    let old_id = old.add(client_params().derive().unwrap(), ContextMeta::new("server")).unwrap();
    let old = Arc::new(Mutex::new(old));
    let (old_endpoint, _) = tapped_endpoint().await;
    let config = ClientConfig { request_timeout: TIMEOUT, ..ClientConfig::default() };
    let old_client = Client::with_security(old_endpoint, config, Arc::new(OscoreProtector::new(old, vec![old_id])));
    let err = old_client.request(server.addr(), get("/hello")).await.unwrap_err();
    assert!(matches!(err, ClientError::Verification { .. } | ClientError::Unprotected { .. }), "{err}");
    assert_eq!(server.served.load(Ordering::SeqCst), 1, "nothing served with the old keys");
    assert_eq!(server.id_context(), Some(id3), "the old keys changed nothing");
    server.handle.shutdown();
}

/// Sends one protected message as it is and returns the response.
async fn send_raw(endpoint: &Endpoint, peer: SocketAddr, mut wire: Message, token: u8) -> Message {
    wire.token = Token::from_slice(&[token, 0xb2]).unwrap();
    wire.mtype = MsgType::Con;
    tokio::time::timeout(TIMEOUT, endpoint.request(peer, wire)).await.unwrap().unwrap()
}

#[tokio::test]
async fn tampered_request_2_leaves_the_old_context_in_place() {
    let server = server(true).await;
    let old_keys = server.keys();
    let (endpoint, _) = tapped_endpoint().await;
    let layer = Layer::RFC8613;
    let mut initiator = Initiator::new(client_params(), &mut OsRng).unwrap();
    let (req1, mut b1) = initiator.protect_request1(&get("/hello"), &layer).unwrap();
    let resp1 = send_raw(&endpoint, server.addr(), req1, 1).await;
    let verified = initiator.on_response1(&resp1, &mut b1, &layer, &mut OsRng).unwrap();
    assert_eq!(verified.code, Code::UNAUTHORIZED);
    assert_eq!(server.served.load(Ordering::SeqCst), 0, "request #1 is not acted on");

    // Request #2 with one ciphertext bit flipped: rejected (RFC 8613 §8.2), nothing replaced.
    let (req2, mut b2) = initiator.protect_request2(&get("/hello"), &layer).unwrap();
    let mut bad = req2.clone();
    if let Some(b) = bad.payload.last_mut() {
        *b ^= 0x01;
    }
    let answer = send_raw(&endpoint, server.addr(), bad, 2).await;
    assert!(answer.code.class() == 4, "{}", answer.code);
    assert!(!answer.options.contains(num::OSCORE), "an unprotected §8.2 error");
    assert_eq!(server.keys(), old_keys);
    assert_eq!(server.id_context(), None);
    assert_eq!(server.served.load(Ordering::SeqCst), 0);

    // The old context still works...
    let (store, id) = store_with(client_params(), "server", false, |c| c.with_sequence(SenderSequence::volatile(100)));
    let config = ClientConfig { request_timeout: TIMEOUT, ..ClientConfig::default() };
    let (plain_endpoint, _) = tapped_endpoint().await;
    let old_client = Client::with_security(plain_endpoint, config, Arc::new(OscoreProtector::new(store, vec![id])));
    let hello = old_client.request(server.addr(), get("/hello")).await.unwrap();
    assert_eq!(hello.payload, b"Hello, B.2");

    // ... and the genuine request #2 still completes the run (R2 stays cached).
    let resp2 = send_raw(&endpoint, server.addr(), req2, 3).await;
    let done = initiator.on_response2(&resp2, &mut b2, &layer).unwrap();
    assert_eq!(done.payload, b"Hello, B.2");
    let ctx = initiator.finish().unwrap();
    assert_eq!(server.id_context(), ctx.id_context().map(<[u8]>::to_vec));
    assert_ne!(server.keys(), old_keys);
    server.handle.shutdown();
}

#[tokio::test]
async fn replayed_request_2_is_not_served_again() {
    let server = server(true).await;
    let (endpoint, _) = tapped_endpoint().await;
    let layer = Layer::RFC8613;
    let mut initiator = Initiator::new(client_params(), &mut OsRng).unwrap();
    let (req1, mut b1) = initiator.protect_request1(&get("/hello"), &layer).unwrap();
    let resp1 = send_raw(&endpoint, server.addr(), req1, 1).await;
    initiator.on_response1(&resp1, &mut b1, &layer, &mut OsRng).unwrap();
    let (req2, _) = initiator.protect_request2(&get("/hello"), &layer).unwrap();
    let resp2 = send_raw(&endpoint, server.addr(), req2.clone(), 2).await;
    assert!(resp2.options.contains(num::OSCORE));
    assert_eq!(server.served.load(Ordering::SeqCst), 1);
    let installed = server.id_context();
    // "The server MUST NOT accept replayed request #2 messages" (new token, same message).
    let replay = send_raw(&endpoint, server.addr(), req2, 3).await;
    assert!(replay.code.class() == 4, "{}", replay.code);
    assert_eq!(server.served.load(Ordering::SeqCst), 1);
    assert_eq!(server.id_context(), installed);
    server.handle.shutdown();
}

#[tokio::test]
async fn a_server_context_without_the_flag_refuses() {
    let server = server(false).await;
    let old_keys = server.keys();
    let (store, id) = store_with(client_params(), "server", true, |c| c);
    let protector = RederiveProtector::new(store.clone(), id);
    let (endpoint, _) = tapped_endpoint().await;
    let err = protector.rederive(&endpoint, server.addr(), &get("/hello"), TIMEOUT).await.unwrap_err();
    // RFC 8613 §8.2 step 2: no context for this kid context.
    assert!(matches!(err, ClientError::Unprotected { code: Code::UNAUTHORIZED, .. }), "{err}");
    assert_eq!(server.keys(), old_keys);
    assert_eq!(store.lock().unwrap().get(id).unwrap().id_context(), None, "the client keeps its context");
    // The context still works as it is.
    let hello = client(endpoint, Arc::new(protector)).request(server.addr(), get("/hello")).await.unwrap();
    assert_eq!(hello.payload, b"Hello, B.2");
    server.handle.shutdown();
}

#[tokio::test]
async fn a_client_context_without_the_flag_does_not_start() {
    let server = server(true).await;
    let (store, id) = store_with(client_params(), "server", false, |c| c);
    let protector = RederiveProtector::new(store, id);
    assert!(!protector.rederivable());
    let (endpoint, mut tap) = tapped_endpoint().await;
    let err = protector.rederive(&endpoint, server.addr(), &get("/hello"), TIMEOUT).await.unwrap_err();
    assert!(matches!(err, ClientError::Protect { .. }), "{err}");
    assert!(err.to_string().contains("rederive = true"), "{err}");
    assert_eq!(oscore_options(&mut tap), (vec![], vec![]), "nothing sent");
    server.handle.shutdown();
}

/// A flagged client with the preestablished context against a server that holds a re-derived
/// one (the client restarted): the server starts B.2 and the client completes it inside one
/// `Client::request`.
#[tokio::test]
async fn server_initiated_when_the_client_lost_the_rederived_context() {
    let server = server(true).await;
    let (first_store, first_id) = store_with(client_params(), "server", true, |c| c);
    let first = RederiveProtector::new(first_store, first_id);
    let (endpoint, _) = tapped_endpoint().await;
    let (run1, _) = first.rederive(&endpoint, server.addr(), &get("/hello"), TIMEOUT).await.unwrap();
    assert_eq!(server.id_context(), Some(run1.id_context.clone()));

    // A new client process: preestablished context again (later sequence numbers, as a
    // durable store would give).
    let (store, id) = store_with(client_params(), "server", true, |c| c.with_sequence(SenderSequence::volatile(50)));
    let protector = Arc::new(RederiveProtector::new(store.clone(), id));
    let (endpoint, mut tap) = tapped_endpoint().await;
    let c = client(endpoint, protector.clone());
    let hello = c.request(server.addr(), get("/hello")).await.unwrap();
    assert_eq!(hello.payload, b"Hello, B.2");
    let run2 = protector.last_rederivation().expect("a run completed");
    assert_eq!(run2.started_by, RederiveStart::Server);
    assert_ne!(run2.id_context, run1.id_context);
    assert_eq!(server.id_context(), Some(run2.id_context.clone()));
    assert_eq!(store.lock().unwrap().get(id).unwrap().id_context(), Some(&run2.id_context[..]));
    // On the wire: the ordinary request (no kid context), response #1 (R2), request #2
    // (bstr(R2 || R3)), response #2. The Echo marker never went out.
    let (requests, responses) = oscore_options(&mut tap);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0], None);
    let r2 = KidContextEncoding::CborBstr.decode(responses[0].as_deref().unwrap()).unwrap();
    let id3 = KidContextEncoding::CborBstr.decode(requests[1].as_deref().unwrap()).unwrap();
    assert_eq!(&id3[..r2.len()], &r2[..]);
    assert_eq!(id3, run2.id_context);
    // Two requests served in all: request #2 of each run.
    assert_eq!(server.served.load(Ordering::SeqCst), 2);
    // And the next request goes straight through.
    let who = c.request(server.addr(), get("/who")).await.unwrap();
    assert_eq!(who.payload, b":client1");
    server.handle.shutdown();
}

/// The server restarted and lost the re-derived context; the client still has it and sends
/// its ID Context as kid context: the server starts B.2 with that ID Context as ID1.
#[tokio::test]
async fn server_initiated_when_the_server_lost_the_rederived_context() {
    let first = server(true).await;
    let (store, id) = store_with(client_params(), "server", true, |c| c);
    let protector = Arc::new(RederiveProtector::new(store.clone(), id));
    let (endpoint, _) = tapped_endpoint().await;
    let (run1, _) = protector.rederive(&endpoint, first.addr(), &get("/hello"), TIMEOUT).await.unwrap();
    first.handle.shutdown();

    let restarted = server(true).await;
    assert_eq!(restarted.id_context(), None);
    let c = client(endpoint, protector.clone());
    let hello = c.request(restarted.addr(), get("/hello")).await.unwrap();
    assert_eq!(hello.payload, b"Hello, B.2");
    let run2 = protector.last_rederivation().unwrap();
    assert_eq!(run2.started_by, RederiveStart::Server);
    assert_ne!(run2.id_context, run1.id_context);
    assert_eq!(restarted.id_context(), Some(run2.id_context));
    restarted.handle.shutdown();
}

#[tokio::test]
async fn server_initiated_when_its_sequence_numbers_are_exhausted() {
    // RFC 8613 §7.2.1: the server's Sender Context is used up.
    let server = server_with(true, |c| c.with_sequence(SenderSequence::volatile(MAX_SEQUENCE_NUMBER + 1))).await;
    let (store, id) = store_with(client_params(), "server", true, |c| c);
    let protector = Arc::new(RederiveProtector::new(store, id));
    let (endpoint, _) = tapped_endpoint().await;
    let hello = client(endpoint, protector.clone()).request(server.addr(), get("/hello")).await.unwrap();
    assert_eq!(hello.payload, b"Hello, B.2");
    assert_eq!(protector.last_rederivation().unwrap().started_by, RederiveStart::Server);
    let store = server.store.lock().unwrap();
    let ctx = store.get(server.id).unwrap();
    assert!(!ctx.sequence().is_exhausted());
    assert!(ctx.id_context().is_some());
    drop(store);
    server.handle.shutdown();
}

#[tokio::test]
async fn server_initiated_when_its_replay_window_was_lost() {
    // RFC 8613 App. B.2: "the server has lost part of its security context, e.g., ... Replay
    // Window" (instead of the App. B.1.2 Echo exchange for this context).
    let server = server_with(true, |c| c.with_replay_window(ReplayWindow::unsynchronized(32).unwrap())).await;
    let (store, id) = store_with(client_params(), "server", true, |c| c);
    let protector = Arc::new(RederiveProtector::new(store, id));
    let (endpoint, _) = tapped_endpoint().await;
    let hello = client(endpoint, protector.clone()).request(server.addr(), get("/hello")).await.unwrap();
    assert_eq!(hello.payload, b"Hello, B.2");
    assert_eq!(protector.last_rederivation().unwrap().started_by, RederiveStart::Server);
    assert!(server.store.lock().unwrap().replay_synchronized(server.id));
    assert_eq!(server.served.load(Ordering::SeqCst), 1);
    server.handle.shutdown();
}

#[tokio::test]
async fn too_many_parallel_runs_get_an_unprotected_5_03() {
    let server = server(true).await;
    let (endpoint, _) = tapped_endpoint().await;
    let layer = Layer::RFC8613;
    // hopcore_security::rederive::DEFAULT_MAX_PENDING runs are cached, the next is refused.
    let mut codes = Vec::new();
    for token in 0..=hopcore_security::rederive::DEFAULT_MAX_PENDING as u8 {
        let mut initiator = Initiator::new(client_params(), &mut OsRng).unwrap();
        let (req1, _) = initiator.protect_request1(&get("/hello"), &layer).unwrap();
        let answer = send_raw(&endpoint, server.addr(), req1, token).await;
        codes.push((answer.code, answer.options.contains(num::OSCORE)));
    }
    let (last, rest) = codes.split_last().unwrap();
    assert!(rest.iter().all(|&(code, protected)| code == Code::CHANGED && protected), "{codes:?}");
    // App. B.2.1: "it may respond with an unprotected 5.03 (Service Unavailable)".
    assert_eq!(*last, (Code::SERVICE_UNAVAILABLE, false));
    assert_eq!(server.id_context(), None);
    server.handle.shutdown();
}
