//! `hopcore proxy --credentials` as an OSCORE endpoint (draft-ietf-core-oscore-capable-proxies)
//! between `hopcore get|post --credentials --proxy` and `hopcore server --credentials`, on
//! loopback. Which layers the proxy removed and added is read from its access log. Always runs
//! (no external peers).
//!
//! Contexts (hopcore TOML, test keys only):
//! - C-S: client Sender ID 01, server Sender ID 02 (the server's ":client");
//! - C-P: client Sender ID 20, proxy Sender ID 0a (the proxy's ":client1");
//! - P-S: proxy Sender ID d4, server Sender ID 04 (the server's ":proxy").
//!
//! The server requires OSCORE for /hello: a request reaches it only protected end to end or
//! on the P-S leg.

#[path = "oscore_client_support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{err, hopcore, out, show, start, Peer, TempDir};

const SALT: &str = "hex:9e7ca92223786340";
const C_S: &str = "hex:0102030405060708090a0b0c0d0e0f10";
const C_P: &str = "hex:1112131415161718191a1b1c1d1e1f20";
const P_S: &str = "hex:2122232425262728292a2b2c2d2e2f30";

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_str().expect("path").to_string()
}

fn entry(role: &str, sender: &str, recipient: &str, secret: &str) -> String {
    format!(
        "[[context]]\n{role}\nsender_id = \"hex:{sender}\"\nrecipient_id = \"hex:{recipient}\"\n\
         master_secret = \"{secret}\"\nmaster_salt = \"{SALT}\"\n\n"
    )
}

/// `hopcore server --credentials` with the client's and the proxy's contexts, /hello requiring
/// OSCORE.
fn server(dir: &Path) -> (Peer, SocketAddr) {
    let creds = write(
        &dir.join("server.toml"),
        &[entry("peer = \":client\"", "02", "01", C_S), entry("peer = \":proxy\"", "04", "d4", P_S)].concat(),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopcore"));
    cmd.args(["server", "--bind", "127.0.0.1:0", "--credentials", &creds, "--require-oscore", "/hello"])
        .arg("--state-dir")
        .arg(dir.join("server-state"))
        .env("RUST_LOG", "warn");
    let (peer, addr) = start(cmd, "hopcore server", "listening on");
    (peer, addr.parse().expect("server address"))
}

/// A `hopcore proxy` whose stderr (with the access log) goes to a file.
struct Proxy {
    _peer: Peer,
    addr: SocketAddr,
    log: PathBuf,
}

impl Proxy {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Proxy {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopcore"));
        cmd.args(["proxy", "--bind", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn,hopcore_proxy::access=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file));
        let mut child = cmd.spawn().expect("start hopcore proxy");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("listening on") {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let peer = Peer { child, name: format!("hopcore proxy ({name})") };
        let addr = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!("{} did not get ready: {}", peer.name, std::fs::read_to_string(&log).unwrap_or_default())
        });
        Proxy { _peer: peer, addr: addr.parse().expect("proxy address"), log }
    }

    fn uri(&self) -> String {
        format!("coap://{}", self.addr)
    }

    /// The access log lines so far.
    fn exchanges(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter(|l| l.contains("hopcore_proxy::access")).map(str::to_string).collect()
    }

    /// Waits (at most 5 s) for the `n`-th access log line.
    fn exchange(&self, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(l) = self.exchanges().get(n - 1) {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "no exchange #{n} in the proxy log: {:?}", self.exchanges());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A client run through `proxy`: `hopcore get --proxy PROXY [--credentials FILE] ARGS URI`.
fn get(
    proxy: &Proxy,
    creds: Option<&str>,
    state: &Path,
    extra: &[&str],
    uri: &str,
) -> (Vec<String>, std::process::Output) {
    let mut args: Vec<String> =
        ["get", "--timeout", "10", "--proxy", &proxy.uri()].iter().map(|s| s.to_string()).collect();
    if let Some(c) = creds {
        args.extend(["--credentials".into(), c.into(), "--state-dir".into(), state.to_str().expect("path").into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(uri.to_string());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = hopcore(&a);
    (args, o)
}

fn shown(args: &[String], o: &std::process::Output) -> String {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    show(&a, o)
}

#[test]
fn hopcore_proxy_with_credentials() {
    let work = TempDir::new("proxy-oscore");
    let dir = work.path();
    let (_server, saddr) = server(dir);
    let base = format!("coap://{saddr}");
    let hello = format!("{base}/hello");

    // Proxy A knows its client only (no P-S leg); proxy B also the server (P-S).
    let clients_only = write(&dir.join("proxy-a.toml"), &entry("peer = \":client1\"", "0a", "20", C_P));
    let full = write(
        &dir.join("proxy-b.toml"),
        &[entry("peer = \":client1\"", "0a", "20", C_P), entry(&format!("uri = \"{base}/*\""), "d4", "04", P_S)]
            .concat(),
    );
    let a = Proxy::start(dir, "a", &["--credentials", &clients_only, "--state-dir", &format!("{}/pa", dir.display())]);
    let b = Proxy::start(dir, "b", &["--credentials", &full, "--state-dir", &format!("{}/pb", dir.display())]);

    // The client's credentials: end to end only, proxy only, or both. They share one state
    // directory (the runs are sequential), so that each context's sequence numbers go on
    // increasing from file to file (RFC 8613 App. B.1.1); otherwise the proxy and the server
    // would rightly see replays.
    let e2e = entry(&format!("uri = \"{base}/*\""), "01", "02", C_S);
    let for_proxy = |p: &Proxy| entry(&format!("uri = \"{}*\"", p.uri()), "20", "0a", C_P);
    let e2e_only = write(&dir.join("client-e2e.toml"), &e2e);
    let a_only = write(&dir.join("client-pa.toml"), &for_proxy(&a));
    let b_only = write(&dir.join("client-pb.toml"), &for_proxy(&b));
    let a_both = write(&dir.join("client-a-both.toml"), &[e2e.clone(), for_proxy(&a)].concat());
    let b_both = write(&dir.join("client-b-both.toml"), &[e2e, for_proxy(&b)].concat());
    let st = |_: &str| dir.join("client-state");
    let label_ps = format!("[\"{base}/*\"]");

    // CF-4: the client's end-to-end layer only; proxy A relays the OSCORE option.
    let (args, r) = get(&a, Some(&e2e_only), &st("e2e"), &[], &hello);
    assert!(r.status.success(), "{}", shown(&args, &r));
    assert!(out(&r).contains("Hello from hopcore"), "{}", shown(&args, &r));
    let l = a.exchange(1);
    assert!(l.contains("layers_in=[]") && l.contains("layers_out=[]"), "{l}");
    assert!(l.contains(&format!("target=coap://{saddr}/ ")), "the path is end to end: {l}");

    // CF-5: C-S and C-P. Proxy A removes C-P, relays C-S.
    let (args, r) = get(&a, Some(&a_both), &st("a-both"), &[], &hello);
    assert!(out(&r).contains("Hello from hopcore"), "{}", shown(&args, &r));
    let l = a.exchange(2);
    assert!(l.contains("layers_in=[\":client1\"]") && l.contains("layers_out=[]"), "{l}");

    // CF-1: C-P only, no end-to-end layer: /hello needs OSCORE at the server, which sees none.
    let (args, r) = get(&a, Some(&a_only), &st("pa"), &["--allow-plain"], &hello);
    assert_eq!(r.status.code(), Some(1), "{}", shown(&args, &r));
    assert!(err(&r).contains("4.01"), "{}", shown(&args, &r));
    assert!(a.exchange(3).contains("code=4.01"), "{}", a.exchange(3));

    // CF-2: a plain client; proxy B protects with P-S, which satisfies the server.
    let (args, r) = get(&b, None, &st("none"), &[], &hello);
    assert!(r.status.success(), "{}", shown(&args, &r));
    assert!(out(&r).contains("Hello from hopcore"), "{}", shown(&args, &r));
    let l = b.exchange(1);
    assert!(l.contains("layers_in=[]") && l.contains(&format!("layers_out={label_ps}")), "{l}");

    // CF-3: C-P and P-S: the CP §2.3 / §2.4 case without end-to-end security.
    let (args, r) = get(&b, Some(&b_only), &st("pb"), &["--allow-plain"], &hello);
    assert!(r.status.success(), "{}", shown(&args, &r));
    assert!(out(&r).contains("Hello from hopcore"), "{}", shown(&args, &r));
    let l = b.exchange(2);
    assert!(l.contains("layers_in=[\":client1\"]") && l.contains(&format!("layers_out={label_ps}")), "{l}");
    assert!(l.contains(&format!("target=coap://{saddr}/hello ")), "{l}");

    // CF-6 (C-S, P-S), then CF-7 (C-S, C-P, P-S) with an inner Block2 transfer of /large.
    let (args, r) = get(&b, Some(&e2e_only), &st("e2e"), &[], &hello);
    assert!(out(&r).contains("Hello from hopcore"), "{}", shown(&args, &r));
    let l = b.exchange(3);
    assert!(l.contains("layers_in=[]") && l.contains(&format!("layers_out={label_ps}")), "{l}");
    let (args, r) = get(&b, Some(&b_both), &st("b-both"), &[], &format!("{base}/large"));
    assert!(r.status.success(), "{}", shown(&args, &r));
    let large = String::from_utf8(hopcore_endpoint::server::demo::large_payload()).expect("text");
    assert_eq!(out(&r).trim_end(), large.trim_end(), "{}", shown(&args, &r));
    let l = b.exchanges().last().cloned().unwrap_or_default();
    assert!(l.contains("layers_in=[\":client1\"]") && l.contains(&format!("layers_out={label_ps}")), "{l}");

    // Observe through CF-7: the first response and two notifications, each verified.
    let (args, r) = get(&b, Some(&b_both), &st("b-both"), &["--observe", "--count", "3"], &format!("{base}/time"));
    assert!(r.status.success(), "{}", shown(&args, &r));
    assert_eq!(out(&r).lines().filter(|l| !l.trim().is_empty()).count(), 3, "{}", shown(&args, &r));

    // Identities only in the log, never keys.
    for p in [&a, &b] {
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        for secret in [C_S, C_P, P_S] {
            assert!(!log.contains(&secret[4..]), "a key in the proxy log");
        }
    }
}

/// `[[allow]]` rules by OSCORE identity from `--config`, and a rule naming an unknown label.
#[test]
fn hopcore_proxy_allow_list() {
    let work = TempDir::new("proxy-allow");
    let dir = work.path();
    let (_server, saddr) = server(dir);
    let base = format!("coap://{saddr}");
    let creds = write(&dir.join("proxy.toml"), &entry("peer = \":client1\"", "0a", "20", C_P));
    let config = write(
        &dir.join("allow.toml"),
        &format!("[[allow]]\nclient = \":client1\"\ndestinations = [\"{base}/hello\"]\n"),
    );
    let p = Proxy::start(
        dir,
        "allow",
        &["--config", &config, "--credentials", &creds, "--state-dir", &format!("{}/ps", dir.display())],
    );
    let client = write(
        &dir.join("client.toml"),
        &[
            entry(&format!("uri = \"{base}/*\""), "01", "02", C_S),
            entry(&format!("uri = \"{}*\"", p.uri()), "20", "0a", C_P),
        ]
        .concat(),
    );
    let st = dir.join("client-state");
    let (args, r) = get(&p, Some(&client), &st, &[], &format!("{base}/hello"));
    // With the end-to-end layer the proxy sees only "coap://host:port/", which the rule does
    // not cover: 4.01 inside C-P.
    assert_eq!(r.status.code(), Some(1), "{}", shown(&args, &r));
    assert!(err(&r).contains("4.01"), "{}", shown(&args, &r));
    // Without it (C-P only), the path is visible and allowed.
    let cp_only = write(&dir.join("client-cp.toml"), &entry(&format!("uri = \"{}*\"", p.uri()), "20", "0a", C_P));
    let (args, r) = get(&p, Some(&cp_only), &st, &["--allow-plain"], &format!("{base}/hello"));
    // The server requires OSCORE for /hello: its 4.01 "OSCORE required" comes back inside C-P.
    assert_eq!(r.status.code(), Some(1), "{}", shown(&args, &r));
    assert!(out(&r).contains("OSCORE required"), "{}", shown(&args, &r));
    // A plain client: no rule for unauthenticated clients.
    let (args, r) = get(&p, None, &st, &[], &format!("{base}/hello"));
    assert_eq!(r.status.code(), Some(1), "{}", shown(&args, &r));
    assert!(out(&r).contains("not authorized to forward"), "{}", shown(&args, &r));

    // A rule for a label the credentials do not have: refused at start (exit 3).
    let bad = write(&dir.join("bad.toml"), "[[allow]]\nclient = \":nobody\"\ndestinations = [\"*\"]\n");
    let args = ["proxy", "--bind", "127.0.0.1:0", "--config", &bad, "--credentials", &creds];
    let r = hopcore(&args);
    assert!(!r.status.success(), "{}", show(&args, &r));
    assert!(err(&r).contains("\":nobody\""), "{}", show(&args, &r));
}

/// Onion forwarding through three `hopcore proxy` processes (seed 000 Appendix A): the client
/// shares a context with every proxy and with the server; each proxy removes exactly its own
/// layer, learns only its next hop, and adds none; the server sees the client end to end.
#[test]
fn onion_route_through_three_proxy_processes() {
    let work = TempDir::new("proxy-onion");
    let (_server, addr) = server(work.path());
    let secrets = [
        "hex:4142434445464748494a4b4c4d4e4f50",
        "hex:5152535455565758595a5b5c5d5e5f60",
        "hex:6162636465666768696a6b6c6d6e6f70",
    ];
    let proxies: Vec<Proxy> = (0..3)
        .map(|k| {
            let creds = write(
                &work.path().join(format!("p{}.toml", k + 1)),
                &entry("peer = \":client\"", &format!("a{k}"), &format!("c{k}"), secrets[k]),
            );
            let state = work.path().join(format!("p{}-state", k + 1));
            Proxy::start(
                work.path(),
                &format!("p{}", k + 1),
                &["--credentials", &creds, "--state-dir", state.to_str().expect("path")],
            )
        })
        .collect();
    let mut client = entry(&format!("uri = \"coap://{addr}/*\""), "01", "02", C_S);
    for (k, p) in proxies.iter().enumerate() {
        client.push_str(&entry(&format!("uri = \"{}/*\"", p.uri()), &format!("c{k}"), &format!("a{k}"), secrets[k]));
    }
    let creds = write(&work.path().join("client.toml"), &client);
    let state = work.path().join("client-state");
    let mut args: Vec<String> = ["get", "-v", "--timeout", "10", "--credentials", &creds, "--state-dir"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(state.to_str().expect("path").to_string());
    for p in &proxies {
        args.extend(["--proxy".to_string(), p.uri()]);
    }
    args.push(format!("coap://{addr}/hello"));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = hopcore(&a);
    assert!(o.status.success(), "{}", shown(&args, &o));
    assert_eq!(out(&o).lines().last().unwrap_or_default(), "Hello from hopcore", "{}", shown(&args, &o));
    assert!(err(&o).contains("(4 layers)"), "{}", shown(&args, &o));
    // Each proxy removed one layer (its own, from ":client") and forwarded to the next hop only.
    let next: Vec<String> =
        proxies.iter().skip(1).map(|p| p.addr.to_string()).chain(std::iter::once(addr.to_string())).collect();
    for (k, p) in proxies.iter().enumerate() {
        let line = p.exchange(1);
        assert!(line.contains("layers_in=[\":client\"]"), "proxy {}: {line}", k + 1);
        assert!(line.contains("layers_out=[]"), "proxy {}: {line}", k + 1);
        assert!(line.contains(&next[k]), "proxy {} forwards to {}: {line}", k + 1, next[k]);
        for (j, other) in next.iter().enumerate() {
            if j != k {
                assert!(!line.contains(other.as_str()), "proxy {} must not learn {other}: {line}", k + 1);
            }
        }
    }
}
