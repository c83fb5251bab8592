//! `hopcore demo`: a server and a forward proxy on loopback, and a client sending requests
//! through the proxy; prints each exchange.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use hopcore_codec::{num, CoapUri, Code, Message};
use hopcore_endpoint::client::{build_request, Client, ClientConfig, Target};
use hopcore_endpoint::Endpoint;

struct Row {
    what: String,
    code: String,
    detail: String,
    rtt: Duration,
}

async fn exchange(client: &Client, proxy: SocketAddr, method: Code, uri: &str, payload: &[u8]) -> anyhow::Result<Row> {
    let target = CoapUri::parse(uri).map_err(|e| anyhow!("{e}"))?;
    let mut req = build_request(method, &target, Target::ProxyUri);
    req.payload = payload.to_vec();
    let start = Instant::now();
    let resp = client.request(proxy, req).await.map_err(|e| anyhow!("{method} {uri}: {e}"))?;
    Ok(Row {
        what: format!("{} {}", method.name().unwrap_or("?"), target.compose()),
        code: resp.code.to_string(),
        detail: summarize(&resp),
        rtt: start.elapsed(),
    })
}

fn summarize(m: &Message) -> String {
    let text = String::from_utf8_lossy(&m.payload);
    if m.payload.len() > 40 {
        format!("{} bytes: {}...", m.payload.len(), text.chars().take(24).collect::<String>())
    } else {
        format!("{text:?}")
    }
}

pub async fn run() -> anyhow::Result<ExitCode> {
    let lo: SocketAddr = "127.0.0.1:0".parse().context("loopback")?;
    let (srv_ep, srv_in) = Endpoint::bind(lo).await.context("binding the demo server")?;
    let server_addr = srv_ep.local_addr();
    tokio::spawn(hopcore_endpoint::server::demo::demo_server().run(srv_ep, srv_in));

    let proxy = hopcore_proxy::Proxy::new(hopcore_proxy::ProxyConfig::default())
        .bind(lo)
        .await
        .context("binding the demo proxy")?;
    let proxy_addr = proxy.local_addr();
    tokio::spawn(proxy.run());

    let (cli_ep, _in) = Endpoint::bind(lo).await.context("binding the demo client")?;
    let client =
        Client::new(cli_ep, ClientConfig { request_timeout: Duration::from_secs(10), ..ClientConfig::default() });

    println!("hopcore demo: client -> forward proxy {proxy_addr} -> server {server_addr} (plain CoAP)\n");
    let base = format!("coap://{server_addr}");
    let mut rows = vec![
        exchange(&client, proxy_addr, Code::GET, &format!("{base}/.well-known/core"), b"").await?,
        exchange(&client, proxy_addr, Code::GET, &format!("{base}/hello"), b"").await?,
        exchange(&client, proxy_addr, Code::POST, &format!("{base}/echo"), b"ping through the proxy").await?,
        exchange(&client, proxy_addr, Code::GET, &format!("{base}/large"), b"").await?,
        exchange(&client, proxy_addr, Code::GET, &format!("{base}/nothing-here"), b"").await?,
    ];

    // Observe /time through the proxy: three notifications.
    let target = CoapUri::parse(&format!("{base}/time")).map_err(|e| anyhow!("{e}"))?;
    let req = build_request(Code::GET, &target, Target::ProxyUri);
    let start = Instant::now();
    let mut obs = client.observe(proxy_addr, req).await.map_err(|e| anyhow!("observe /time: {e}"))?;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), obs.next()).await {
            Ok(Some(Ok(m))) => {
                let seq = m.options.get_uint(num::OBSERVE).map_or("-".into(), |v| v.to_string());
                seen.push(format!("#{seq} {}", String::from_utf8_lossy(&m.payload)));
            }
            Ok(Some(Err(e))) => return Err(anyhow!("observe /time: {e}")),
            Ok(None) | Err(_) => return Err(anyhow!("observe /time: notifications stopped")),
        }
    }
    obs.cancel().await;
    rows.push(Row {
        what: format!("GET {} (Observe)", target.compose()),
        code: "2.05 Content".into(),
        detail: seen.join(", "),
        rtt: start.elapsed(),
    });

    let w = rows.iter().map(|r| r.what.len()).max().unwrap_or(10);
    println!("{:<w$}  {:<16}  {:>9}  response", "request (via proxy)", "code", "time");
    for r in &rows {
        println!("{:<w$}  {:<16}  {:>7.1}ms  {}", r.what, r.code, r.rtt.as_secs_f64() * 1000.0, r.detail);
    }
    crate::demo_layers::run_all().await?;
    Ok(ExitCode::SUCCESS)
}
