//! The loopback load generator: K requests in flight through the hopcore client library,
//! bounded in count and time, with latency percentiles, datagram counters and the CPU time of
//! watched processes per request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use hopcore_codec::{num, CoapUri, Code, Message, MsgType};
use hopcore_endpoint::client::{
    build_request, resolve, Client, ClientConfig, OscoreProtector, RequestProtector, RouteProtector, Target,
};
use hopcore_endpoint::{Endpoint, EndpointConfig};
use hopcore_layers::{Route, RouteProxy};
use hopcore_security::credentials::wildcard_match;
use hopcore_security::Credentials;
use serde::Serialize;

use crate::procfs;

/// Hard caps, whatever the command line says (house rule: loops bounded in count and time).
pub const MAX_REQUESTS: u64 = 10_000_000;
pub const MAX_DURATION_SECS: f64 = 600.0;
pub const MAX_IN_FLIGHT: usize = 4096;

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The resource to request, e.g. coap://127.0.0.1:5683/hello (loopback only).
    #[arg(long)]
    pub target: Option<String>,
    /// Forward proxies in path order (Proxy-Uri form unless --proxy-scheme).
    #[arg(long = "proxy", value_name = "URI")]
    pub proxies: Vec<String>,
    /// Address the target with Proxy-Scheme + Uri-Host + Uri-Port instead of Proxy-Uri (what
    /// aiocoap-proxy needs).
    #[arg(long)]
    pub proxy_scheme: bool,
    /// OSCORE credentials (hopcore TOML or aiocoap JSON): end-to-end context by the target's
    /// URI, hop contexts by the proxies' URIs, as `hopcore get --credentials`.
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// Durable OSCORE state (default: `<credentials stem>.state/` beside the file).
    #[arg(long, requires = "credentials")]
    pub state_dir: Option<PathBuf>,
    /// Stop after this many measured requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Stop after this many seconds of measurement.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Requests in flight at any time (also the client's NSTART).
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// Unmeasured requests first (connection set-up, caches, replay windows).
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Payload bytes per request (for POST/PUT).
    #[arg(long, default_value_t = 0)]
    pub payload_size: usize,
    /// Give up on one request after this many seconds (counted as a failure).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Processes whose CPU time (utime+stime) and resident size are measured, as PID or
    /// LABEL=PID; repeatable.
    #[arg(long = "watch-pid", value_name = "[LABEL=]PID")]
    pub watch_pids: Vec<String>,
    /// Runtime worker threads of the generator (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Scenario name written into the JSON record.
    #[arg(long, default_value = "")]
    pub scenario: String,
    /// Implementation name written into the JSON record.
    #[arg(long, default_value = "")]
    pub implementation: String,
    /// Appends the result as one JSON line to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A watched process and what it spent during the measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct Watched {
    pub label: String,
    pub pid: u32,
    pub cpu_s: f64,
    pub cpu_us_per_request: f64,
    /// Largest VmRSS seen while the load ran (sampled every 50 ms).
    pub rss_max_bytes: u64,
}

/// One run's result.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub scenario: String,
    pub implementation: String,
    pub target: String,
    pub proxies: Vec<String>,
    pub oscore: bool,
    pub in_flight: usize,
    pub requests: u64,
    pub ok: u64,
    pub failures: u64,
    pub error_responses: u64,
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    /// Datagrams sent beyond one per request and one ACK per separate response.
    pub retransmissions: u64,
    pub generator_cpu_us_per_request: f64,
    pub watched: Vec<Watched>,
    pub first_error: Option<String>,
}

fn parse_watch(s: &str) -> anyhow::Result<(String, u32)> {
    let (label, pid) = match s.split_once('=') {
        Some((l, p)) => (l.to_string(), p),
        None => (format!("pid{s}"), s),
    };
    let pid: u32 = pid.trim().parse().map_err(|_| anyhow!("--watch-pid {s:?}: not a PID"))?;
    Ok((label, pid))
}

fn loopback_only(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{what} resolves to {addr}: the load generator only sends to loopback addresses");
    }
    Ok(())
}

fn matching_form(credentials: &Credentials, forms: [&str; 2]) -> Option<String> {
    forms
        .into_iter()
        .find(|u| credentials.entries().iter().any(|e| e.uris.iter().any(|p| wildcard_match(p, u))))
        .map(str::to_string)
}

/// The OSCORE protector for `uri` through `proxies`, wired as `hopcore get --credentials`
/// does (crates/hopcore-cli/src/request.rs): an end-to-end context by the target URI, and a
/// hop context per proxy whose URI a pattern matches.
fn protector(args: &LoadArgs, uri: &CoapUri, proxies: &[CoapUri]) -> anyhow::Result<Option<Arc<dyn RequestProtector>>> {
    let Some(path) = &args.credentials else {
        return Ok(None);
    };
    let credentials = Credentials::load(path).map_err(|e| anyhow!("{e}"))?;
    let composed = uri.compose();
    let target_form = matching_form(&credentials, [composed.as_str(), args.target.as_deref().unwrap_or("")]);
    let state_dir = match &args.state_dir {
        Some(d) => Some(d.clone()),
        None if credentials.state_dir().is_some() => None,
        None => {
            let source = credentials.source();
            let stem = source.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Some(source.with_file_name(format!("{stem}.state")))
        }
    };
    let proxy_forms: Vec<Option<String>> = proxies
        .iter()
        .zip(&args.proxies)
        .map(|(p, typed)| matching_form(&credentials, [p.compose().as_str(), typed.as_str()]))
        .collect();
    let (store, index) = credentials.into_store(state_dir.as_deref()).map_err(|e| anyhow!("{e}"))?;
    let origin_context = target_form.as_deref().and_then(|t| index.for_uri(t));
    let Some(origin_id) = origin_context else {
        bail!("no OSCORE credentials match {composed}");
    };
    let contexts = Arc::new(Mutex::new(store));
    if proxies.is_empty() {
        return Ok(Some(Arc::new(OscoreProtector::new(contexts, vec![origin_id]))));
    }
    let route = Route {
        proxies: proxies
            .iter()
            .cloned()
            .zip(proxy_forms)
            .map(|(uri, form)| RouteProxy { uri, context: form.as_deref().and_then(|f| index.for_uri(f)) })
            .collect(),
        origin_context,
        proxy_uri_form: !args.proxy_scheme,
    };
    Ok(Some(Arc::new(RouteProtector::new(contexts, route))))
}

/// Percentile (0..=1) of sorted microsecond latencies, in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

struct Shared {
    issued: AtomicU64,
    ok: AtomicU64,
    failures: AtomicU64,
    error_responses: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// Runs `count` (or until `deadline`) requests with `in_flight` workers; returns the latencies
/// in microseconds of the completed ones.
async fn drive(
    client: &Client,
    peer: SocketAddr,
    template: &Message,
    in_flight: usize,
    count: u64,
    deadline: Instant,
    shared: &Arc<Shared>,
) -> Vec<u32> {
    let mut tasks = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let client = client.clone();
        let template = template.clone();
        let shared = Arc::clone(shared);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                if Instant::now() >= deadline || shared.issued.fetch_add(1, Ordering::Relaxed) >= count {
                    break;
                }
                let t0 = Instant::now();
                let r = client.request(peer, template.clone()).await;
                let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                match r {
                    Ok(m) if m.code.is_success() => {
                        shared.ok.fetch_add(1, Ordering::Relaxed);
                        lat.push(us);
                    }
                    Ok(m) => {
                        shared.error_responses.fetch_add(1, Ordering::Relaxed);
                        shared.failures.fetch_add(1, Ordering::Relaxed);
                        let mut e = shared.first_error.lock().unwrap_or_else(|p| p.into_inner());
                        e.get_or_insert_with(|| {
                            format!(
                                "{} {}",
                                m.code,
                                String::from_utf8_lossy(&m.payload).chars().take(120).collect::<String>()
                            )
                        });
                    }
                    Err(err) => {
                        shared.failures.fetch_add(1, Ordering::Relaxed);
                        let mut e = shared.first_error.lock().unwrap_or_else(|p| p.into_inner());
                        e.get_or_insert_with(|| err.to_string());
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(mut l) = t.await {
            all.append(&mut l);
        }
    }
    all
}

pub fn run(args: LoadArgs) -> anyhow::Result<LoadResult> {
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.min(8)).enable_all().build()?
    };
    rt.block_on(run_async(args))
}

async fn run_async(args: LoadArgs) -> anyhow::Result<LoadResult> {
    let target = args.target.clone().ok_or_else(|| anyhow!("--target URI is required"))?;
    if args.requests.is_none() && args.duration.is_none() {
        bail!("give --requests N and/or --duration S (the run is always bounded)");
    }
    let count = args.requests.unwrap_or(MAX_REQUESTS).min(MAX_REQUESTS);
    let duration = args.duration.unwrap_or(MAX_DURATION_SECS).clamp(0.001, MAX_DURATION_SECS);
    let in_flight = args.in_flight.clamp(1, MAX_IN_FLIGHT);
    if !args.timeout.is_finite() || args.timeout <= 0.0 {
        bail!("--timeout must be a positive number of seconds");
    }
    let watched: Vec<(String, u32)> = args.watch_pids.iter().map(|s| parse_watch(s)).collect::<Result<_, _>>()?;

    let uri = CoapUri::parse(&target).map_err(|e| anyhow!("bad --target {target:?}: {e}"))?;
    let proxies = args
        .proxies
        .iter()
        .map(|p| CoapUri::parse(p).map_err(|e| anyhow!("bad --proxy {p:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (first_hop, how) = match proxies.first() {
        None => (uri.clone(), Target::Direct),
        Some(p) => (p.clone(), if args.proxy_scheme { Target::ProxyScheme } else { Target::ProxyUri }),
    };
    let peer = resolve(&first_hop).await.map_err(|e| anyhow!("{e}"))?;
    loopback_only(peer, "the first hop")?;
    let origin = resolve(&uri).await.map_err(|e| anyhow!("{e}"))?;
    loopback_only(origin, "the target")?;

    let method = match args.method.to_ascii_uppercase().as_str() {
        "GET" => Code::GET,
        "POST" => Code::POST,
        "PUT" => Code::PUT,
        "DELETE" => Code::DELETE,
        "FETCH" => Code::FETCH,
        m => bail!("unknown method {m}"),
    };
    let mut template = build_request(method, &uri, how);
    template.mtype = MsgType::Con;
    if args.payload_size > 0 {
        template.options.set_uint(num::CONTENT_FORMAT, 0);
        template.payload = crate::fixtures::payload(args.payload_size);
    }

    let security = protector(&args, &uri, &proxies)?;
    let oscore = security.is_some();
    let bind: SocketAddr = if peer.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }.parse()?;
    let mut config = EndpointConfig::default();
    config.messaging.nstart = in_flight;
    let (endpoint, _incoming) = Endpoint::bind_with(bind, config).await.context("binding the client socket")?;
    let client_config = ClientConfig { request_timeout: Duration::from_secs_f64(args.timeout), ..Default::default() };
    let client = match security {
        Some(p) => Client::with_security(endpoint, client_config, p),
        None => Client::new(endpoint, client_config),
    };

    let fresh = || {
        Arc::new(Shared {
            issued: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            error_responses: AtomicU64::new(0),
            first_error: Mutex::new(None),
        })
    };
    if args.warmup > 0 {
        let w = fresh();
        let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(5.0));
        drive(&client, peer, &template, in_flight.min(args.warmup as usize), args.warmup, deadline, &w).await;
        if w.ok.load(Ordering::Relaxed) == 0 {
            let e = w.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            bail!("no warm-up request succeeded: {}", e.unwrap_or_else(|| "no response".into()));
        }
    }

    // The measured phase.
    let shared = fresh();
    let self_pid = std::process::id();
    let cpu0: Vec<Option<Duration>> = watched.iter().map(|(_, p)| procfs::cpu_time(*p).ok()).collect();
    let self0 = procfs::cpu_time(self_pid).ok();
    let (recv0, _, sent0, _) = client.endpoint().stats().snapshot();
    let rss_max: Arc<Vec<AtomicU64>> = Arc::new(watched.iter().map(|_| AtomicU64::new(0)).collect());
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let rss_max = Arc::clone(&rss_max);
        let sampling = Arc::clone(&sampling);
        let pids: Vec<u32> = watched.iter().map(|(_, p)| *p).collect();
        tokio::spawn(async move {
            // Bounded by the run: stops when the measured phase ends.
            while sampling.load(Ordering::Relaxed) {
                for (i, p) in pids.iter().enumerate() {
                    if let Ok(r) = procfs::rss(Some(*p)) {
                        rss_max[i].fetch_max(r, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(duration);
    let mut lat = drive(&client, peer, &template, in_flight, count, deadline, &shared).await;
    let elapsed = start.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let (recv1, _, sent1, _) = client.endpoint().stats().snapshot();
    let cpu1: Vec<Option<Duration>> = watched.iter().map(|(_, p)| procfs::cpu_time(*p).ok()).collect();
    let self1 = procfs::cpu_time(self_pid).ok();
    let _ = sampler.await;

    lat.sort_unstable();
    let ok = shared.ok.load(Ordering::Relaxed);
    let failures = shared.failures.load(Ordering::Relaxed);
    let requests = ok + failures;
    let per_req = |d: Duration| if ok > 0 { d.as_secs_f64() * 1e6 / ok as f64 } else { 0.0 };
    let delta = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    let watched_out = watched
        .iter()
        .enumerate()
        .map(|(i, (label, pid))| {
            let d = delta(cpu0[i], cpu1[i]);
            Watched {
                label: label.clone(),
                pid: *pid,
                cpu_s: d.as_secs_f64(),
                cpu_us_per_request: per_req(d),
                rss_max_bytes: rss_max[i].load(Ordering::Relaxed),
            }
        })
        .collect();
    let datagrams_sent = sent1 - sent0;
    let datagrams_received = recv1 - recv0;
    let error_responses = shared.error_responses.load(Ordering::Relaxed);
    // Beyond one datagram per request, the client sends an ACK for every CON (separate)
    // response, and each of those came after an empty ACK it received beyond one datagram per
    // answered request; what is left are retransmissions.
    let answered = ok + error_responses;
    let retransmissions =
        datagrams_sent.saturating_sub(requests).saturating_sub(datagrams_received.saturating_sub(answered));
    let result = LoadResult {
        scenario: args.scenario.clone(),
        implementation: args.implementation.clone(),
        target,
        proxies: args.proxies.clone(),
        oscore,
        in_flight,
        requests,
        ok,
        failures,
        error_responses,
        elapsed_s: elapsed,
        requests_per_s: if elapsed > 0.0 { ok as f64 / elapsed } else { 0.0 },
        p50_ms: percentile_ms(&lat, 0.50),
        p90_ms: percentile_ms(&lat, 0.90),
        p99_ms: percentile_ms(&lat, 0.99),
        max_ms: lat.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
        datagrams_sent,
        datagrams_received,
        retransmissions,
        generator_cpu_us_per_request: per_req(delta(self0, self1)),
        watched: watched_out,
        first_error: shared.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    };
    Ok(result)
}

/// The human-readable summary of one run.
pub fn print(r: &LoadResult) {
    let name = match (r.scenario.as_str(), r.implementation.as_str()) {
        ("", "") => String::new(),
        (s, i) => format!("[{s} / {i}] "),
    };
    println!(
        "{name}{} ok, {} failed ({} error responses) in {:.2} s: {:.0} req/s, {} in flight{}",
        r.ok,
        r.failures,
        r.error_responses,
        r.elapsed_s,
        r.requests_per_s,
        r.in_flight,
        if r.oscore { ", OSCORE" } else { "" }
    );
    println!(
        "  latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms; datagrams sent {} / received {}, retransmissions ~{}",
        r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.datagrams_sent, r.datagrams_received, r.retransmissions
    );
    println!("  generator CPU {:.1} us/request", r.generator_cpu_us_per_request);
    for w in &r.watched {
        println!(
            "  {} (pid {}): CPU {:.3} s = {:.1} us/request, VmRSS max {:.1} MiB",
            w.label,
            w.pid,
            w.cpu_s,
            w.cpu_us_per_request,
            w.rss_max_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    if let Some(e) = &r.first_error {
        println!("  first error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), 50.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&v, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn watch_pid_forms() {
        assert_eq!(parse_watch("proxy=42").unwrap(), ("proxy".to_string(), 42));
        assert_eq!(parse_watch("7").unwrap(), ("pid7".to_string(), 7));
        assert!(parse_watch("x=y").is_err());
    }
}
