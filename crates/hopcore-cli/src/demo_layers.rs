//! The OSCORE part of `hopcore demo`: the eight configurations CF-0…CF-7 of
//! draft-tiloca-core-oscore-capable-proxies-00 §3 (bits b2 b1 b0 = OSCORE on the legs C-S,
//! P-S, C-P) through one forward proxy, and an onion route through three proxies (seed 000
//! Appendix A), each in process on loopback with fresh keys. For each case it prints, per leg,
//! the layers (as the proxies report removing and adding them, and as the wire shows), the
//! bytes of the request and the response, and the round-trip time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hopcore_codec::{num, CoapUri, Code, MessageView, Registry};
use hopcore_endpoint::client::{build_request, Client, ClientConfig, RouteProtector, Target};
use hopcore_endpoint::oscore_server::OscoreServer;
use hopcore_endpoint::{Endpoint, EndpointConfig, Tapped};
use hopcore_layers::{Route, RouteProxy};
use hopcore_oscore::{ContextInput, SecurityContext};
use hopcore_proxy::{Exchange, Proxy, ProxyConfig, ProxySecurity, Upstreams};
use hopcore_security::{ContextId, ContextMeta, ContextStore};
use tokio::sync::mpsc;

/// Round trips measured per case (the median is shown).
const ROUNDS: usize = 9;

/// A fresh pair of contexts for one leg (demo keys, derived per run).
fn pair(tag: u8, a: &str, b: &str) -> anyhow::Result<(SecurityContext, SecurityContext)> {
    let mut secret = [0u8; 16];
    rand_fill(&mut secret, tag);
    let salt = [tag; 8];
    let (ida, idb) = ([tag, 0xa], [tag, 0xb]);
    let derive = |s: &[u8], r: &[u8]| {
        SecurityContext::derive(&ContextInput::new(&secret, s, r).master_salt(&salt))
            .map_err(|e| anyhow!("deriving the {a}/{b} context: {e}"))
    };
    Ok((derive(&ida, &idb)?, derive(&idb, &ida)?))
}

/// Demo secrets: random per run (nothing here is meant to be kept).
fn rand_fill(out: &mut [u8], tag: u8) {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    for (i, b) in out.iter_mut().enumerate() {
        *b = (seed >> ((i % 16) * 8)) as u8 ^ tag ^ (i as u8).wrapping_mul(37);
    }
}

fn add(store: &mut ContextStore, ctx: SecurityContext, label: &str) -> anyhow::Result<ContextId> {
    store.add(ctx, ContextMeta::new(label)).map_err(|e| anyhow!("{e}"))
}

/// One leg as seen by the receiving endpoint's tap.
struct Leg {
    name: String,
    rx: mpsc::UnboundedReceiver<Tapped>,
}

#[derive(Default)]
struct LegView {
    request_bytes: usize,
    response_bytes: usize,
    visible: Vec<String>,
    outer_oscore: bool,
}

impl Leg {
    /// The last request and response on this leg (the tap is on the receiving side: requests
    /// come in, responses go out).
    fn drain(&mut self) -> LegView {
        let mut v = LegView::default();
        while let Ok(t) = self.rx.try_recv() {
            let Ok(m) = MessageView::parse(&t.bytes) else { continue };
            if !t.outgoing && m.code().is_request() {
                v.request_bytes = t.bytes.len();
                v.outer_oscore = m.has_option(num::OSCORE);
                v.visible = m.options().map(|o| Registry::standard().name(o.number).into_owned()).collect();
            } else if t.outgoing && m.code().is_response() {
                v.response_bytes = t.bytes.len();
            }
        }
        v
    }
}

async fn tapped_endpoint(
    config: EndpointConfig,
    name: &str,
) -> anyhow::Result<(Endpoint, hopcore_endpoint::Incoming, Leg)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let config = EndpointConfig { tap: Some(tx), ..config };
    let lo: SocketAddr = "127.0.0.1:0".parse().context("loopback")?;
    let (ep, inc) = Endpoint::bind_with(lo, config).await.context("binding a demo endpoint")?;
    Ok((ep, inc, Leg { name: name.to_string(), rx }))
}

/// One hop of a case: a proxy with its client-side context (C-Pk) and, for one-proxy cases,
/// the P-S context.
struct ProxyPlan {
    client_leg: bool,
    upstream_leg: bool,
}

struct Case {
    title: String,
    proxies: Vec<ProxyPlan>,
    end_to_end: bool,
}

struct Outcome {
    legs: Vec<(String, LegView, String)>,
    rtt: Duration,
    payload: String,
}

async fn run_case(case: &Case) -> anyhow::Result<Outcome> {
    let n = case.proxies.len();
    // The origin: the demo resources behind OSCORE, with a context for the client (C-S) and
    // one per proxy that protects its leg to the origin (P-S).
    let mut server_store = ContextStore::volatile();
    let mut client_store = ContextStore::volatile();
    let (c_cs, s_cs) = pair(1, "client", "server")?;
    let cs_client = add(&mut client_store, c_cs, "server")?;
    add(&mut server_store, s_cs, ":client")?;
    let last_leg = if n <= 1 { "P-S".to_string() } else { format!("P{n}-S") };
    let (srv_ep, srv_in, srv_leg) = tapped_endpoint(EndpointConfig::default(), &last_leg).await?;
    let server_addr = srv_ep.local_addr();

    // Proxies from the origin side back, so that each knows its next hop's address.
    let mut next: SocketAddr = server_addr;
    let mut legs: Vec<Leg> = vec![srv_leg];
    let mut hops: Vec<(SocketAddr, Option<ContextId>)> = Vec::new();
    let exchanges: Arc<Mutex<Vec<(usize, Exchange)>>> = Arc::default();
    for (k, plan) in case.proxies.iter().enumerate().rev() {
        let mut store = ContextStore::volatile();
        let mut client_ctx = None;
        let mut proxy_client_ctx = None;
        if plan.client_leg {
            let (c, p) = pair(10 + k as u8, "client", "proxy")?;
            client_ctx = Some(add(&mut client_store, c, &format!("proxy{}", k + 1))?);
            proxy_client_ctx = Some(add(&mut store, p, ":client")?);
        }
        let mut upstream_ctx = None;
        if plan.upstream_leg {
            let (p, s) = pair(20 + k as u8, "proxy", "server")?;
            upstream_ctx = Some(add(&mut store, p, &format!("P{}-origin", k + 1))?);
            add(&mut server_store, s, &format!(":proxy{}", k + 1))?;
        }
        let mut sec = ProxySecurity::new(store);
        if let Some(id) = proxy_client_ctx {
            sec = sec.with_client(id);
        }
        if let Some(id) = upstream_ctx {
            sec = sec.with_upstream(format!("coap://{next}/*"), id);
        }
        let log = Arc::clone(&exchanges);
        let proxy =
            Proxy::new(ProxyConfig::default()).with_security(sec).map_err(|e| anyhow!("{e}"))?.on_exchange(move |ex| {
                if let Ok(mut l) = log.lock() {
                    l.push((k, ex.clone()));
                }
            });
        let leg_name = match (n, k) {
            (1, _) => "C-P".to_string(),
            (_, 0) => "C-P1".to_string(),
            _ => format!("P{k}-P{}", k + 1),
        };
        let (ep, inc, leg) = tapped_endpoint(proxy.client_endpoint_config(), &leg_name).await?;
        let lo: SocketAddr = "127.0.0.1:0".parse().context("loopback")?;
        let (up, _) = Endpoint::bind_with(lo, proxy.upstream_endpoint_config()).await.context("binding upstream")?;
        next = ep.local_addr();
        hops.push((next, client_ctx));
        legs.push(leg);
        tokio::spawn(proxy.run_with((ep, inc), Upstreams::single(up)));
    }
    hops.reverse();
    legs.reverse();
    tokio::spawn(OscoreServer::new(hopcore_endpoint::server::demo::demo_server(), server_store).run(srv_ep, srv_in));

    // The client: its route (proxies in path order with their contexts, and the end-to-end
    // context), applied by the nesting engine (CP §2.3).
    let route = Route {
        proxies: hops
            .iter()
            .map(|(addr, ctx)| {
                CoapUri::parse(&format!("coap://{addr}"))
                    .map(|uri| RouteProxy { uri, context: *ctx })
                    .map_err(|e| anyhow!("{e}"))
            })
            .collect::<anyhow::Result<_>>()?,
        origin_context: case.end_to_end.then_some(cs_client),
        proxy_uri_form: false,
    };
    let lo: SocketAddr = "127.0.0.1:0".parse().context("loopback")?;
    let (cli_ep, _in) = Endpoint::bind(lo).await.context("binding the demo client")?;
    let protector = Arc::new(RouteProtector::new(Arc::new(Mutex::new(client_store)), route));
    let config = ClientConfig { request_timeout: Duration::from_secs(5), ..ClientConfig::default() };
    let client = Client::with_security(cli_ep, config, protector);
    let target = CoapUri::parse(&format!("coap://{server_addr}/hello")).map_err(|e| anyhow!("{e}"))?;
    let first_hop = hops.first().map_or(server_addr, |h| h.0);

    let mut rtts = Vec::new();
    let mut payload = String::new();
    let mut views = Vec::new();
    for round in 0..ROUNDS {
        let req = build_request(Code::GET, &target, Target::ProxyScheme);
        let start = Instant::now();
        let resp = client.request(first_hop, req).await.map_err(|e| anyhow!("{}: {e}", case.title))?;
        rtts.push(start.elapsed());
        if resp.code != Code::CONTENT {
            bail!("{}: answered {}", case.title, resp.code);
        }
        payload = String::from_utf8_lossy(&resp.payload).into_owned();
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            views = legs.iter_mut().map(|l| (l.name.clone(), l.drain())).collect();
        }
    }
    rtts.sort();
    let log = exchanges.lock().map_err(|_| anyhow!("exchange log poisoned"))?.clone();
    // Layers per leg, outermost first: on the leg into proxy k, the layers proxy k removed,
    // then those it did not (they go on); on the last leg, the origin removes what is left.
    let mut out = Vec::new();
    for (i, (name, view)) in views.into_iter().enumerate() {
        let mut layers: Vec<String> = Vec::new();
        // Layers the previous proxy added for this leg (P-S style), as it reports them.
        if i > 0 {
            if let Some((_, ex)) = log.iter().find(|(k, _)| *k == i - 1) {
                layers.extend(ex.layers_out.iter().cloned());
            }
        }
        // Layers of the client's for this hop and every later one.
        for (k, (_, ctx)) in hops.iter().enumerate().skip(i) {
            if ctx.is_some() {
                layers.push(format!("client-P{}", k + 1));
            }
        }
        if case.end_to_end {
            layers.push("client-origin".into());
        }
        if layers.is_empty() == view.outer_oscore {
            bail!("{}: leg {name}: the wire does not match the expected layers {layers:?}", case.title);
        }
        let shown = if layers.is_empty() { "none".to_string() } else { layers.join(", ") };
        out.push((name, view, shown));
    }
    Ok(Outcome { legs: out, rtt: rtts[rtts.len() / 2], payload })
}

/// Runs every case and prints its table.
pub async fn run_all() -> anyhow::Result<()> {
    let mut cases: Vec<Case> = (0u8..8)
        .map(|cf| {
            let (cs, ps, cp) = (cf & 4 != 0, cf & 2 != 0, cf & 1 != 0);
            let mut legs = Vec::new();
            if cs {
                legs.push("C-S");
            }
            if ps {
                legs.push("P-S");
            }
            if cp {
                legs.push("C-P");
            }
            let title =
                format!("CF-{cf} (OSCORE on {})", if legs.is_empty() { "no leg".into() } else { legs.join(", ") });
            Case { title, proxies: vec![ProxyPlan { client_leg: cp, upstream_leg: ps }], end_to_end: cs }
        })
        .collect();
    cases.push(Case {
        title: "Onion route through three proxies (C-S, C-P1, C-P2, C-P3)".into(),
        proxies: (0..3).map(|_| ProxyPlan { client_leg: true, upstream_leg: false }).collect(),
        end_to_end: true,
    });
    println!("\nOSCORE at every hop: draft-ietf-core-oscore-capable-proxies, CF-x = bits C-S, P-S, C-P");
    for case in &cases {
        let o = run_case(case).await?;
        println!(
            "\n{}  -> {:?}, round trip {:.2} ms (median of {ROUNDS})",
            case.title,
            o.payload,
            o.rtt.as_secs_f64() * 1e3
        );
        println!(
            "  {:<6} {:>8} {:>9}  {:<44} visible options of the request",
            "leg", "request", "response", "layers (outermost first)"
        );
        for (name, v, layers) in &o.legs {
            println!(
                "  {:<6} {:>6} B {:>7} B  {:<44} {}",
                name,
                v.request_bytes,
                v.response_bytes,
                layers,
                if v.visible.is_empty() { "-".into() } else { v.visible.join(", ") }
            );
        }
    }
    Ok(())
}
