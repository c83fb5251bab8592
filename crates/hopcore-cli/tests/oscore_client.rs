//! `hopcore get|post --credentials` (the OSCORE client) against `hopcore server --credentials`
//! on loopback, directly and through `hopcore proxy` (CF-4: the proxy only forwards), with
//! hopcore TOML credentials. Always runs (no external peers).

#[path = "oscore_client_support.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use support::{err, hopcore, hopcore_logging, ok, out, show, start, Peer, TempDir};

const SECRET: &str = "hex:0102030405060708090a0b0c0d0e0f10";
const SALT: &str = "hex:9e7ca92223786340";

/// The demo server's /large (4096 bytes of text).
fn large_text() -> String {
    let large = hopcore_endpoint::server::demo::large_payload();
    assert_eq!(large.len(), 4096);
    String::from_utf8(large).expect("text")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The server's credentials: the client ":client1" with Sender ID 02, Recipient ID 01.
fn server_toml(dir: &Path) -> String {
    let p = dir.join("server.toml");
    write(
        &p,
        &format!(
            "[[context]]\npeer = \":client1\"\nsender_id = \"hex:02\"\nrecipient_id = \"hex:01\"\n\
             master_secret = \"{SECRET}\"\nmaster_salt = \"{SALT}\"\n"
        ),
    );
    p.to_str().expect("path").to_string()
}

/// The client's credentials for requests to `pattern`, with Sender ID `sender`.
fn client_toml(dir: &Path, name: &str, pattern: &str, sender: &str) -> String {
    let p = dir.join(name);
    write(
        &p,
        &format!(
            "[[context]]\nuri = \"{pattern}\"\nsender_id = \"hex:{sender}\"\nrecipient_id = \"hex:02\"\n\
             master_secret = \"{SECRET}\"\nmaster_salt = \"{SALT}\"\n"
        ),
    );
    p.to_str().expect("path").to_string()
}

/// `hopcore server --credentials ... --require-oscore /hello` (plain requests to /hello: 4.01).
fn server(creds: &str, state: &Path) -> (Peer, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopcore"));
    cmd.args(["server", "--bind", "127.0.0.1:0", "--credentials", creds, "--require-oscore", "/hello"])
        .arg("--state-dir")
        .arg(state)
        .env("RUST_LOG", "warn");
    let (peer, addr) = start(cmd, "hopcore server", "listening on");
    (peer, addr.parse().expect("server address"))
}

fn server_at(creds: &str, state: &Path, addr: SocketAddr) -> Peer {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopcore"));
    cmd.args(["server", "--bind", &addr.to_string(), "--credentials", creds, "--require-oscore", "/hello"])
        .arg("--state-dir")
        .arg(state)
        .env("RUST_LOG", "warn");
    start(cmd, "hopcore server", "listening on").0
}

#[test]
fn hopcore_client_against_hopcore_server() {
    let work = TempDir::new("e2e");
    let server_creds = server_toml(work.path());
    let (_server, addr) = server(&server_creds, &work.path().join("server-state"));
    let base = format!("coap://{addr}");
    let creds = client_toml(work.path(), "client.toml", &format!("{base}/*"), "01");
    let state = work.path().join("client-state");
    let state = state.to_str().expect("path");
    let with = |extra: &[&str], uri: &str| -> Vec<String> {
        let mut v: Vec<String> =
            ["--timeout", "10", "--credentials", &creds, "--state-dir", state].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(uri.to_string());
        v
    };

    // GET, protected and verified; -v names the context (its first URI pattern) and kid.
    let hello = format!("{base}/hello");
    let a = [vec!["get".to_string(), "-v".to_string()], with(&[], &hello)].concat();
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = ok(&args);
    assert!(out(&r).contains("Hello from hopcore"), "{}", show(&args, &r));
    let line = format!("OSCORE: protected with context '{base}/*' (kid 01), response verified");
    assert!(err(&r).contains(&line), "{}", show(&args, &r));
    assert!(!err(&r).contains("0102030405060708090a0b0c0d0e0f10"), "never print keys");

    // The same resource plain: 4.01 from the server (it requires OSCORE there).
    let args = ["get", "--timeout", "10", hello.as_str()];
    let r = hopcore(&args);
    assert_eq!(r.status.code(), Some(1), "{}", show(&args, &r));
    assert!(err(&r).contains("4.01"), "{}", show(&args, &r));

    // Inner Block2: /large, 4096 bytes.
    let a = [vec!["get".to_string()], with(&[], &format!("{base}/large"))].concat();
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = ok(&args);
    assert_eq!(out(&r).trim_end(), large_text().trim_end(), "{}", show(&args, &r));

    // Inner Block1: a 3000-byte POST to /echo, echoed back (inner Block2).
    let payload: String = (0..3000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let a = [vec!["post".to_string()], with(&["--payload", &payload], &format!("{base}/echo"))].concat();
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = ok(&args);
    assert_eq!(out(&r).trim_end(), payload, "{}", show(&args, &r));

    // Observe: the first response and two notifications, each verified.
    let a = [vec!["get".to_string()], with(&["--observe", "--count", "3"], &format!("{base}/time"))].concat();
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = ok(&args);
    assert_eq!(out(&r).lines().filter(|l| !l.trim().is_empty()).count(), 3, "{}", show(&args, &r));

    // A context the server does not know (Sender ID 05): its unprotected 4.01 is reported
    // with code and diagnostic (RFC 8613 §8.2), exit 1.
    let stranger = client_toml(work.path(), "stranger.toml", &format!("{base}/*"), "05");
    let args = ["get", "--timeout", "10", "--credentials", stranger.as_str(), hello.as_str()];
    let r = hopcore(&args);
    assert_eq!(r.status.code(), Some(1), "{}", show(&args, &r));
    assert!(
        err(&r).contains("server answered unprotected 4.01 Unauthorized: Security context not found"),
        "{}",
        show(&args, &r)
    );
    assert!(out(&r).is_empty(), "{}", show(&args, &r));

    // No pattern matches: refused (exit 2) unless --allow-plain.
    let other = "coap://127.0.0.1:9/hello";
    let args = ["get", "--timeout", "10", "--credentials", creds.as_str(), other];
    let r = hopcore(&args);
    assert_eq!(r.status.code(), Some(2), "{}", show(&args, &r));
    assert!(
        err(&r)
            .contains("no OSCORE credentials match coap://127.0.0.1:9/hello; pass --allow-plain to send unprotected"),
        "{}",
        show(&args, &r)
    );
}

/// CF-4: through `hopcore proxy` (a plain forward proxy), with Proxy-Uri (decomposed by the
/// oscore layer: scheme and authority Outer, path Inner, RFC 8613 §4.1.3.3) and with
/// Proxy-Scheme + Uri-Host/Uri-Port.
#[test]
fn through_hopcore_proxy() {
    let work = TempDir::new("proxy");
    let server_creds = server_toml(work.path());
    let (_server, addr) = server(&server_creds, &work.path().join("server-state"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopcore"));
    cmd.args(["proxy", "--bind", "127.0.0.1:0"]).env("RUST_LOG", "warn");
    let (_proxy, paddr) = start(cmd, "hopcore proxy", "listening on");
    let proxy = format!("coap://{paddr}");
    let base = format!("coap://{addr}");
    let creds = client_toml(work.path(), "client.toml", &format!("{base}/*"), "01");
    let state = work.path().join("client-state");
    let state = state.to_str().expect("path");
    let hello = format!("{base}/hello");
    for extra in [&[][..], &["--proxy-scheme"][..]] {
        let mut args =
            vec!["get", "-v", "--timeout", "10", "--credentials", &creds, "--state-dir", state, "--proxy", &proxy];
        args.extend_from_slice(extra);
        args.push(&hello);
        let r = ok(&args);
        assert!(out(&r).contains("Hello from hopcore"), "{}", show(&args, &r));
        assert!(err(&r).contains("response verified"), "{}", show(&args, &r));
    }
    let large = format!("{base}/large");
    let args = ["get", "--timeout", "10", "--credentials", &creds, "--state-dir", state, "--proxy", &proxy, &large];
    let r = ok(&args);
    assert_eq!(out(&r).trim_end(), large_text().trim_end(), "{}", show(&args, &r));
}

/// RFC 8613 App. B.1.2: the server is killed (no clean shutdown) and restarted on the same
/// state; its replay window is unsynchronized, it challenges with Echo, and the client answers
/// transparently.
#[test]
fn echo_challenge_after_server_restart() {
    let work = TempDir::new("echo");
    let server_creds = server_toml(work.path());
    let server_state = work.path().join("server-state");
    let (mut server1, addr) = server(&server_creds, &server_state);
    let base = format!("coap://{addr}");
    let creds = client_toml(work.path(), "client.toml", &format!("{base}/*"), "01");
    let state = work.path().join("client-state");
    let state = state.to_str().expect("path");
    let hello = format!("{base}/hello");
    let args = ["get", "--timeout", "10", "--credentials", &creds, "--state-dir", state, &hello];
    ok(&args);
    // SIGKILL: no chance to save the replay window.
    let _ = server1.child.kill();
    let _ = server1.child.wait();
    drop(server1);
    let _server2 = server_at(&server_creds, &server_state, addr);
    let args = ["get", "-v", "--timeout", "10", "--credentials", &creds, "--state-dir", state, &hello];
    let r = hopcore_logging(&args, "hopcore_endpoint=debug");
    assert!(r.status.success(), "{}", show(&args, &r));
    assert!(out(&r).contains("Hello from hopcore"), "{}", show(&args, &r));
    assert!(err(&r).contains("freshness challenge (4.01 with Echo)"), "{}", show(&args, &r));
}

/// Without --state-dir, the client keeps its sequence numbers beside the credentials file
/// (RFC 8613 App. B.1.1), so a second run is not a replay.
#[test]
fn default_state_dir_makes_repeated_runs_work() {
    let work = TempDir::new("default-state");
    let server_creds = server_toml(work.path());
    let (_server, addr) = server(&server_creds, &work.path().join("server-state"));
    let hello = format!("coap://{addr}/hello");
    let creds = client_toml(work.path(), "client.toml", &format!("coap://{addr}/*"), "01");
    for run in 0..3 {
        let o = hopcore(&["get", "--timeout", "10", "--credentials", &creds, &hello]);
        assert!(o.status.success(), "run {run}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "Hello from hopcore");
    }
    assert!(work.path().join("client.state").is_dir(), "state kept beside client.toml");
}
