//! The endpoint shell on real loopback sockets.

use std::time::Duration;

use hopcore_codec::{Code, Message};
use hopcore_endpoint::Endpoint;

#[tokio::test]
async fn request_response_over_loopback() {
    let (server, mut incoming) = Endpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let srv = server.clone();
    tokio::spawn(async move {
        while let Some(req) = incoming.next().await {
            let reply = Message::response(Code::CONTENT).with_payload(format!("you asked {}", req.message.path()));
            srv.respond(req.handle, reply);
        }
    });
    let (client, _) = Endpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut req = Message::request(Code::GET);
    req.set_path("/a/b");
    let resp =
        tokio::time::timeout(Duration::from_secs(5), client.request(server.local_addr(), req)).await.unwrap().unwrap();
    assert_eq!(resp.code, Code::CONTENT);
    assert_eq!(resp.payload, b"you asked /a/b");

    // Many concurrent requests are all answered, each with its own payload.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = client.clone();
        let dst = server.local_addr();
        tasks.push(tokio::spawn(async move {
            let mut req = Message::request(Code::GET);
            req.set_path(&format!("/n/{i}"));
            c.request(dst, req).await.map(|m| m.payload)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let p = tokio::time::timeout(Duration::from_secs(20), t).await.unwrap().unwrap().unwrap();
        assert_eq!(p, format!("you asked /n/{i}").into_bytes());
    }
}

#[tokio::test]
async fn ipv6_loopback() {
    let Ok((server, mut incoming)) = Endpoint::bind("[::1]:0".parse().unwrap()).await else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    let srv = server.clone();
    tokio::spawn(async move {
        while let Some(req) = incoming.next().await {
            srv.respond(req.handle, Message::response(Code::CONTENT).with_payload("v6"));
        }
    });
    let (client, _) = Endpoint::bind("[::1]:0".parse().unwrap()).await.unwrap();
    let resp =
        tokio::time::timeout(Duration::from_secs(5), client.request(server.local_addr(), Message::request(Code::GET)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(resp.payload, b"v6");
}

/// A caller that stops waiting (its future is dropped) makes the endpoint forget the request:
/// no further retransmissions reach the peer.
#[tokio::test]
async fn abandoned_request_stops_retransmitting() {
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut config = hopcore_endpoint::EndpointConfig::default();
    config.messaging.ack_timeout = Duration::from_millis(100);
    config.messaging.ack_random_factor = 1.0;
    let (client, _) = Endpoint::bind_with("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let req = Message::request(Code::GET);
    // Retransmissions at 100, 300, 700, 1500 ms; give up after 250 ms (one retransmission).
    let r = tokio::time::timeout(Duration::from_millis(250), client.request(silent.local_addr().unwrap(), req)).await;
    assert!(r.is_err(), "no response from a silent peer");
    let mut buf = [0u8; 64];
    let mut count = 0;
    // Drain what arrived so far, then watch for 1.5 s more.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1800);
    while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, silent.recv_from(&mut buf)).await {
        count += 1;
    }
    assert!(count <= 3, "{count} transmissions: the abandoned request kept retransmitting");
    assert!(count >= 2, "the request and one retransmission before the abandonment, got {count}");
}

/// Counters and the tap see exactly the datagrams of an exchange.
#[tokio::test]
async fn stats_and_tap_count_datagrams() {
    let (server, mut incoming) = Endpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let srv = server.clone();
    tokio::spawn(async move {
        while let Some(req) = incoming.next().await {
            srv.respond(req.handle, Message::response(Code::CONTENT).with_payload("0123456789"));
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = hopcore_endpoint::EndpointConfig { tap: Some(tx), ..Default::default() };
    let (client, _) = Endpoint::bind_with("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let resp = client.request(server.local_addr(), Message::request(Code::GET)).await.unwrap();
    assert_eq!(resp.payload, b"0123456789");
    let (din, bin, dout, bout) = client.stats().snapshot();
    assert_eq!((din, dout), (1, 1));
    let first = rx.recv().await.unwrap();
    let second = rx.recv().await.unwrap();
    assert!(first.outgoing && !second.outgoing);
    assert_eq!(first.peer, server.local_addr());
    assert_eq!((bout, bin), (first.bytes.len() as u64, second.bytes.len() as u64));
    // 4-byte header + 4-byte token + marker + 10-byte payload.
    assert_eq!(second.bytes.len(), 4 + 4 + 1 + 10);
    let (sin, _, sout, _) = server.stats().snapshot();
    assert_eq!((sin, sout), (1, 1));
}
