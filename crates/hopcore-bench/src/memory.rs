//! Memory figures (issue #5, part 4), measured in this process from VmRSS:
//!
//! - bytes per security context: `size_of::<SecurityContext>()`, and the resident growth per
//!   context when N contexts are loaded into a volatile `ContextStore` (label, kid index and
//!   allocator overhead included), and into a bare `Vec<SecurityContext>`;
//! - bytes per exchange in flight at a client endpoint: N CON requests towards a loopback
//!   socket that never answers (plain and OSCORE), resident growth / N.
//!
//! Each figure is measured in a fresh child process (`--part`), so that none reuses memory
//! that another one freed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use hopcore_codec::{Code, Message};
use hopcore_endpoint::client::{Client, ClientConfig, OscoreProtector};
use hopcore_endpoint::{Endpoint, EndpointConfig};
use hopcore_layers::ContextList;
use hopcore_oscore::{ContextInput, SecurityContext};
use hopcore_security::{ContextMeta, ContextParams, ContextStore};
use serde::Serialize;

use crate::fixtures;
use crate::procfs;

#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// Security contexts to load (at most 2,000,000).
    #[arg(long, default_value_t = 100_000)]
    pub contexts: u32,
    /// Exchanges to hold in flight (at most 100,000).
    #[arg(long, default_value_t = 10_000)]
    pub exchanges: u32,
    /// Appends the result as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Internal: measure one figure in this process and print it (the parent starts one
    /// process per figure, so that no figure reuses memory another one freed).
    #[arg(long, hide = true)]
    pub part: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryResult {
    pub size_of_security_context: usize,
    pub size_of_context_meta: usize,
    pub size_of_option_context_params: usize,
    pub contexts: u32,
    pub store_bytes_per_context: f64,
    pub vec_bytes_per_context: f64,
    pub exchanges: u32,
    pub plain_bytes_per_exchange: f64,
    pub oscore_bytes_per_exchange: f64,
}

/// Distinct 4-byte Recipient IDs, a fixed Sender ID.
fn nth_context(i: u32) -> SecurityContext {
    let rid = (i + 1).to_be_bytes();
    SecurityContext::derive(
        &ContextInput::new(&fixtures::MASTER_SECRET, &[0xff, 0xff, 0xff, 0xff, 0xff], &rid)
            .master_salt(&fixtures::MASTER_SALT),
    )
    .expect("fixed inputs derive")
}

fn per_item(before: u64, after: u64, n: u32) -> f64 {
    after.saturating_sub(before) as f64 / f64::from(n.max(1))
}

fn contexts_in_store(n: u32) -> anyhow::Result<(f64, ContextStore)> {
    let before = procfs::rss(None)?;
    let mut store = ContextStore::volatile();
    for i in 0..n {
        store.add(nth_context(i), ContextMeta::new(format!(":client{i}"))).map_err(|e| anyhow!("{e}"))?;
    }
    let after = procfs::rss(None)?;
    Ok((per_item(before, after, n), std::hint::black_box(store)))
}

fn contexts_in_vec(n: u32) -> anyhow::Result<(f64, Vec<SecurityContext>)> {
    let before = procfs::rss(None)?;
    let v: Vec<SecurityContext> = (0..n).map(nth_context).collect();
    let after = procfs::rss(None)?;
    Ok((per_item(before, after, n), std::hint::black_box(v)))
}

/// N requests in flight towards a socket that reads nothing; resident growth / N once all of
/// them have been sent.
async fn exchanges_in_flight(n: u32, oscore: bool) -> anyhow::Result<f64> {
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").context("binding the silent peer")?;
    let peer: SocketAddr = sink.local_addr()?;
    let mut config = EndpointConfig::default();
    config.messaging.nstart = n as usize;
    // No retransmission during the measurement.
    config.messaging.ack_timeout = Duration::from_secs(60);
    let (endpoint, _incoming) = Endpoint::bind_with("127.0.0.1:0".parse()?, config).await?;
    let cc = ClientConfig { request_timeout: Duration::from_secs(120), ..Default::default() };
    let client = if oscore {
        let (c, _) = fixtures::pair(0);
        let mut list = ContextList::new();
        let id = list.add(c, "origin");
        Client::with_security(endpoint, cc, Arc::new(OscoreProtector::new(Arc::new(Mutex::new(list)), vec![id])))
    } else {
        Client::new(endpoint, cc)
    };
    let mut req = Message::request(Code::GET);
    req.set_path("/sensors/temp");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = procfs::rss(None)?;
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let c = client.clone();
        let r = req.clone();
        tasks.push(tokio::spawn(async move { c.request(peer, r).await }));
    }
    // Bounded wait until every request has left.
    let limit = Instant::now() + Duration::from_secs(30);
    while client.endpoint().stats().snapshot().2 < u64::from(n) && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = procfs::rss(None)?;
    for t in &tasks {
        t.abort();
    }
    drop(sink);
    Ok(per_item(before, after, n))
}

/// One figure, measured in this process.
fn part(name: &str, contexts: u32, exchanges: u32) -> anyhow::Result<f64> {
    match name {
        "store" => Ok(contexts_in_store(contexts)?.0),
        "vec" => Ok(contexts_in_vec(contexts)?.0),
        "plain" | "oscore" => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(exchanges_in_flight(exchanges, name == "oscore"))
        }
        other => Err(anyhow!("unknown part {other}")),
    }
}

/// Runs `hopcore-bench memory --part NAME` in a child process and reads its figure.
fn in_child(name: &str, contexts: u32, exchanges: u32) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["memory", "--part", name, "--contexts", &contexts.to_string(), "--exchanges", &exchanges.to_string()])
        .output()
        .context("starting the measuring process")?;
    if !out.status.success() {
        return Err(anyhow!("memory part {name} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| anyhow!("memory part {name}: {e}"))
}

/// Prints the figure of `--part` (child), or measures every figure in its own process.
pub fn run(args: &MemoryArgs) -> anyhow::Result<Option<MemoryResult>> {
    let contexts = args.contexts.clamp(1, 2_000_000);
    let exchanges = args.exchanges.clamp(1, 100_000);
    if let Some(name) = &args.part {
        println!("{}", part(name, contexts, exchanges)?);
        return Ok(None);
    }
    Ok(Some(MemoryResult {
        size_of_security_context: std::mem::size_of::<SecurityContext>(),
        size_of_context_meta: std::mem::size_of::<ContextMeta>(),
        size_of_option_context_params: std::mem::size_of::<Option<ContextParams>>(),
        contexts,
        store_bytes_per_context: in_child("store", contexts, exchanges)?,
        vec_bytes_per_context: in_child("vec", contexts, exchanges)?,
        exchanges,
        plain_bytes_per_exchange: in_child("plain", contexts, exchanges)?,
        oscore_bytes_per_exchange: in_child("oscore", contexts, exchanges)?,
    }))
}

pub fn print(r: &MemoryResult) {
    println!(
        "size_of: SecurityContext {} bytes, ContextMeta {}, Option<ContextParams> {}",
        r.size_of_security_context, r.size_of_context_meta, r.size_of_option_context_params
    );
    println!(
        "{} contexts: {:.0} bytes/context resident in a volatile ContextStore, {:.0} in a Vec<SecurityContext>",
        r.contexts, r.store_bytes_per_context, r.vec_bytes_per_context
    );
    println!(
        "{} exchanges in flight at a client endpoint: {:.0} bytes/exchange plain, {:.0} with OSCORE",
        r.exchanges, r.plain_bytes_per_exchange, r.oscore_bytes_per_exchange
    );
}
