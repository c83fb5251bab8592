//! Wire evidence for OSCORE-capable proxies (issue #4, draft-ietf-core-oscore-capable-proxies
//! "CP"), from a packet capture of real `hopcore` processes on loopback.
//!
//! CF-7 (C-S, C-P, P-S): `hopcore get|post --credentials --proxy` protects end to end and for
//! the proxy, `hopcore proxy --credentials` removes C-P and adds P-S, `hopcore server
//! --credentials` removes P-S and C-S. Everything on the ports of the proxy and the server is
//! captured with `tcpdump -i any`; the test reads the pcap and decodes the datagrams itself
//! (`proxy_support/wire.rs`, no hopcore code) and asserts:
//! - client -> proxy: every request carries exactly one option, OSCORE, with the client's kid
//!   for the proxy (no Uri-Host, Uri-Path, Proxy-Scheme, Proxy-Uri or inner OSCORE in clear,
//!   whether the client used Proxy-Uri or Proxy-Scheme);
//! - proxy -> server: exactly one option, OSCORE, with the proxy's kid for the server (the
//!   target is an IP literal, so there is no Uri-Host; Hop-Limit travels inside P-S);
//! - the responses on both legs: exactly their outer OSCORE option;
//! - no plaintext of the request (path, scheme, payload) in any of these datagrams.
//!
//! CF-4 (C-S only) through a plain `hopcore proxy`, for contrast: the client -> proxy request
//! shows Proxy-Scheme, Uri-Host and Uri-Port (the proxy needs them) and the end-to-end OSCORE
//! option with the client's kid for the server, but no Uri-Path (Class E, RFC 8613 §4.1).
//!
//! The option lists decoded here are cross-checked against tshark's CoAP dissector.
//!
//! Runs when `HOPCORE_PEERS_VENV` is set (scripts/test.sh installs tcpdump and tshark and sets
//! it); prints "skipped" otherwise. With it set, a missing tcpdump or tshark, or a capture that
//! cannot start, fails. Capturing needs root or CAP_NET_RAW.

mod proxy_support;

use proxy_support::wire::{self, hex, listing, single_oscore, Seen, Tcpdump};
use proxy_support::*;

/// Kids of the contexts (Sender IDs of their senders).
const KID_C_FOR_S: &str = "01";
const KID_C_FOR_P: &str = "20";
const KID_P_FOR_S: &str = "d4";

/// The POST payload, which must never be seen in clear.
const SECRET_PAYLOAD: &str = "wire evidence: this text is end-to-end encrypted";

#[test]
fn cf7_exposes_only_the_outer_oscore_option_and_cf4_only_what_the_proxy_needs() {
    let Some(_venv) = gate("proxy_capture") else { return };
    let started = std::time::Instant::now();
    let work = TempDir::new("proxy-capture");
    let dir = work.path();

    // Two origins (one per configuration, so that the capture tells the legs apart by port),
    // each with the client's (C-S) and the proxy's (P-S) context; /hello requires OSCORE.
    let server_creds = write(
        &dir.join("server.toml"),
        &[entry("peer = \":client\"", "02", KID_C_FOR_S, C_S), entry("peer = \":proxy\"", "04", KID_P_FOR_S, P_S)]
            .concat(),
    );
    let (_s7, s7) = hopcore_server(dir, "server-cf7", &server_creds, &["--require-oscore", "/hello"]);
    let (_s4, s4) = hopcore_server(dir, "server-cf4", &server_creds, &["--require-oscore", "/hello"]);

    // CF-7's proxy: its client's context (C-P) and the server's (P-S). CF-4's: plain.
    let proxy_creds = write(
        &dir.join("proxy.toml"),
        &[
            entry("peer = \":client1\"", "0a", KID_C_FOR_P, C_P),
            entry(&format!("uri = \"coap://{s7}/*\""), KID_P_FOR_S, "04", P_S),
        ]
        .concat(),
    );
    let p7 = HopProxy::start(dir, "proxy-cf7", &["--credentials", &proxy_creds, "--state-dir", &state(dir, "p7")]);
    let p4 = HopProxy::start(dir, "proxy-cf4", &[]);

    let client7 = write(
        &dir.join("client-cf7.toml"),
        &[
            entry(&format!("uri = \"coap://{s7}/*\""), KID_C_FOR_S, "02", C_S),
            entry(&format!("uri = \"{}*\"", p7.uri()), KID_C_FOR_P, "0a", C_P),
        ]
        .concat(),
    );
    let client4 = write(&dir.join("client-cf4.toml"), &entry(&format!("uri = \"coap://{s4}/*\""), "01", "02", C_S));

    let ports = [p7.addr.port(), s7.port(), p4.addr.port(), s4.port()];
    let capture = Tcpdump::start(&dir.join("capture.pcap"), &ports);

    // CF-7: GET with Proxy-Uri, POST with Proxy-Scheme, and /large in inner Block2.
    let st7 = state(dir, "client-cf7");
    let p7_uri = p7.uri();
    let get7 = |extra: &[&str], method: &str, path: &str| {
        let uri = format!("coap://{s7}{path}");
        let mut args = vec![method, "-v", "--timeout", "10", "--credentials", &client7, "--state-dir", &st7];
        args.extend(["--proxy", &p7_uri]);
        args.extend(extra);
        args.push(&uri);
        let o = hopcore(&args);
        assert!(o.status.success(), "{}", show(&args.join(" "), &o));
        assert!(err(&o).contains("(2 layers), response verified"), "{}", show(&args.join(" "), &o));
        o
    };
    let r = get7(&[], "get", "/hello");
    assert!(out(&r).contains("Hello from hopcore"));
    let r = get7(&["--proxy-scheme", "--payload", SECRET_PAYLOAD], "post", "/echo");
    assert!(out(&r).contains(SECRET_PAYLOAD));
    let r = get7(&[], "get", "/large");
    let large = String::from_utf8(hopcore_endpoint::server::demo::large_payload()).expect("text");
    // (-v prints the code and options before the payload.)
    assert!(out(&r).trim_end().ends_with(large.trim_end()), "{}", out(&r));

    // CF-4 through the plain proxy.
    let st4 = state(dir, "client-cf4");
    let uri4 = format!("coap://{s4}/hello");
    let args4 = ["get", "-v", "--timeout", "10", "--credentials", &client4, "--state-dir", &st4, "--proxy", &p4.uri()];
    let args4: Vec<&str> = args4.into_iter().chain(["--proxy-scheme", uri4.as_str()]).collect();
    let r = hopcore(&args4);
    assert!(r.status.success() && out(&r).contains("Hello from hopcore"), "{}", show(&args4.join(" "), &r));

    let (seen, tcpdump_said) = capture.stop();
    let all = listing(&seen);
    // A second opinion on every datagram: Wireshark's CoAP dissector.
    wire::tshark_agrees(&dir.join("capture.pcap"), &seen);
    let between = |from: u16, to: u16| -> Vec<&Seen> {
        seen.iter().filter(|s| (s.src == from || from == 0) && (s.dst == to || to == 0)).collect()
    };

    // ---- CF-7, client -> proxy -------------------------------------------------------------
    let c_to_p: Vec<&Seen> = between(0, p7.addr.port()).into_iter().filter(|s| s.coap.is_request()).collect();
    // /hello, /echo and at least two blocks of /large.
    assert!(c_to_p.len() >= 4, "too few client -> proxy requests captured\n{all}\ntcpdump: {tcpdump_said}");
    for s in &c_to_p {
        assert_eq!(s.coap.numbers(), vec![wire::OSCORE], "client -> proxy (CF-7): {}\n{all}", s.coap.names());
        let o = single_oscore(s);
        assert_eq!(o.kid.as_deref().map(hex).as_deref(), Some(KID_C_FOR_P), "the C-P kid: {s}");
        assert!(o.partial_iv.is_some(), "a request's Partial IV (RFC 8613 §6.1): {s}");
        assert_eq!(s.coap.code, (0, 2), "the outer code of a protected GET/POST is POST (RFC 8613 §4.2): {s}");
        assert_no_plaintext(s);
    }

    // ---- CF-7, proxy -> server -------------------------------------------------------------
    let p_to_s: Vec<&Seen> = between(0, s7.port()).into_iter().filter(|s| s.coap.is_request()).collect();
    assert!(p_to_s.len() >= c_to_p.len(), "one upstream request per client request\n{all}");
    for s in &p_to_s {
        assert_eq!(s.coap.numbers(), vec![wire::OSCORE], "proxy -> server (CF-7): {}\n{all}", s.coap.names());
        let o = single_oscore(s);
        assert_eq!(o.kid.as_deref().map(hex).as_deref(), Some(KID_P_FOR_S), "the P-S kid: {s}");
        assert_no_plaintext(s);
    }

    // ---- CF-7 responses: server -> proxy and proxy -> client ---------------------------------
    for (leg, from) in [("server -> proxy", s7.port()), ("proxy -> client", p7.addr.port())] {
        let responses: Vec<&Seen> = between(from, 0).into_iter().filter(|s| s.coap.is_response()).collect();
        assert!(responses.len() >= c_to_p.len(), "{leg}: too few responses\n{all}");
        for s in responses {
            assert_eq!(s.coap.numbers(), vec![wire::OSCORE], "{leg} (CF-7): {}\n{all}", s.coap.names());
            let o = single_oscore(s);
            assert_eq!(o.kid, None, "{leg}: a response names no kid: {s}");
            // Every outer code is 2.04 Changed (RFC 8613 §4.2), whatever the inner one.
            assert_eq!(s.coap.code, (2, 4), "{leg}: outer code: {s}");
            assert_no_plaintext(s);
        }
    }

    // ---- CF-4, for contrast --------------------------------------------------------------------
    let c_to_p4: Vec<&Seen> = between(0, p4.addr.port()).into_iter().filter(|s| s.coap.is_request()).collect();
    assert!(!c_to_p4.is_empty(), "no CF-4 request captured\n{all}");
    for s in &c_to_p4 {
        let n = s.coap.numbers();
        for needed in [wire::PROXY_SCHEME, wire::URI_HOST, wire::URI_PORT, wire::OSCORE] {
            assert!(n.contains(&needed), "CF-4 client -> proxy lacks {}: {s}", wire::option_name(needed));
        }
        for hidden in [wire::URI_PATH, wire::URI_QUERY, wire::PROXY_URI] {
            assert!(!n.contains(&hidden), "CF-4 client -> proxy shows {}: {s}", wire::option_name(hidden));
        }
        assert_eq!(s.coap.get(wire::PROXY_SCHEME), Some(&b"coap"[..]), "{s}");
        assert_eq!(s.coap.get(wire::URI_HOST), Some(&b"127.0.0.1"[..]), "{s}");
        assert_eq!(s.coap.get(wire::URI_PORT), Some(&s4.port().to_be_bytes()[..]), "{s}");
        let o = single_oscore(s);
        assert_eq!(o.kid.as_deref().map(hex).as_deref(), Some(KID_C_FOR_S), "the C-S kid in clear: {s}");
        assert!(!contains(&s.raw, b"hello"), "the path is encrypted end to end: {s}");
    }
    // The proxy relays the end-to-end OSCORE option; the path stays encrypted on that leg too.
    let p4_to_s: Vec<&Seen> = between(0, s4.port()).into_iter().filter(|s| s.coap.is_request()).collect();
    assert!(!p4_to_s.is_empty(), "no CF-4 upstream request captured\n{all}");
    for s in &p4_to_s {
        assert!(!s.coap.has(wire::URI_PATH) && !s.coap.has(wire::PROXY_SCHEME), "CF-4 proxy -> server: {s}");
        let o = single_oscore(s);
        assert_eq!(o.kid.as_deref().map(hex).as_deref(), Some(KID_C_FOR_S), "{s}");
    }

    println!(
        "proxy_capture: {} datagrams; CF-7 client->proxy {}, proxy->server {}; CF-4 client->proxy {}: {} ({:.1} s)",
        seen.len(),
        c_to_p.len(),
        p_to_s.len(),
        c_to_p4.len(),
        c_to_p4[0].coap.names(),
        started.elapsed().as_secs_f64()
    );
}

/// CP's "With Two Forward-Proxies; OSCORE: C-S, C-P1, P1-P2, P2-S" (P1 sends to P2 by its
/// `upstream_proxy` configuration): every request and response on each of the three legs
/// carries exactly one option, OSCORE, with that leg's kid in requests: the client's for P1
/// (20), P1's for P2 (d4), P2's for the origin (77). In particular the proxy options P1 adds
/// for P2 (Proxy-Scheme, Uri-Host, Uri-Port) travel inside the P1-P2 layer (CP §2.2 Step 7).
#[test]
fn two_forward_proxies_expose_only_each_legs_oscore_option() {
    use proxy_support::chain::{Chain, Origin, C_P1_IDS, C_S_IDS, P1_P2_IDS, P2_S_IDS};
    let Some(_venv) = gate("proxy_capture (two proxies)") else { return };
    let work = TempDir::new("proxy-capture-chain");
    let dir = work.path();
    let creds = write(&dir.join("server.toml"), &Origin::credentials(C_S_IDS, P2_S_IDS));
    let (_server, s) = hopcore_server(dir, "server", &creds, &["--require-oscore", "/"]);
    let chain = Chain::start(dir, &[Origin { addr: s, c_s: C_S_IDS, p2_s: P2_S_IDS }]);
    let (p1, p2) = (chain.p1.addr.port(), chain.p2.addr.port());
    let capture = Tcpdump::start(&dir.join("capture.pcap"), &[p1, p2, s.port()]);
    let (hello, echo) = (format!("coap://{s}/hello"), format!("coap://{s}/echo"));
    for args in [
        chain.client_args(&chain.client, "get", &[], &hello),
        chain.client_args(&chain.client, "post", &["--proxy-scheme", "--payload", SECRET_PAYLOAD], &echo),
    ] {
        let o = hopcore(&args);
        assert!(o.status.success(), "{}", show(&args.join(" "), &o));
        assert!(err(&o).contains("(2 layers), response verified"), "{}", show(&args.join(" "), &o));
    }
    let (seen, _) = capture.stop();
    wire::tshark_agrees(&dir.join("capture.pcap"), &seen);
    let all = listing(&seen);
    for (leg, to, kid) in
        [("client -> P1", p1, C_P1_IDS.0), ("P1 -> P2", p2, P1_P2_IDS.0), ("P2 -> server", s.port(), P2_S_IDS.0)]
    {
        let requests: Vec<&Seen> = seen.iter().filter(|d| d.dst == to && d.coap.is_request()).collect();
        assert!(requests.len() >= 2, "{leg}: too few requests\n{all}");
        for d in requests {
            assert_eq!(d.coap.numbers(), vec![wire::OSCORE], "{leg}: {}\n{all}", d.coap.names());
            assert_eq!(single_oscore(d).kid.as_deref().map(hex).as_deref(), Some(kid), "{leg}: {d}");
            assert_no_plaintext(d);
        }
        let responses: Vec<&Seen> = seen.iter().filter(|d| d.src == to && d.coap.is_response()).collect();
        assert!(responses.len() >= 2, "{leg}: too few responses\n{all}");
        for d in responses {
            assert_eq!(d.coap.numbers(), vec![wire::OSCORE], "{leg} response: {}\n{all}", d.coap.names());
            assert_no_plaintext(d);
        }
    }
}

/// RFC 7252 §6.4 step 7: "If port does not equal the request's destination UDP port, include
/// a Uri-Port Option". A direct request to coap://127.0.0.1:PORT/hello is sent to PORT, so it
/// carries Uri-Path only. (No capture needed: a UDP socket plays the server and never answers.)
#[test]
fn direct_request_carries_no_uri_port_for_its_destination_port() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    let uri = format!("coap://{}/hello", sock.local_addr().expect("address"));
    let client = std::thread::spawn(move || hopcore(&["get", "--timeout", "2", &uri]));
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).expect("the client's request");
    let _ = client.join();
    let m = wire::decode(&buf[..n]).expect("CoAP");
    assert_eq!(m.numbers(), vec![wire::URI_PATH], "{m}");
}

fn state(dir: &std::path::Path, name: &str) -> String {
    dir.join(format!("{name}-state")).to_str().expect("UTF-8 path").to_string()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// No plaintext of the requests in a protected datagram: path segments, the scheme of the
/// proxy options, the Uri-Host text or the POST payload.
fn assert_no_plaintext(s: &Seen) {
    for text in [&b"hello"[..], b"echo", b"large", b"coap", b"127.0.0.1", &SECRET_PAYLOAD.as_bytes()[..12]] {
        assert!(!contains(&s.raw, text), "{:?} in clear: {s}", String::from_utf8_lossy(text));
    }
}
