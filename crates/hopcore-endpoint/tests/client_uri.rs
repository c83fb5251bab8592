//! `build_request` and `resolve`: from a URI to options and a first hop.

use std::net::SocketAddr;

use hopcore_codec::{num, CoapUri, Code, MsgType};
use hopcore_endpoint::client::{build_request, resolve, ClientError, Target};

/// The options of `m` as (number, value) pairs, in wire order.
fn opts(m: &hopcore_codec::Message) -> Vec<(u16, Vec<u8>)> {
    m.options.iter().map(|o| (o.number, o.value.to_vec())).collect()
}

fn o(number: u16, value: &[u8]) -> (u16, Vec<u8>) {
    (number, value.to_vec())
}

fn port(p: u16) -> Vec<u8> {
    let (b, l) = hopcore_codec::uint::encode(p as u32);
    b[..l].to_vec()
}

#[test]
fn direct_target_rfc7252_6_4() {
    let uri = CoapUri::parse("coap://Example.COM:61616/a/b%20c?x=1&y").unwrap();
    let m = build_request(Code::GET, &uri, Target::Direct);
    assert_eq!((m.code, m.mtype), (Code::GET, MsgType::Con));
    assert!(m.payload.is_empty());
    assert_eq!(
        opts(&m),
        [
            // §6.4 step 7: the request goes to port 61616, so no Uri-Port.
            o(num::URI_HOST, b"example.com"),
            o(num::URI_PATH, b"a"),
            o(num::URI_PATH, b"b c"),
            o(num::URI_QUERY, b"x=1"),
            o(num::URI_QUERY, b"y"),
        ]
    );

    // IP literals give no Uri-Host, and the port is the destination's: no Uri-Port (§6.4
    // steps 5, 7).
    let uri = CoapUri::parse("coap://127.0.0.1:5683/s").unwrap();
    assert_eq!(opts(&build_request(Code::PUT, &uri, Target::Direct)), [o(num::URI_PATH, b"s")]);
    let uri = CoapUri::parse("coap://[::1]/").unwrap();
    assert_eq!(opts(&build_request(Code::GET, &uri, Target::Direct)), []);
    let uri = CoapUri::parse("coap://[2001:db8::1]:1234").unwrap();
    assert_eq!(opts(&build_request(Code::GET, &uri, Target::Direct)), []);
}

#[test]
fn proxy_uri_target_rfc7252_5_10_2() {
    let uri = CoapUri::parse("coap://example.com:61616/a/b?x=1&y").unwrap();
    let m = build_request(Code::POST, &uri, Target::ProxyUri);
    assert_eq!(m.code, Code::POST);
    assert_eq!(opts(&m), [o(num::PROXY_URI, b"coap://example.com:61616/a/b?x=1&y")]);

    let uri = CoapUri::parse("coap://[::1]:5683").unwrap();
    assert_eq!(opts(&build_request(Code::GET, &uri, Target::ProxyUri)), [o(num::PROXY_URI, b"coap://[::1]/")]);
    let uri = CoapUri::parse("http://example.org/x?a%26b").unwrap();
    assert_eq!(
        opts(&build_request(Code::GET, &uri, Target::ProxyUri)),
        [o(num::PROXY_URI, b"http://example.org/x?a%26b")]
    );
}

#[test]
fn proxy_scheme_target() {
    let uri = CoapUri::parse("coap://example.com/a?x=1").unwrap();
    let m = build_request(Code::GET, &uri, Target::ProxyScheme);
    assert_eq!(
        opts(&m),
        [
            o(num::URI_HOST, b"example.com"),
            (num::URI_PORT, port(5683)),
            o(num::URI_PATH, b"a"),
            o(num::URI_QUERY, b"x=1"),
            o(num::PROXY_SCHEME, b"coap"),
        ]
    );
    // Uri-Host even for a literal: the proxy needs it to find the target.
    let uri = CoapUri::parse("coap://127.0.0.1:9999").unwrap();
    assert_eq!(
        opts(&build_request(Code::GET, &uri, Target::ProxyScheme)),
        [o(num::URI_HOST, b"127.0.0.1"), (num::URI_PORT, port(9999)), o(num::PROXY_SCHEME, b"coap")]
    );
}

#[tokio::test]
async fn resolve_ip_literals_and_default_ports() {
    let r = |s: &str| {
        let uri = CoapUri::parse(s).unwrap();
        async move { resolve(&uri).await }
    };
    assert_eq!(r("coap://127.0.0.1/x").await, Ok("127.0.0.1:5683".parse::<SocketAddr>().unwrap()));
    assert_eq!(r("coap://192.0.2.7:61616").await, Ok("192.0.2.7:61616".parse().unwrap()));
    assert_eq!(r("coap://[::1]/").await, Ok("[::1]:5683".parse().unwrap()));
    assert_eq!(r("coap://[2001:db8::2:1]:7000/a").await, Ok("[2001:db8::2:1]:7000".parse().unwrap()));
    assert_eq!(r("coaps://[2001:db8::1]/").await, Ok("[2001:db8::1]:5684".parse().unwrap()));
}

#[tokio::test]
async fn resolve_localhost_by_name() {
    let uri = CoapUri::parse("coap://localhost:1234/").unwrap();
    match resolve(&uri).await {
        Ok(addr) => {
            assert!(addr.ip().is_loopback(), "{addr}");
            assert_eq!(addr.port(), 1234);
        }
        // A machine without a hosts entry for localhost: the error names the host.
        Err(e @ ClientError::Resolve { .. }) => assert!(e.to_string().contains("\"localhost\""), "{e}"),
        Err(e) => panic!("unexpected {e:?}"),
    }
}
