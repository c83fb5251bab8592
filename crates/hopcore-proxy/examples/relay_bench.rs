//! Relayed requests per second through the proxy, all in one process on loopback:
//! `cargo run --release -p hopcore-proxy --example relay_bench -- [in_flight] [seconds]`.
//!
//! An origin written on `Endpoint` answers GET /hello; clients send GETs with Proxy-Uri to
//! the proxy, `in_flight` at a time (default 1, like one coap-client in flight).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopcore_codec::{num, Code, Message};
use hopcore_endpoint::Endpoint;
use hopcore_proxy::{Proxy, ProxyConfig};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let in_flight: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let lo = "127.0.0.1:0".parse().unwrap();

    let (origin, mut incoming) = Endpoint::bind(lo).await.unwrap();
    let o = origin.clone();
    tokio::spawn(async move {
        while let Some(r) = incoming.next().await {
            o.respond(r.handle, Message::response(Code::CONTENT).with_payload("hello"));
        }
    });
    let cfg = ProxyConfig { upstream_nstart: in_flight.max(1), ..ProxyConfig::default() };
    let proxy = Proxy::new(cfg).bind(lo).await.unwrap();
    let p = proxy.local_addr();
    tokio::spawn(proxy.run());

    let (client, _in) = Endpoint::bind(lo).await.unwrap();
    let uri = format!("coap://127.0.0.1:{}/hello", origin.local_addr().port());
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (c, uri, done) = (client.clone(), uri.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let req = Message::request(Code::GET).with_option(num::PROXY_URI, uri.as_bytes());
                    if let Ok(m) = c.request(p, req).await {
                        assert_eq!(m.code, Code::CONTENT);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    println!("{in_flight} in flight: {n} relayed requests in {secs} s = {:.0}/s", n as f64 / secs as f64);
}
