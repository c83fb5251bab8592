//! The async shell: a client-side [`Endpoint`] receives requests, [`decide`] says what to do
//! with each, and an upstream [`Endpoint`] sends the upstream requests.
//!
//! Each relayed request runs in its own task, so a slow origin holds up only its own
//! clients; at most `max_in_flight` run at once (beyond that: 5.03, RFC 7252 §5.9.3.4).
//! Observe registrations go to the Observe relay (`observe.rs`), which shares one upstream
//! observation between all clients observing a resource (RFC 7641 §5).
//!
//! One line per exchange is logged at INFO under the target `hopcore_proxy::access` (client,
//! method, upstream URI, response code, duration); filter it with e.g.
//! `RUST_LOG=info,hopcore_proxy::access=off`.

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
use hopcore_messaging::RequestError;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, Level};

use crate::config::ProxyConfig;
use crate::decide::{decide, Decision, Host, Local, ObserveIntent, Reject, Target, Upstream};
use crate::observe::{self, ObsCmd, Registration};
use crate::relay::{no_response, no_response_suppresses, relay_response};

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
        Proxy { config }
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
        let shared = Arc::new(Shared { cfg: self.config, local, client, upstreams, in_flight });
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
    let started = Instant::now();
    let IncomingRequest { handle, message } = req;
    let (route, upstream) = match decide(&message, &shared.cfg, &shared.local) {
        Decision::Forward(up) => (None, up),
        Decision::Reverse { route, upstream } => (Some(route), upstream),
        Decision::Reject(r) => return answer_locally(shared, handle, &message, &r, started),
        Decision::Local => {
            let r = Reject::new(Code::NOT_FOUND, "no such resource at the proxy");
            return answer_locally(shared, handle, &message, &r, started);
        }
    };
    match upstream.observe {
        ObserveIntent::Register => {
            let reg = Registration { handle, method: message.code, upstream, route, started };
            if let Err(mpsc::error::SendError(ObsCmd::Register(reg))) = obs.send(ObsCmd::Register(reg)) {
                let r = Reject::new(Code::SERVICE_UNAVAILABLE, "observe relay stopped");
                answer_locally(shared, reg.handle, &message, &r, started);
            }
            return;
        }
        // RFC 7641 §3.6: the client deregisters; the GET itself is answered as a plain one.
        ObserveIntent::Deregister => {
            let _ = obs.send(ObsCmd::Leave { peer: handle.peer, token: handle.token });
        }
        ObserveIntent::None => {}
    }
    let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
        // RFC 7252 §5.9.3.4: Max-Age says when to retry.
        let mut m = Reject::new(Code::SERVICE_UNAVAILABLE, "proxy overloaded").to_message();
        m.options.set_uint(num::MAX_AGE, 1);
        access_log(handle.peer, message.code, "-", m.code, started);
        shared.client.respond(handle, m);
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        forward(&shared, handle, message.code, upstream, route, started).await;
        drop(permit);
    });
}

fn answer_locally(shared: &Shared, handle: ResponseHandle, req: &Message, r: &Reject, started: Instant) {
    access_log(handle.peer, req.code, "-", r.code, started);
    if !no_response_suppresses(no_response(&req.options), r.code) {
        shared.client.respond(handle, r.to_message());
    }
}

/// Sends one request upstream and relays the response (or 5.04 / 5.02) to the client.
async fn forward(
    shared: &Shared,
    handle: ResponseHandle,
    method: Code,
    up: Upstream,
    route: Option<usize>,
    started: Instant,
) {
    let uri = tracing::enabled!(target: ACCESS_LOG, Level::INFO).then(|| upstream_uri(&up.target, &up.request.options));
    let no_response = no_response(&up.request.options);
    let Upstream { target, request, .. } = up;
    let exchange = async {
        let (endpoint, addr) = shared.upstreams.route(&target).await?;
        endpoint.request(addr, request).await.map_err(Failure::from)
    };
    // RFC 7252 §5.7.1: "If the request to the destination times out, then a 5.04 (Gateway
    // Timeout) response MUST be returned."
    let result = tokio::time::timeout(shared.cfg.upstream_timeout, exchange).await.unwrap_or(Err(Failure::Timeout));
    let resp = match result {
        Ok(m) => relay_response(m, route.and_then(|i| shared.cfg.routes.get(i)), &shared.local),
        Err(f) => f.reject(&target).to_message(),
    };
    access_log(handle.peer, method, uri.as_deref().unwrap_or("-"), resp.code, started);
    // RFC 7967 §2.1: a CON request is still acknowledged (by the messaging layer).
    if !no_response_suppresses(no_response, resp.code) {
        shared.client.respond(handle, resp);
    }
}

pub(crate) fn access_log(client: SocketAddr, method: Code, upstream: &str, code: Code, started: Instant) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    info!(target: ACCESS_LOG, %client, %method, upstream, %code, ms, "exchange");
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
    struct Path<'a>(&'a Options);
    impl fmt::Display for Path<'_> {
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
    format!("{target}{}", Path(opts))
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
