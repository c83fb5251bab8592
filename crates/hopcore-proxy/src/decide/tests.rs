//! Unit tests of [`decide`]: one group per rule of the module documentation.

use hopcore_codec::CoapUri;

use super::*;
use crate::config::Route;

const ME: &str = "192.0.2.1:5683";

fn cfg() -> ProxyConfig {
    ProxyConfig::default()
}

fn local_for(cfg: &ProxyConfig) -> Local {
    Local::new(ME.parse().unwrap(), cfg)
}

fn run(req: &Message, cfg: &ProxyConfig) -> Decision {
    decide(req, cfg, &local_for(cfg))
}

fn get(proxy_uri: &str) -> Message {
    Message::request(Code::GET).with_option(num::PROXY_URI, proxy_uri.as_bytes())
}

#[track_caller]
fn forwarded(d: Decision) -> Upstream {
    match d {
        Decision::Forward(u) => u,
        other => panic!("expected Forward, got {other:?}"),
    }
}

#[track_caller]
fn reversed(d: Decision) -> (usize, Upstream) {
    match d {
        Decision::Reverse { route, upstream } => (route, upstream),
        other => panic!("expected Reverse, got {other:?}"),
    }
}

#[track_caller]
fn rejected(d: Decision) -> Reject {
    match d {
        Decision::Reject(r) => r,
        other => panic!("expected Reject, got {other:?}"),
    }
}

fn strs(m: &Message, number: u16) -> Vec<&str> {
    m.options.get_all(number).map(|v| std::str::from_utf8(v).unwrap()).collect()
}

fn ip_target(ip: &str, port: u16) -> Target {
    Target { scheme: Scheme::Coap, host: Host::Ip(ip.parse().unwrap()), port }
}

// ---- Proxy-Uri (RFC 7252 §5.10.2, §6.4) ------------------------------------------------------

#[test]
fn proxy_uri_is_split_into_uri_options() {
    let req = get("coap://198.51.100.7:61616/a/b%20c?x=1&y").with_payload("p");
    let up = forwarded(run(&req, &cfg()));
    assert_eq!(up.target, ip_target("198.51.100.7", 61616));
    assert_eq!(up.target.socket_addr(), Some("198.51.100.7:61616".parse().unwrap()));
    let m = &up.request;
    assert_eq!((m.code, m.mtype), (Code::GET, MsgType::Con));
    assert_eq!(strs(m, num::URI_PATH), vec!["a", "b c"]);
    assert_eq!(strs(m, num::URI_QUERY), vec!["x=1", "y"]);
    // RFC 7252 §6.4 step 5: no Uri-Host for an IP literal; step 7: no Uri-Port, the request
    // goes to that port. §5.7.2: Proxy-Uri is consumed.
    assert!(!m.options.contains(num::URI_HOST));
    assert!(!m.options.contains(num::URI_PORT));
    assert!(!m.options.contains(num::PROXY_URI));
    assert_eq!(m.payload, b"p");
    assert!(m.token.is_empty(), "the messaging layer assigns the token");
    assert_eq!(up.observe, ObserveIntent::None);
}

#[test]
fn proxy_uri_reg_name_gives_uri_host() {
    let up = forwarded(run(&get("coap://Example.COM/x"), &cfg()));
    assert_eq!(up.target.host, Host::Name("example.com".into()));
    assert_eq!(up.target.port, 5683);
    assert_eq!(up.target.socket_addr(), None);
    assert_eq!(strs(&up.request, num::URI_HOST), vec!["example.com"]);
    assert_eq!(up.target.to_string(), "coap://example.com:5683");
}

#[test]
fn proxy_uri_ipv6_literal() {
    let up = forwarded(run(&get("coap://[2001:DB8::1]"), &cfg()));
    assert_eq!(up.target, ip_target("2001:db8::1", 5683));
    assert!(!up.request.options.contains(num::URI_HOST));
    assert!(!up.request.options.contains(num::URI_PATH));
    assert_eq!(up.target.to_string(), "coap://[2001:db8::1]:5683");
}

#[test]
fn proxy_uri_takes_precedence_over_uri_options_and_proxy_scheme() {
    // RFC 7252 §5.10.2: "The Proxy-Uri Option MUST take precedence over any of the Uri-Host,
    // Uri-Port, Uri-Path or Uri-Query options": they are ignored, not forwarded.
    let mut req = get("coap://198.51.100.7/real?q");
    req.options.push(num::URI_HOST, b"ignored.example");
    req.options.push(num::URI_PORT, &[0x16, 0x34]);
    req.options.push(num::URI_PATH, b"ignored");
    req.options.push(num::URI_QUERY, b"ignored");
    req.options.push(num::PROXY_SCHEME, b"http");
    let up = forwarded(run(&req, &cfg()));
    assert_eq!(up.target, ip_target("198.51.100.7", 5683));
    assert_eq!(strs(&up.request, num::URI_PATH), vec!["real"]);
    assert_eq!(strs(&up.request, num::URI_QUERY), vec!["q"]);
    assert!(!up.request.options.contains(num::URI_HOST));
    assert!(!up.request.options.contains(num::PROXY_SCHEME));
}

#[test]
fn malformed_proxy_uri_is_bad_option() {
    // RFC 7252 §5.9.2.3 (malformed option) / §6.4 steps 1 and 4 fail.
    for bad in [
        "not a uri",
        "/relative/ref",
        "coap:no-authority",
        "coap://h/a#frag",
        "coap://user@h/",
        "coap://[::g]/",
        "coap://[::1/",
        "coap://h:99999/",
        "coap://h:0/",
        "coap://h:x/",
        "coap://h/%zz",
        "coap://h/%ff",
        "coap:///x",
        "coap://a b/",
        "coap://::1/",
        "1coap://h/",
    ] {
        let r = rejected(run(&get(bad), &cfg()));
        assert_eq!(r.code, Code::BAD_OPTION, "{bad}");
        assert!(r.diagnostic.starts_with("bad Proxy-Uri"), "{bad}: {}", r.diagnostic);
    }
    let long = format!("coap://h/{}", "a".repeat(256));
    assert_eq!(rejected(run(&get(&long), &cfg())).code, Code::BAD_OPTION);
    let req = Message::request(Code::GET).with_option(num::PROXY_URI, &[0xff, 0xfe]);
    assert_eq!(rejected(run(&req, &cfg())).code, Code::BAD_OPTION);
    // Repeated Proxy-Uri (not repeatable, RFC 7252 §5.4.5).
    let req = get("coap://h/").with_option(num::PROXY_URI, b"coap://g/");
    assert_eq!(rejected(run(&req, &cfg())).code, Code::BAD_OPTION);
}

#[test]
fn split_matches_the_codec_uri_parser() {
    for uri in [
        "coap://example.net/.well-known/core",
        "coap://EXAMPLE.com:5683/~sensors/temp.xml",
        "coap://example.com/%7Esensors/temp.xml",
        "coap://[2001:db8::2:1]:61616/%E2%82%AC?a=1&b%262",
        "coap://h/a/",
        "coap://h/",
        "coap://h",
        "coap://h?",
        "coap://h?q",
        "coap://h/a//b",
        "coap://h:/x",
        "coap://%68ost/x",
        "coap://198.51.100.1:1234/a%2Fb/c?x=%26&y",
    ] {
        let parsed = CoapUri::parse(uri).unwrap();
        let mut expected = Options::new();
        parsed.write_path_query(&mut expected);
        let mut got = Options::new();
        let t = split_proxy_uri(uri, &mut got).unwrap();
        assert_eq!(got, expected, "{uri}");
        assert_eq!(t.port, parsed.port_or_default(), "{uri}");
        match (&t.host, parsed.ip()) {
            (Host::Ip(a), Some(b)) => assert_eq!(*a, b, "{uri}"),
            (Host::Name(n), None) => assert_eq!(&**n, parsed.host, "{uri}"),
            other => panic!("{uri}: {other:?}"),
        }
    }
}

// ---- Proxy-Scheme + Uri-* (RFC 7252 §5.10.2, §6.5) -------------------------------------------

fn scheme_req(scheme: &str) -> Message {
    Message::request(Code::GET).with_option(num::PROXY_SCHEME, scheme.as_bytes())
}

#[test]
fn proxy_scheme_with_uri_options() {
    // As aiocoap sends it: Proxy-Scheme, Uri-Host, Uri-Port, Uri-Path, Uri-Query.
    let mut req = scheme_req("coap");
    req.options.push(num::URI_HOST, b"127.0.0.1");
    req.options.push_uint(num::URI_PORT, 5690);
    req.options.push(num::URI_PATH, b"a");
    req.options.push(num::URI_PATH, b"b");
    req.options.push(num::URI_QUERY, b"q=1");
    let up = forwarded(run(&req, &cfg()));
    assert_eq!(up.target, ip_target("127.0.0.1", 5690));
    let m = &up.request;
    assert_eq!(strs(m, num::URI_PATH), vec!["a", "b"]);
    assert_eq!(strs(m, num::URI_QUERY), vec!["q=1"]);
    for n in [num::PROXY_SCHEME, num::URI_HOST, num::URI_PORT] {
        assert!(!m.options.contains(n), "option {n} must not be forwarded");
    }

    // A reg-name keeps its Uri-Host (lower-cased); the scheme is case-insensitive; an IPv6
    // literal may come with brackets.
    let mut req = scheme_req("CoAP");
    req.options.push(num::URI_HOST, b"Origin.Example");
    let up = forwarded(run(&req, &cfg()));
    assert_eq!(up.target.host, Host::Name("origin.example".into()));
    assert_eq!(strs(&up.request, num::URI_HOST), vec!["origin.example"]);
    let mut req = scheme_req("coap");
    req.options.push(num::URI_HOST, b"[::1]");
    req.options.push_uint(num::URI_PORT, 7000);
    assert_eq!(forwarded(run(&req, &cfg())).target, ip_target("::1", 7000));
}

#[test]
fn proxy_scheme_defaults_are_the_request_destination() {
    // RFC 7252 §6.5 steps 2 and 4: without Uri-Port the port is the request's destination
    // port, i.e. the proxy's (here 5683, the default anyway).
    let mut req = scheme_req("coap");
    req.options.push(num::URI_HOST, b"198.51.100.9");
    assert_eq!(forwarded(run(&req, &cfg())).target, ip_target("198.51.100.9", 5683));
    let c = cfg();
    let l = Local::new("192.0.2.1:7777".parse().unwrap(), &c);
    let Decision::Forward(up) = decide(&req, &c, &l) else { panic!() };
    assert_eq!(up.target.port, 7777);
    // Without Uri-Host the host is the proxy's own address; another port there is another
    // server on the proxy's host.
    let mut req = scheme_req("coap");
    req.options.push_uint(num::URI_PORT, 5690);
    assert_eq!(forwarded(run(&req, &cfg())).target, ip_target("192.0.2.1", 5690));
    let l = Local::new("0.0.0.0:5683".parse().unwrap(), &c);
    let Decision::Forward(up) = decide(&req, &c, &l) else { panic!() };
    assert_eq!(up.target, ip_target("127.0.0.1", 5690));
}

#[test]
fn bad_uri_options_in_proxy_scheme_requests() {
    let mut req = scheme_req("coap");
    req.options.push(num::URI_HOST, b"bad host");
    assert_eq!(rejected(run(&req, &cfg())).code, Code::BAD_OPTION);
    let mut req = scheme_req("coap");
    req.options.push(num::URI_HOST, b"h");
    req.options.push(num::URI_PORT, &[1, 2, 3]); // longer than 2 bytes (RFC 7252 §5.4.3)
    assert_eq!(rejected(run(&req, &cfg())).code, Code::BAD_OPTION);
    let mut req = scheme_req("coap");
    req.options.push(num::URI_HOST, b"h");
    req.options.push(num::URI_HOST, b"g"); // not repeatable (§5.4.5)
    assert_eq!(rejected(run(&req, &cfg())).code, Code::BAD_OPTION);
}

// ---- 5.05 (RFC 7252 §5.7.2, §5.10.2) ---------------------------------------------------------

#[test]
fn unsupported_schemes_get_5_05() {
    for uri in ["coaps://h/", "http://h/x", "coap+tcp://h/", "mailto:someone"] {
        let r = rejected(run(&get(uri), &cfg()));
        assert_eq!(r.code, Code::PROXYING_NOT_SUPPORTED, "{uri}");
    }
    let mut req = scheme_req("coaps");
    req.options.push(num::URI_HOST, b"h");
    let r = rejected(run(&req, &cfg()));
    assert_eq!(r.code, Code::PROXYING_NOT_SUPPORTED);
    assert_eq!(r.diagnostic, "scheme \"coaps\" is not supported (only \"coap\")");
}

#[test]
fn forward_disabled_gets_5_05() {
    let c = ProxyConfig { forward: false, ..cfg() };
    let r = rejected(run(&get("coap://198.51.100.7/x"), &c));
    assert_eq!(r.code, Code::PROXYING_NOT_SUPPORTED);
    let mut req = scheme_req("coap");
    req.options.push(num::URI_HOST, b"h");
    assert_eq!(rejected(run(&req, &c)).code, Code::PROXYING_NOT_SUPPORTED);
}

// ---- Options through the proxy (RFC 7252 §5.7.1) ---------------------------------------------

#[test]
fn unrecognized_unsafe_option_is_bad_option() {
    // RFC 7252 §5.7.1: "Unsafe options in a request that are not recognized by the proxy MUST
    // lead to a 4.02 (Bad Option) response being returned by the proxy."
    assert!(is_unsafe(65002));
    let req = get("coap://198.51.100.7/").with_option(65002, b"x");
    let r = rejected(run(&req, &cfg()));
    assert_eq!(r.code, Code::BAD_OPTION);
    assert_eq!(r.diagnostic, "unrecognized unsafe option 65002");
    // Also in reverse-proxied requests.
    let c = with_routes(&[("/s", None, "coap://127.0.0.1:5690/")]);
    let mut req = Message::request(Code::GET).with_option(65002, b"x");
    req.set_path("/s/x");
    assert_eq!(rejected(run(&req, &c)).code, Code::BAD_OPTION);
    // Multicast-Timeout (draft-ietf-core-groupcomm-proxy, unsafe) is not implemented here.
    let req = get("coap://198.51.100.7/").with_option(2, &[5]);
    assert_eq!(rejected(run(&req, &cfg())).code, Code::BAD_OPTION);
}

#[test]
fn safe_to_forward_options_are_forwarded_unchanged() {
    // RFC 7252 §5.7.1: "A CoAP-to-CoAP proxy MUST forward to the origin server all
    // Safe-to-Forward options that it does not recognize" (critical or not, §5.4.1).
    assert!(!is_unsafe(65004) && !is_unsafe(65005));
    let mut req = get("coap://198.51.100.7/r");
    req.code = Code::POST;
    req.options.push(65004, b"elective-safe");
    req.options.push(65005, b"critical-safe");
    req.options.push(65005, b"repeated");
    req.options.push(num::ETAG, b"e");
    req.options.push_uint(num::ACCEPT, 50);
    req.options.push_uint(num::CONTENT_FORMAT, 0);
    req.options.push(num::OSCORE, &[0x09, 0x14]);
    req.options.push(num::REQUEST_TAG, b"t");
    req.options.push_uint(num::BLOCK1, 0x0e);
    req.options.push_uint(num::SIZE1, 300);
    req.options.push_uint(num::NO_RESPONSE, 2);
    let up = forwarded(run(&req, &cfg()));
    for n in [num::ETAG, num::ACCEPT, num::CONTENT_FORMAT, num::OSCORE, num::REQUEST_TAG, num::BLOCK1, num::SIZE1] {
        assert_eq!(up.request.options.get(n), req.options.get(n), "option {n}");
    }
    assert_eq!(up.request.options.get_all(65005).collect::<Vec<_>>(), vec![&b"critical-safe"[..], b"repeated"]);
    assert_eq!(up.request.options.get(65004), Some(&b"elective-safe"[..]));
    assert_eq!(up.request.options.get_uint(num::NO_RESPONSE), Some(2));
}

#[test]
fn block_options_are_relayed_block_by_block() {
    // One client block request → one upstream request with the same Block2/Size2.
    let mut req = get("coap://198.51.100.7/big");
    req.options.push_uint(num::BLOCK2, (3 << 4) | 2);
    req.options.push_uint(num::SIZE2, 0);
    let up = forwarded(run(&req, &cfg()));
    assert_eq!(up.request.options.get_uint(num::BLOCK2), Some((3 << 4) | 2));
    assert_eq!(up.request.options.get_uint(num::SIZE2), Some(0));
}

#[test]
fn message_type_code_and_payload_carry_over() {
    let mut req = get("coap://198.51.100.7/r").with_payload(vec![1u8, 2, 3]);
    req.code = Code::PUT;
    req.mtype = MsgType::Non;
    let up = forwarded(run(&req, &cfg()));
    assert_eq!((up.request.code, up.request.mtype), (Code::PUT, MsgType::Non));
    assert_eq!(up.request.payload, vec![1, 2, 3]);
}

// ---- Hop-Limit (RFC 8768 §3) -----------------------------------------------------------------

#[test]
fn hop_limit_is_inserted_when_absent() {
    let up = forwarded(run(&get("coap://198.51.100.7/"), &cfg()));
    assert_eq!(up.request.options.get(num::HOP_LIMIT), Some(&[16u8][..]));
    let c = ProxyConfig { hop_limit: 5, ..cfg() };
    let up = forwarded(run(&get("coap://198.51.100.7/"), &c));
    assert_eq!(up.request.options.get_uint(num::HOP_LIMIT), Some(5));
}

#[test]
fn hop_limit_is_decremented() {
    let req = get("coap://198.51.100.7/").with_option(num::HOP_LIMIT, &[10]);
    let up = forwarded(run(&req, &cfg()));
    assert_eq!(up.request.options.get_all(num::HOP_LIMIT).collect::<Vec<_>>(), vec![&[9u8][..]]);
    // Leading zeros are a valid uint (RFC 7252 §3.2).
    let req = get("coap://198.51.100.7/").with_option(num::HOP_LIMIT, &[0, 2]);
    assert_eq!(forwarded(run(&req, &cfg())).request.options.get_uint(num::HOP_LIMIT), Some(1));
}

#[test]
fn hop_limit_reached_gives_5_08_with_our_address() {
    let req = get("coap://198.51.100.7/").with_option(num::HOP_LIMIT, &[1]);
    let r = rejected(run(&req, &cfg()));
    assert_eq!(r.code, Code::HOP_LIMIT_REACHED);
    // RFC 8768 §4: the proxy's information, without spaces.
    assert_eq!(r.diagnostic, ME);
    assert_eq!(r.to_message().payload, ME.as_bytes());
    let c = ProxyConfig { names: vec!["p1.example".into()], ..cfg() };
    assert_eq!(rejected(run(&req, &c)).diagnostic, "p1.example");
}

#[test]
fn hop_limit_out_of_range_is_bad_request() {
    for v in [&[][..], &[0][..], &[1, 0][..], &[1, 2, 3, 4, 5][..]] {
        let req = get("coap://198.51.100.7/").with_option(num::HOP_LIMIT, v);
        assert_eq!(rejected(run(&req, &cfg())).code, Code::BAD_REQUEST, "{v:?}");
    }
}

// ---- Reverse routes (RFC 7252 §5.7.3) --------------------------------------------------------

fn with_routes(routes: &[(&str, Option<&str>, &str)]) -> ProxyConfig {
    ProxyConfig { routes: routes.iter().map(|(p, h, u)| Route::new(p, *h, u).unwrap()).collect(), ..cfg() }
}

fn own(path: &str, query: &[&str]) -> Message {
    let mut m = Message::request(Code::GET);
    m.set_path(path);
    for q in query {
        m.options.push(num::URI_QUERY, q.as_bytes());
    }
    m
}

#[test]
fn reverse_route_appends_the_rest_of_the_path_and_the_query() {
    let c = with_routes(&[("/sensors", None, "coap://127.0.0.1:5690/base")]);
    let (i, up) = reversed(run(&own("/sensors/temp/now", &["unit=C"]), &c));
    assert_eq!(i, 0);
    assert_eq!(up.target, ip_target("127.0.0.1", 5690));
    assert_eq!(strs(&up.request, num::URI_PATH), vec!["base", "temp", "now"]);
    assert_eq!(strs(&up.request, num::URI_QUERY), vec!["unit=C"]);
    assert!(!up.request.options.contains(num::URI_HOST));
    assert_eq!(up.request.options.get_uint(num::HOP_LIMIT), Some(16));
    let (_, up) = reversed(run(&own("/sensors", &[]), &c));
    assert_eq!(strs(&up.request, num::URI_PATH), vec!["base"]);
    // Segment-wise prefix: /sensorsX is not under /sensors.
    assert_eq!(run(&own("/sensorsX", &[]), &c), Decision::Local);
    assert_eq!(run(&own("/", &[]), &c), Decision::Local);
}

#[test]
fn reverse_route_path_joining() {
    let c = with_routes(&[
        ("/a", None, "coap://127.0.0.1:1/b/"),
        ("/q", None, "coap://127.0.0.1:1/?k=v"),
        ("/r/", None, "coap://127.0.0.1:1"),
    ]);
    // A trailing slash of the base is a separator when something is appended...
    let (_, up) = reversed(run(&own("/a/x", &[]), &c));
    assert_eq!(strs(&up.request, num::URI_PATH), vec!["b", "x"]);
    // ...and kept otherwise.
    let (_, up) = reversed(run(&own("/a", &[]), &c));
    assert_eq!(strs(&up.request, num::URI_PATH), vec!["b", ""]);
    // The base's query comes first.
    let (_, up) = reversed(run(&own("/q/z", &["u=1"]), &c));
    assert_eq!(strs(&up.request, num::URI_PATH), vec!["z"]);
    assert_eq!(strs(&up.request, num::URI_QUERY), vec!["k=v", "u=1"]);
    // "/r/" is the same prefix as "/r".
    let (i, up) = reversed(run(&own("/r/s", &[]), &c));
    assert_eq!(i, 2);
    assert_eq!(strs(&up.request, num::URI_PATH), vec!["s"]);
}

#[test]
fn reverse_route_selection_by_prefix_length_and_host() {
    let c = with_routes(&[
        ("/", None, "coap://127.0.0.1:1/"),
        ("/a", None, "coap://127.0.0.1:2/"),
        ("/a/b", None, "coap://127.0.0.1:3/"),
        ("/a", Some("v.example"), "coap://upstream.example:4/"),
    ]);
    let port = |path: &str, host: Option<&str>| {
        let mut m = own(path, &[]);
        if let Some(h) = host {
            m.options.push(num::URI_HOST, h.as_bytes());
        }
        reversed(run(&m, &c)).1.target.port
    };
    assert_eq!(port("/x", None), 1);
    assert_eq!(port("/a/x", None), 2);
    assert_eq!(port("/a/b/c", None), 3);
    assert_eq!(port("/a/x", Some("V.Example")), 4);
    assert_eq!(port("/a/x", Some("other.example")), 2);
    assert_eq!(port("/a/b", Some("v.example")), 3);
    // The upstream's own host name becomes the Uri-Host; the client's is not forwarded.
    let mut m = own("/a/x", &[]);
    m.options.push(num::URI_HOST, b"v.example");
    let (_, up) = reversed(run(&m, &c));
    assert_eq!(strs(&up.request, num::URI_HOST), vec!["upstream.example"]);
    assert_eq!(up.target.host, Host::Name("upstream.example".into()));
}

#[test]
fn reverse_route_hop_limit() {
    let c = with_routes(&[("/", None, "coap://127.0.0.1:1/")]);
    let req = own("/x", &[]).with_option(num::HOP_LIMIT, &[3]);
    assert_eq!(reversed(run(&req, &c)).1.request.options.get_uint(num::HOP_LIMIT), Some(2));
    let req = own("/x", &[]).with_option(num::HOP_LIMIT, &[1]);
    assert_eq!(rejected(run(&req, &c)).code, Code::HOP_LIMIT_REACHED);
}

// ---- Local requests (RFC 7252 §5.4.1, §5.7.2) ------------------------------------------------

#[test]
fn local_requests() {
    assert_eq!(run(&own("/anything", &[]), &cfg()), Decision::Local);
    // An elective unknown option is ignored.
    assert_eq!(run(&own("/x", &[]).with_option(65004, b""), &cfg()), Decision::Local);
    // An unrecognized critical option in a request the proxy must understand itself: 4.02
    // (RFC 7252 §5.4.1), although a proxy request would forward it (safe-to-forward).
    let r = rejected(run(&own("/x", &[]).with_option(65005, b""), &cfg()));
    assert_eq!(r.code, Code::BAD_OPTION);
    assert!(r.diagnostic.contains("65005"));
    assert!(matches!(run(&get("coap://198.51.100.7/").with_option(65005, b""), &cfg()), Decision::Forward(_)));
}

#[test]
fn a_proxy_request_for_the_proxy_itself_is_local() {
    // RFC 7252 §5.7.2: the authority identifies the proxy → a local request, which may then
    // be reverse-proxied.
    let c = with_routes(&[("/sensors", None, "coap://127.0.0.1:5690/base")]);
    let (_, up) = reversed(run(&get("coap://192.0.2.1:5683/sensors/t?x"), &c));
    assert_eq!(strs(&up.request, num::URI_PATH), vec!["base", "t"]);
    assert_eq!(strs(&up.request, num::URI_QUERY), vec!["x"]);
    assert!(!up.request.options.contains(num::PROXY_URI));
    assert_eq!(run(&get("coap://192.0.2.1/other"), &c), Decision::Local);
    // Also when forwarding is disabled, and by a configured name.
    let c = ProxyConfig { forward: false, names: vec!["proxy.example".into()], ..cfg() };
    assert_eq!(run(&get("coap://192.0.2.1/x"), &c), Decision::Local);
    assert_eq!(run(&get("coap://PROXY.example/x"), &c), Decision::Local);
    // Proxy-Scheme without Uri-Host and Uri-Port names the proxy too.
    assert_eq!(run(&scheme_req("coap"), &cfg()), Decision::Local);
    // Another port is another endpoint.
    assert!(matches!(run(&get("coap://192.0.2.1:5690/x"), &cfg()), Decision::Forward(_)));
    // On a wildcard socket, loopback and localhost are the proxy.
    let c = cfg();
    let l = Local::new("[::]:5683".parse().unwrap(), &c);
    assert_eq!(decide(&get("coap://127.0.0.1/x"), &c, &l), Decision::Local);
    assert_eq!(decide(&get("coap://[::1]/x"), &c, &l), Decision::Local);
    assert_eq!(decide(&get("coap://localhost/x"), &c, &l), Decision::Local);
    assert!(matches!(decide(&get("coap://198.51.100.7/x"), &c, &l), Decision::Forward(_)));
}

// ---- Observe (RFC 7641 §2, §3.6) -------------------------------------------------------------

#[test]
fn observe_intent() {
    let req = get("coap://198.51.100.7/obs").with_option(num::OBSERVE, &[]);
    let up = forwarded(run(&req, &cfg()));
    assert_eq!(up.observe, ObserveIntent::Register);
    assert_eq!(up.request.options.get_uint(num::OBSERVE), Some(0));
    let req = get("coap://198.51.100.7/obs").with_option(num::OBSERVE, &[1]);
    let up = forwarded(run(&req, &cfg()));
    assert_eq!(up.observe, ObserveIntent::Deregister);
    assert!(!up.request.options.contains(num::OBSERVE), "deregistration is forwarded as a plain GET");
    let mut req = get("coap://198.51.100.7/obs").with_option(num::OBSERVE, &[]);
    req.code = Code::POST;
    let up = forwarded(run(&req, &cfg()));
    assert_eq!(up.observe, ObserveIntent::None);
    assert!(!up.request.options.contains(num::OBSERVE));
    let mut req = get("coap://198.51.100.7/obs").with_option(num::OBSERVE, &[]);
    req.code = Code::FETCH;
    assert_eq!(forwarded(run(&req, &cfg())).observe, ObserveIntent::Register);
    // An Observe value longer than 3 bytes is a malformed unsafe option.
    let req = get("coap://198.51.100.7/obs").with_option(num::OBSERVE, &[0, 0, 0, 0]);
    assert_eq!(rejected(run(&req, &cfg())).code, Code::BAD_OPTION);
}
