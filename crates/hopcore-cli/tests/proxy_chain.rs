//! CP's example "With Two Forward-Proxies; OSCORE: C-S, C-P1, P1-P2, P2-S"
//! (draft-ietf-core-oscore-capable-proxies, Appendix) end to end on loopback: `hopcore get
//! --credentials --proxy P1` addresses only P1; `hopcore proxy` P1 removes C-P1 and, by its
//! configuration (`upstream_proxy`), sends the request to P2 protected with P1-P2; `hopcore
//! proxy` P2 removes P1-P2 and protects with P2-S for the origin, which removes P2-S and C-S.
//!
//! Origins: `hopcore server --credentials` (a process: /hello, /echo, /large, /time), and the
//! same OSCORE server as a library in this test with a /whoami resource that answers the
//! identity the server sees (the label of the innermost context), to show that the origin
//! sees the client's identity end to end, while P2 sees P1's (its access log).
//!
//! Always runs (no external peers).

mod proxy_support;

use std::net::SocketAddr;
use std::sync::Arc;

use hopcore_endpoint::oscore_server::{OscoreServer, OscoreServerHandle};
use hopcore_endpoint::server::{resource::text, resource_fn, Server};
use hopcore_layers::ContextList;
use hopcore_oscore::{ContextInput, SecurityContext};
use proxy_support::chain::{Chain, Origin, C_S_IDS, P2_S_IDS};
use proxy_support::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// The library OSCORE server with /whoami (the identity it sees), requiring OSCORE: the client
/// as ":client" (C-S), P2 as ":p2" (P2-S).
fn whoami_origin(
    rt: &tokio::runtime::Runtime,
    c_s: (&str, &str),
    p2_s: (&str, &str),
) -> OscoreServerHandle<ContextList> {
    let salt = unhex(SALT_HEX);
    let ctx = |secret: &str, sender: &str, recipient: &str| {
        let (secret, sender, recipient) = (unhex(secret), unhex(sender), unhex(recipient));
        SecurityContext::derive(&ContextInput::new(&secret, &sender, &recipient).master_salt(&salt)).expect("context")
    };
    let mut contexts = ContextList::new();
    contexts.add(ctx(C_S, c_s.1, c_s.0), ":client");
    contexts.add(ctx(P_S, p2_s.1, p2_s.0), ":p2");
    let mut server = Server::new();
    server.add_resource("/whoami", resource_fn(|req| text(req.identity.clone().unwrap_or_else(|| "-".into()))));
    let server = OscoreServer::new(server, contexts).require_oscore("/");
    rt.block_on(server.start("127.0.0.1:0".parse().expect("address"))).expect("bind the /whoami origin")
}

#[test]
fn two_forward_proxies_c_s_c_p1_p1_p2_p2_s() {
    let started = std::time::Instant::now();
    let work = TempDir::new("proxy-chain");
    let dir = work.path();

    // Origin A: `hopcore server`. Origin B: /whoami, with its own Sender IDs.
    let creds = write(&dir.join("server.toml"), &Origin::credentials(C_S_IDS, P2_S_IDS));
    let (_server, a) = hopcore_server(dir, "server", &creds, &["--require-oscore", "/"]);
    let rt = Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap());
    let (b_c_s, b_p2_s) = (("5e", "0e"), ("78", "0f"));
    let who = whoami_origin(&rt, b_c_s, b_p2_s);
    let b: SocketAddr = who.local_addr();
    let chain = Chain::start(
        dir,
        &[Origin { addr: a, c_s: C_S_IDS, p2_s: P2_S_IDS }, Origin { addr: b, c_s: b_c_s, p2_s: b_p2_s }],
    );
    let p2_label = format!("[\"{}*\"]", chain.p2.uri());

    // GET /hello: every layer removed where it should be, the response verified end to end.
    let uri = format!("coap://{a}/hello");
    let args = chain.client_args(&chain.client, "get", &[], &uri);
    let o = hopcore(&args);
    let what = show(&format!("hopcore {}", args.join(" ")), &o);
    assert!(o.status.success() && out(&o).contains("Hello from hopcore"), "{what}");
    let e = err(&o);
    assert!(e.contains(&format!("proxy {} [layer", chain.p1.uri())) && e.contains("(kid 20)"), "{what}");
    assert!(e.contains("(kid 5f)") && e.contains("(2 layers), response verified"), "{what}");
    // P1 removed C-P1 (its client's identity) and added P1-P2; the destination is the origin,
    // whose path it cannot see (C-S).
    let l1 = chain.p1.exchange(1);
    assert!(l1.contains("layers_in=[\":client\"]") && l1.contains(&format!("layers_out={p2_label}")), "P1: {l1}");
    // The code is the end-to-end layer's outer one (RFC 8613 §4.2).
    assert!(l1.contains(&format!("target=coap://{a}/ ")) && l1.contains("code=2.04"), "P1: {l1}");
    // P2 got it from P1 (P1's identity, from P1's upstream socket) and added P2-S.
    let l2 = chain.p2.exchange(1);
    assert!(l2.contains("layers_in=[\":p1\"]") && l2.contains(&format!("layers_out=[\"coap://{a}/*\"]")), "P2: {l2}");
    assert!(l2.contains(&format!("target=coap://{a}/ ")), "P2: {l2}");
    let client_of = |l: &str| l.split("client=").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("").to_string();
    assert_ne!(client_of(&l2), client_of(&l1), "P2's client is P1, not the client");

    // The same with Proxy-Scheme at the client; a POST; an inner Block2 transfer.
    let args = chain.client_args(&chain.client, "post", &["--proxy-scheme", "--payload", "two proxies"], &uri);
    let uri_echo = format!("coap://{a}/echo");
    let args: Vec<&str> = args[..args.len() - 1].iter().copied().chain([uri_echo.as_str()]).collect();
    let o = hopcore(&args);
    assert!(o.status.success() && out(&o).contains("two proxies"), "{}", show(&args.join(" "), &o));
    let uri_large = format!("coap://{a}/large");
    let args = chain.client_args(&chain.client, "get", &[], &uri_large);
    let o = hopcore(&args);
    let large = String::from_utf8(hopcore_endpoint::server::demo::large_payload()).expect("text");
    assert!(o.status.success() && out(&o).trim_end().ends_with(large.trim_end()), "{}", show(&args.join(" "), &o));

    // Observe through both proxies: the first response and two notifications, each verified.
    let uri_time = format!("coap://{a}/time");
    let args = chain.client_args(&chain.client, "get", &["--observe", "--count", "3"], &uri_time);
    let o = hopcore(&args);
    assert!(o.status.success(), "{}", show(&args.join(" "), &o));
    // One line per response: "2026-11-23T17:47:06Z"-like times.
    let is_time = |l: &&str| l.len() >= 11 && l.as_bytes()[..4].iter().all(u8::is_ascii_digit) && &l[10..11] == "T";
    assert_eq!(out(&o).lines().filter(is_time).count(), 3, "{}", show(&args.join(" "), &o));

    // The origin's view: the client's identity end to end ...
    let uri_who = format!("coap://{b}/whoami");
    let args = chain.client_args(&chain.client, "get", &[], &uri_who);
    let o = hopcore(&args);
    assert!(o.status.success(), "{}", show(&args.join(" "), &o));
    assert_eq!(out(&o).lines().last(), Some(":client"), "{}", show(&args.join(" "), &o));
    // ... and P2's without an end-to-end layer (C-P1 only: P2-S is the innermost layer there).
    let mut args = chain.client_args(&chain.client_hop_only, "get", &["--allow-plain"], &uri_who);
    args.retain(|a| *a != "-v");
    let o = hopcore(&args);
    assert!(o.status.success(), "{}", show(&args.join(" "), &o));
    assert_eq!(out(&o).trim(), ":p2", "{}", show(&args.join(" "), &o));
    let l2 = chain.p2.exchanges().last().cloned().unwrap_or_default();
    assert!(l2.contains("layers_in=[\":p1\"]") && l2.contains(&format!("target=coap://{b}/whoami ")), "P2: {l2}");

    // Identities only in the logs, never keys.
    for p in [&chain.p1, &chain.p2] {
        let log = std::fs::read_to_string(&p.proc.stderr).unwrap_or_default();
        for secret in [C_S, C_P, P_P, P_S] {
            assert!(!log.contains(secret), "a key in {}'s log", p.proc.name);
        }
    }
    drop(who);
    println!("proxy_chain: C-S, C-P1, P1-P2, P2-S in {:.1} s", started.elapsed().as_secs_f64());
}

/// `upstream_proxy` without OSCORE at the proxies: a plain request and an end-to-end protected
/// one (CF-4 on both legs) go through P1 to P2, carrying Proxy-Scheme, Uri-Host and Uri-Port for
/// P2; P1's reverse routes still go directly to their upstream.
#[test]
fn upstream_proxy_plain_and_end_to_end_and_reverse_routes() {
    let work = TempDir::new("proxy-chain-plain");
    let dir = work.path();
    let creds = write(&dir.join("server.toml"), &entry("peer = \":client\"", "02", "01", C_S));
    let (_server, s) = hopcore_server(dir, "server", &creds, &["--require-oscore", "/echo"]);
    let p2 = HopProxy::start(dir, "p2", &[]);
    let config = format!("upstream_proxy = \"{}\"\n\n[[route]]\npath = \"/r\"\nupstream = \"coap://{s}/\"\n", p2.uri());
    let config = write(&dir.join("p1-config.toml"), &config);
    let p1 = HopProxy::start(dir, "p1", &["--config", &config]);

    // Plain, in both forms of the proxy options.
    for (i, form) in [&[][..], &["--proxy-scheme"][..]].into_iter().enumerate() {
        let uri = format!("coap://{s}/hello");
        let p1_uri = p1.uri();
        let mut args = vec!["get", "--timeout", "10", "--proxy", &p1_uri];
        args.extend(form);
        args.push(&uri);
        let o = hopcore(&args);
        assert!(o.status.success() && out(&o).contains("Hello from hopcore"), "{}", show(&args.join(" "), &o));
        let (l1, l2) = (p1.exchange(i + 1), p2.exchange(i + 1));
        assert!(l1.contains(&format!("target=coap://{s}/hello ")) && l1.contains("code=2.05"), "P1: {l1}");
        assert!(l2.contains(&format!("target=coap://{s}/hello ")) && l2.contains("code=2.05"), "P2: {l2}");
    }

    // End to end only (CF-4 on both legs): the path stays hidden from both proxies.
    let client = write(&dir.join("client.toml"), &entry(&format!("uri = \"coap://{s}/*\""), "01", "02", C_S));
    let state = dir.join("client-state");
    let uri = format!("coap://{s}/echo");
    let p1_uri = p1.uri();
    let args = ["post", "-v", "--timeout", "10", "--credentials", &client, "--state-dir", state.to_str().unwrap()];
    let args: Vec<&str> = args.into_iter().chain(["--payload", "e2e", "--proxy", &p1_uri, &uri]).collect();
    let o = hopcore(&args);
    assert!(o.status.success() && out(&o).contains("e2e"), "{}", show(&args.join(" "), &o));
    assert!(err(&o).contains("(1 layers), response verified"), "{}", show(&args.join(" "), &o));
    for p in [&p1, &p2] {
        let l = p.exchange(3);
        assert!(l.contains(&format!("target=coap://{s}/ ")) && l.contains("layers_out=[]"), "{}: {l}", p.proc.name);
    }

    // A reverse route of P1: directly to the server, not through P2.
    let uri = format!("{}/r/hello", p1.uri());
    let o = hopcore(&["get", "--timeout", "10", &uri]);
    assert!(o.status.success() && out(&o).contains("Hello from hopcore"), "{}", show(&uri, &o));
    assert!(p1.exchange(4).contains(&format!("target=coap://{s}/hello ")), "{}", p1.exchange(4));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(p2.exchanges().len(), 3, "the reverse route went through P2: {:?}", p2.exchanges());
}
