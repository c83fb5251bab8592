//! Helpers shared by the server tests (included with `#[path]`): a client endpoint, requests
//! bounded in time, and option accessors.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hopcore_codec::{num, BlockValue, Code, Message};
use hopcore_endpoint::server::{Server, ServerHandle};
use hopcore_endpoint::Endpoint;

/// Upper bound for any one test step.
pub const LIMIT: Duration = Duration::from_secs(10);

pub fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("test step timed out")
}

/// Starts `server` on loopback; returns its handle and a client endpoint.
pub async fn serve(server: Server) -> (ServerHandle, Endpoint) {
    let handle = server.start(lo()).await.unwrap();
    let (client, _incoming) = Endpoint::bind(lo()).await.unwrap();
    // The client's Incoming is dropped: it only sends requests.
    (handle, client)
}

pub fn request(code: Code, path: &str) -> Message {
    let mut m = Message::request(code);
    m.set_path(path);
    m
}

pub async fn exchange(client: &Endpoint, server: &ServerHandle, m: Message) -> Message {
    within(client.request(server.local_addr(), m)).await.expect("no response")
}

pub fn block(m: &Message, number: u16) -> Option<BlockValue> {
    m.options.get(number).map(|v| BlockValue::decode(v).unwrap())
}

pub fn bv(num: u32, more: bool, size: usize) -> BlockValue {
    BlockValue::new(num, more, size).unwrap()
}

pub fn with_block(mut m: Message, number: u16, b: BlockValue) -> Message {
    m.options.set_uint(number, b.to_uint());
    m
}

pub fn observe_value(m: &Message) -> Option<u32> {
    m.options.get_uint(num::OBSERVE)
}

/// Waits until `f` holds, polling.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    within(async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}
