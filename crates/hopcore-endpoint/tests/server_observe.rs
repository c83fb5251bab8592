//! Observe against the server over loopback (RFC 7641), with raw `Endpoint::observe`.

#[path = "server_support.rs"]
mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use hopcore_codec::{num, Code, Message, MsgType};
use hopcore_endpoint::server::demo::demo_server;
use hopcore_endpoint::server::resource::{diagnostic, text};
use hopcore_endpoint::server::{resource_fn, Attributes, Server, ServerConfig};
use hopcore_endpoint::Notifications;
use support::*;

fn observe_request(path: &str) -> Message {
    request(Code::GET, path).with_option(num::OBSERVE, b"")
}

async fn next(n: &mut Notifications) -> Message {
    within(n.next()).await.expect("observation ended").expect("observation failed")
}

/// A server with /counter: observable, its value bumped by the test through a shared counter;
/// 4.04 once the value reaches 100. Notifications only when the test says so.
fn counter_server(config: ServerConfig) -> (Server, Arc<AtomicU32>) {
    let value = Arc::new(AtomicU32::new(0));
    let v = value.clone();
    let mut s = Server::with_config(config);
    s.add_resource(
        "/counter",
        resource_fn(move |_req| match v.load(Ordering::SeqCst) {
            100.. => diagnostic(Code::NOT_FOUND, "gone"),
            n => text(n.to_string()),
        })
        .with_attributes(Attributes::new().observable()),
    );
    s.add_resource("/plain", resource_fn(|_req| text("not observable")));
    (s, value)
}

#[tokio::test]
async fn time_notifications_increase() {
    let (server, client) = serve(demo_server()).await;
    let mut obs = client.observe(server.local_addr(), observe_request("/time")).unwrap();
    let first = next(&mut obs).await;
    assert_eq!(first.code, Code::CONTENT);
    let mut last = observe_value(&first).expect("registration response carries Observe (RFC 7641 §4.1)");
    assert_eq!(server.observer_count(), 1);
    for _ in 0..3 {
        let n = next(&mut obs).await;
        assert_eq!(n.code, Code::CONTENT);
        assert_eq!(n.token, first.token, "same token as the registration");
        let v = observe_value(&n).expect("notification carries Observe");
        assert!(v > last, "Observe values increase: {v} after {last}");
        last = v;
        let t = String::from_utf8(n.payload).unwrap();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
    server.shutdown();
    within(server.join()).await;
}

#[tokio::test]
async fn deregister_with_observe_1() {
    let (s, value) = counter_server(ServerConfig::default());
    let (server, client) = serve(s).await;
    let notifier = server.notifier();
    let mut obs = client.observe(server.local_addr(), observe_request("/counter")).unwrap();
    let first = next(&mut obs).await;
    assert_eq!(first.payload, b"0");
    value.store(1, Ordering::SeqCst);
    notifier.notify("/counter");
    let n = next(&mut obs).await;
    assert_eq!(n.payload, b"1");
    assert!(observe_value(&n) > observe_value(&first));
    let token = obs.token().unwrap();
    // Stop matching the token locally, then deregister with it (RFC 7641 §3.6).
    drop(obs);
    let mut m = request(Code::GET, "/counter").with_option(num::OBSERVE, &[1]);
    m.token = token;
    let r = exchange(&client, &server, m).await;
    assert_eq!(r.code, Code::CONTENT);
    assert_eq!(r.payload, b"1");
    assert!(!r.options.contains(num::OBSERVE), "a deregistration response has no Observe (RFC 7641 §4.1)");
    assert_eq!(server.observer_count(), 0);
}

#[tokio::test]
async fn observer_removed_after_rst() {
    let (s, value) = counter_server(ServerConfig::default());
    let (server, client) = serve(s).await;
    let mut obs = client.observe(server.local_addr(), observe_request("/counter")).unwrap();
    next(&mut obs).await;
    assert_eq!(server.observer_count(), 1);
    // The client forgets the observation; the next notification gets a RST (RFC 7641 §3.6).
    drop(obs);
    value.store(2, Ordering::SeqCst);
    server.notifier().notify("/counter");
    eventually(|| server.observer_count() == 0).await;
}

#[tokio::test]
async fn con_every_nth_notification() {
    let (s, value) = counter_server(ServerConfig { observe_con_every: 3, ..ServerConfig::default() });
    let (server, client) = serve(s).await;
    let mut obs = client.observe(server.local_addr(), observe_request("/counter")).unwrap();
    next(&mut obs).await;
    let mut types = Vec::new();
    for i in 1..=6 {
        value.store(i, Ordering::SeqCst);
        server.notifier().notify("/counter");
        let n = next(&mut obs).await;
        assert_eq!(n.payload, i.to_string().as_bytes());
        types.push(n.mtype);
    }
    // RFC 7641 §4.5: mostly NON, a CON now and then.
    use MsgType::{Con, Non};
    assert_eq!(types, [Non, Non, Con, Non, Non, Con]);
}

#[tokio::test]
async fn error_notification_ends_observation() {
    let (s, value) = counter_server(ServerConfig::default());
    let (server, client) = serve(s).await;
    let mut obs = client.observe(server.local_addr(), observe_request("/counter")).unwrap();
    next(&mut obs).await;
    value.store(100, Ordering::SeqCst);
    server.notifier().notify("/counter");
    // RFC 7641 §4.2: a non-2.xx notification, without Observe, and the entry is removed.
    let n = next(&mut obs).await;
    assert_eq!(n.code, Code::NOT_FOUND);
    assert!(!n.options.contains(num::OBSERVE));
    assert!(within(obs.next()).await.is_none(), "the client's observation ended too");
    assert_eq!(server.observer_count(), 0);
}

#[tokio::test]
async fn registration_rules() {
    let (s, _value) = counter_server(ServerConfig::default());
    let (server, client) = serve(s).await;
    // Not observable: a plain response without Observe (RFC 7641 §4.1).
    let r = exchange(&client, &server, observe_request("/plain")).await;
    assert_eq!(r.code, Code::CONTENT);
    assert!(!r.options.contains(num::OBSERVE));
    // Unknown resource: error, no Observe, no entry.
    let r = exchange(&client, &server, observe_request("/nothing")).await;
    assert_eq!(r.code, Code::NOT_FOUND);
    assert!(!r.options.contains(num::OBSERVE));
    assert_eq!(server.observer_count(), 0);

    // Re-registration with the same token replaces the entry (RFC 7641 §4.1) and gets a
    // larger Observe value.
    let mut obs = client.observe(server.local_addr(), observe_request("/counter")).unwrap();
    let first = next(&mut obs).await;
    let token = obs.token().unwrap();
    client.forget(server.local_addr(), token);
    let mut again = observe_request("/counter");
    again.token = token;
    let mut obs2 = client.observe(server.local_addr(), again).unwrap();
    let second = next(&mut obs2).await;
    assert_eq!(second.token, token);
    assert!(observe_value(&second) > observe_value(&first));
    assert_eq!(server.observer_count(), 1);
    // A plain GET that reuses the token ends the observation (its response has no Observe).
    drop(obs2);
    let mut plain = request(Code::GET, "/counter");
    plain.token = token;
    let r = exchange(&client, &server, plain).await;
    assert!(!r.options.contains(num::OBSERVE));
    assert_eq!(server.observer_count(), 0);
}

#[tokio::test]
async fn large_notifications_are_block_wise() {
    let value = Arc::new(AtomicU32::new(0));
    let v = value.clone();
    let mut s = Server::new();
    s.add_resource(
        "/big",
        resource_fn(move |_req| {
            let n = v.load(Ordering::SeqCst);
            text(format!("{n:04}").repeat(500))
        })
        .with_attributes(Attributes::new().observable()),
    );
    let (server, client) = serve(s).await;
    // Register asking for 512-byte blocks (RFC 7959 §2.6).
    let m = with_block(observe_request("/big"), num::BLOCK2, bv(0, false, 512));
    let mut obs = client.observe(server.local_addr(), m).unwrap();
    let first = next(&mut obs).await;
    assert_eq!(block(&first, num::BLOCK2), Some(bv(0, true, 512)));
    assert!(observe_value(&first).is_some());
    value.store(7, Ordering::SeqCst);
    server.notifier().notify("/big");
    let n = next(&mut obs).await;
    // RFC 7959 §2.6: the notification carries the first block only, with an ETag.
    assert_eq!(block(&n, num::BLOCK2), Some(bv(0, true, 512)));
    assert_eq!(n.options.get_uint(num::SIZE2), Some(2000));
    let etag = n.options.get(num::ETAG).unwrap().to_vec();
    assert_ne!(first.options.get(num::ETAG), Some(&etag[..]), "the representation changed");
    let mut body = n.payload.clone();
    // The rest with plain GETs for NUM > 0 (RFC 7959 §3.4), which leave the observation alone.
    for k in 1..4 {
        let r =
            exchange(&client, &server, with_block(request(Code::GET, "/big"), num::BLOCK2, bv(k, false, 512))).await;
        assert_eq!(r.options.get(num::ETAG), Some(&etag[..]));
        assert!(!r.options.contains(num::OBSERVE));
        body.extend_from_slice(&r.payload);
    }
    assert_eq!(body, "0007".repeat(500).into_bytes());
    assert_eq!(server.observer_count(), 1);
}
