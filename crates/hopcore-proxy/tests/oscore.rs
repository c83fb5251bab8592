//! The proxy as an OSCORE endpoint (draft-ietf-core-oscore-capable-proxies, "CP") on loopback
//! sockets: an origin built on `OscoreServer`, a client that applies its layers with the
//! nesting engine (`protect_route_request` / `unprotect_response_layers`) over
//! `Endpoint::request`, and the proxy in between. Every test is bounded by timeouts.
//!
//! Contexts, with the Sender IDs of CP's examples:
//! - C-S (end to end): the client sends with 0x5f, the origin with 0x05;
//! - C-P: the client sends with 0x20, the proxy with 0x02 (the proxy knows it as ":client1");
//! - P-S: the proxy sends with 0xd4, the origin with 0x04 (the origin knows it as ":proxy").
//!
//! Seed 001's configurations CF-0 … CF-7: bits (b2 b1 b0) = OSCORE on C-S, P-S, C-P.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopcore_codec::{num, BlockValue, CoapUri, Code, Message, Token};
use hopcore_endpoint::oscore_server::{OscoreServer, OscoreServerHandle};
use hopcore_endpoint::server::demo::{demo_server, large_payload};
use hopcore_endpoint::server::resource::text;
use hopcore_endpoint::server::{resource_fn, Attributes};
use hopcore_endpoint::{Endpoint, Incoming};
use hopcore_layers::{
    protect_request_layers, protect_route_request, unprotect_response_layers, AppliedLayer, ClientStack, ContextList,
    LayerError, Route as ClientRoute, RouteProxy, SecurityContexts,
};
use hopcore_oscore::{protect_request, ContextInput, Layer, NestedClasses, OscoreOption, SecurityContext};
use hopcore_proxy::{Exchange, Proxy, ProxyConfig, ProxySecurity, Route};
use hopcore_security::{ContextId, ContextMeta, ContextStore};

const LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("test timed out")
}

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn ctx(secret: u8, sender: &[u8], recipient: &[u8]) -> SecurityContext {
    SecurityContext::derive(&ContextInput::new(&[secret; 16], sender, recipient).master_salt(&[0x9e, 0x7c])).unwrap()
}

const C_S: u8 = 0xa1;
const C_P: u8 = 0xb2;
const P_S: u8 = 0xc3;
const C_P2: u8 = 0xd4;
const C_S2: u8 = 0xe5;

// ---- the origin --------------------------------------------------------------------------------

struct Origin {
    handle: OscoreServerHandle<ContextList>,
    counter: Arc<AtomicU32>,
}

impl Origin {
    /// The demo resources, /whoami (the innermost layer's label, "-" for plain) and /obs
    /// (observable, "n=<counter>"); contexts for the client (C-S) and the proxy (P-S).
    async fn start() -> Origin {
        let mut contexts = ContextList::new();
        contexts.add(ctx(C_S, &[0x05], &[0x5f]), ":client");
        contexts.add(ctx(P_S, &[0x04], &[0xd4]), ":proxy");
        contexts.add(ctx(C_S2, &[0x06], &[0x5e]), ":client-b");
        Origin::start_with(contexts).await
    }

    async fn start_with(contexts: ContextList) -> Origin {
        let counter = Arc::new(AtomicU32::new(0));
        let c = counter.clone();
        let mut s = demo_server();
        s.add_resource("/whoami", resource_fn(|req| text(req.identity.clone().unwrap_or_else(|| "-".into()))));
        s.add_resource(
            "/obs",
            resource_fn(move |_| text(format!("n={}", c.load(Ordering::SeqCst))))
                .with_attributes(Attributes::new().observable()),
        );
        let handle = OscoreServer::new(s, contexts).start(lo()).await.unwrap();
        Origin { handle, counter }
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    fn uri(&self, path: &str) -> CoapUri {
        CoapUri::parse(&format!("coap://{}{path}", self.addr())).unwrap()
    }

    fn change(&self) {
        self.counter.fetch_add(1, Ordering::SeqCst);
        self.handle.notifier().notify("/obs");
    }
}

// ---- the proxy ---------------------------------------------------------------------------------

/// The proxy's contexts: its clients ":client1" (C-P) and ":client2", and the origin ("server",
/// P-S). Shared by every proxy of a test, so that sequence numbers keep increasing.
struct ProxyContexts {
    store: Arc<Mutex<ContextStore>>,
    client1: ContextId,
    client2: ContextId,
    server: ContextId,
}

impl ProxyContexts {
    fn new() -> ProxyContexts {
        let mut store = ContextStore::volatile();
        let client1 = store.add(ctx(C_P, &[0x02], &[0x20]), ContextMeta::new(":client1")).unwrap();
        let client2 = store.add(ctx(C_P2, &[0x03], &[0x21]), ContextMeta::new(":client2")).unwrap();
        let server = store.add(ctx(P_S, &[0xd4], &[0x04]), ContextMeta::new("server")).unwrap();
        ProxyContexts { store: Arc::new(Mutex::new(store)), client1, client2, server }
    }

    /// Both clients; the origin at `origin` as next hop if `p_s`.
    fn security(&self, origin: SocketAddr, p_s: bool) -> ProxySecurity {
        let sec = ProxySecurity::shared(self.store.clone()).with_client(self.client1).with_client(self.client2);
        if p_s {
            sec.with_upstream(format!("coap://{origin}/*"), self.server)
        } else {
            sec
        }
    }
}

struct RunningProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningProxy {
    async fn start(cfg: ProxyConfig, sec: Option<ProxySecurity>) -> RunningProxy {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let mut proxy = Proxy::new(cfg);
        if let Some(sec) = sec {
            proxy = proxy.with_security(sec).unwrap();
        }
        let bound = proxy.on_exchange(move |e| l.lock().unwrap().push(e.clone())).bind(lo()).await.unwrap();
        let addr = bound.local_addr();
        let task = tokio::spawn(bound.run());
        RunningProxy { addr, log, task }
    }

    fn uri(&self) -> CoapUri {
        CoapUri::parse(&format!("coap://{}", self.addr)).unwrap()
    }

    /// The exchanges recorded so far.
    fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }

    fn last(&self) -> Exchange {
        self.exchanges().last().cloned().expect("an exchange was recorded")
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---- the client --------------------------------------------------------------------------------

struct Client {
    endpoint: Endpoint,
    _incoming: Incoming,
    contexts: ContextList,
    e2e: usize,
    proxy: usize,
    proxy2: usize,
}

impl Client {
    /// The first client: ":client" at the origin, ":client1" at the proxy (and ":client2"
    /// as `proxy2`).
    async fn new() -> Client {
        let (endpoint, incoming) = Endpoint::bind(lo()).await.unwrap();
        let mut contexts = ContextList::new();
        let e2e = contexts.add(ctx(C_S, &[0x5f], &[0x05]), "e2e");
        let proxy = contexts.add(ctx(C_P, &[0x20], &[0x02]), "proxy");
        let proxy2 = contexts.add(ctx(C_P2, &[0x21], &[0x03]), "proxy-inner");
        Client { endpoint, _incoming: incoming, contexts, e2e, proxy, proxy2 }
    }

    /// A second client with contexts of its own: ":client-b" at the origin, ":client2" at the
    /// proxy.
    async fn second() -> Client {
        let (endpoint, incoming) = Endpoint::bind(lo()).await.unwrap();
        let mut contexts = ContextList::new();
        let e2e = contexts.add(ctx(C_S2, &[0x5e], &[0x06]), "e2e");
        let proxy = contexts.add(ctx(C_P2, &[0x21], &[0x03]), "proxy");
        Client { endpoint, _incoming: incoming, contexts, e2e, proxy, proxy2: proxy }
    }

    /// The request for `target` through the forward proxy at `proxy`, with the end-to-end
    /// layer if `c_s` and the layer for the proxy if `c_p` (CP §2.3, the lead's route builder).
    fn build(
        &mut self,
        req: &Message,
        target: &CoapUri,
        proxy: &CoapUri,
        c_s: bool,
        c_p: bool,
    ) -> (Message, ClientStack<usize>) {
        let route = ClientRoute {
            proxies: vec![RouteProxy { uri: proxy.clone(), context: c_p.then_some(self.proxy) }],
            origin_context: c_s.then_some(self.e2e),
            proxy_uri_form: false,
        };
        protect_route_request(req, target, &route, &mut self.contexts, 8).unwrap()
    }

    async fn send(&self, to: SocketAddr, wire: Message) -> Message {
        tokio::time::timeout(Duration::from_secs(10), self.endpoint.request(to, wire))
            .await
            .expect("a response in time")
            .expect("a response")
    }

    /// `req` (with its proxy options) protected for the proxy twice: ":client2"'s layer
    /// inside, ":client1"'s outside; the proxy options and the inner OSCORE option are Class E
    /// in both (CP §2.2: the proxy consumes them).
    fn two_layers_for_the_proxy(&mut self, req: &Message) -> (Message, ClientStack<usize>) {
        let for_proxy = |n: u16, _| match n {
            num::PROXY_SCHEME | num::URI_HOST | num::URI_PORT | num::OSCORE => hopcore_codec::OscoreClass::E,
            n => hopcore_codec::Registry::standard().oscore_class(n),
        };
        let mut stack = ClientStack::default();
        let mut msg = req.clone();
        for (id, label) in [(self.proxy2, "proxy-inner"), (self.proxy, "proxy")] {
            let c = self.contexts.prepare_send(id).unwrap();
            let (m, binding) = protect_request(&msg, c, &Layer::RFC8613.with_classes(&for_proxy)).unwrap();
            stack.layers.push(AppliedLayer { context: id, label: label.into(), binding });
            msg = m;
        }
        (msg, stack)
    }

    fn verify(&mut self, raw: &Message, stack: &mut ClientStack<usize>) -> Result<Message, LayerError> {
        unprotect_response_layers(raw, &mut self.contexts, stack)
    }
}

fn get() -> Message {
    Message::request(Code::GET)
}

fn payload(m: &Message) -> String {
    String::from_utf8_lossy(&m.payload).into_owned()
}

// ---- CF-0 … CF-7 ---------------------------------------------------------------------------------

/// Seed 001 §3: every configuration through one forward proxy. The origin's /whoami names the
/// innermost layer it removed; the proxy's record names the layers it removed and added.
#[tokio::test]
async fn all_eight_configurations_through_one_forward_proxy() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let mut client = Client::new().await;
        for cf in 0u8..8 {
            let (c_s, p_s, c_p) = (cf & 4 != 0, cf & 2 != 0, cf & 1 != 0);
            let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), p_s))).await;
            let (wire, mut stack) = client.build(&get(), &origin.uri("/whoami"), &proxy.uri(), c_s, c_p);
            if c_p {
                // CP §2.2: the proxy options travel inside the C-P layer.
                for n in [num::PROXY_SCHEME, num::URI_HOST, num::URI_PORT, num::URI_PATH] {
                    assert!(!wire.options.contains(n), "CF-{cf}: option {n} visible on the C-P leg");
                }
            } else {
                assert!(wire.options.contains(num::PROXY_SCHEME), "CF-{cf}");
            }
            let raw = client.send(proxy.addr, wire).await;
            assert_eq!(raw.options.contains(num::OSCORE), c_s || c_p, "CF-{cf}: protection towards the client");
            let resp = client.verify(&raw, &mut stack).unwrap_or_else(|e| panic!("CF-{cf}: {e}"));
            assert_eq!(resp.code, Code::CONTENT, "CF-{cf}: {}", payload(&resp));
            let identity = if c_s {
                ":client"
            } else if p_s {
                ":proxy"
            } else {
                "-"
            };
            assert_eq!(payload(&resp), identity, "CF-{cf}: the origin's innermost layer");

            let e = proxy.last();
            assert_eq!(e.layers_in, if c_p { strings(&[":client1"]) } else { vec![] }, "CF-{cf}");
            assert_eq!(e.layers_out, if p_s { strings(&["server"]) } else { vec![] }, "CF-{cf}");
            // With C-S the proxy only sees the Outer code (RFC 8613 §4.2).
            assert_eq!(e.code, if c_s { Code::CHANGED } else { Code::CONTENT }, "CF-{cf}");
            assert_eq!(e.method, if c_s { Code::POST } else { Code::GET }, "CF-{cf}: the method the proxy sees");
            let target = e.target.expect("forwarded");
            // The path is encrypted end to end with C-S (CP §2.2).
            let path = if c_s { "/" } else { "/whoami" };
            assert_eq!(target, format!("coap://{}{path}", origin.addr()), "CF-{cf}");
        }
        origin.handle.shutdown();
    })
    .await;
}

/// CP "With Forward-Proxy; OSCORE: C-S, C-P": what the proxy relays is the end-to-end
/// protected request with the outer proxy options consumed; the response is wrapped in C-P
/// (Outer 2.04, an inner OSCORE option under C-P).
#[tokio::test]
async fn c_s_and_c_p_response_nests_the_end_to_end_layer() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), false))).await;
        let mut client = Client::new().await;
        let (wire, mut stack) = client.build(&get(), &origin.uri("/hello"), &proxy.uri(), true, true);
        let raw = client.send(proxy.addr, wire).await;
        assert_eq!(raw.code, Code::CHANGED, "Outer 2.04 (RFC 8613 §4.2)");
        let resp = client.verify(&raw, &mut stack).unwrap();
        assert_eq!((resp.code, payload(&resp).as_str()), (Code::CONTENT, "Hello from hopcore"));
        origin.handle.shutdown();
    })
    .await;
}

// ---- reverse proxy -------------------------------------------------------------------------------

/// CP "With Reverse-Proxy; OSCORE: C-P, P-S": the client addresses "dev.example" with an outer
/// Uri-Host; the path travels inside C-P. The proxy removes C-P before choosing the route
/// (CP §2.4 Step 3), then protects with P-S.
#[tokio::test]
async fn reverse_proxy_c_p_p_s() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let route = Route::new("/", Some("dev.example"), &format!("coap://{}/", origin.addr())).unwrap();
        let cfg = ProxyConfig { routes: vec![route], ..ProxyConfig::default() };
        let proxy = RunningProxy::start(cfg, Some(pc.security(origin.addr(), true))).await;
        let mut client = Client::new().await;
        let mut req = get();
        req.options.push(num::URI_HOST, b"dev.example");
        req.set_path("/whoami");
        let cp = client.proxy;
        let (wire, mut stack) = protect_request_layers(&req, &mut client.contexts, &[cp], 8).unwrap();
        assert_eq!(wire.options.get(num::URI_HOST), Some(&b"dev.example"[..]), "Uri-Host stays outer");
        assert!(!wire.options.contains(num::URI_PATH), "the path is inside C-P");
        let raw = client.send(proxy.addr, wire).await;
        let resp = client.verify(&raw, &mut stack).unwrap();
        assert_eq!((resp.code, payload(&resp).as_str()), (Code::CONTENT, ":proxy"));
        let e = proxy.last();
        assert_eq!((e.layers_in, e.layers_out), (strings(&[":client1"]), strings(&["server"])));
        assert_eq!(e.target.as_deref(), Some(format!("coap://{}/whoami", origin.addr()).as_str()));
        origin.handle.shutdown();
    })
    .await;
}

/// CP "With Reverse-Proxy; OSCORE: C-S, C-P, P-S": the route's segment "dev1" is outside the
/// end-to-end layer (for the proxy) and inside C-P; the resource path is end to end.
#[tokio::test]
async fn reverse_proxy_c_s_c_p_p_s() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let route = Route::new("/dev1", None, &format!("coap://{}", origin.addr())).unwrap();
        let cfg = ProxyConfig { routes: vec![route], ..ProxyConfig::default() };
        let proxy = RunningProxy::start(cfg, Some(pc.security(origin.addr(), true))).await;
        let mut client = Client::new().await;
        let mut req = get();
        req.set_path("/whoami");
        // C-S with the outer Uri-Path "dev1" for the reverse proxy.
        let mut outer = hopcore_codec::Options::new();
        outer.push(num::URI_PATH, b"dev1");
        let mut stack = ClientStack::default();
        let e2e = client.e2e;
        let c = client.contexts.prepare_send(e2e).unwrap();
        let (m, binding) = protect_request(&req, c, &Layer::RFC8613.with_outer_options(&outer)).unwrap();
        stack.layers.push(AppliedLayer { context: e2e, label: "e2e".into(), binding });
        // C-P over it: the OSCORE option and "dev1" become Class E (CP §2.2).
        let cp = client.proxy;
        let c = client.contexts.prepare_send(cp).unwrap();
        static NESTED: NestedClasses = NestedClasses(hopcore_oscore::Rfc8613Classes);
        let (wire, binding) = protect_request(&m, c, &Layer::RFC8613.with_classes(&NESTED)).unwrap();
        stack.layers.push(AppliedLayer { context: cp, label: "proxy".into(), binding });
        assert!(!wire.options.contains(num::URI_PATH));

        let raw = client.send(proxy.addr, wire).await;
        let resp = client.verify(&raw, &mut stack).unwrap();
        assert_eq!((resp.code, payload(&resp).as_str()), (Code::CONTENT, ":client"));
        let e = proxy.last();
        assert_eq!((e.layers_in, e.layers_out), (strings(&[":client1"]), strings(&["server"])));
        origin.handle.shutdown();
    })
    .await;
}

// ---- errors --------------------------------------------------------------------------------------

/// RFC 8613 §8.2 at the proxy: a C-P layer it cannot remove gets an unprotected error with
/// Max-Age 0: 4.00 for a wrong key, 4.01 for an unknown kid.
#[tokio::test]
async fn wrong_key_at_the_proxy_is_an_unprotected_error() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), false))).await;
        let mut client = Client::new().await;
        // Same kid (0x20), another key.
        let wrong = client.contexts.add(ctx(0x99, &[0x20], &[0x02]), "wrong");
        let unknown = client.contexts.add(ctx(C_P, &[0x77], &[0x02]), "unknown");
        for (id, code, diagnostic) in [
            (wrong, Code::BAD_REQUEST, "Decryption failed"),
            (unknown, Code::UNAUTHORIZED, "Security context not found"),
        ] {
            let route = ClientRoute {
                proxies: vec![RouteProxy { uri: proxy.uri(), context: Some(id) }],
                origin_context: None,
                proxy_uri_form: false,
            };
            let (wire, _) =
                protect_route_request(&get(), &origin.uri("/whoami"), &route, &mut client.contexts, 8).unwrap();
            let raw = client.send(proxy.addr, wire).await;
            assert_eq!(raw.code, code);
            assert!(!raw.options.contains(num::OSCORE), "unprotected");
            assert_eq!(raw.options.get_uint(num::MAX_AGE), Some(0));
            assert_eq!(payload(&raw), diagnostic);
            assert!(proxy.last().target.is_none(), "not forwarded");
        }
        origin.handle.shutdown();
    })
    .await;
}

/// A wrong end-to-end key: the origin's unprotected 4.00 is relayed as is through CF-4; through
/// CF-7 the origin protects it with P-S (the layer it removed), the proxy removes P-S and
/// protects it with C-P.
#[tokio::test]
async fn wrong_inner_key_at_the_server() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let mut client = Client::new().await;
        client.e2e = client.contexts.add(ctx(0x98, &[0x5f], &[0x05]), "e2e-wrong");

        // CF-4.
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), false))).await;
        let (wire, mut stack) = client.build(&get(), &origin.uri("/whoami"), &proxy.uri(), true, false);
        let raw = client.send(proxy.addr, wire).await;
        assert_eq!((raw.code, raw.options.contains(num::OSCORE)), (Code::BAD_REQUEST, false));
        assert_eq!(raw.options.get_uint(num::MAX_AGE), Some(0));
        assert!(matches!(
            client.verify(&raw, &mut stack),
            Err(LayerError::Unprotected { code: Code::BAD_REQUEST, .. })
        ));
        drop(proxy);

        // CF-7.
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), true))).await;
        let (wire, mut stack) = client.build(&get(), &origin.uri("/whoami"), &proxy.uri(), true, true);
        let raw = client.send(proxy.addr, wire).await;
        assert!(raw.options.contains(num::OSCORE), "protected with C-P");
        match client.verify(&raw, &mut stack) {
            Err(LayerError::Unprotected { label, code, diagnostic }) => {
                assert_eq!((label.as_str(), code), ("e2e-wrong", Code::BAD_REQUEST));
                assert_eq!(diagnostic, "Decryption failed");
            }
            other => panic!("{other:?}"),
        }
        let e = proxy.last();
        assert_eq!(
            (e.layers_in, e.layers_out, e.code),
            (strings(&[":client1"]), strings(&["server"]), Code::BAD_REQUEST)
        );
        origin.handle.shutdown();
    })
    .await;
}

/// RFC 8613 §7.4 at the proxy: the same C-P request twice (a new Message ID) is a replay.
#[tokio::test]
async fn replay_at_the_proxy() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), false))).await;
        let mut client = Client::new().await;
        let (wire, mut stack) = client.build(&get(), &origin.uri("/whoami"), &proxy.uri(), false, true);
        let raw = client.send(proxy.addr, wire.clone()).await;
        assert_eq!(client.verify(&raw, &mut stack).unwrap().code, Code::CONTENT);
        let raw = client.send(proxy.addr, wire).await;
        assert_eq!((raw.code, payload(&raw).as_str()), (Code::UNAUTHORIZED, "Replay detected"));
        assert!(!raw.options.contains(num::OSCORE));
        assert_eq!(proxy.exchanges().len(), 2);
        assert!(proxy.last().target.is_none(), "the replay was not forwarded");
        origin.handle.shutdown();
    })
    .await;
}

/// CP §2.4 Step 6: after removing C-P, the request carries an OSCORE option and no proxy
/// options, and the proxy has no context for it: 4.01 "Security context not found", protected
/// with the C-P layer (CP §2.5).
#[tokio::test]
async fn inner_oscore_without_proxy_options_has_no_context_at_the_proxy() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), false))).await;
        let mut client = Client::new().await;
        let mut req = get();
        req.set_path("/whoami");
        let route = [client.e2e, client.proxy];
        let (wire, mut stack) = protect_request_layers(&req, &mut client.contexts, &route, 8).unwrap();
        let raw = client.send(proxy.addr, wire).await;
        assert!(raw.options.contains(num::OSCORE), "protected with C-P");
        match client.verify(&raw, &mut stack) {
            Err(LayerError::Unprotected { label, code, diagnostic }) => {
                assert_eq!((label.as_str(), code), ("e2e", Code::UNAUTHORIZED));
                assert_eq!(diagnostic, "Security context not found");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(proxy.last().layers_in, strings(&[":client1"]));
        origin.handle.shutdown();
    })
    .await;
}

/// CP §2.1: with max_layers = 1, a second layer addressed to the proxy gets 4.01, protected with
/// the one removed.
#[tokio::test]
async fn too_many_layers() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let cfg = ProxyConfig { max_layers: 1, ..ProxyConfig::default() };
        let proxy = RunningProxy::start(cfg, Some(pc.security(origin.addr(), false))).await;
        let mut client = Client::new().await;
        let mut req = get();
        origin.uri("/whoami").write_proxy_scheme_options(&mut req.options);
        // Two layers for the proxy, the proxy options inside both (CP §2.2).
        let (wire, mut stack) = client.two_layers_for_the_proxy(&req);
        assert!(!wire.options.contains(num::PROXY_SCHEME));
        let raw = client.send(proxy.addr, wire).await;
        match client.verify(&raw, &mut stack) {
            Err(LayerError::Unprotected { label, code, diagnostic }) => {
                assert_eq!((label.as_str(), code), ("proxy-inner", Code::UNAUTHORIZED));
                assert_eq!(diagnostic, "too many OSCORE layers");
            }
            other => panic!("{other:?}"),
        }
        // With the default limit both layers are removed and the request is forwarded.
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), false))).await;
        let (wire, mut stack) = client.two_layers_for_the_proxy(&req);
        let raw = client.send(proxy.addr, wire).await;
        let resp = client.verify(&raw, &mut stack).unwrap();
        assert_eq!(payload(&resp), "-");
        assert_eq!(proxy.last().layers_in, strings(&[":client1", ":client2"]));
        origin.handle.shutdown();
    })
    .await;
}

/// CP §2.4 Step 4 with seed 002 REQ1/REQ2: `[[allow]]` rules by the client's OSCORE identity.
#[tokio::test]
async fn allow_list_by_client_identity() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let toml = format!(
            "[[allow]]\nclient = \":client1\"\ndestinations = [\"coap://{o}/whoami\"]\n\
             [[allow]]\nclient = \":client2\"\ndestinations = [\"coap://{o}/*\"]\n",
            o = origin.addr()
        );
        let cfg = ProxyConfig::from_toml_str(&toml).unwrap();
        let proxy = RunningProxy::start(cfg, Some(pc.security(origin.addr(), false))).await;
        let mut client = Client::new().await;

        // :client1 may reach /whoami …
        let (wire, mut stack) = client.build(&get(), &origin.uri("/whoami"), &proxy.uri(), false, true);
        let raw = client.send(proxy.addr, wire).await;
        assert_eq!(client.verify(&raw, &mut stack).unwrap().code, Code::CONTENT);
        // … not /hello: 4.01 protected with C-P.
        let (wire, mut stack) = client.build(&get(), &origin.uri("/hello"), &proxy.uri(), false, true);
        let raw = client.send(proxy.addr, wire).await;
        assert!(raw.options.contains(num::OSCORE));
        let resp = client.verify(&raw, &mut stack).unwrap();
        assert_eq!(
            (resp.code, payload(&resp).as_str()),
            (Code::UNAUTHORIZED, "not authorized to forward to this destination")
        );
        assert!(proxy.last().target.is_none());
        // :client2 may reach /hello.
        let route = ClientRoute {
            proxies: vec![RouteProxy { uri: proxy.uri(), context: Some(client.proxy2) }],
            origin_context: None,
            proxy_uri_form: false,
        };
        let (wire, mut stack) =
            protect_route_request(&get(), &origin.uri("/hello"), &route, &mut client.contexts, 8).unwrap();
        let raw = client.send(proxy.addr, wire).await;
        assert_eq!(client.verify(&raw, &mut stack).unwrap().code, Code::CONTENT);
        // Unauthenticated clients (no rule without `client`): 4.01, unprotected.
        let (wire, _) = client.build(&get(), &origin.uri("/whoami"), &proxy.uri(), false, false);
        let raw = client.send(proxy.addr, wire).await;
        assert_eq!((raw.code, raw.options.contains(num::OSCORE)), (Code::UNAUTHORIZED, false));
        origin.handle.shutdown();
    })
    .await;
}

/// CP §2.4.1: a source's context list; a context outside it is "not found".
#[tokio::test]
async fn per_source_context_lists() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let cfg = ProxyConfig::from_toml_str(
            "[[source]]\nfrom = \"127.0.0.0/8\"\ncontexts = [\":client2\"]\n\
             [[source]]\nfrom = \"192.0.2.0/24\"\ncontexts = [\":client1\"]\n",
        )
        .unwrap();
        let proxy = RunningProxy::start(cfg, Some(pc.security(origin.addr(), false))).await;
        let mut client = Client::new().await;
        let (wire, _) = client.build(&get(), &origin.uri("/whoami"), &proxy.uri(), false, true);
        let raw = client.send(proxy.addr, wire).await;
        assert_eq!((raw.code, payload(&raw).as_str()), (Code::UNAUTHORIZED, "Security context not found"));
        assert!(!raw.options.contains(num::OSCORE));
        let route = ClientRoute {
            proxies: vec![RouteProxy { uri: proxy.uri(), context: Some(client.proxy2) }],
            origin_context: None,
            proxy_uri_form: false,
        };
        let (wire, mut stack) =
            protect_route_request(&get(), &origin.uri("/whoami"), &route, &mut client.contexts, 8).unwrap();
        let raw = client.send(proxy.addr, wire).await;
        assert_eq!(client.verify(&raw, &mut stack).unwrap().code, Code::CONTENT);
        // A label that is not a client context is a configuration error.
        let bad = ProxyConfig::from_toml_str("[[source]]\nfrom = \"::1\"\ncontexts = [\"server\"]\n").unwrap();
        let err = Proxy::new(bad).with_security(pc.security(origin.addr(), true)).unwrap_err();
        assert!(err.to_string().contains("\"server\""), "{err}");
        origin.handle.shutdown();
    })
    .await;
}

/// CP §2.2, last paragraph: an option the proxy does not recognize in a request it protects
/// (towards the next hop): 4.02, protected with C-P. Without a P-S layer the same (safe to
/// forward) option is relayed as RFC 7252 §5.7.1 says.
#[tokio::test]
async fn unknown_option_in_a_request_the_proxy_protects() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let mut client = Client::new().await;
        let unknown = 65000u16; // elective, safe to forward, not registered
        let req = get().with_option(unknown, b"x");
        // CF-3.
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), true))).await;
        let (wire, mut stack) = client.build(&req, &origin.uri("/whoami"), &proxy.uri(), false, true);
        let raw = client.send(proxy.addr, wire).await;
        let resp = client.verify(&raw, &mut stack).unwrap();
        assert_eq!(resp.code, Code::BAD_OPTION, "{}", payload(&resp));
        assert!(payload(&resp).contains("65000"));
        drop(proxy);
        // CF-1.
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), false))).await;
        let (wire, mut stack) = client.build(&req, &origin.uri("/whoami"), &proxy.uri(), false, true);
        let raw = client.send(proxy.addr, wire).await;
        assert_eq!(client.verify(&raw, &mut stack).unwrap().code, Code::CONTENT);
        // An unsafe unknown option: 4.02 in any case (RFC 7252 §5.7.1), protected with C-P.
        let req = get().with_option(65002, b"u");
        let (wire, mut stack) = client.build(&req, &origin.uri("/whoami"), &proxy.uri(), false, true);
        let raw = client.send(proxy.addr, wire).await;
        assert_eq!(client.verify(&raw, &mut stack).unwrap().code, Code::BAD_OPTION);
        origin.handle.shutdown();
    })
    .await;
}

// ---- the P-S leg failing -------------------------------------------------------------------------

/// An upstream that answers every request with `respond(request)`, or never when `None`.
async fn fake_upstream(respond: impl Fn(&Message) -> Option<Message> + Send + 'static) -> SocketAddr {
    let (ep, mut incoming) = Endpoint::bind(lo()).await.unwrap();
    let addr = ep.local_addr();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(r) = incoming.next().await {
            match respond(&r.message) {
                Some(m) => ep.respond(r.handle, m),
                None => held.push(r.handle),
            }
        }
    });
    addr
}

/// CP §2.6 at the proxy: a response that fails verification on P-S, one without the P-S layer,
/// and no response at all: 5.02, 5.02 and 5.04, each protected with C-P.
#[tokio::test]
async fn failures_on_the_p_s_leg() {
    bounded(async {
        let pc = ProxyContexts::new();
        let mut client = Client::new().await;
        let forged = fake_upstream(|_| {
            let mut m = Message::response(Code::CHANGED).with_payload(vec![0x55; 20]);
            m.options.set(num::OSCORE, b"");
            Some(m)
        })
        .await;
        let unprotected = fake_upstream(|_| {
            let mut m = Message::response(Code::UNAUTHORIZED).with_payload("Security context not found");
            m.options.set_uint(num::MAX_AGE, 0);
            Some(m)
        })
        .await;
        let silent = fake_upstream(|_| None).await;
        for (upstream, code) in
            [(forged, Code::BAD_GATEWAY), (unprotected, Code::BAD_GATEWAY), (silent, Code::GATEWAY_TIMEOUT)]
        {
            let cfg = ProxyConfig { upstream_timeout: Duration::from_millis(500), ..ProxyConfig::default() };
            let proxy = RunningProxy::start(cfg, Some(pc.security(upstream, true))).await;
            let target = CoapUri::parse(&format!("coap://{upstream}/x")).unwrap();
            let (wire, mut stack) = client.build(&get(), &target, &proxy.uri(), false, true);
            let raw = client.send(proxy.addr, wire).await;
            let resp = client.verify(&raw, &mut stack).unwrap();
            assert_eq!(resp.code, code, "{}", payload(&resp));
            let e = proxy.last();
            assert_eq!((e.layers_out, e.code), (strings(&["server"]), code));
        }
    })
    .await;
}

// ---- Observe and Block2 through CF-7 -------------------------------------------------------------

async fn next(n: &mut hopcore_endpoint::Notifications) -> Message {
    tokio::time::timeout(Duration::from_secs(5), n.next()).await.expect("in time").expect("open").unwrap()
}

/// Observe through CF-7: each client's registration is protected end to end, so it gets an
/// upstream observation of its own; notifications are verified on P-S and protected with C-P
/// with the proxy's own Partial IV each (CP §2.5.1).
#[tokio::test]
async fn observe_through_cf7() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), true))).await;
        let mut clients = Vec::new();
        for i in 0..2u8 {
            let mut client = if i == 0 { Client::new().await } else { Client::second().await };
            let mut req = get();
            req.options.set_uint(num::OBSERVE, 0);
            req.token = Token::from_slice(&[0x0b, i]).unwrap();
            let (wire, mut stack) = client.build(&req, &origin.uri("/obs"), &proxy.uri(), true, true);
            let mut notifications = client.endpoint.observe(proxy.addr, wire).unwrap();
            let first = next(&mut notifications).await;
            let r = client.verify(&first, &mut stack).unwrap();
            assert_eq!(r.code, Code::CONTENT);
            assert!(r.options.contains(num::OBSERVE), "registered");
            clients.push((client, stack, notifications));
        }
        assert_eq!(origin.handle.observer_count(), 2, "one upstream observation per client registration");
        let mut last_piv = [None, None];
        for round in 1..=3u32 {
            origin.change();
            for (i, (client, stack, notifications)) in clients.iter_mut().enumerate() {
                let raw = next(notifications).await;
                // CP §2.5.1: the proxy's C-P layer carries its own Partial IV.
                let opt = OscoreOption::parse(raw.options.get(num::OSCORE).unwrap()).unwrap();
                let piv = opt.partial_iv.expect("own Partial IV").to_sequence();
                assert!(last_piv[i].is_none_or(|l| piv > l));
                last_piv[i] = Some(piv);
                let n = client.verify(&raw, stack).unwrap();
                assert_eq!((n.code, payload(&n)), (Code::CONTENT, format!("n={round}")));
            }
        }
        origin.handle.shutdown();
    })
    .await;
}

/// Observe through CF-3 (no end-to-end layer): two clients share one upstream observation (RFC
/// 7641 §5), protected with P-S; each gets the notifications protected with its C-P layer.
#[tokio::test]
async fn observe_through_cf3_is_shared() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), true))).await;
        let mut clients = Vec::new();
        for i in 0..2u8 {
            let mut client = if i == 0 { Client::new().await } else { Client::second().await };
            let mut req = get();
            req.options.set_uint(num::OBSERVE, 0);
            req.token = Token::from_slice(&[0x0c, i]).unwrap();
            let (wire, mut stack) = client.build(&req, &origin.uri("/obs"), &proxy.uri(), false, true);
            let mut notifications = client.endpoint.observe(proxy.addr, wire).unwrap();
            let r = client.verify(&next(&mut notifications).await, &mut stack).unwrap();
            assert!(r.options.contains(num::OBSERVE), "registered");
            clients.push((client, stack, notifications));
        }
        assert_eq!(origin.handle.observer_count(), 1, "one shared upstream observation");
        for round in 1..=2u32 {
            origin.change();
            for (client, stack, notifications) in clients.iter_mut() {
                let n = client.verify(&next(notifications).await, stack).unwrap();
                assert_eq!(payload(&n), format!("n={round}"));
            }
        }
        origin.handle.shutdown();
    })
    .await;
}

/// Block2 through CF-7: each block is its own end-to-end exchange (RFC 8613 §4.1.3.4.1), relayed
/// block by block.
#[tokio::test]
async fn block2_through_cf7() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), true))).await;
        let mut client = Client::new().await;
        let mut body = Vec::new();
        for n in 0.. {
            let mut req = get();
            req.options.set_uint(num::BLOCK2, BlockValue::new(n, false, 512).unwrap().to_uint());
            let (wire, mut stack) = client.build(&req, &origin.uri("/large"), &proxy.uri(), true, true);
            let raw = client.send(proxy.addr, wire).await;
            assert!(!raw.options.contains(num::BLOCK2), "no outer Block2");
            let r = client.verify(&raw, &mut stack).unwrap();
            assert_eq!(r.code, Code::CONTENT);
            let b = BlockValue::decode(r.options.get(num::BLOCK2).expect("Block2")).unwrap();
            assert_eq!(b.num, n);
            body.extend_from_slice(&r.payload);
            if !b.more {
                break;
            }
            assert!(n < 32, "too many blocks");
        }
        assert_eq!(body, large_payload());
        origin.handle.shutdown();
    })
    .await;
}

/// Without credentials or rules the proxy is the plain one: an OSCORE-protected request with
/// proxy options is forwarded (CF-4), and the record shows no layers.
#[tokio::test]
async fn plain_proxy_forwards_end_to_end_requests() {
    bounded(async {
        let origin = Origin::start().await;
        let proxy = RunningProxy::start(ProxyConfig::default(), None).await;
        let mut client = Client::new().await;
        let (wire, mut stack) = client.build(&get(), &origin.uri("/whoami"), &proxy.uri(), true, false);
        let raw = client.send(proxy.addr, wire).await;
        assert_eq!(payload(&client.verify(&raw, &mut stack).unwrap()), ":client");
        let e = proxy.last();
        assert!(e.layers_in.is_empty() && e.layers_out.is_empty());
        origin.handle.shutdown();
    })
    .await;
}

/// CP §2.4 Step 5: a request for the proxy itself (no proxy options once C-P is removed) finds
/// no application there: 4.04, protected with C-P.
#[tokio::test]
async fn request_for_the_proxy_itself_is_not_found_inside_c_p() {
    bounded(async {
        let origin = Origin::start().await;
        let pc = ProxyContexts::new();
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.addr(), false))).await;
        let mut client = Client::new().await;
        let mut req = get();
        req.set_path("/status");
        let cp = client.proxy;
        let (wire, mut stack) = protect_request_layers(&req, &mut client.contexts, &[cp], 8).unwrap();
        let raw = client.send(proxy.addr, wire).await;
        assert!(raw.options.contains(num::OSCORE));
        let resp = client.verify(&raw, &mut stack).unwrap();
        assert_eq!(resp.code, Code::NOT_FOUND);
        let e = proxy.last();
        assert_eq!((e.layers_in, e.target, e.code), (strings(&[":client1"]), None, Code::NOT_FOUND));
        origin.handle.shutdown();
    })
    .await;
}

/// RFC 8613 App. B.1.2 on the P-S leg: the origin lost its replay state for the proxy's context
/// and challenges with Echo (a 4.01 inside P-S); the proxy repeats the request with the Echo,
/// and the client (CF-3) gets the answer without noticing.
#[tokio::test]
async fn echo_challenge_on_the_p_s_leg_is_answered_by_the_proxy() {
    bounded(async {
        use hopcore_oscore::ReplayWindow;
        let mut store = ContextStore::volatile();
        let lost = ctx(P_S, &[0x04], &[0xd4]).with_replay_window(ReplayWindow::unsynchronized(32).unwrap());
        let ps = store.add(lost, ContextMeta::new(":proxy")).unwrap();
        let mut s = demo_server();
        s.add_resource("/whoami", resource_fn(|req| text(req.identity.clone().unwrap_or_else(|| "-".into()))));
        let origin = OscoreServer::new(s, store).start(lo()).await.unwrap();
        assert!(!origin.contexts().lock().unwrap().replay_synchronized(ps));

        let pc = ProxyContexts::new();
        let proxy = RunningProxy::start(ProxyConfig::default(), Some(pc.security(origin.local_addr(), true))).await;
        let mut client = Client::new().await;
        let target = CoapUri::parse(&format!("coap://{}/whoami", origin.local_addr())).unwrap();
        let (wire, mut stack) = client.build(&get(), &target, &proxy.uri(), false, true);
        let raw = client.send(proxy.addr, wire).await;
        let resp = client.verify(&raw, &mut stack).unwrap();
        assert_eq!((resp.code, payload(&resp).as_str()), (Code::CONTENT, ":proxy"));
        assert!(origin.contexts().lock().unwrap().replay_synchronized(ps), "synchronized by the Echo exchange");
        origin.shutdown();
    })
    .await;
}

/// CP "With Two Forward-Proxies" with onion forwarding (the route builder, seed 000 App. A):
/// C-S end to end, C-P1 and C-P2; each proxy removes its layer and learns only its next hop.
#[tokio::test]
async fn two_proxies_onion_route() {
    bounded(async {
        let origin = Origin::start().await;
        let p1_contexts = ProxyContexts::new();
        let p2_contexts = ProxyContexts::new();
        let p1 = ProxySecurity::shared(p1_contexts.store.clone()).with_client(p1_contexts.client1);
        let p2 = ProxySecurity::shared(p2_contexts.store.clone()).with_client(p2_contexts.client2);
        let p2 = RunningProxy::start(ProxyConfig::default(), Some(p2)).await;
        let p1 = RunningProxy::start(ProxyConfig::default(), Some(p1)).await;
        let mut client = Client::new().await;
        let route = ClientRoute {
            proxies: vec![
                RouteProxy { uri: p1.uri(), context: Some(client.proxy) },
                RouteProxy { uri: p2.uri(), context: Some(client.proxy2) },
            ],
            origin_context: Some(client.e2e),
            proxy_uri_form: false,
        };
        let (wire, mut stack) =
            protect_route_request(&get(), &origin.uri("/whoami"), &route, &mut client.contexts, 8).unwrap();
        let raw = client.send(p1.addr, wire).await;
        let resp = client.verify(&raw, &mut stack).unwrap();
        assert_eq!((resp.code, payload(&resp).as_str()), (Code::CONTENT, ":client"));
        let (e1, e2) = (p1.last(), p2.last());
        assert_eq!(e1.layers_in, strings(&[":client1"]));
        assert_eq!(e1.target, Some(format!("coap://{}/", p2.addr)), "P1 learns only P2");
        assert_eq!(e2.layers_in, strings(&[":client2"]));
        assert_eq!(e2.target, Some(format!("coap://{}/", origin.addr())), "P2 sees the origin, not the path");
        origin.handle.shutdown();
    })
    .await;
}
