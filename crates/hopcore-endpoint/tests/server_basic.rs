//! The server over loopback: routing, method and option errors, content negotiation, and
//! /.well-known/core.

#[path = "server_support.rs"]
mod support;

use hopcore_codec::{content_format, num, Code, Message};
use hopcore_endpoint::server::demo::demo_server;
use hopcore_endpoint::server::resource::text;
use hopcore_endpoint::server::{resource_fn, Attributes, Server};
use support::*;

#[tokio::test]
async fn hello_and_unknown_path() {
    let (server, client) = serve(demo_server()).await;
    let r = exchange(&client, &server, request(Code::GET, "/hello")).await;
    assert_eq!(r.code, Code::CONTENT);
    assert_eq!(r.payload, b"Hello from hopcore");
    assert_eq!(r.options.get_uint(num::CONTENT_FORMAT), Some(0));
    assert!(!r.options.contains(num::BLOCK2), "small responses are not block-wise");

    // RFC 7252 §5.9.2.5
    let r = exchange(&client, &server, request(Code::GET, "/nope")).await;
    assert_eq!(r.code, Code::NOT_FOUND);
    let r = exchange(&client, &server, request(Code::GET, "/hello/more")).await;
    assert_eq!(r.code, Code::NOT_FOUND);
    let r = exchange(&client, &server, Message::request(Code::GET)).await;
    assert_eq!(r.code, Code::NOT_FOUND, "nothing at /");
    server.shutdown();
    within(server.join()).await;
}

#[tokio::test]
async fn method_not_allowed() {
    let (server, client) = serve(demo_server()).await;
    // RFC 7252 §5.8: unsupported methods get 4.05.
    for (code, path) in
        [(Code::DELETE, "/hello"), (Code::POST, "/time"), (Code::PUT, "/large"), (Code::DELETE, "/echo")]
    {
        let r = exchange(&client, &server, request(code, path)).await;
        assert_eq!(r.code, Code::METHOD_NOT_ALLOWED, "{code} {path}");
    }
    // An unknown method code (0.30) as well.
    let r = exchange(&client, &server, request(Code::new(0, 30), "/hello")).await;
    assert_eq!(r.code, Code::METHOD_NOT_ALLOWED);
    let r = exchange(&client, &server, request(Code::POST, "/.well-known/core")).await;
    assert_eq!(r.code, Code::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn critical_options() {
    let (server, client) = serve(demo_server()).await;
    // RFC 7252 §5.4.1: an unrecognized critical option (odd number) gets 4.02 with a
    // diagnostic payload.
    let r = exchange(&client, &server, request(Code::GET, "/hello").with_option(65001, b"x")).await;
    assert_eq!(r.code, Code::BAD_OPTION);
    let diag = String::from_utf8(r.payload).unwrap();
    assert!(diag.contains("65001"), "{diag}");
    assert!(!r.options.contains(num::CONTENT_FORMAT), "a diagnostic payload has no Content-Format");

    // An unrecognized elective option (even number) is ignored.
    let r = exchange(&client, &server, request(Code::GET, "/hello").with_option(65000, b"x")).await;
    assert_eq!(r.code, Code::CONTENT);
    assert_eq!(r.payload, b"Hello from hopcore");

    // RFC 7252 §5.4.3: a known critical option with a bad length (Accept, 3 bytes) is treated
    // as unrecognized; §5.4.5: so is a repeated non-repeatable critical one (Uri-Host).
    let r = exchange(&client, &server, request(Code::GET, "/hello").with_option(num::ACCEPT, &[1, 2, 3])).await;
    assert_eq!(r.code, Code::BAD_OPTION);
    let m = request(Code::GET, "/hello").with_option(num::URI_HOST, b"a").with_option(num::URI_HOST, b"b");
    assert_eq!(exchange(&client, &server, m).await.code, Code::BAD_OPTION);
    // An elective option of bad length (Content-Format, 3 bytes) is ignored.
    let r = exchange(&client, &server, request(Code::GET, "/hello").with_option(num::CONTENT_FORMAT, &[1, 2, 3])).await;
    assert_eq!(r.code, Code::CONTENT);

    // OSCORE reaching the plain server: recognized but not processed here.
    let r = exchange(&client, &server, request(Code::GET, "/hello").with_option(num::OSCORE, &[0x09, 0x01])).await;
    assert_eq!(r.code, Code::BAD_OPTION);
    // RFC 7252 §5.7.2: not a proxy.
    let r = exchange(&client, &server, Message::request(Code::GET).with_option(num::PROXY_URI, b"coap://x/y")).await;
    assert_eq!(r.code, Code::PROXYING_NOT_SUPPORTED);
    // RFC 7959 §2.2: SZX 7 is a Bad Request.
    let r = exchange(&client, &server, request(Code::GET, "/large").with_option(num::BLOCK2, &[0x07])).await;
    assert_eq!(r.code, Code::BAD_REQUEST);
}

#[tokio::test]
async fn well_known_core() {
    let (server, client) = serve(demo_server()).await;
    let r = exchange(&client, &server, request(Code::GET, "/.well-known/core")).await;
    assert_eq!(r.code, Code::CONTENT);
    assert_eq!(r.options.get_uint(num::CONTENT_FORMAT), Some(content_format::LINK_FORMAT as u32));
    let links = String::from_utf8(r.payload).unwrap();
    let entries: Vec<&str> = links.split(',').collect();
    assert_eq!(entries.len(), 4, "{links}");
    let find = |p: &str| *entries.iter().find(|e| e.starts_with(&format!("<{p}>"))).expect(p);
    assert!(find("/hello").contains(";ct=0"));
    assert!(find("/time").contains(";obs"));
    assert!(find("/time").contains(";rt=\"time\""));
    assert!(find("/large").contains(";sz=4096"));
    assert!(find("/echo").contains(";title=\"Echo\""));
    assert!(!links.contains("well-known"), "the discovery resource does not list itself");

    // RFC 6690 §4.1 filtering.
    let m = request(Code::GET, "/.well-known/core").with_option(num::URI_QUERY, b"rt=time");
    let r = exchange(&client, &server, m).await;
    assert_eq!(String::from_utf8(r.payload).unwrap(), "</time>;rt=\"time\";ct=0;title=\"UTC time\";obs");
    let m = request(Code::GET, "/.well-known/core").with_option(num::URI_QUERY, b"href=/l*");
    let r = exchange(&client, &server, m).await;
    assert!(String::from_utf8(r.payload).unwrap().starts_with("</large>"));

    // Accept for another format: 4.06.
    let mut m = request(Code::GET, "/.well-known/core");
    m.options.set_uint(num::ACCEPT, content_format::JSON as u32);
    assert_eq!(exchange(&client, &server, m).await.code, Code::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn content_negotiation() {
    let mut s = Server::new();
    s.add_resource(
        "/json",
        resource_fn(|req| match req.method() {
            Code::GET => text("not json at all"),
            _ => Message::response(Code::CHANGED),
        })
        .with_attributes(Attributes::new().request_format(content_format::JSON)),
    );
    s.add_resource("/who", resource_fn(|req| text(format!("{:?} from {}", req.identity, req.peer.ip()))));
    let (server, client) = serve(s).await;

    // RFC 7252 §5.10.4: Accept text/plain where text/plain is returned is fine.
    let mut m = request(Code::GET, "/who");
    m.options.set_uint(num::ACCEPT, 0);
    assert_eq!(exchange(&client, &server, m).await.payload, b"None from 127.0.0.1");
    // The handler returned text/plain, but JSON was asked for (no ct declared: checked after).
    let mut m = request(Code::GET, "/json");
    m.options.set_uint(num::ACCEPT, content_format::JSON as u32);
    assert_eq!(exchange(&client, &server, m).await.code, Code::NOT_ACCEPTABLE);

    // RFC 7252 §5.9.2.10: the resource takes JSON only.
    let mut m = request(Code::POST, "/json").with_payload("hi");
    m.options.set_uint(num::CONTENT_FORMAT, 0);
    assert_eq!(exchange(&client, &server, m).await.code, Code::UNSUPPORTED_CONTENT_FORMAT);
    let mut m = request(Code::POST, "/json").with_payload("{}");
    m.options.set_uint(num::CONTENT_FORMAT, content_format::JSON as u32);
    assert_eq!(exchange(&client, &server, m).await.code, Code::CHANGED);
}

#[tokio::test]
async fn echo_and_preconditions() {
    let (server, client) = serve(demo_server()).await;
    let mut m = request(Code::PUT, "/echo").with_payload("{\"a\":1}");
    m.options.set_uint(num::CONTENT_FORMAT, content_format::JSON as u32);
    let r = exchange(&client, &server, m).await;
    assert_eq!(r.code, Code::CHANGED);
    assert_eq!(r.payload, b"{\"a\":1}");
    assert_eq!(r.options.get_uint(num::CONTENT_FORMAT), Some(content_format::JSON as u32));
    let r = exchange(&client, &server, request(Code::GET, "/echo")).await;
    assert_eq!(r.code, Code::CONTENT);
    assert_eq!(r.payload, b"{\"a\":1}");
    assert_eq!(r.options.get_uint(num::CONTENT_FORMAT), Some(content_format::JSON as u32));

    // RFC 7252 §5.10.8.2: If-None-Match on an existing resource fails; §5.10.8.1: If-Match
    // with a wrong ETag fails, an empty one matches any representation.
    let m = request(Code::PUT, "/echo").with_payload("x").with_option(num::IF_NONE_MATCH, b"");
    assert_eq!(exchange(&client, &server, m).await.code, Code::PRECONDITION_FAILED);
    let m = request(Code::PUT, "/echo").with_payload("x").with_option(num::IF_MATCH, b"nope");
    assert_eq!(exchange(&client, &server, m).await.code, Code::PRECONDITION_FAILED);
    let r = exchange(&client, &server, request(Code::GET, "/echo")).await;
    assert_eq!(r.payload, b"{\"a\":1}", "the failed requests changed nothing");
    let m = request(Code::POST, "/echo").with_payload("y").with_option(num::IF_MATCH, b"");
    assert_eq!(exchange(&client, &server, m).await.code, Code::CHANGED);
}
