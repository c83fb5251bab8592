//! The engine on both sides of an exchange, without sockets.

use hopcore_codec::{num, CoapUri, Code, Message};
use hopcore_oscore::{ContextInput, ReplayWindow, SecurityContext};

use crate::*;

fn pair(secret: u8, client_id: &[u8], server_id: &[u8]) -> (SecurityContext, SecurityContext) {
    let s = [secret; 16];
    let c = SecurityContext::derive(&ContextInput::new(&s, client_id, server_id)).unwrap();
    let v = SecurityContext::derive(&ContextInput::new(&s, server_id, client_id)).unwrap();
    (c, v)
}

/// A ContextList with Echo support (App. B.1.2) for the tests.
#[derive(Default)]
struct EchoStore {
    list: ContextList,
    issued: Vec<(usize, Vec<u8>)>,
}

impl SecurityContexts for EchoStore {
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
    fn issue_echo(&mut self, id: usize) -> Option<Vec<u8>> {
        let v = vec![0xec, 0x40, id as u8, self.issued.len() as u8];
        self.issued.push((id, v.clone()));
        Some(v)
    }
    fn verify_echo(&mut self, id: usize, echo: &[u8]) -> bool {
        self.issued.iter().any(|(i, v)| *i == id && v == echo)
    }
}

fn get(path: &str) -> Message {
    let mut m = Message::request(Code::GET);
    m.set_path(path);
    m
}

fn deliver<Id: std::fmt::Debug>(o: Incoming<Id>) -> (Message, ServerStack<Id>) {
    match o {
        Incoming::Deliver { request, layers } => (request, layers),
        other => panic!("expected Deliver, got {other:?}"),
    }
}

fn reply<Id: std::fmt::Debug>(o: Incoming<Id>) -> (Message, ServerStack<Id>) {
    match o {
        Incoming::Reply { response, layers, .. } => (response, layers),
        other => panic!("expected Reply, got {other:?}"),
    }
}

#[test]
fn one_layer_end_to_end() {
    let (c, s) = pair(1, b"C", b"S");
    let mut client = ContextList::new();
    let cid = client.add(c, "server");
    let mut server = ContextList::new();
    server.add(s, ":client1");

    let req = get("/hello");
    let (wire, mut cstack) = protect_request_layers(&req, &mut client, &[cid], 4).unwrap();
    assert_eq!(wire.code, Code::POST);
    assert!(wire.options.get(num::URI_PATH).is_none(), "Uri-Path is encrypted");

    let (got, mut sstack) = deliver(process_request(wire, &mut server, &OriginServer, &Limits::default()));
    assert_eq!(got, req);
    assert_eq!(sstack.labels(), vec![":client1"]);
    assert_eq!(sstack.innermost_label(), Some(":client1"));

    let resp = Message::response(Code::CONTENT).with_payload("hi");
    let wire = protect_response_layers(&resp, &mut server, &mut sstack).unwrap();
    assert_eq!(wire.code, Code::CHANGED);
    let back = unprotect_response_layers(&wire, &mut client, &mut cstack).unwrap();
    assert_eq!(back, resp);
}

#[test]
fn two_layers_removed_by_one_server_and_reapplied_in_reverse() {
    let (c1, s1) = pair(1, b"A", b"B");
    let (c2, s2) = pair(2, b"X", b"Y");
    let mut client = ContextList::new();
    let e2e = client.add(c1, "e2e");
    let hop = client.add(c2, "hop");
    let mut server = ContextList::new();
    server.add(s1, ":e2e-peer");
    server.add(s2, ":hop-peer");

    let mut req = get("/a/b");
    req.options.push(num::URI_QUERY, b"q=1");
    let (wire, mut cstack) = protect_request_layers(&req, &mut client, &[e2e, hop], 4).unwrap();
    assert_eq!(cstack.labels(), vec!["e2e", "hop"]);
    // One OSCORE option visible: the outer one.
    assert_eq!(wire.options.get_all(num::OSCORE).count(), 1);

    let (got, mut sstack) = deliver(process_request(wire, &mut server, &OriginServer, &Limits::default()));
    assert_eq!(got, req);
    // Removed outermost first.
    assert_eq!(sstack.labels(), vec![":hop-peer", ":e2e-peer"]);

    let resp = Message::response(Code::CONTENT).with_payload("deep");
    let wire = protect_response_layers(&resp, &mut server, &mut sstack).unwrap();
    assert_eq!(unprotect_response_layers(&wire, &mut client, &mut cstack).unwrap(), resp);
}

#[test]
fn inner_layer_error_is_protected_with_the_outer_layer() {
    let (c1, _) = pair(1, b"A", b"B");
    let (_, wrong) = pair(9, b"A", b"B"); // server holds a different key for the inner layer
    let (c2, s2) = pair(2, b"X", b"Y");
    let mut client = ContextList::new();
    let e2e = client.add(c1, "e2e");
    let hop = client.add(c2, "hop");
    let mut server = ContextList::new();
    server.add(wrong, ":e2e-peer");
    server.add(s2, ":hop-peer");

    let (wire, mut cstack) = protect_request_layers(&get("/x"), &mut client, &[e2e, hop], 4).unwrap();
    let (err, mut sstack) = reply(process_request(wire, &mut server, &OriginServer, &Limits::default()));
    assert_eq!(err.code, Code::BAD_REQUEST, "decryption failed → 4.00 (RFC 8613 §8.2)");
    assert_eq!(sstack.labels(), vec![":hop-peer"], "only the layer removed successfully");
    let wire = protect_response_layers(&err, &mut server, &mut sstack).unwrap();
    assert!(wire.options.contains(num::OSCORE));
    // The client removes the hop layer and finds the end-to-end layer missing.
    match unprotect_response_layers(&wire, &mut client, &mut cstack) {
        Err(LayerError::Unprotected { label, code, diagnostic }) => {
            assert_eq!(label, "e2e");
            assert_eq!(code, Code::BAD_REQUEST);
            assert_eq!(diagnostic, "Decryption failed");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn layer_limit_and_proxy_options_at_a_non_proxy() {
    let (c1, s1) = pair(1, b"A", b"B");
    let (c2, s2) = pair(2, b"X", b"Y");
    let mut client = ContextList::new();
    let e2e = client.add(c1, "e2e");
    let hop = client.add(c2, "hop");
    let mut server = ContextList::new();
    server.add(s1, ":e2e-peer");
    server.add(s2, ":hop-peer");

    // The client refuses to exceed its own limit (CP §2.1).
    assert!(matches!(
        protect_request_layers(&get("/x"), &mut client, &[e2e, hop], 1),
        Err(LayerError::TooManyLayers { layers: 2, limit: 1 })
    ));
    // The server removes one layer, then refuses: 4.01 protected with that layer.
    let (wire, _) = protect_request_layers(&get("/x"), &mut client, &[e2e, hop], 4).unwrap();
    let (err, stack) = reply(process_request(wire, &mut server, &OriginServer, &Limits { max_layers: 1 }));
    assert_eq!(err.code, Code::UNAUTHORIZED);
    assert_eq!(stack.len(), 1);

    // Proxy options at an origin server: 5.05 (CP §2.4 Step 2).
    let mut req = get("/x");
    req.options.push(num::PROXY_URI, b"coap://example.org/x");
    let (err, stack) = reply(process_request(req, &mut server, &OriginServer, &Limits::default()));
    assert_eq!(err.code, Code::PROXYING_NOT_SUPPORTED);
    assert!(stack.is_empty());
}

#[test]
fn replay_and_unknown_context_are_unprotected_errors() {
    let (c, s) = pair(1, b"C", b"S");
    let mut client = ContextList::new();
    let cid = client.add(c, "server");
    let mut server = ContextList::new();
    server.add(s, ":client1");
    let (wire, _) = protect_request_layers(&get("/x"), &mut client, &[cid], 4).unwrap();
    deliver(process_request(wire.clone(), &mut server, &OriginServer, &Limits::default()));
    let (err, stack) = reply(process_request(wire, &mut server, &OriginServer, &Limits::default()));
    assert_eq!(err.code, Code::UNAUTHORIZED);
    assert_eq!(err.payload, b"Replay detected");
    assert_eq!(err.options.get_uint(num::MAX_AGE), Some(0));
    assert!(stack.is_empty());

    let mut empty = ContextList::new();
    let (wire, _) = protect_request_layers(&get("/x"), &mut client, &[cid], 4).unwrap();
    let (err, _) = reply(process_request(wire, &mut empty, &OriginServer, &Limits::default()));
    assert_eq!(err.code, Code::UNAUTHORIZED);
    assert_eq!(err.payload, b"Security context not found");
}

/// RFC 8613 App. B.1.2: after losing its replay state, the server challenges with Echo; the
/// repeated request with the Echo is accepted and initializes the window.
#[test]
fn echo_recovers_an_unsynchronized_replay_window() {
    let (c, s) = pair(1, b"C", b"S");
    let mut client = ContextList::new();
    let cid = client.add(c, "server");
    let mut server = EchoStore::default();
    server.list.add(s.with_replay_window(ReplayWindow::unsynchronized(32).unwrap()), ":client1");

    let (wire, mut cstack) = protect_request_layers(&get("/x"), &mut client, &[cid], 4).unwrap();
    let (challenge, mut sstack) = reply(process_request(wire, &mut server, &OriginServer, &Limits::default()));
    assert_eq!(challenge.code, Code::UNAUTHORIZED);
    let echo = challenge.options.get(num::ECHO).expect("Echo in the challenge").to_vec();
    // The challenge is protected, with the server's own Partial IV.
    let wire = protect_response_layers(&challenge, &mut server, &mut sstack).unwrap();
    assert!(!wire.options.get(num::OSCORE).unwrap_or_default().is_empty());
    let seen = unprotect_response_layers(&wire, &mut client, &mut cstack).unwrap();
    assert_eq!(seen.options.get(num::ECHO), Some(&echo[..]));

    // The client repeats with the Echo: accepted, and the application does not see the Echo.
    let mut again = get("/x");
    again.options.set(num::ECHO, &echo);
    let (wire, _) = protect_request_layers(&again, &mut client, &[cid], 4).unwrap();
    let (got, _) = deliver(process_request(wire.clone(), &mut server, &OriginServer, &Limits::default()));
    assert_eq!(got, get("/x"));
    // Now the window is synchronized: a replay of that request is rejected.
    let (err, _) = reply(process_request(wire, &mut server, &OriginServer, &Limits::default()));
    assert_eq!(err.payload, b"Replay detected");
    // A wrong Echo gets a new challenge rather than acceptance.
    let mut server2 = EchoStore::default();
    let (c2, s2) = pair(3, b"C", b"S");
    let mut client2 = ContextList::new();
    let cid2 = client2.add(c2, "server");
    server2.list.add(s2.with_replay_window(ReplayWindow::unsynchronized(32).unwrap()), ":client1");
    let mut forged = get("/x");
    forged.options.set(num::ECHO, b"forged");
    let (wire, _) = protect_request_layers(&forged, &mut client2, &[cid2], 4).unwrap();
    let (err, _) = reply(process_request(wire, &mut server2, &OriginServer, &Limits::default()));
    assert_eq!(err.code, Code::UNAUTHORIZED);
    assert!(err.options.contains(num::ECHO));
}

/// A context with an ID Context sends it as 'kid context' and the server picks the right one
/// of two contexts that share the kid (RFC 8613 §5.1, §8.2 step 2).
#[test]
fn kid_context_selects_among_contexts_with_the_same_kid() {
    let secret = [5u8; 16];
    let mk = |sid: &[u8], rid: &[u8], idc: Option<&[u8]>| {
        let mut input = ContextInput::new(&secret, sid, rid);
        if let Some(c) = idc {
            input = input.id_context(c);
        }
        SecurityContext::derive(&input).unwrap()
    };
    let mut server = ContextList::new();
    server.add(mk(b"", b"\x01", None), ":b");
    server.add(mk(b"", b"\x01", Some(b"\x37\xcb")), ":d");
    let mut client = ContextList::new();
    let c = client.add(mk(b"\x01", b"", Some(b"\x37\xcb")), "c");
    let (wire, _) = protect_request_layers(&get("/x"), &mut client, &[c], 4).unwrap();
    let (_, stack) = deliver(process_request(wire, &mut server, &OriginServer, &Limits::default()));
    assert_eq!(stack.labels(), vec![":d"]);
}

struct ForwardProxy;
impl HopPolicy for ForwardProxy {
    fn forward_proxy(&self) -> bool {
        true
    }
}

/// What a forward proxy does with a Forward outcome here: consume the proxy options and
/// return where they pointed (host, port) and the message to send there.
fn consume_proxy_options(mut m: Message) -> ((String, u32), Message) {
    let host = String::from_utf8(m.options.get(num::URI_HOST).unwrap().to_vec()).unwrap();
    let port = m.options.get_uint(num::URI_PORT).unwrap();
    for o in [num::PROXY_SCHEME, num::URI_HOST, num::URI_PORT, num::PROXY_URI] {
        m.options.remove(o);
    }
    ((host, port), m)
}

/// Onion forwarding through three proxies (seed 000 App. A): each proxy removes its own
/// layer and finds only the next hop; the origin removes the end-to-end layer; the response
/// comes back through every layer in reverse.
#[test]
fn onion_route_through_three_proxies() {
    let names = ["p1", "p2", "p3", "s"];
    let mut client = ContextList::new();
    let mut hops: Vec<ContextList> = Vec::new();
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (c, s) = pair(10 + i as u8, b"c", name.as_bytes());
        ids.push(client.add(c, *name));
        let mut l = ContextList::new();
        l.add(s, ":client");
        hops.push(l);
    }
    let uri = |p: u16| CoapUri::parse(&format!("coap://127.0.0.{p}:{}", 5680 + p)).unwrap();
    let route = Route {
        proxies: (0..3).map(|i| RouteProxy { uri: uri(i as u16 + 1), context: Some(ids[i]) }).collect(),
        origin_context: Some(ids[3]),
        proxy_uri_form: false,
    };
    let target = CoapUri::parse("coap://origin.example:5699/secret/path?q=1").unwrap();
    let req = Message::request(Code::GET);
    let (mut wire, mut cstack) = protect_route_request(&req, &target, &route, &mut client, 8).unwrap();
    assert_eq!(cstack.labels(), vec!["s", "p3", "p2", "p1"]);
    // On the first leg only one OSCORE option and nothing else is visible.
    let visible: Vec<u16> = wire.options.iter().map(|o| o.number).collect();
    assert_eq!(visible, vec![num::OSCORE]);

    let mut stacks = Vec::new();
    for (i, hop) in hops.iter_mut().enumerate().take(3) {
        match process_request(wire, hop, &ForwardProxy, &Limits::default()) {
            Incoming::Forward { request, layers, mode } => {
                assert_eq!(mode, ForwardMode::Forward);
                assert_eq!(layers.len(), 1, "proxy {} removes exactly its layer", i + 1);
                let (next, rest) = consume_proxy_options(request);
                let expect = if i < 2 {
                    (format!("127.0.0.{}", i + 2), 5680 + i as u32 + 2)
                } else {
                    ("origin.example".to_string(), 5699)
                };
                assert_eq!(next, expect, "proxy {} learns only its next hop", i + 1);
                assert!(!rest.options.contains(num::URI_PATH), "the path stays hidden from proxy {}", i + 1);
                stacks.push(layers);
                wire = rest;
            }
            other => panic!("proxy {} did not forward: {other:?}", i + 1),
        }
    }
    let (got, mut sstack) = deliver(process_request(wire, &mut hops[3], &OriginServer, &Limits::default()));
    assert_eq!(got.path(), "/secret/path");
    assert_eq!(got.options.get(num::URI_QUERY), Some(&b"q=1"[..]));

    // The response: the origin protects, every proxy re-applies its layer.
    let resp = Message::response(Code::CONTENT).with_payload("through the onion");
    let mut back = protect_response_layers(&resp, &mut hops[3], &mut sstack).unwrap();
    for i in (0..3).rev() {
        back = protect_response_layers(&back, &mut hops[i], &mut stacks[i]).unwrap();
    }
    assert_eq!(unprotect_response_layers(&back, &mut client, &mut cstack).unwrap(), resp);
}

#[test]
fn route_rules() {
    let (c, _) = pair(1, b"c", b"p");
    let mut client = ContextList::new();
    let id = client.add(c, "p1");
    let uri = |p: u16| CoapUri::parse(&format!("coap://127.0.0.1:{p}")).unwrap();
    let target = CoapUri::parse("coap://127.0.0.1:5683/x").unwrap();
    // A chain in which a proxy has no context: its forwarding options would share a level
    // with another hop's (here the last proxy's options for the origin would be overwritten
    // by the first proxy's next-hop options).
    let (c3, _) = pair(3, b"c", b"q");
    let id1 = client.add(c3, "p1");
    let route = Route {
        proxies: vec![RouteProxy { uri: uri(1), context: Some(id1) }, RouteProxy { uri: uri(2), context: None }],
        origin_context: None,
        proxy_uri_form: false,
    };
    assert!(matches!(
        protect_route_request(&Message::request(Code::GET), &target, &route, &mut client, 8),
        Err(RouteError::ProxyWithoutContext { index: 2, .. })
    ));
    // Likewise when the first proxy has none.
    let route = Route {
        proxies: vec![RouteProxy { uri: uri(1), context: None }, RouteProxy { uri: uri(2), context: Some(id) }],
        origin_context: None,
        proxy_uri_form: false,
    };
    assert!(matches!(
        protect_route_request(&Message::request(Code::GET), &target, &route, &mut client, 8),
        Err(RouteError::ProxyWithoutContext { index: 1, .. })
    ));
    // One proxy without any context (CF-0): plain forward-proxy options, no layer.
    let route =
        Route { proxies: vec![RouteProxy { uri: uri(1), context: None }], origin_context: None, proxy_uri_form: true };
    let (m, stack) = protect_route_request(&Message::request(Code::GET), &target, &route, &mut client, 8).unwrap();
    assert!(stack.is_empty());
    assert_eq!(m.options.get_str(num::PROXY_URI), Some("coap://127.0.0.1/x"));
    // CF-4 (end-to-end only): the proxy options stay outer for the proxy (CP §2.2 Step 9).
    let (c2, _) = pair(2, b"c", b"s");
    let s = client.add(c2, "s");
    let route = Route {
        proxies: vec![RouteProxy { uri: uri(1), context: None }],
        origin_context: Some(s),
        proxy_uri_form: false,
    };
    let (m, stack) = protect_route_request(&Message::request(Code::GET), &target, &route, &mut client, 8).unwrap();
    assert_eq!(stack.len(), 1);
    assert_eq!(m.options.get(num::PROXY_SCHEME), Some(&b"coap"[..]));
    assert!(m.options.contains(num::URI_HOST) && m.options.contains(num::OSCORE));
    assert!(!m.options.contains(num::URI_PATH));
}

/// A proxy's next leg (CF-6/CF-7's P-S): the proxy wraps the client's end-to-end-protected
/// request in its own layer with the engine, and removes exactly that layer from the
/// response, which keeps the client's layer (CP §2.3, §2.6).
#[test]
fn proxy_leg_over_an_end_to_end_layer() {
    let (c_e2e, s_e2e) = pair(1, b"c", b"s");
    let (p_leg, s_leg) = pair(2, b"p", b"S");
    let mut client = ContextList::new();
    let e2e = client.add(c_e2e, "s");
    let mut proxy = ContextList::new();
    let leg = proxy.add(p_leg, "origin");
    let mut origin = ContextList::new();
    origin.add(s_e2e, ":client");
    origin.add(s_leg, ":proxy");

    let (wire, mut cstack) = protect_request_layers(&get("/x"), &mut client, &[e2e], 4).unwrap();
    let (wire, mut pstack) = protect_request_layers(&wire, &mut proxy, &[leg], 4).unwrap();
    assert!(pstack.inner_oscore);
    let (got, mut sstack) = deliver(process_request(wire, &mut origin, &OriginServer, &Limits::default()));
    assert_eq!(got, get("/x"));
    assert_eq!(sstack.labels(), vec![":proxy", ":client"]);
    let resp = Message::response(Code::CONTENT).with_payload("leg");
    let wire = protect_response_layers(&resp, &mut origin, &mut sstack).unwrap();
    let relayed = unprotect_response_layers(&wire, &mut proxy, &mut pstack).unwrap();
    assert!(relayed.options.contains(num::OSCORE), "the client's layer stays");
    assert_eq!(unprotect_response_layers(&relayed, &mut client, &mut cstack).unwrap(), resp);
}

/// A forward-proxy request for the proxy's own authority is local (CP §2.4 Step 4), and a
/// Proxy-Uri's path and query are kept (RFC 7252 §6.4).
#[test]
fn own_authority_keeps_the_proxy_uri_path() {
    struct Me;
    impl HopPolicy for Me {
        fn forward_proxy(&self) -> bool {
            true
        }
        fn is_own_authority(&self, _req: &Message) -> bool {
            true
        }
    }
    let mut req = Message::request(Code::GET);
    req.options.push(num::PROXY_URI, b"coap://me.example/a/b?x=1");
    let (got, _) = deliver(process_request(req, &mut ContextList::new(), &Me, &Limits::default()));
    assert_eq!(got.path(), "/a/b");
    assert_eq!(got.options.get(num::URI_QUERY), Some(&b"x=1"[..]));
    assert!(!got.options.contains(num::PROXY_URI));
}

/// A catch-all reverse proxy (a route for every request) forwards an end-to-end-protected
/// request it holds no context for, although the request shows no Uri-* option; a layer
/// addressed to the proxy itself is removed first.
#[test]
fn reverse_route_for_a_layer_that_is_not_ours() {
    struct CatchAll;
    impl HopPolicy for CatchAll {
        fn reverse_route(&self, _req: &Message) -> bool {
            true
        }
    }
    // The client's kid towards the origin ("e") is not one the proxy knows.
    let (c_e2e, _) = pair(1, b"e", b"s");
    let (c_p, p_c) = pair(2, b"c", b"p");
    let mut client = ContextList::new();
    let e2e = client.add(c_e2e, "s");
    let hop = client.add(c_p, "p");
    let mut proxy = ContextList::new();
    proxy.add(p_c, ":client");
    // Only the end-to-end layer: forwarded as is.
    let (wire, _) = protect_request_layers(&get("/x"), &mut client, &[e2e], 4).unwrap();
    let visible: Vec<u16> = wire.options.iter().map(|o| o.number).collect();
    assert_eq!(visible, vec![num::OSCORE]);
    match process_request(wire.clone(), &mut proxy, &CatchAll, &Limits::default()) {
        Incoming::Forward { request, layers, mode } => {
            assert_eq!(mode, ForwardMode::Reverse);
            assert!(layers.is_empty());
            assert_eq!(request, wire);
        }
        other => panic!("{other:?}"),
    }
    // With the proxy's own layer outside: removed first, then forwarded.
    let (wire, _) = protect_request_layers(&get("/x"), &mut client, &[e2e, hop], 4).unwrap();
    match process_request(wire, &mut proxy, &CatchAll, &Limits::default()) {
        Incoming::Forward { layers, mode, .. } => {
            assert_eq!(mode, ForwardMode::Reverse);
            assert_eq!(layers.labels(), vec![":client"]);
        }
        other => panic!("{other:?}"),
    }
}
