//! Client Observe (RFC 7641 §3) against minimal servers on real loopback sockets.

#[path = "client_support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopcore_codec::{num, Code, Message, MsgType, Token};
use hopcore_endpoint::client::ClientConfig;
use hopcore_endpoint::IncomingRequest;
use hopcore_messaging::RejectReason;
use support::{block, block2_response, body, client, serve, within, TestServer};

fn get(path: &str) -> Message {
    let mut m = Message::request(Code::GET);
    m.set_path(path);
    m
}

fn observe_value(m: &Message) -> Option<u32> {
    m.options.get_uint(num::OBSERVE)
}

/// A confirmable notification on `token` (RFC 7641 §4.2).
fn notification(token: Token, seq: u32, payload: &str) -> Message {
    let mut m = Message::new(MsgType::Con, Code::CONTENT);
    m.token = token;
    m.options.set_uint(num::OBSERVE, seq);
    m.payload = payload.as_bytes().to_vec();
    m
}

/// A server whose registration response has Observe `first_seq` and payload `first`; a
/// deregistration or plain GET gets a 2.05 without Observe.
async fn observe_server(first_seq: u32, first: &'static str) -> TestServer {
    serve(move |r| {
        let mut m = Message::response(Code::CONTENT);
        if observe_value(&r.message) == Some(0) {
            m.options.set_uint(num::OBSERVE, first_seq);
            m.payload = first.as_bytes().to_vec();
        } else {
            m.payload = b"plain".to_vec();
        }
        Some(m)
    })
    .await
}

async fn notify(server: &TestServer, reg: &IncomingRequest, m: Message) {
    within(server.endpoint.send_confirmed(reg.handle.peer, m)).await.expect("notification acknowledged");
}

async fn next_payload(obs: &mut hopcore_endpoint::client::Observation) -> String {
    let m = within(obs.next()).await.expect("observation still running").expect("no error");
    String::from_utf8(m.payload).unwrap()
}

#[tokio::test]
async fn first_response_then_three_notifications_in_order() {
    let mut server = observe_server(1, "n0").await;
    let client = client(ClientConfig::default()).await;
    let mut obs = within(client.observe(server.addr, get("/obs"))).await.unwrap();
    let reg = within(server.log.recv()).await.unwrap();
    // RFC 7641 §3.1: Observe 0 (registration); the observation lives on the request's token.
    assert_eq!(reg.message.options.get(num::OBSERVE), Some(&[][..]));
    assert_eq!(reg.handle.token, obs.token());
    assert_eq!(obs.peer(), server.addr);

    let first = within(obs.next()).await.unwrap().unwrap();
    assert_eq!((first.payload.as_slice(), observe_value(&first)), (&b"n0"[..], Some(1)));
    for i in 1..=3u32 {
        notify(&server, &reg, notification(reg.handle.token, 1 + i, &format!("n{i}"))).await;
    }
    for i in 1..=3u32 {
        let m = within(obs.next()).await.unwrap().unwrap();
        assert_eq!(m.payload, format!("n{i}").into_bytes());
        assert_eq!(observe_value(&m), Some(1 + i));
    }
    assert!(!obs.is_ended());
}

#[tokio::test]
async fn a_reordered_older_notification_is_dropped() {
    let mut server = observe_server(10, "a").await;
    let client = client(ClientConfig::default()).await;
    let mut obs = within(client.observe(server.addr, get("/obs"))).await.unwrap();
    let reg = within(server.log.recv()).await.unwrap();
    let t = reg.handle.token;
    notify(&server, &reg, notification(t, 12, "c")).await;
    // RFC 7641 §3.4: 11 arrives after 12 and is older.
    notify(&server, &reg, notification(t, 11, "b")).await;
    notify(&server, &reg, notification(t, 13, "d")).await;
    // Forward in steps below 2^23, around the 24-bit wrap: still newer.
    notify(&server, &reg, notification(t, 0x70_0000, "e")).await;
    notify(&server, &reg, notification(t, 0xE0_0000, "f")).await;
    notify(&server, &reg, notification(t, 0xFF_FFFF, "g")).await;
    notify(&server, &reg, notification(t, 2, "h")).await;
    // 0xFFFFFE is just before 0xFFFFFF, so older than 2 after the wrap.
    notify(&server, &reg, notification(t, 0xFF_FFFE, "stale")).await;
    let mut got = Vec::new();
    for _ in 0..7 {
        got.push(next_payload(&mut obs).await);
    }
    assert_eq!(got, ["a", "c", "d", "e", "f", "g", "h"]);
    assert!(tokio::time::timeout(Duration::from_millis(200), obs.next()).await.is_err(), "nothing else is yielded");
}

#[tokio::test]
async fn the_server_ends_the_observation_with_4_04() {
    let mut server = observe_server(5, "x").await;
    let client = client(ClientConfig::default()).await;
    let mut obs = within(client.observe(server.addr, get("/obs"))).await.unwrap();
    let reg = within(server.log.recv()).await.unwrap();
    notify(&server, &reg, notification(reg.handle.token, 6, "y")).await;
    let mut gone = Message::new(MsgType::Con, Code::NOT_FOUND);
    gone.token = reg.handle.token;
    notify(&server, &reg, gone).await;

    assert_eq!(next_payload(&mut obs).await, "x");
    assert_eq!(next_payload(&mut obs).await, "y");
    // RFC 7641 §3.2: the error response is yielded, then the observation is over.
    let end = within(obs.next()).await.unwrap().unwrap();
    assert_eq!(end.code, Code::NOT_FOUND);
    assert!(within(obs.next()).await.is_none());
    assert!(obs.is_ended());
}

#[tokio::test]
async fn a_server_that_does_not_observe_gives_one_response() {
    let server = serve(|_| Some(Message::response(Code::CONTENT).with_payload("no observe here"))).await;
    let client = client(ClientConfig::default()).await;
    let mut obs = within(client.observe(server.addr, get("/plain"))).await.unwrap();
    assert_eq!(next_payload(&mut obs).await, "no observe here");
    assert!(within(obs.next()).await.is_none());
}

#[tokio::test]
async fn cancel_sends_a_deregistration_with_the_same_token() {
    let mut server = observe_server(1, "first").await;
    let client = client(ClientConfig::default()).await;
    let mut req = get("/obs/cancel");
    req.options.push(num::URI_QUERY, b"q=1");
    let mut obs = within(client.observe(server.addr, req)).await.unwrap();
    let reg = within(server.log.recv()).await.unwrap();
    assert_eq!(next_payload(&mut obs).await, "first");
    within(obs.cancel()).await;

    let dereg = within(server.log.recv()).await.unwrap();
    // RFC 7641 §3.6: a GET with the observation's token and Observe 1, other options as in
    // the registration.
    assert_eq!(dereg.message.code, Code::GET);
    assert_eq!(dereg.handle.token, reg.handle.token);
    assert_eq!(observe_value(&dereg.message), Some(1));
    let mut rest = dereg.message.options.clone();
    rest.remove(num::OBSERVE);
    let mut reg_rest = reg.message.options.clone();
    reg_rest.remove(num::OBSERVE);
    assert_eq!(rest, reg_rest);

    // The token is forgotten: a late notification gets a Reset.
    let late = server.endpoint.send_confirmed(reg.handle.peer, notification(reg.handle.token, 2, "late"));
    assert_eq!(within(late).await, Err(RejectReason::Reset));
}

#[tokio::test]
async fn dropping_an_observation_resets_the_next_notification() {
    let mut server = observe_server(1, "first").await;
    let client = client(ClientConfig::default()).await;
    let mut obs = within(client.observe(server.addr, get("/obs"))).await.unwrap();
    let reg = within(server.log.recv()).await.unwrap();
    assert_eq!(next_payload(&mut obs).await, "first");
    drop(obs);
    // RFC 7641 §3.6: no deregistration, the next notification is rejected.
    let r = server.endpoint.send_confirmed(reg.handle.peer, notification(reg.handle.token, 2, "n"));
    assert_eq!(within(r).await, Err(RejectReason::Reset));
    assert!(server.log.try_recv().is_err(), "no deregistration request");
}

#[tokio::test]
async fn notifications_larger_than_a_block_are_completed() {
    // The resource: a version byte (also the ETag) and a 200-byte body, served in 64-byte
    // blocks (RFC 7959 §2.6, §3.4).
    let version = Arc::new(Mutex::new(1u8));
    let v = version.clone();
    let mut server = serve(move |r| {
        let ver = *v.lock().unwrap();
        let mut m = block2_response(&r.message, &body(200, ver), 64, Some(&[ver]));
        if observe_value(&r.message) == Some(0) {
            m.options.set_uint(num::OBSERVE, 100);
        }
        Some(m)
    })
    .await;
    let client = client(ClientConfig::default()).await;
    let mut obs = within(client.observe(server.addr, get("/big-obs"))).await.unwrap();
    let first = within(obs.next()).await.unwrap().unwrap();
    assert_eq!(first.payload, body(200, 1));
    assert_eq!(observe_value(&first), Some(100));
    assert!(!first.options.contains(num::BLOCK2));

    // A new state: the notification carries only the first block.
    *version.lock().unwrap() = 2;
    let reg = within(server.log.recv()).await.unwrap();
    server.drain();
    let mut n = block2_response(&Message::request(Code::GET), &body(200, 2), 64, Some(&[2]));
    n.mtype = MsgType::Con;
    n.token = reg.handle.token;
    n.options.set_uint(num::OBSERVE, 101);
    notify(&server, &reg, n).await;
    let second = within(obs.next()).await.unwrap().unwrap();
    assert_eq!(second.payload, body(200, 2));
    assert_eq!(observe_value(&second), Some(101));
    assert_eq!(second.token, reg.handle.token);

    // The rest came with GET + Block2, no Observe, and tokens other than the observation's.
    let fetches = server.drain();
    assert_eq!(fetches.len(), 3);
    for (i, m) in fetches.iter().enumerate() {
        assert_eq!(m.code, Code::GET);
        assert_eq!(m.path(), "/big-obs");
        assert!(!m.options.contains(num::OBSERVE));
        assert_ne!(m.token, reg.handle.token);
        assert_eq!(block(m, num::BLOCK2).map(|b| (b.num, b.size())), Some((i as u32 + 1, 64)));
    }
}

#[tokio::test]
async fn reregisters_when_max_age_runs_out() {
    let mut seq = 0;
    let mut server = serve(move |r| {
        let mut m = Message::response(Code::CONTENT);
        if observe_value(&r.message) == Some(0) {
            seq += 1;
            m.options.set_uint(num::OBSERVE, seq);
            m.options.set_uint(num::MAX_AGE, 1);
            m.payload = format!("registration {seq}").into_bytes();
        }
        Some(m)
    })
    .await;
    let client = client(ClientConfig { observe_reregister: true, ..ClientConfig::default() }).await;
    let mut obs = within(client.observe(server.addr, get("/short-lived"))).await.unwrap();
    assert_eq!(next_payload(&mut obs).await, "registration 1");
    // RFC 7641 §3.3.1: after Max-Age (1 s) and a grace period, the same request again.
    assert_eq!(next_payload(&mut obs).await, "registration 2");
    let first = within(server.log.recv()).await.unwrap();
    let again = within(server.log.recv()).await.unwrap();
    assert_eq!(again.handle.token, first.handle.token);
    assert_eq!(again.message.options, first.message.options);
}
