//! The proxy end to end on loopback sockets: clients and a tiny origin server written directly
//! on `Endpoint`, every test bounded by a timeout.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use hopcore_codec::{num, BlockValue, Code, Message, MsgType, Token};
use hopcore_endpoint::{Endpoint, Incoming, IncomingRequest, Rejection};
use hopcore_proxy::{Proxy, ProxyConfig, Route};
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("test timed out")
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(5), "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

enum Ev {
    Request(IncomingRequest),
    Rejection(Rejection),
    End,
}

/// The next request or rejection of an endpoint's server side.
async fn next_event(incoming: &mut Incoming) -> Ev {
    poll_fn(|cx| {
        if let Poll::Ready(Some(r)) = pin!(incoming.next_rejection()).poll(cx) {
            return Poll::Ready(Ev::Rejection(r));
        }
        match pin!(incoming.next()).poll(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(Ev::Request(r)),
            Poll::Ready(None) => Poll::Ready(Ev::End),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

// ---- the origin server -----------------------------------------------------------------------

#[derive(Default)]
struct OriginState {
    requests: Vec<(SocketAddr, Message)>,
    observers: Vec<(SocketAddr, Token)>,
    /// Every observer that ever registered.
    registered: Vec<(SocketAddr, Token)>,
    registrations: usize,
    deregistrations: usize,
    rejections: Vec<Rejection>,
    state: String,
    seq: u32,
}

#[derive(Clone)]
struct Origin {
    ep: Endpoint,
    state: Arc<Mutex<OriginState>>,
}

fn big_body() -> Vec<u8> {
    (0..300u32).map(|i| (i % 251) as u8).collect()
}

impl Origin {
    async fn start() -> Origin {
        Origin::start_at(lo()).await
    }

    async fn start_at(addr: std::net::SocketAddr) -> Origin {
        let (ep, mut incoming) = Endpoint::bind(addr).await.unwrap();
        let state = Arc::new(Mutex::new(OriginState { state: "v0".into(), seq: 1, ..Default::default() }));
        let o = Origin { ep, state };
        let server = o.clone();
        tokio::spawn(async move {
            loop {
                match next_event(&mut incoming).await {
                    Ev::Request(r) => server.handle(r),
                    Ev::Rejection(r) => server.state.lock().unwrap().rejections.push(r),
                    Ev::End => break,
                }
            }
        });
        o
    }

    fn addr(&self) -> SocketAddr {
        self.ep.local_addr()
    }

    fn handle(&self, req: IncomingRequest) {
        let IncomingRequest { handle, message: m } = req;
        let mut st = self.state.lock().unwrap();
        st.requests.push((handle.peer, m.clone()));
        let path = m.path();
        let resp = match path.as_str() {
            "/hello" => Message::response(Code::CONTENT).with_payload("hello"),
            "/echo" => Message::response(Code::CHANGED).with_payload([b"got ".as_slice(), &m.payload].concat()),
            "/maxage" => {
                let mut r = Message::response(Code::CONTENT).with_payload("fresh");
                r.options.set_uint(num::MAX_AGE, 30);
                r.options.push(num::ETAG, b"tag1");
                r
            }
            "/unsafe" => Message::response(Code::CONTENT).with_option(65002, b"?"),
            "/obs" => {
                let mut r = Message::response(Code::CONTENT).with_payload(st.state.clone());
                match m.options.get_uint(num::OBSERVE) {
                    Some(0) => {
                        st.registrations += 1;
                        st.observers.push((handle.peer, handle.token));
                        st.registered.push((handle.peer, handle.token));
                        r.options.set_uint(num::OBSERVE, st.seq);
                    }
                    Some(1) => {
                        st.deregistrations += 1;
                        st.observers.retain(|o| *o != (handle.peer, handle.token));
                    }
                    _ => {}
                }
                r
            }
            "/big" => {
                let body = big_body();
                let want = m.options.get(num::BLOCK2).and_then(|v| BlockValue::decode(v).ok()).unwrap_or(BlockValue {
                    num: 0,
                    more: false,
                    szx: 2,
                });
                let (off, size) = (want.offset(), want.size());
                let end = (off + size).min(body.len());
                let more = end < body.len();
                let mut r = Message::response(Code::CONTENT).with_payload(body[off.min(end)..end].to_vec());
                r.options.set_uint(num::BLOCK2, BlockValue { num: want.num, more, szx: want.szx }.to_uint());
                r.options.set_uint(num::SIZE2, body.len() as u32);
                r
            }
            p if p.starts_with("/base") || p.starts_with("/n/") => {
                let q: Vec<String> =
                    m.options.get_all(num::URI_QUERY).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
                Message::response(Code::CONTENT).with_payload(format!("{p}?{}", q.join("&")))
            }
            _ => Message::response(Code::NOT_FOUND),
        };
        drop(st);
        self.ep.respond(handle, resp);
    }

    /// Changes the state and notifies every observer with a CON notification.
    fn notify(&self, value: &str) {
        let mut st = self.state.lock().unwrap();
        st.state = value.to_string();
        st.seq += 1;
        for &(peer, token) in &st.observers {
            self.ep.send(peer, notification(token, st.seq, value));
        }
    }

    fn requests(&self) -> Vec<Message> {
        self.state.lock().unwrap().requests.iter().map(|(_, m)| m.clone()).collect()
    }

    fn last_request(&self) -> Message {
        self.requests().pop().expect("the origin got no request")
    }
}

fn notification(token: Token, seq: u32, value: &str) -> Message {
    let mut n = Message::new(MsgType::Con, Code::CONTENT).with_payload(value.to_string());
    n.token = token;
    n.options.set_uint(num::OBSERVE, seq);
    n
}

// ---- helpers ---------------------------------------------------------------------------------

async fn proxy(cfg: ProxyConfig) -> SocketAddr {
    let bound = Proxy::new(cfg).bind(lo()).await.unwrap();
    let addr = bound.local_addr();
    tokio::spawn(bound.run());
    addr
}

async fn client() -> Endpoint {
    Endpoint::bind(lo()).await.unwrap().0
}

fn via_proxy_uri(uri: &str) -> Message {
    Message::request(Code::GET).with_option(num::PROXY_URI, uri.as_bytes())
}

fn strs(m: &Message, number: u16) -> Vec<String> {
    m.options.get_all(number).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

// ---- forward proxying ------------------------------------------------------------------------

#[tokio::test]
async fn forward_get_via_proxy_uri() {
    bounded(async {
        let origin = Origin::start().await;
        let p = proxy(ProxyConfig::default()).await;
        let c = client().await;
        let uri = format!("coap://127.0.0.1:{}/hello?x=1", origin.addr().port());
        let resp = c.request(p, via_proxy_uri(&uri)).await.unwrap();
        assert_eq!(resp.code, Code::CONTENT);
        assert_eq!(resp.payload, b"hello");
        let seen = origin.last_request();
        assert_eq!(seen.path(), "/hello");
        assert_eq!(strs(&seen, num::URI_QUERY), vec!["x=1"]);
        assert_eq!(seen.options.get_uint(num::HOP_LIMIT), Some(16), "RFC 8768 §3: inserted");
        for n in [num::PROXY_URI, num::URI_HOST, num::URI_PORT] {
            assert!(!seen.options.contains(n), "option {n} reached the origin");
        }
    })
    .await
}

#[tokio::test]
async fn forward_get_via_proxy_scheme() {
    bounded(async {
        let origin = Origin::start().await;
        let p = proxy(ProxyConfig::default()).await;
        let c = client().await;
        let mut req = Message::request(Code::GET).with_option(num::PROXY_SCHEME, b"coap");
        req.options.push(num::URI_HOST, b"127.0.0.1");
        req.options.push_uint(num::URI_PORT, origin.addr().port() as u32);
        req.set_path("/hello");
        let resp = c.request(p, req).await.unwrap();
        assert_eq!((resp.code, resp.payload.as_slice()), (Code::CONTENT, &b"hello"[..]));
        let seen = origin.last_request();
        assert!(!seen.options.contains(num::PROXY_SCHEME));
        assert!(!seen.options.contains(num::URI_PORT));
        assert!(!seen.options.contains(num::URI_HOST));
    })
    .await
}

#[tokio::test]
async fn forward_to_a_host_name_resolves_it_and_sends_uri_host() {
    bounded(async {
        let origin = Origin::start().await;
        let p = proxy(ProxyConfig::default()).await;
        let c = client().await;
        let uri = format!("coap://localhost:{}/hello", origin.addr().port());
        let resp = c.request(p, via_proxy_uri(&uri)).await.unwrap();
        assert_eq!(resp.code, Code::CONTENT);
        assert_eq!(strs(&origin.last_request(), num::URI_HOST), vec!["localhost"]);
    })
    .await
}

#[tokio::test]
async fn post_payload_is_relayed_and_response_options_kept() {
    bounded(async {
        let origin = Origin::start().await;
        let p = proxy(ProxyConfig::default()).await;
        let c = client().await;
        let mut req = via_proxy_uri(&format!("coap://127.0.0.1:{}/echo", origin.addr().port()));
        req.code = Code::POST;
        req.options.set_uint(num::CONTENT_FORMAT, 0);
        req.payload = b"some data".to_vec();
        let resp = c.request(p, req).await.unwrap();
        assert_eq!(resp.code, Code::CHANGED);
        assert_eq!(resp.payload, b"got some data");
        let seen = origin.last_request();
        assert_eq!(seen.code, Code::POST);
        assert_eq!(seen.options.get_uint(num::CONTENT_FORMAT), Some(0));

        let resp = c.request(p, via_proxy_uri(&format!("coap://127.0.0.1:{}/maxage", origin.addr().port())));
        let resp = resp.await.unwrap();
        assert_eq!(resp.options.get_uint(num::MAX_AGE), Some(30));
        assert_eq!(resp.options.get(num::ETAG), Some(&b"tag1"[..]));
    })
    .await
}

#[tokio::test]
async fn many_concurrent_requests_are_each_answered() {
    bounded(async {
        let origin = Origin::start().await;
        let p = proxy(ProxyConfig { upstream_nstart: 32, ..ProxyConfig::default() }).await;
        let c = client().await;
        let port = origin.addr().port();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    c.request(p, via_proxy_uri(&format!("coap://127.0.0.1:{port}/n/{i}"))).await.map(|m| m.payload)
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), format!("/n/{i}?").into_bytes());
        }
    })
    .await
}

// ---- reverse proxying ------------------------------------------------------------------------

#[tokio::test]
async fn reverse_route() {
    bounded(async {
        let origin = Origin::start().await;
        let upstream = format!("coap://127.0.0.1:{}/base", origin.addr().port());
        let cfg = ProxyConfig {
            forward: false,
            routes: vec![Route::new("/sensors", None, &upstream).unwrap()],
            ..ProxyConfig::default()
        };
        let p = proxy(cfg).await;
        let c = client().await;
        let mut req = Message::request(Code::GET);
        req.set_path("/sensors/temp");
        req.options.push(num::URI_QUERY, b"unit=C");
        let resp = c.request(p, req).await.unwrap();
        assert_eq!(resp.code, Code::CONTENT);
        assert_eq!(resp.payload, b"/base/temp?unit=C");
        // Not under a route: the proxy has no such resource.
        let mut req = Message::request(Code::GET);
        req.set_path("/other");
        assert_eq!(c.request(p, req).await.unwrap().code, Code::NOT_FOUND);
        // Forwarding is off here.
        let resp = c.request(p, via_proxy_uri(&format!("{upstream}/x"))).await.unwrap();
        assert_eq!(resp.code, Code::PROXYING_NOT_SUPPORTED);
    })
    .await
}

// ---- errors ----------------------------------------------------------------------------------

#[tokio::test]
async fn gateway_timeout_when_nothing_answers() {
    bounded(async {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = ProxyConfig { upstream_timeout: Duration::from_millis(300), ..ProxyConfig::default() };
        let p = proxy(cfg).await;
        let c = client().await;
        let started = Instant::now();
        let resp = c.request(p, via_proxy_uri(&format!("coap://127.0.0.1:{port}/x"))).await.unwrap();
        assert_eq!(resp.code, Code::GATEWAY_TIMEOUT);
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    })
    .await
}

#[tokio::test]
async fn bad_gateway_when_the_upstream_resets() {
    bounded(async {
        // A peer that answers every message with a RST.
        let sock = UdpSocket::bind(lo()).await.unwrap();
        let port = sock.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                if n >= 4 {
                    let _ = sock.send_to(&[0x70, 0, buf[2], buf[3]], from).await;
                }
            }
        });
        let p = proxy(ProxyConfig::default()).await;
        let c = client().await;
        let resp = c.request(p, via_proxy_uri(&format!("coap://127.0.0.1:{port}/x"))).await.unwrap();
        assert_eq!(resp.code, Code::BAD_GATEWAY);
    })
    .await
}

#[tokio::test]
async fn unrecognized_options() {
    bounded(async {
        let origin = Origin::start().await;
        let p = proxy(ProxyConfig::default()).await;
        let c = client().await;
        let port = origin.addr().port();
        // RFC 7252 §5.7.1: an unsafe option the proxy does not know in a request: 4.02...
        let req = via_proxy_uri(&format!("coap://127.0.0.1:{port}/hello")).with_option(65002, b"x");
        assert_eq!(c.request(p, req).await.unwrap().code, Code::BAD_OPTION);
        // ...a safe-to-forward one is forwarded...
        let req = via_proxy_uri(&format!("coap://127.0.0.1:{port}/hello")).with_option(65004, b"y");
        assert_eq!(c.request(p, req).await.unwrap().code, Code::CONTENT);
        assert_eq!(origin.last_request().options.get(65004), Some(&b"y"[..]));
        // ...and an unknown unsafe option in the response is a 5.02.
        let resp = c.request(p, via_proxy_uri(&format!("coap://127.0.0.1:{port}/unsafe"))).await.unwrap();
        assert_eq!(resp.code, Code::BAD_GATEWAY);
        // Bad Proxy-Uri, unsupported scheme.
        assert_eq!(c.request(p, via_proxy_uri("coap://h/#f")).await.unwrap().code, Code::BAD_OPTION);
        assert_eq!(c.request(p, via_proxy_uri("coaps://h/")).await.unwrap().code, Code::PROXYING_NOT_SUPPORTED);
    })
    .await
}

#[tokio::test]
async fn hop_limit_stops_a_proxy_loop() {
    bounded(async {
        // Two proxies whose routes point at each other: RFC 8768 detects the loop, and each
        // proxy relaying the 5.08 prepends its address (§4).
        let (a_ep, a_in) = Endpoint::bind(lo()).await.unwrap();
        let (b_ep, b_in) = Endpoint::bind(lo()).await.unwrap();
        let (a, b) = (a_ep.local_addr(), b_ep.local_addr());
        // NSTART 1 would queue the second request from A to B behind the first, which waits
        // for it: a loop needs as many slots as it has rounds.
        let cfg = |to: SocketAddr| ProxyConfig {
            hop_limit: 4,
            upstream_nstart: 4,
            routes: vec![Route::new("/", None, &format!("coap://{to}/")).unwrap()],
            ..ProxyConfig::default()
        };
        for (ep, inc, to) in [(a_ep, a_in, b), (b_ep, b_in, a)] {
            let proxy = Proxy::new(cfg(to));
            let (up, _) = Endpoint::bind_with(lo(), proxy.upstream_endpoint_config()).await.unwrap();
            tokio::spawn(proxy.run((ep, inc), up));
        }
        let c = client().await;
        let mut req = Message::request(Code::GET);
        req.set_path("/loop");
        let resp = c.request(a, req).await.unwrap();
        assert_eq!(resp.code, Code::HOP_LIMIT_REACHED);
        // A inserts 4; B gets 4, A 3, B 2, A 1: A answers, then B, A, B, A prepend.
        assert_eq!(String::from_utf8_lossy(&resp.payload), format!("{a} {b} {a} {b} {a}"));
    })
    .await
}

// ---- Block-wise ------------------------------------------------------------------------------

#[tokio::test]
async fn block2_is_relayed_block_by_block() {
    bounded(async {
        let origin = Origin::start().await;
        let p = proxy(ProxyConfig::default()).await;
        let c = client().await;
        let uri = format!("coap://127.0.0.1:{}/big", origin.addr().port());
        let mut body = Vec::new();
        let mut num = 0;
        loop {
            let mut req = via_proxy_uri(&uri);
            req.options.set_uint(num::BLOCK2, BlockValue { num, more: false, szx: 2 }.to_uint());
            let resp = c.request(p, req).await.unwrap();
            assert_eq!(resp.code, Code::CONTENT);
            let b = BlockValue::decode(resp.options.get(num::BLOCK2).unwrap()).unwrap();
            assert_eq!((b.num, b.size()), (num, 64));
            assert_eq!(resp.options.get_uint(num::SIZE2), Some(300));
            body.extend_from_slice(&resp.payload);
            if !b.more {
                break;
            }
            num += 1;
        }
        assert_eq!(body, big_body());
        // One upstream request per client block request, each for its block.
        let nums: Vec<u32> = origin
            .requests()
            .iter()
            .map(|m| BlockValue::decode(m.options.get(num::BLOCK2).unwrap()).unwrap().num)
            .collect();
        assert_eq!(nums, vec![0, 1, 2, 3, 4]);
    })
    .await
}

// ---- Observe relay (RFC 7641 §5) -------------------------------------------------------------

#[tokio::test]
async fn observe_relay_shares_one_upstream_registration() {
    bounded(async {
        let origin = Origin::start().await;
        let p = proxy(ProxyConfig::default()).await;
        let (c1, c2) = (client().await, client().await);
        let uri = format!("coap://127.0.0.1:{}/obs", origin.addr().port());
        let register = || via_proxy_uri(&uri).with_option(num::OBSERVE, &[]);
        let observe_value = |m: &Message| m.options.get_uint(num::OBSERVE).expect("a notification");

        let mut n1 = c1.observe(p, register()).unwrap();
        let first1 = n1.next().await.unwrap().unwrap();
        assert_eq!((first1.code, first1.payload.as_slice()), (Code::CONTENT, &b"v0"[..]));
        let s1 = observe_value(&first1);
        let mut n2 = c2.observe(p, register()).unwrap();
        let first2 = n2.next().await.unwrap().unwrap();
        assert_eq!(first2.payload, b"v0");
        observe_value(&first2);
        // RFC 7641 §5: the proxy registered only once.
        assert_eq!(origin.state.lock().unwrap().registrations, 1);
        assert_eq!(origin.state.lock().unwrap().observers.len(), 1);

        // A notification fans out to both clients, each with its own Observe value.
        origin.notify("v1");
        let m1 = n1.next().await.unwrap().unwrap();
        let m2 = n2.next().await.unwrap().unwrap();
        assert_eq!((m1.payload.as_slice(), m2.payload.as_slice()), (&b"v1"[..], &b"v1"[..]));
        assert!(observe_value(&m1) > s1);

        // Client 1 deregisters explicitly (GET with Observe 1 on its token): answered as a
        // plain GET, forwarded upstream without Observe; the upstream registration stays.
        let t1 = n1.token().unwrap();
        drop(n1);
        let mut dereg = register();
        dereg.options.set_uint(num::OBSERVE, 1);
        dereg.token = t1;
        let resp = c1.request(p, dereg).await.unwrap();
        assert_eq!((resp.code, resp.payload.as_slice()), (Code::CONTENT, &b"v1"[..]));
        assert!(!resp.options.contains(num::OBSERVE));
        let seen = origin.last_request();
        assert!(!seen.options.contains(num::OBSERVE));
        assert_eq!(origin.state.lock().unwrap().deregistrations, 0);

        origin.notify("v2");
        assert_eq!(n2.next().await.unwrap().unwrap().payload, b"v2");

        // Client 2 forgets its observation: the next notification gets a RST from it, which
        // removes it; as the last one, the upstream observation is cancelled (RFC 7641 §3.6).
        drop(n2);
        origin.notify("v3");
        eventually("the proxy deregisters upstream", || origin.state.lock().unwrap().deregistrations == 1).await;
        assert!(origin.state.lock().unwrap().observers.is_empty());
        assert_eq!(origin.state.lock().unwrap().registrations, 1);

        // And the proxy forgot the upstream token: a late notification is rejected with RST.
        let (peer, token) = origin.state.lock().unwrap().registered[0];
        origin.ep.send(peer, notification(token, 99, "late"));
        eventually("a RST for the late notification", || !origin.state.lock().unwrap().rejections.is_empty()).await;
        assert_eq!(origin.state.lock().unwrap().rejections[0].token, token);
    })
    .await
}

#[tokio::test]
async fn observe_late_joiner_and_end_of_observation() {
    bounded(async {
        let origin = Origin::start().await;
        let p = proxy(ProxyConfig::default()).await;
        let (c1, c2) = (client().await, client().await);
        let uri = format!("coap://127.0.0.1:{}/obs", origin.addr().port());
        let register = || via_proxy_uri(&uri).with_option(num::OBSERVE, &[]);
        let mut n1 = c1.observe(p, register()).unwrap();
        assert_eq!(n1.next().await.unwrap().unwrap().payload, b"v0");
        origin.notify("v1");
        assert_eq!(n1.next().await.unwrap().unwrap().payload, b"v1");
        // A client joining later gets the current representation from the proxy at once.
        let mut n2 = c2.observe(p, register()).unwrap();
        let first = n2.next().await.unwrap().unwrap();
        assert_eq!(first.payload, b"v1");
        assert!(first.options.contains(num::OBSERVE));
        assert_eq!(origin.state.lock().unwrap().registrations, 1);

        // An error response from upstream ends the observation for everyone.
        let (peer, token) = origin.state.lock().unwrap().registered[0];
        let mut gone = Message::new(MsgType::Con, Code::NOT_FOUND);
        gone.token = token;
        origin.ep.send(peer, gone);
        for n in [&mut n1, &mut n2] {
            let last = n.next().await.unwrap().unwrap();
            assert_eq!(last.code, Code::NOT_FOUND);
            assert!(!last.options.contains(num::OBSERVE));
            assert!(n.next().await.is_none(), "the observation ended");
        }
        // A new registration starts a new upstream observation.
        let mut n3 = c1.observe(p, register()).unwrap();
        assert_eq!(n3.next().await.unwrap().unwrap().code, Code::CONTENT);
        assert_eq!(origin.state.lock().unwrap().registrations, 2);
    })
    .await
}

#[tokio::test]
async fn observer_that_never_acknowledges_is_dropped() {
    bounded(async {
        // RFC 7641 §4.5: a CON notification that is never acknowledged removes the client.
        // A short ACK timeout on the proxy's client side keeps the test fast.
        let origin = Origin::start().await;
        let proxy = Proxy::new(ProxyConfig::default());
        let mut client_cfg = proxy.client_endpoint_config();
        client_cfg.messaging.ack_timeout = Duration::from_millis(50);
        client_cfg.messaging.max_retransmit = 1;
        let client_side = Endpoint::bind_with(lo(), client_cfg).await.unwrap();
        let p = client_side.0.local_addr();
        let (up, _) = Endpoint::bind_with(lo(), proxy.upstream_endpoint_config()).await.unwrap();
        tokio::spawn(proxy.run(client_side, up));

        // A client that registers and then goes silent.
        let sock = UdpSocket::bind(lo()).await.unwrap();
        let mut reg =
            via_proxy_uri(&format!("coap://127.0.0.1:{}/obs", origin.addr().port())).with_option(num::OBSERVE, &[]);
        reg.message_id = 0x1234;
        reg.token = Token::from_slice(b"tok").unwrap();
        sock.send_to(&reg.to_bytes().unwrap(), p).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = sock.recv_from(&mut buf).await.unwrap();
        let first = Message::parse(&buf[..n]).unwrap();
        assert_eq!((first.mtype, first.code, first.token), (MsgType::Ack, Code::CONTENT, reg.token));
        assert!(first.options.contains(num::OBSERVE));

        origin.notify("v1");
        eventually("the proxy deregisters upstream", || origin.state.lock().unwrap().deregistrations == 1).await;
    })
    .await
}

#[tokio::test]
async fn ipv6_proxy_reaches_an_ipv4_origin() {
    bounded(async {
        let Ok(bound) = Proxy::new(ProxyConfig::default()).bind("[::1]:0".parse().unwrap()).await else {
            eprintln!("no IPv6 loopback here; skipping");
            return;
        };
        let p = bound.local_addr();
        assert!(bound.upstream_addr().is_ipv6());
        tokio::spawn(bound.run());
        let origin = Origin::start().await;
        let c = Endpoint::bind("[::1]:0".parse().unwrap()).await.unwrap().0;
        let uri = format!("coap://127.0.0.1:{}/hello", origin.addr().port());
        // Through the proxy's IPv4 loopback upstream socket.
        let resp = c.request(p, via_proxy_uri(&uri)).await.unwrap();
        assert_eq!((resp.code, resp.payload.as_slice()), (Code::CONTENT, &b"hello"[..]));
    })
    .await
}

#[tokio::test]
async fn ipv4_loopback_proxy_reaches_an_ipv6_origin_from_a_loopback_socket() {
    bounded(async {
        let Ok(origin_ep) = std::net::UdpSocket::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here; skipping");
            return;
        };
        drop(origin_ep);
        let bound = Proxy::new(ProxyConfig::default()).bind(lo()).await.unwrap();
        let p = bound.local_addr();
        // The proxy listens on loopback, so its upstream sockets are loopback ones too.
        assert!(bound.upstream_addr().ip().is_loopback());
        tokio::spawn(bound.run());
        let origin = Origin::start_at("[::1]:0".parse().unwrap()).await;
        let c = Endpoint::bind(lo()).await.unwrap().0;
        let uri = format!("coap://[::1]:{}/hello", origin.addr().port());
        let resp = c.request(p, via_proxy_uri(&uri)).await.unwrap();
        assert_eq!((resp.code, resp.payload.as_slice()), (Code::CONTENT, &b"hello"[..]));
    })
    .await
}

#[tokio::test]
async fn no_response_suppresses_the_relayed_response() {
    bounded(async {
        // RFC 7967: No-Response 16 (no interest in 5.xx) on a NON request; the proxy sends no
        // 5.04, while a 2.05 still comes.
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let origin = Origin::start().await;
        let p = proxy(ProxyConfig { upstream_timeout: Duration::from_millis(200), ..ProxyConfig::default() }).await;
        let sock = UdpSocket::bind(lo()).await.unwrap();
        let mut buf = [0u8; 1500];
        for (i, (target, expect)) in [(port, None), (origin.addr().port(), Some(Code::CONTENT))].into_iter().enumerate()
        {
            let mut req = via_proxy_uri(&format!("coap://127.0.0.1:{target}/hello"));
            req.mtype = MsgType::Non;
            req.message_id = i as u16;
            req.token = Token::from_slice(&[i as u8]).unwrap();
            req.options.set_uint(num::NO_RESPONSE, 16);
            sock.send_to(&req.to_bytes().unwrap(), p).await.unwrap();
            let got = tokio::time::timeout(Duration::from_millis(600), sock.recv_from(&mut buf)).await;
            match expect {
                None => assert!(got.is_err(), "a suppressed 5.04 was sent"),
                Some(code) => {
                    let (n, _) = got.unwrap().unwrap();
                    assert_eq!(Message::parse(&buf[..n]).unwrap().code, code);
                }
            }
        }
    })
    .await
}
