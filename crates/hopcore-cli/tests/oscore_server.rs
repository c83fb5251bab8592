//! `hopcore server` with its OSCORE options, end to end, without other implementations.

mod common;

use std::path::Path;

use common::*;

#[test]
fn require_oscore_answers_plain_requests_with_4_01() {
    let server = spawn(&["server", "--require-oscore", "/hello", "--require-oscore", "/time/"]);
    let base = format!("coap://{}", server.addr);
    let o = run(&["get", &format!("{base}/hello")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("4.01"), "{}", stderr(&o));
    let both = format!("{}{}", stdout(&o), stderr(&o));
    assert!(both.contains("OSCORE required"), "{both}");
    let o = run(&["get", &format!("{base}/time")]);
    assert!(stderr(&o).contains("4.01"), "{}", stderr(&o));
    // Other resources stay available in plain CoAP.
    let o = run(&["post", &format!("{base}/echo"), "--payload", "x"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["get", &format!("{base}/large")]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn plugtest_resources_in_plain_coap() {
    let contexts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.peers/aiocoap-0.4.17/contrib/oscore-plugtest/common-context");
    if !contexts.join("b").is_dir() {
        eprintln!("skipping: {} is missing (scripts/setup-peers.sh unpacks it)", contexts.display());
        return;
    }
    let server = spawn(&["server", "--plugtest"]);
    let base = format!("coap://{}", server.addr);
    // Test 0 of the plugtest: plain CoAP.
    let o = run(&["get", "-v", &format!("{base}/oscore/hello/coap")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Hello World!"), "{}", stdout(&o));
    // Test 17: the protected resources refuse plain requests.
    let o = run(&["get", &format!("{base}/oscore/hello/1")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("4.01"), "{}", stderr(&o));
    // The demo resources are not served.
    let o = run(&["get", &format!("{base}/hello")]);
    assert!(stderr(&o).contains("4.04"), "{}", stderr(&o));
}

#[test]
fn usage_and_credentials_errors() {
    // --state-dir without contexts is a usage error.
    let o = run(&["server", "--state-dir", "/nonexistent/state", "--bind", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Unreadable credentials: the server does not start.
    let o = run(&["server", "--credentials", "/nonexistent/creds.json", "--bind", "127.0.0.1:0"]);
    assert!(!o.status.success());
    assert!(!stdout(&o).contains("listening on"), "{}", stdout(&o));
    assert!(stderr(&o).contains("/nonexistent/creds.json"), "{}", stderr(&o));
}
