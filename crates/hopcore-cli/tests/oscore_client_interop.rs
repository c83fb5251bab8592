//! `hopcore get|post --credentials` (the OSCORE client, RFC 8613) against aiocoap 0.4.17: the
//! OSCORE plugtest server (`contrib/oscore-plugtest/plugtest-server`, contexts a/b of
//! `common-context/`) and `scripts/aiocoap_origin.py --credentials`, directly and through
//! `hopcore proxy` (CF-4: the proxy only forwards, OSCORE is end to end).
//!
//! Runs when `HOPCORE_PEERS_VENV` is set (scripts/test.sh sets it; see scripts/PEERS.md);
//! prints "skipped" otherwise. With the variable set, a missing or broken peer is a failure.

#[path = "oscore_client_support.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{err, free_port, hopcore, hopcore_logging, ok, out, repo, show, start, Peer, TempDir};

/// The peers' venv, or `None` (the test is skipped) when HOPCORE_PEERS_VENV is not set.
fn venv(test: &str) -> Option<PathBuf> {
    match std::env::var_os("HOPCORE_PEERS_VENV") {
        Some(v) if !v.is_empty() => {
            let v = PathBuf::from(v);
            assert!(
                v.join("bin/python").exists(),
                "HOPCORE_PEERS_VENV={} has no bin/python (run scripts/setup-peers.sh)",
                v.display()
            );
            Some(v)
        }
        _ => {
            println!("skipped {test}: HOPCORE_PEERS_VENV is not set");
            None
        }
    }
}

/// Copies an aiocoap context directory (settings.json, secret.json) to `to`.
fn copy_context(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("context dir");
    for f in ["settings.json", "secret.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap_or_else(|e| panic!("copy {}: {e}", from.join(f).display()));
    }
}

/// Writes aiocoap client credentials: one URI pattern per context directory.
fn write_credentials(path: &Path, entries: &[(&str, &Path)]) {
    let mut map = serde_json::Map::new();
    for (pattern, dir) in entries {
        let basedir = format!("{}/", dir.display());
        map.insert(pattern.to_string(), serde_json::json!({ "oscore": { "basedir": basedir } }));
    }
    std::fs::write(path, serde_json::Value::Object(map).to_string()).expect("write credentials");
}

fn plugtest_dir() -> PathBuf {
    repo().join(".peers/aiocoap-0.4.17/contrib/oscore-plugtest")
}

/// Starts the OSCORE plugtest server (server contexts b and d) on a free port.
fn plugtest_server(venv: &Path, work: &Path, state_was_lost: bool) -> (Peer, u16) {
    let dir = plugtest_dir();
    assert!(
        dir.join("common-context/a/settings.json").exists(),
        "{} lacks common-context (setup-peers.sh)",
        dir.display()
    );
    let port = free_port();
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(dir.join("plugtest-server")).args(["--bind", &format!("127.0.0.1:{port}")]).arg(work.join("server"));
    if state_was_lost {
        cmd.arg("--state-was-lost");
    }
    let (peer, _) = start(cmd, "plugtest-server", "Plugtest server ready.");
    (peer, port)
}

#[test]
fn plugtest_server_plain_and_protected() {
    let Some(venv) = venv("plugtest_server_plain_and_protected") else { return };
    let work = TempDir::new("plugtest");
    let (_server, port) = plugtest_server(&venv, work.path(), false);
    let client_ctx = work.path().join("client-a");
    copy_context(&plugtest_dir().join("common-context/a"), &client_ctx);
    let creds = work.path().join("client.json");
    let protected = format!("coap://127.0.0.1:{port}/oscore/hello/1");
    write_credentials(&creds, &[(&protected, &client_ctx)]);
    let creds = creds.to_str().expect("path");
    let state = work.path().join("state");
    let state = state.to_str().expect("path");

    // Protected (RFC 8613 §8.1/§8.4), with -v naming the context and the verification.
    let args = ["get", "-v", "--timeout", "20", "--credentials", creds, "--state-dir", state, &protected];
    let o = ok(&args);
    assert!(out(&o).contains("Hello World!"), "{}", show(&args, &o));
    let e = err(&o);
    assert!(e.contains("OSCORE: protected with context"), "{}", show(&args, &o));
    assert!(e.contains("(kid empty)") && e.contains("response verified"), "{}", show(&args, &o));
    assert!(!e.contains("0102030405060708090a0b0c0d0e0f10"), "never print keys");
    // Twice with the same state: the sequence numbers go on, the server's replay window accepts.
    let o = ok(&args);
    assert!(out(&o).contains("Hello World!"), "{}", show(&args, &o));

    // The plain resource: no credentials match, sent unprotected only with --allow-plain.
    let plain = format!("coap://127.0.0.1:{port}/oscore/hello/coap");
    let args = ["get", "--timeout", "20", "--credentials", creds, "--allow-plain", &plain];
    let o = ok(&args);
    assert!(out(&o).contains("Hello World!"), "{}", show(&args, &o));
    let args = ["get", "--timeout", "20", "--credentials", creds, &plain];
    let o = hopcore(&args);
    assert_eq!(o.status.code(), Some(2), "{}", show(&args, &o));
    assert!(
        err(&o).contains(&format!("no OSCORE credentials match {plain}; pass --allow-plain to send unprotected")),
        "{}",
        show(&args, &o)
    );

    // Without the state, a new run starts again at the credentials' sequence number: the
    // server detects the replay and answers unprotected (RFC 8613 §7.4, §8.2), which is reported
    // with its code and diagnostic, not delivered.
    let args = ["get", "--timeout", "20", "--credentials", creds, &protected];
    let o = hopcore(&args);
    assert_eq!(o.status.code(), Some(1), "{}", show(&args, &o));
    assert!(err(&o).contains("server answered unprotected 4.01 Unauthorized: "), "{}", show(&args, &o));
    assert!(out(&o).is_empty(), "{}", show(&args, &o));
}

/// RFC 8613 App. B.1.2: the server lost its replay window and challenges with Echo; the client
/// answers transparently.
#[test]
fn plugtest_server_with_lost_state_echo() {
    let Some(venv) = venv("plugtest_server_with_lost_state_echo") else { return };
    let work = TempDir::new("plugtest-echo");
    let (_server, port) = plugtest_server(&venv, work.path(), true);
    let client_ctx = work.path().join("client-a");
    copy_context(&plugtest_dir().join("common-context/a"), &client_ctx);
    let creds = work.path().join("client.json");
    write_credentials(&creds, &[(&format!("coap://127.0.0.1:{port}/*"), &client_ctx)]);
    let creds = creds.to_str().expect("path");
    let state = work.path().join("state");
    let state = state.to_str().expect("path");
    let uri = format!("coap://127.0.0.1:{port}/oscore/hello/1");
    let args = ["get", "-v", "--timeout", "20", "--credentials", creds, "--state-dir", state, &uri];
    let o = hopcore_logging(&args, "hopcore_endpoint=debug");
    assert!(o.status.success(), "{}", show(&args, &o));
    assert!(out(&o).contains("Hello World!"), "{}", show(&args, &o));
    assert!(err(&o).contains("freshness challenge (4.01 with Echo)"), "{}", show(&args, &o));
    assert!(err(&o).contains("response verified"), "{}", show(&args, &o));
}

/// aiocoap_origin.py with server credentials (contexts as in scripts/PEERS.md).
struct Origin {
    _peer: Peer,
    port: u16,
    client_creds: PathBuf,
    /// The client's durable state (sequence numbers): every run goes on from the last one.
    state: PathBuf,
    _work: TempDir,
}

fn write_context(dir: &Path, sender: &str, recipient: &str) {
    std::fs::create_dir_all(dir).expect("context dir");
    let settings =
        serde_json::json!({ "sender-id_hex": sender, "recipient-id_hex": recipient, "algorithm": "AES-CCM-16-64-128" });
    let secret =
        serde_json::json!({ "secret_hex": "0102030405060708090a0b0c0d0e0f10", "salt_hex": "9e7ca92223786340" });
    std::fs::write(dir.join("settings.json"), settings.to_string()).expect("settings.json");
    std::fs::write(dir.join("secret.json"), secret.to_string()).expect("secret.json");
}

fn origin(venv: &Path, tag: &str) -> Origin {
    let work = TempDir::new(tag);
    write_context(&work.path().join("server"), "02", "01");
    write_context(&work.path().join("client"), "01", "02");
    let server_creds = work.path().join("server.json");
    let basedir = format!("{}/", work.path().join("server").display());
    std::fs::write(&server_creds, serde_json::json!({ ":client1": { "oscore": { "basedir": basedir } } }).to_string())
        .expect("server.json");
    let port = free_port();
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(repo().join("scripts/aiocoap_origin.py"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .arg("--credentials")
        .arg(&server_creds);
    let (peer, _) = start(cmd, "aiocoap_origin.py", "READY");
    let client_creds = work.path().join("client.json");
    write_credentials(&client_creds, &[(&format!("coap://127.0.0.1:{port}/*"), &work.path().join("client"))]);
    let state = work.path().join("client-state");
    Origin { _peer: peer, port, client_creds, state, _work: work }
}

#[test]
fn aiocoap_origin_whoami_block_wise_and_observe() {
    let Some(venv) = venv("aiocoap_origin_whoami_block_wise_and_observe") else { return };
    let o = origin(&venv, "origin");
    let creds = o.client_creds.to_str().expect("path");
    let state = o.state.to_str().expect("path");
    let base = format!("coap://127.0.0.1:{}", o.port);

    let uri = format!("{base}/whoami");
    let args = ["get", "-v", "--timeout", "20", "--credentials", creds, "--state-dir", state, &uri];
    let r = ok(&args);
    let text = out(&r);
    assert!(text.contains("OSCORE: yes"), "{}", show(&args, &r));
    assert!(text.contains("kid: 01") && text.contains("claims: :client1"), "{}", show(&args, &r));
    assert!(err(&r).contains("OSCORE: protected with context") && err(&r).contains("(kid 01)"), "{}", show(&args, &r));

    // Inner Block2 (RFC 8613 §4.1.3.4.1): 4096 bytes, each block its own OSCORE exchange.
    let uri = format!("{base}/large");
    let args = ["get", "--timeout", "20", "--credentials", creds, "--state-dir", state, &uri];
    let r = ok(&args);
    let large = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/".repeat(64);
    assert_eq!(out(&r).trim_end(), large, "{}", show(&args, &r));

    // Inner Block1: a 3000-byte POST echoed back (the echo itself in inner Block2).
    let payload: String = (0..3000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let uri = format!("{base}/echo");
    let args = ["post", "--timeout", "20", "--credentials", creds, "--state-dir", state, "--payload", &payload, &uri];
    let r = ok(&args);
    assert_eq!(out(&r).trim_end(), payload, "{}", show(&args, &r));

    // Observe: the first response and 2 notifications, each verified.
    let uri = format!("{base}/time");
    let args =
        ["get", "--observe", "--count", "3", "--timeout", "20", "--credentials", creds, "--state-dir", state, &uri];
    let r = ok(&args);
    let lines: Vec<_> = out(&r).lines().filter(|l| l.contains('#')).map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{}", show(&args, &r));
}

/// CF-4 (draft-ietf-core-oscore-capable-proxies): `hopcore proxy` only forwards; the Proxy-Uri
/// is decomposed by the oscore layer (scheme and authority Outer, path Inner).
#[test]
fn through_hopcore_proxy_end_to_end() {
    let Some(venv) = venv("through_hopcore_proxy_end_to_end") else { return };
    let o = origin(&venv, "proxy");
    let creds = o.client_creds.to_str().expect("path");
    let state = o.state.to_str().expect("path");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopcore"));
    cmd.args(["proxy", "--bind", "127.0.0.1:0"]).env("RUST_LOG", "warn");
    let (_proxy, addr) = start(cmd, "hopcore proxy", "listening on");
    let proxy: SocketAddr = addr.parse().expect("proxy address");
    let proxy = format!("coap://{proxy}");
    let uri = format!("coap://127.0.0.1:{}/whoami", o.port);
    for scheme in [false, true] {
        let mut args =
            vec!["get", "-v", "--timeout", "20", "--credentials", creds, "--state-dir", state, "--proxy", &proxy, &uri];
        if scheme {
            args.push("--proxy-scheme");
        }
        let r = ok(&args);
        assert!(out(&r).contains("OSCORE: yes"), "{}", show(&args, &r));
        assert!(out(&r).contains("claims: :client1"), "{}", show(&args, &r));
    }
    let uri = format!("coap://127.0.0.1:{}/large", o.port);
    let args = ["get", "--timeout", "20", "--credentials", creds, "--state-dir", state, "--proxy", &proxy, &uri];
    let r = ok(&args);
    assert_eq!(out(&r).trim_end().len(), 4096, "{}", show(&args, &r));
}
