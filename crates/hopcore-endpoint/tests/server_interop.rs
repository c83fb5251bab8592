//! The demo server against libcoap's `coap-client-notls` (skipped when it is not installed):
//! plain GET, Block2 with the server's and with a negotiated block size, a Block1 upload with a
//! block-wise response, and Observe.

#[path = "server_support.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hopcore_endpoint::server::demo::{demo_server, large_payload};
use hopcore_endpoint::server::ServerHandle;
use support::*;

const CLIENT: &str = "coap-client-notls";

fn have_client() -> bool {
    Command::new(CLIENT).arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Runs coap-client with `args` and the server's URI for `path`; returns the payload it
/// received (written with `-o` to a file, byte for byte).
async fn coap_client(server: &ServerHandle, args: &[&str], path: &str) -> Vec<u8> {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let out_file = std::env::temp_dir().join(format!("hopcore-interop-{}-{n}.out", std::process::id()));
    let uri = format!("coap://{}{path}", server.local_addr());
    let mut cmd = Command::new(CLIENT);
    cmd.args(["-B", "8", "-o"]).arg(&out_file).args(args).arg(uri);
    let out = within(tokio::task::spawn_blocking(move || cmd.output())).await.unwrap().unwrap();
    assert!(out.status.success(), "{CLIENT} failed: {}", String::from_utf8_lossy(&out.stderr));
    let data = std::fs::read(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    data
}

#[tokio::test]
async fn libcoap_client() {
    if !have_client() {
        eprintln!("{CLIENT} not installed; skipping");
        return;
    }
    let server = demo_server().start(lo()).await.unwrap();

    assert_eq!(coap_client(&server, &[], "/hello").await, b"Hello from hopcore");
    let links = String::from_utf8(coap_client(&server, &[], "/.well-known/core").await).unwrap();
    assert!(links.contains("</time>;rt=\"time\""), "{links}");

    // Block2, server's size and a negotiated 64-byte size.
    assert_eq!(coap_client(&server, &[], "/large").await, large_payload());
    assert_eq!(coap_client(&server, &["-b", "64"], "/large").await, large_payload());

    // Block1 upload of 3000 bytes in 256-byte blocks; the echo comes back block-wise.
    let body: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let file = std::env::temp_dir().join(format!("hopcore-interop-{}.txt", std::process::id()));
    std::fs::write(&file, &body).unwrap();
    let f = file.to_string_lossy().into_owned();
    let echoed = coap_client(&server, &["-m", "post", "-b", "256", "-t", "0", "-f", &f], "/echo").await;
    let _ = std::fs::remove_file(&file);
    assert_eq!(echoed, body);
    assert_eq!(coap_client(&server, &[], "/echo").await, body);

    // Observe /time for 3 seconds: at least the first response and two notifications.
    let out = String::from_utf8(coap_client(&server, &["-s", "3", "-w"], "/time").await).unwrap();
    let lines: Vec<&str> = out.lines().filter(|l| l.len() == 20 && l.ends_with('Z')).collect();
    assert!(lines.len() >= 3, "{out}");
    // libcoap deregisters (or RSTs the next notification) when it exits.
    eventually(|| server.observer_count() == 0).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.shutdown();
    within(server.join()).await;
}
