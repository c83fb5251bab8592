//! The async shell: a client-side [`Endpoint`] receives requests, [`decide`] says what to do
//! with each, and an upstream [`Endpoint`] sends the upstream requests.
//!
//! Each relayed request runs in its own task, so a slow origin holds up only its own
//! clients; at most `max_in_flight` run at once (beyond that: 5.03, RFC 7252 §5.9.3.4).
//! Observe registrations go to the Observe relay (`observe.rs`), which shares one upstream
//! observation between all clients observing a resource (RFC 7641 §5).
//!
//! With OSCORE contexts ([`Proxy::with_security`]) or `[[allow]]` rules, every request first
//! goes through the nesting engine ([`hopcore_layers::process_request`], CP §2.4) with the
//! proxy's policy (`security.rs`); the decrypted request is then decided on as above, sent
//! upstream (protected with the context shared with the next hop, if any), and the response
//! is protected with the layers removed from the request, in reverse order (CP §2.5).
//!
//! One line per exchange is logged at INFO under the target `hopcore_proxy::access`: client,
//! method, the labels of the layers removed (`layers_in`, outermost first), the upstream URI,
//! the labels of the layers added towards the next hop (`layers_out`), the response code
//! (before protection) and the duration. Identities only, never keys. Filter it with e.g.
//! `RUST_LOG=info,hopcore_proxy::access=off`; [`Proxy::on_exchange`] gets the same records.

use std::fmt::{self, Write as _};
use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use hopcore_codec::{num, Code, Message, Options};
use hopcore_endpoint::{Endpoint, EndpointConfig, EndpointError, Incoming, IncomingRequest, ResponseHandle};
use hopcore_layers::{process_request, protect_response_layers, Incoming as Outcome, Limits, ServerStack};
use hopcore_messaging::RequestError;
use hopcore_security::ContextId;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn, Level};

use crate::config::{AllowClient, ProxyConfig};
use crate::decide::{decide, Decision, Host, Local, ObserveIntent, Reject, Target, Upstream};
use crate::observe::{self, ObsCmd};
use crate::relay::{no_response, no_response_suppresses, relay_response};
use crate::security::{
    authorized, echo_challenge, lock, protect_upstream, unprotect_upstream, unrecognized, uri_forms, LegError,
    ProxyPolicy, ProxySecurity, Resolved, SecurityConfigError, SourceContexts,
};

/// The tracing target of the per-exchange log line.
pub const ACCESS_LOG: &str = "hopcore_proxy::access";

/// What every task of a running proxy shares.
pub(crate) struct Shared {
    pub cfg: ProxyConfig,
    pub local: Local,
    /// The endpoint clients talk to.
    pub client: Endpoint,
    /// The endpoints the proxy sends upstream requests from.
    pub upstreams: Upstreams,
    in_flight: Arc<Semaphore>,
    /// The proxy as an OSCORE endpoint; `None`: plain CoAP only.
    pub oscore: Option<Oscore>,
    hook: Option<ExchangeHook>,
}

/// The proxy's contexts and the configuration resolved against them.
pub(crate) struct Oscore {
    pub sec: ProxySecurity,
    pub resolved: Resolved,
}

/// One exchange as logged: who asked, through which layers, where it went and what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The client's address.
    pub client: SocketAddr,
    /// The request's method (after removing the layers addressed to the proxy).
    pub method: Code,
    /// Labels of the layers the proxy removed from the request, outermost first (CP §2.4).
    pub layers_in: Vec<String>,
    /// The upstream request URI; `None` when the proxy answered itself.
    pub target: Option<String>,
    /// Labels of the layers the proxy applied towards the next hop (CP §2.3).
    pub layers_out: Vec<String>,
    /// The response code, before the layers for the client were applied.
    pub code: Code,
}

type HookFn = dyn Fn(&Exchange) + Send + Sync;

/// A callback for every [`Exchange`] (tests, metrics).
#[derive(Clone)]
struct ExchangeHook(Arc<HookFn>);

impl fmt::Debug for ExchangeHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExchangeHook")
    }
}

impl Shared {
    /// Whether exchanges are recorded (the URI is only composed then).
    pub(crate) fn records(&self) -> bool {
        self.hook.is_some() || tracing::enabled!(target: ACCESS_LOG, Level::INFO)
    }

    /// The access log line and the hook.
    pub(crate) fn record(&self, e: Exchange, started: Instant) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        info!(
            target: ACCESS_LOG,
            client = %e.client,
            method = %e.method,
            layers_in = ?e.layers_in,
            target = %e.target.as_deref().unwrap_or("-"),
            layers_out = ?e.layers_out,
            code = %e.code,
            ms,
            "exchange"
        );
        if let Some(h) = &self.hook {
            (h.0)(&e);
        }
    }

    /// Protects a response for the client with the layers removed from its request, in
    /// reverse order (CP §2.5). Returns the message to send and its code before protection.
    ///
    /// CP §2.2, last paragraph: an option the proxy does not recognize in a response it
    /// protects makes it a 5.02. If protection itself fails, nothing protected can be sent:
    /// an unprotected 5.00 without the response's content.
    pub(crate) fn protect_for_client(&self, layers: &mut ServerStack<ContextId>, resp: Message) -> (Message, Code) {
        let Some(oscore) = self.oscore.as_ref().filter(|_| !layers.is_empty()) else {
            let code = resp.code;
            return (resp, code);
        };
        let resp = match unrecognized(&resp.options, &self.local) {
            Some(n) => {
                Reject::new(Code::BAD_GATEWAY, format!("response option {n} not recognized (CP §2.2)")).to_message()
            }
            None => resp,
        };
        let code = resp.code;
        let protected = protect_response_layers(&resp, &mut *lock(oscore.sec.store_ref()), layers);
        match protected {
            Ok(m) => (m, code),
            Err(e) => {
                warn!(error = %e, labels = ?layers.labels(), "cannot protect a response for the client");
                let mut m = Reject::new(Code::INTERNAL_SERVER_ERROR, "Security context unusable").to_message();
                // As for the RFC 8613 §8.2 errors: an unprotected error is not to be cached.
                m.options.set_uint(num::MAX_AGE, 0);
                (m, Code::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

/// A request being answered: who asked, with which layers removed (CP §2.4).
pub(crate) struct Asker {
    pub handle: ResponseHandle,
    pub method: Code,
    /// The layers removed from the request (CP §2.5: the response gets them back).
    pub layers: ServerStack<ContextId>,
    pub no_response: Option<u32>,
    pub started: Instant,
}

/// A request to relay upstream.
pub(crate) struct Job {
    pub asker: Asker,
    pub upstream: Upstream,
    /// The reverse route, for a reverse-proxy request.
    pub route: Option<usize>,
    /// The context shared with the next hop (the P-S layer, CP §2.3), if any.
    pub next_hop: Option<ContextId>,
    /// The upstream proxy the request is sent to instead of `upstream.target`, if any.
    pub via: Option<Target>,
}

/// The upstream endpoints: one per address family where the proxy has one for each (a proxy
/// on loopback binds 127.0.0.1 and ::1), otherwise one (an IPv6 wildcard socket reaches IPv4
/// targets as v4-mapped addresses).
#[derive(Debug, Clone)]
pub struct Upstreams {
    primary: Endpoint,
    other_family: Option<Endpoint>,
}

impl Upstreams {
    pub fn single(endpoint: Endpoint) -> Upstreams {
        Upstreams { primary: endpoint, other_family: None }
    }

    /// The endpoint to reach `target` from, and the address to send to: the socket of the
    /// target's own family where there is one, else the primary (IPv4 as v4-mapped).
    pub(crate) async fn route(&self, target: &Target) -> Result<(&Endpoint, SocketAddr), Failure> {
        let primary_v6 = self.primary.local_addr().is_ipv6();
        match (&self.other_family, resolve(target, primary_v6).await) {
            (Some(other), Ok(SocketAddr::V6(a))) if primary_v6 => match a.ip().to_ipv4_mapped() {
                Some(v4) => Ok((other, SocketAddr::new(v4.into(), a.port()))),
                None => Ok((&self.primary, SocketAddr::V6(a))),
            },
            (_, Ok(a)) => Ok((&self.primary, a)),
            (Some(other), Err(_)) if !primary_v6 => Ok((other, resolve(target, true).await?)),
            (_, Err(e)) => Err(e),
        }
    }

    pub fn primary(&self) -> &Endpoint {
        &self.primary
    }
}

/// A CoAP-to-CoAP proxy with its configuration, not yet running.
#[derive(Debug, Clone)]
pub struct Proxy {
    config: ProxyConfig,
    security: Option<(ProxySecurity, Resolved)>,
    hook: Option<ExchangeHook>,
}

/// A proxy with its sockets bound ([`Proxy::bind`]).
#[derive(Debug)]
pub struct BoundProxy {
    proxy: Proxy,
    client: (Endpoint, Incoming),
    upstreams: Upstreams,
}

impl BoundProxy {
    /// The address clients send requests to.
    pub fn local_addr(&self) -> SocketAddr {
        self.client.0.local_addr()
    }
    /// The address upstream requests come from.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstreams.primary.local_addr()
    }
    /// Runs the proxy (see [`Proxy::run`]).
    pub async fn run(self) {
        self.proxy.run_with(self.client, self.upstreams).await
    }
}

/// Binds a proxy on `bind` (and its upstream endpoint on an ephemeral port of the wildcard
/// address of the same family) and runs it until the future is dropped. Fails only if a
/// socket cannot be bound.
pub async fn serve(config: ProxyConfig, bind: SocketAddr) -> io::Result<()> {
    let bound = Proxy::new(config).bind(bind).await?;
    info!(listen = %bound.local_addr(), upstream = %bound.upstream_addr(), "CoAP proxy running");
    bound.run().await;
    Ok(())
}

impl Proxy {
    pub fn new(config: ProxyConfig) -> Proxy {
        Proxy { config, security: None, hook: None }
    }

    /// Makes the proxy an OSCORE endpoint with these contexts (CP): layers of its clients'
    /// contexts are removed from requests, the layer of a next hop's context is applied to
    /// requests to it. Fails when an `[[allow]]` or `[[source]]` rule names a label that is not
    /// a client context.
    pub fn with_security(mut self, security: ProxySecurity) -> Result<Proxy, SecurityConfigError> {
        let resolved = security.resolve(&self.config)?;
        self.security = Some((security, resolved));
        Ok(self)
    }

    /// Calls `f` for every exchange, with what the access log shows.
    pub fn on_exchange(mut self, f: impl Fn(&Exchange) + Send + Sync + 'static) -> Proxy {
        self.hook = Some(ExchangeHook(Arc::new(f)));
        self
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The configuration of the endpoint clients talk to.
    pub fn client_endpoint_config(&self) -> EndpointConfig {
        EndpointConfig::default()
    }

    /// The configuration of the upstream endpoint: NSTART from `upstream_nstart`, and
    /// requests forgotten by the messaging layer when the proxy gives up on them.
    pub fn upstream_endpoint_config(&self) -> EndpointConfig {
        let mut c = EndpointConfig::default();
        c.messaging.nstart = self.config.upstream_nstart;
        c.messaging.response_timeout = self.config.upstream_timeout;
        c
    }

    /// Binds the client-side endpoint on `addr` and the upstream endpoint on an ephemeral
    /// port of the wildcard address of the same family.
    pub async fn bind(self, addr: SocketAddr) -> io::Result<BoundProxy> {
        let client = Endpoint::bind_with(addr, self.client_endpoint_config()).await?;
        // A proxy listening on loopback only talks to loopback: its upstream sockets stay
        // there too, one per family (127.0.0.1 and ::1). Otherwise the wildcard address of
        // the listening family.
        let cfg = self.upstream_endpoint_config();
        let upstreams = if addr.ip().is_loopback() {
            let other: IpAddr = if addr.is_ipv4() { Ipv6Addr::LOCALHOST.into() } else { Ipv4Addr::LOCALHOST.into() };
            // The upstream endpoints serve nothing: dropping their Incoming makes requests
            // that arrive there get 4.04.
            let (primary, _) = Endpoint::bind_with(SocketAddr::new(addr.ip(), 0), cfg.clone()).await?;
            let other_family = Endpoint::bind_with(SocketAddr::new(other, 0), cfg).await.ok().map(|(e, _)| e);
            Upstreams { primary, other_family }
        } else {
            let any: IpAddr = if addr.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
            Upstreams::single(Endpoint::bind_with(SocketAddr::new(any, 0), cfg).await?.0)
        };
        Ok(BoundProxy { proxy: self, client, upstreams })
    }

    /// Runs the proxy on the given endpoints. It serves until the future is dropped (or its
    /// task aborted), which also cancels the upstream observations; relays already under way
    /// finish on their own. Bind `upstream` with [`Proxy::upstream_endpoint_config`] to get
    /// the configured NSTART and timeout.
    pub async fn run(self, client_side: (Endpoint, Incoming), upstream: Endpoint) {
        self.run_with(client_side, Upstreams::single(upstream)).await
    }

    /// [`Proxy::run`] with one upstream endpoint per address family.
    pub async fn run_with(self, client_side: (Endpoint, Incoming), upstreams: Upstreams) {
        let (client, mut incoming) = client_side;
        let local = Local::new(client.local_addr(), &self.config);
        let in_flight = Arc::new(Semaphore::new(self.config.max_in_flight));
        let oscore = match self.security {
            Some((sec, resolved)) => Some(Oscore { sec, resolved }),
            // `[[allow]]` rules without contexts still go through the engine (plain requests
            // are all "unauthenticated"); rules naming labels never match.
            None if !self.config.allow.is_empty() => {
                if self.config.allow.iter().any(|r| matches!(r.client, AllowClient::Label(_))) {
                    warn!("allow rules name OSCORE clients, but the proxy has no credentials: they never match");
                }
                let sec = ProxySecurity::new(hopcore_security::ContextStore::volatile());
                Some(Oscore { sec, resolved: Resolved::default() })
            }
            None => None,
        };
        if oscore.is_none() && !self.config.sources.is_empty() {
            warn!("source rules without credentials have no effect");
        }
        let shared =
            Arc::new(Shared { cfg: self.config, local, client, upstreams, in_flight, oscore, hook: self.hook });
        let (obs_tx, obs_rx) = mpsc::unbounded_channel();
        tokio::spawn(observe::run(shared.clone(), obs_rx));

        let mut rejections_open = true;
        let mut rejections_first = false;
        loop {
            // Requests and rejections (RST / unacknowledged CON notifications, RFC 7641 §3.6)
            // both come from `incoming`; poll them in turn, alternating which goes first so
            // neither starves. Receiving is cancel-safe, and a pending poll leaves the waker
            // registered with the channel.
            rejections_first = !rejections_first;
            let ev = poll_fn(|cx| {
                for rejection in [rejections_first, !rejections_first] {
                    if rejection {
                        if rejections_open {
                            if let Poll::Ready(r) = pin!(incoming.next_rejection()).poll(cx) {
                                return Poll::Ready(Event::Rejection(r));
                            }
                        }
                    } else if let Poll::Ready(r) = pin!(incoming.next()).poll(cx) {
                        return Poll::Ready(Event::Request(r));
                    }
                }
                Poll::Pending
            })
            .await;
            match ev {
                Event::Request(Some(req)) => handle_request(&shared, &obs_tx, req),
                Event::Request(None) => break,
                Event::Rejection(Some(r)) => {
                    debug!(client = %r.peer, token = %r.token, reason = ?r.reason, "notification rejected");
                    let _ = obs_tx.send(ObsCmd::Leave { peer: r.peer, token: r.token });
                }
                Event::Rejection(None) => rejections_open = false,
            }
        }
    }
}

enum Event {
    Request(Option<IncomingRequest>),
    Rejection(Option<hopcore_endpoint::Rejection>),
}

/// Decides and dispatches one request; never blocks.
fn handle_request(shared: &Arc<Shared>, obs: &mpsc::UnboundedSender<ObsCmd>, req: IncomingRequest) {
    if let Some(oscore) = &shared.oscore {
        return handle_oscore(shared, oscore, obs, req);
    }
    let started = Instant::now();
    let IncomingRequest { handle, message } = req;
    let asker = Asker {
        handle,
        method: message.code,
        layers: ServerStack::default(),
        no_response: no_response(&message.options),
        started,
    };
    dispatch(shared, obs, asker, &message, false);
}

/// CP §2.4: the request through the nesting engine, then decided on as a plain one.
fn handle_oscore(shared: &Arc<Shared>, oscore: &Oscore, obs: &mpsc::UnboundedSender<ObsCmd>, req: IncomingRequest) {
    let started = Instant::now();
    let IncomingRequest { handle, message } = req;
    let method = message.code;
    let outer_no_response = no_response(&message.options);
    let limits = Limits { max_layers: shared.cfg.max_layers };
    let outcome = {
        let mut store = lock(oscore.sec.store_ref());
        // CP §2.4.1: only the contexts of this source's list can be found.
        let allowed = oscore.resolved.contexts_for(&shared.cfg, handle.peer.ip());
        let policy = ProxyPolicy { cfg: &shared.cfg, local: &shared.local, resolved: &oscore.resolved, allowed };
        let mut view = SourceContexts { store: &mut store, allowed };
        process_request(message, &mut view, &policy, &limits)
    };
    match outcome {
        Outcome::Reply { response, layers, reason } => {
            // RFC 8613 §8.2 errors (unprotected), CP §2.1/§2.4 errors protected with the layers
            // removed so far (CP §2.5), App. B.1.2 challenges.
            debug!(client = %handle.peer, code = %response.code, layers = ?layers.labels(), %reason, "request answered by the engine");
            let asker = Asker { handle, method, layers, no_response: outer_no_response, started };
            answer(shared, asker, response, None);
        }
        // CP §2.4 Step 5: no application at the proxy; the plain rules answer (4.04, or a
        // catch-all reverse route without Uri-* options, which the engine cannot see).
        Outcome::Deliver { request, layers } => {
            let asker =
                Asker { handle, method: request.code, layers, no_response: no_response(&request.options), started };
            dispatch(shared, obs, asker, &request, true);
        }
        // CP §2.4 Step 4 passed (authorized): consume the proxy options and forward.
        Outcome::Forward { request, layers, .. } => {
            let asker =
                Asker { handle, method: request.code, layers, no_response: no_response(&request.options), started };
            dispatch(shared, obs, asker, &request, false);
        }
    }
}

/// Decides on a (decrypted) request and relays it; `check_allow`: the `[[allow]]` rules were
/// not applied by the engine yet.
fn dispatch(
    shared: &Arc<Shared>,
    obs: &mpsc::UnboundedSender<ObsCmd>,
    asker: Asker,
    message: &Message,
    check_allow: bool,
) {
    let (route, upstream) = match decide(message, &shared.cfg, &shared.local) {
        Decision::Forward(up) => (None, up),
        Decision::Reverse { route, upstream } => (Some(route), upstream),
        Decision::Reject(r) => return answer(shared, asker, r.to_message(), None),
        Decision::Local => {
            let r = Reject::new(Code::NOT_FOUND, "no such resource at the proxy");
            return answer(shared, asker, r.to_message(), None);
        }
    };
    let mut upstream = upstream;
    // A forward-proxy request goes through the configured upstream proxy, which is then the
    // next hop (CP's "With Two Forward-Proxies": P1 forwards to P2 by its own configuration).
    let via = shared.cfg.upstream_proxy.as_ref().filter(|_| route.is_none());
    let mut next_hop = None;
    if let Some(oscore) = &shared.oscore {
        // CP §2.4 Step 4: the destination is the origin, whichever way the request goes.
        if check_allow && !authorized(&shared.cfg, &asker.layers.labels(), &upstream) {
            let r = Reject::new(Code::UNAUTHORIZED, "not authorized to forward to this destination");
            return answer(shared, asker, r.to_message(), None);
        }
        // CP §2.3: the layer shared with the next hop (CF bit b1): the origin, or the
        // upstream proxy.
        next_hop = match via {
            Some(p) => oscore.sec.next_hop(&p.uri_forms()),
            None => oscore.sec.next_hop(&uri_forms(&upstream)),
        };
        // CP §2.2, last paragraph: every option of a request the proxy protects must be one
        // it recognizes.
        if next_hop.is_some() {
            if let Some(n) = unrecognized(&upstream.request.options, &shared.local) {
                let r = Reject::new(Code::BAD_OPTION, format!("option {n} not recognized (CP §2.2)"));
                return answer(shared, asker, r.to_message(), None);
            }
        }
    }
    if via.is_some() {
        add_proxy_options(&mut upstream);
    }
    let job = Job { asker, upstream, route, next_hop, via: via.map(|p| p.target.clone()) };
    match job.upstream.observe {
        ObserveIntent::Register => {
            if let Err(mpsc::error::SendError(ObsCmd::Register(job))) = obs.send(ObsCmd::Register(Box::new(job))) {
                let r = Reject::new(Code::SERVICE_UNAVAILABLE, "observe relay stopped");
                answer(shared, job.asker, r.to_message(), None);
            }
            return;
        }
        // RFC 7641 §3.6: the client deregisters; the GET itself is answered as a plain one.
        ObserveIntent::Deregister => {
            let _ = obs.send(ObsCmd::Leave { peer: job.asker.handle.peer, token: job.asker.handle.token });
        }
        ObserveIntent::None => {}
    }
    let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
        // RFC 7252 §5.9.3.4: Max-Age says when to retry.
        let mut m = Reject::new(Code::SERVICE_UNAVAILABLE, "proxy overloaded").to_message();
        m.options.set_uint(num::MAX_AGE, 1);
        return answer(shared, job.asker, m, None);
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        forward(&shared, job).await;
        drop(permit);
    });
}

/// RFC 7252 §5.10.2 for a request relayed to an upstream proxy: Proxy-Scheme, Uri-Host and
/// Uri-Port name the origin (Uri-Path and Uri-Query are already there). Uri-Host is always
/// sent, as the upstream proxy would otherwise take its own address (RFC 7252 §6.5 step 2).
fn add_proxy_options(up: &mut Upstream) {
    let opts = &mut up.request.options;
    opts.set(num::PROXY_SCHEME, up.target.scheme.as_str().as_bytes());
    opts.set(num::URI_HOST, up.target.host.to_string().as_bytes());
    opts.set_uint(num::URI_PORT, u32::from(up.target.port));
}

/// Sends `resp` to the asker, protected with its layers, and records the exchange.
pub(crate) fn answer(shared: &Shared, mut asker: Asker, resp: Message, target: Option<(String, Vec<String>)>) {
    let (out, code) = shared.protect_for_client(&mut asker.layers, resp);
    if shared.records() {
        let (target, layers_out) = match target {
            Some((t, l)) => (Some(t), l),
            None => (None, Vec::new()),
        };
        let e = Exchange {
            client: asker.handle.peer,
            method: asker.method,
            layers_in: asker.layers.labels(),
            target,
            layers_out,
            code,
        };
        shared.record(e, asker.started);
    }
    // RFC 7967 §2.1: a CON request is still acknowledged (by the messaging layer).
    if !no_response_suppresses(asker.no_response, code) {
        shared.client.respond(asker.handle, out);
    }
}

/// Sends one request upstream and relays the response (or 5.04 / 5.02) to the client.
async fn forward(shared: &Shared, job: Job) {
    let Job { asker, upstream: up, route, next_hop, via } = job;
    let uri = shared.records().then(|| upstream_uri(&up.target, &up.request.options));
    let Upstream { target, request, .. } = up;
    // Where the request goes: the origin, or the upstream proxy (named in errors then).
    let target = via.unwrap_or(target);
    let exchange = exchange_upstream(shared, &target, request, next_hop);
    // RFC 7252 §5.7.1: "If the request to the destination times out, then a 5.04 (Gateway
    // Timeout) response MUST be returned."
    let result = tokio::time::timeout(shared.cfg.upstream_timeout, exchange).await.unwrap_or(Err(Failure::Timeout));
    let resp = match result {
        Ok(m) => relay_response(m, route.and_then(|i| shared.cfg.routes.get(i)), &shared.local),
        Err(f) => {
            if let Failure::Leg(e) = &f {
                debug!(%target, error = %e, "layer with the next hop failed");
            }
            f.reject(&target).to_message()
        }
    };
    let layers_out = match (&shared.oscore, next_hop) {
        (Some(o), Some(id)) if uri.is_some() => {
            vec![hopcore_layers::SecurityContexts::label(&*lock(o.sec.store_ref()), id)]
        }
        _ => Vec::new(),
    };
    answer(shared, asker, resp, uri.map(|u| (u, layers_out)));
}

/// One upstream exchange, with the layer shared with the next hop if there is one (CP §2.3,
/// §2.6). A next hop that challenges freshness on that layer (RFC 8613 App. B.1.2) is
/// answered once with its Echo.
async fn exchange_upstream(
    shared: &Shared,
    target: &Target,
    request: Message,
    next_hop: Option<ContextId>,
) -> Result<Message, Failure> {
    let (endpoint, addr) = shared.upstreams.route(target).await?;
    let (Some(id), Some(oscore)) = (next_hop, &shared.oscore) else {
        return endpoint.request(addr, request).await.map_err(Failure::from);
    };
    let store = oscore.sec.store_ref();
    let end_to_end = request.options.contains(num::OSCORE);
    let mut request = request;
    for attempt in 0..2 {
        let (wire, mut stack) = protect_upstream(&request, &mut lock(store), id).map_err(Failure::Leg)?;
        let resp = endpoint.request(addr, wire).await.map_err(Failure::from)?;
        let plain = unprotect_upstream(&resp, &mut lock(store), &mut stack, end_to_end).map_err(Failure::Leg)?;
        match echo_challenge(&plain) {
            Some(echo) if attempt == 0 => {
                debug!(%target, "next hop challenges freshness (RFC 8613 App. B.1.2); repeating with Echo");
                request.options.set(num::ECHO, echo);
            }
            _ => return Ok(plain),
        }
    }
    Err(Failure::Leg(LegError::Verify("freshness challenge repeated".into())))
}

/// Why an upstream exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Timeout,
    Reset,
    Resolve,
    /// No address of the upstream socket's family.
    Family,
    Closed,
    /// The layer shared with the next hop (CP §2.3, §2.6).
    Leg(LegError),
}

impl From<EndpointError> for Failure {
    fn from(e: EndpointError) -> Failure {
        match e {
            EndpointError::Request(e) => e.into(),
            EndpointError::Closed => Failure::Closed,
        }
    }
}

impl From<RequestError> for Failure {
    fn from(e: RequestError) -> Failure {
        match e {
            RequestError::Timeout => Failure::Timeout,
            RequestError::Reset => Failure::Reset,
            RequestError::Cancelled => Failure::Closed,
        }
    }
}

impl Failure {
    /// RFC 7252 §5.7.1: 5.04 on timeout; 5.02 when the upstream cannot be reached or its
    /// answer cannot be used.
    pub(crate) fn reject(&self, target: &Target) -> Reject {
        match self {
            Failure::Timeout => Reject::new(Code::GATEWAY_TIMEOUT, format!("no answer from {target}")),
            Failure::Reset => Reject::new(Code::BAD_GATEWAY, format!("{target} rejected the request (RST)")),
            Failure::Resolve => Reject::new(Code::BAD_GATEWAY, format!("cannot resolve {}", target.host)),
            Failure::Family => Reject::new(Code::BAD_GATEWAY, format!("{target}: no address of a usable family")),
            Failure::Closed => Reject::new(Code::BAD_GATEWAY, "upstream endpoint closed"),
            // The proxy's own context is unusable (e.g. sequence numbers exhausted).
            Failure::Leg(e @ LegError::Protect(_)) => Reject::new(Code::INTERNAL_SERVER_ERROR, e.to_string()),
            // RFC 8613 §8.4 step 8 at the proxy: nothing verified can be relayed.
            Failure::Leg(e) => Reject::new(Code::BAD_GATEWAY, format!("{target}: {e}")),
        }
    }
}

/// The socket address of a target: IP literals directly (no DNS lookup), names with
/// `tokio::net::lookup_host` (first address of a family the upstream socket can reach, in
/// the resolver's order).
pub(crate) async fn resolve(target: &Target, v6_socket: bool) -> Result<SocketAddr, Failure> {
    let name = match &target.host {
        Host::Ip(ip) => return fit_family(SocketAddr::new(*ip, target.port), v6_socket).ok_or(Failure::Family),
        Host::Name(n) => n,
    };
    let mut addrs = tokio::net::lookup_host((&**name, target.port)).await.map_err(|_| Failure::Resolve)?;
    addrs.find_map(|a| fit_family(a, v6_socket)).ok_or(Failure::Family)
}

/// An address reachable from a socket of the given family (IPv4 as v4-mapped from IPv6).
fn fit_family(a: SocketAddr, v6_socket: bool) -> Option<SocketAddr> {
    match (a, v6_socket) {
        (SocketAddr::V4(_), false) | (SocketAddr::V6(_), true) => Some(a),
        (SocketAddr::V4(v4), true) => Some(SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())),
        (SocketAddr::V6(v6), false) => v6.ip().to_ipv4_mapped().map(|ip| SocketAddr::new(IpAddr::V4(ip), v6.port())),
    }
}

/// The upstream request's URI for the log (not percent-encoded).
pub(crate) fn upstream_uri(target: &Target, opts: &Options) -> String {
    format!("{target}{}", UriPath(opts))
}

/// [`upstream_uri`] without the port (for matching patterns written without the default port).
pub(crate) fn uri_without_port(target: &Target, opts: &Options) -> String {
    format!("{}://{}{}", target.scheme.as_str(), target.host, UriPath(opts))
}

/// Path and query of a request as URI text (not percent-encoded); "/" for none.
struct UriPath<'a>(&'a Options);

impl fmt::Display for UriPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for seg in self.0.get_all(num::URI_PATH) {
            any = true;
            f.write_char('/')?;
            f.write_str(&String::from_utf8_lossy(seg))?;
        }
        if !any {
            f.write_char('/')?;
        }
        for (i, q) in self.0.get_all(num::URI_QUERY).enumerate() {
            f.write_char(if i == 0 { '?' } else { '&' })?;
            f.write_str(&String::from_utf8_lossy(q))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        let v4: SocketAddr = "192.0.2.1:5683".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:5683".parse().unwrap();
        assert_eq!(fit_family(v4, false), Some(v4));
        assert_eq!(fit_family(v4, true), Some("[::ffff:192.0.2.1]:5683".parse().unwrap()));
        assert_eq!(fit_family(v6, true), Some(v6));
        assert_eq!(fit_family(v6, false), None);
        assert_eq!(fit_family("[::ffff:192.0.2.1]:1".parse().unwrap(), false), Some("192.0.2.1:1".parse().unwrap()));
    }

    #[test]
    fn uri_for_the_log() {
        let t = Target { scheme: crate::decide::Scheme::Coap, host: Host::Ip("::1".parse().unwrap()), port: 5683 };
        let mut o = Options::new();
        assert_eq!(upstream_uri(&t, &o), "coap://[::1]:5683/");
        o.push(num::URI_PATH, b"a");
        o.push(num::URI_PATH, b"b");
        o.push(num::URI_QUERY, b"x=1");
        o.push(num::URI_QUERY, b"y");
        assert_eq!(upstream_uri(&t, &o), "coap://[::1]:5683/a/b?x=1&y");
    }

    #[tokio::test]
    async fn ip_literals_need_no_lookup() {
        let t = Target { scheme: crate::decide::Scheme::Coap, host: Host::Ip("127.0.0.1".parse().unwrap()), port: 9 };
        assert_eq!(resolve(&t, false).await, Ok("127.0.0.1:9".parse().unwrap()));
        let t = Target { host: Host::Ip("::1".parse().unwrap()), ..t };
        assert_eq!(resolve(&t, false).await, Err(Failure::Family));
    }
}
