//! Helpers shared by the client tests (included with `#[path]`): minimal servers written
//! directly on `Endpoint` + `Incoming`, and a Block2 responder.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hopcore_codec::block::szx_for_size;
use hopcore_codec::{num, BlockValue, Code, Message};
use hopcore_endpoint::client::{Client, ClientConfig};
use hopcore_endpoint::{Endpoint, IncomingRequest};
use tokio::sync::mpsc;

/// Upper bound for any one test step.
pub const LIMIT: Duration = Duration::from_secs(20);

pub fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("test step timed out")
}

pub async fn client(config: ClientConfig) -> Client {
    let (endpoint, _incoming) = Endpoint::bind(lo()).await.unwrap();
    Client::new(endpoint, config)
}

/// A server answering every request with `handler`; every request is also sent to `log`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub endpoint: Endpoint,
    pub log: mpsc::UnboundedReceiver<IncomingRequest>,
}

impl TestServer {
    /// The requests received so far.
    pub fn drain(&mut self) -> Vec<Message> {
        let mut v = Vec::new();
        while let Ok(r) = self.log.try_recv() {
            v.push(r.message);
        }
        v
    }

    /// Whether each request received so far was confirmable.
    pub fn log_types(&mut self) -> Vec<bool> {
        let mut v = Vec::new();
        while let Ok(r) = self.log.try_recv() {
            v.push(r.handle.confirmable);
        }
        v
    }
}

/// Starts a server; `handler` returns the response, or `None` to leave the request unanswered.
pub async fn serve<H>(mut handler: H) -> TestServer
where
    H: FnMut(&IncomingRequest) -> Option<Message> + Send + 'static,
{
    let (endpoint, mut incoming) = Endpoint::bind(lo()).await.unwrap();
    let (tx, log) = mpsc::unbounded_channel();
    let ep = endpoint.clone();
    tokio::spawn(async move {
        while let Some(req) = incoming.next().await {
            let reply = handler(&req);
            let handle = req.handle;
            let _ = tx.send(req);
            if let Some(reply) = reply {
                ep.respond(handle, reply);
            }
        }
    });
    TestServer { addr: endpoint.local_addr(), endpoint, log }
}

/// A test body: `len` bytes of a pattern that depends on `seed`.
pub fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i % 251) as u8).wrapping_add(seed)).collect()
}

pub fn block(m: &Message, number: u16) -> Option<BlockValue> {
    m.options.get(number).map(|v| BlockValue::decode(v).unwrap())
}

/// The block of `body` asked for by `req` (RFC 7959 §2.4): the requested size or `max`,
/// whichever is smaller; the whole body without Block2 if it fits and none was asked for.
pub fn block2_response(req: &Message, body: &[u8], max: usize, etag: Option<&[u8]>) -> Message {
    let mut m = Message::response(Code::CONTENT);
    if let Some(e) = etag {
        m.options.push(num::ETAG, e);
    }
    let asked = block(req, num::BLOCK2);
    if asked.is_none() && body.len() <= max {
        m.payload = body.to_vec();
        return m;
    }
    let (offset, size) = match asked {
        Some(b) => (b.offset(), b.size().min(max)),
        None => (0, max),
    };
    if offset >= body.len() && offset > 0 {
        return Message::response(Code::BAD_OPTION);
    }
    let end = (offset + size).min(body.len());
    let more = end < body.len();
    let b = BlockValue { num: (offset / size) as u32, more, szx: szx_for_size(size) };
    m.options.set_uint(num::BLOCK2, b.to_uint());
    m.payload = body[offset..end].to_vec();
    m
}
