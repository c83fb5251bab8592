//! `hopcore get --rederive` (RFC 8613 App. B.2, client-initiated) against `hopcore server
//! --credentials` with `rederive = true`, on loopback; then the runs the server starts for a
//! client that comes back with the preestablished context. Always runs (no external peers;
//! aiocoap 0.4.17 has no App. B.2, so there is no interop test).

#[path = "oscore_client_support.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use support::{err, hopcore, ok, out, show, start, Peer, TempDir};

const SECRET: &str = "hex:0102030405060708090a0b0c0d0e0f10";
const SALT: &str = "hex:9e7ca92223786340";

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_str().expect("path").to_string()
}

/// The server's credentials for ":client1" (Sender ID 02, Recipient ID 01).
fn server_toml(dir: &Path, name: &str, rederive: bool) -> String {
    write(
        &dir.join(name),
        &format!(
            "[[context]]\npeer = \":client1\"\nsender_id = \"hex:02\"\nrecipient_id = \"hex:01\"\n\
             master_secret = \"{SECRET}\"\nmaster_salt = \"{SALT}\"\nrederive = {rederive}\n"
        ),
    )
}

/// The client's credentials for `pattern` (Sender ID 01).
fn client_toml(dir: &Path, name: &str, pattern: &str, rederive: bool) -> String {
    write(
        &dir.join(name),
        &format!(
            "[[context]]\nuri = \"{pattern}\"\nsender_id = \"hex:01\"\nrecipient_id = \"hex:02\"\n\
             master_secret = \"{SECRET}\"\nmaster_salt = \"{SALT}\"\nrederive = {rederive}\n"
        ),
    )
}

fn server(creds: &str, state: &Path) -> (Peer, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopcore"));
    cmd.args(["server", "--bind", "127.0.0.1:0", "--credentials", creds, "--require-oscore", "/"])
        .arg("--state-dir")
        .arg(state)
        .env("RUST_LOG", "warn");
    let (peer, addr) = start(cmd, "hopcore server", "listening on");
    (peer, addr.parse().expect("server address"))
}

/// `hopcore get` with `creds` and the shared client state directory, then `extra`, then `uri`.
fn get_args(creds: &str, state: &Path, extra: &[&str], uri: &str) -> Vec<String> {
    let mut v: Vec<String> =
        ["get", "--timeout", "10", "--credentials", creds, "--state-dir"].iter().map(|s| s.to_string()).collect();
    v.push(state.to_str().expect("path").to_string());
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push(uri.to_string());
    v
}

/// The 32 hex digits after `marker` in `text` (a 16-byte ID Context R2 || R3).
fn id_context_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let start = text.find(marker)? + marker.len();
    let hex = text.get(start..start + 32)?;
    hex.chars().all(|c| c.is_ascii_hexdigit()).then_some(hex)
}

#[test]
fn hopcore_get_rederive_against_hopcore_server() {
    let work = TempDir::new("rederive");
    let server_creds = server_toml(work.path(), "server.toml", true);
    let (_server, addr) = server(&server_creds, &work.path().join("server-state"));
    let base = format!("coap://{addr}");
    let hello = format!("{base}/hello");
    let creds = client_toml(work.path(), "client.toml", &format!("{base}/*"), true);
    let state = work.path().join("client-state");

    // Client-initiated: request #1 (R1), 4.01 (R2), request #2 (R2 || R3), then the request.
    let a = get_args(&creds, &state, &["-v", "--rederive"], &hello);
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = ok(&args);
    assert!(out(&r).contains("Hello from hopcore"), "{}", show(&args, &r));
    let first = id_context_after(&err(&r), "OSCORE: App. B.2: context re-derived, new ID Context ")
        .unwrap_or_else(|| panic!("no new ID Context reported: {}", show(&args, &r)))
        .to_string();
    assert!(err(&r).contains(&format!("App. B.2 run started by this client: now ID Context {first}")));
    assert!(!err(&r).contains("0102030405060708090a0b0c0d0e0f10"), "never print keys");

    // With the new context, block-wise and Observe work as usual (same process, --rederive
    // again: a second run replaces the first).
    let a = get_args(&creds, &state, &["--rederive"], &format!("{base}/large"));
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = ok(&args);
    let large = String::from_utf8(hopcore_endpoint::server::demo::large_payload()).expect("text");
    assert_eq!(out(&r).trim_end(), large.trim_end(), "{}", show(&args, &r));
    let a = get_args(&creds, &state, &["--rederive", "--observe", "--count", "2"], &format!("{base}/time"));
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = ok(&args);
    assert_eq!(out(&r).lines().filter(|l| !l.trim().is_empty()).count(), 2, "{}", show(&args, &r));

    // The old keys stop working: the same credentials without the flag (so the client cannot
    // follow the server's B.2 challenge) get nothing but a response it cannot verify.
    let noflag = client_toml(work.path(), "noflag.toml", &format!("{base}/*"), false);
    let a = get_args(&noflag, &state, &[], &hello);
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = hopcore(&args);
    assert_eq!(r.status.code(), Some(3), "{}", show(&args, &r));
    assert!(err(&r).contains("App. B.2") && err(&r).contains("rederive = true"), "{}", show(&args, &r));
    assert!(out(&r).is_empty(), "{}", show(&args, &r));

    // A new process with the flag but without --rederive: the server starts B.2 (the client
    // lost the re-derived context) and the client completes it transparently.
    let a = get_args(&creds, &state, &["-v"], &hello);
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = ok(&args);
    assert!(out(&r).contains("Hello from hopcore"), "{}", show(&args, &r));
    let second = id_context_after(&err(&r), "App. B.2 run started by the server: now ID Context ")
        .unwrap_or_else(|| panic!("no server-initiated run reported: {}", show(&args, &r)))
        .to_string();
    assert_ne!(second, first);

    // --rederive needs the flag on the client's context: usage error, nothing sent.
    let a = get_args(&noflag, &state, &["--rederive"], &hello);
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = hopcore(&args);
    assert_eq!(r.status.code(), Some(2), "{}", show(&args, &r));
    assert!(err(&r).contains("rederive = true"), "{}", show(&args, &r));

    // --rederive is for direct requests.
    let a = get_args(&creds, &state, &["--rederive", "--proxy", "coap://127.0.0.1:9"], &hello);
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = hopcore(&args);
    assert_eq!(r.status.code(), Some(2), "{}", show(&args, &r));
}

#[test]
fn hopcore_get_rederive_against_a_server_without_the_flag() {
    let work = TempDir::new("rederive-noflag");
    let server_creds = server_toml(work.path(), "server.toml", false);
    let (_server, addr) = server(&server_creds, &work.path().join("server-state"));
    let hello = format!("coap://{addr}/hello");
    let creds = client_toml(work.path(), "client.toml", &format!("coap://{addr}/*"), true);
    let state = work.path().join("client-state");

    // RFC 8613 §8.2 step 2: the server has no context for the kid context R1 (exit 1, the
    // unprotected 4.01 is reported); the client keeps its context.
    let a = get_args(&creds, &state, &["--rederive"], &hello);
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = hopcore(&args);
    assert_eq!(r.status.code(), Some(1), "{}", show(&args, &r));
    assert!(err(&r).contains("Security context not found"), "{}", show(&args, &r));
    assert!(err(&r).contains("re-derivation failed"), "{}", show(&args, &r));

    // Without --rederive the preestablished context works as always.
    let a = get_args(&creds, &state, &[], &hello);
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = ok(&args);
    assert!(out(&r).contains("Hello from hopcore"), "{}", show(&args, &r));
}
