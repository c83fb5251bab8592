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
