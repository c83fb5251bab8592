//! The Observe relay (RFC 7641 §5).
//!
//! "If two or more clients have registered their interest in a resource with an intermediary,
//! the intermediary MUST register itself only once with the next hop and fan out the
//! notifications it receives to all registered clients." An observation is identified by
//! its target and the cache-key parts of the upstream request ([`ObsKey`]); each one has one
//! upstream task holding the upstream registration ([`Notifications`]).
//!
//! "Each hop MUST generate its own values for the Observe Option in notifications and MUST
//! set the value of the Max-Age Option according to the age of the local current
//! representation": every client gets its own token and Observe values (from one increasing
//! 24-bit counter, so each client's values increase, also across re-registrations), and a
//! client that joins an established observation gets the current representation at once,
//! with Max-Age reduced by its age.
//!
//! A client leaves with a GET with Observe 1 (RFC 7641 §3.6), by rejecting a notification
//! with RST, or by not acknowledging a CON notification (§4.5), the last two reported by
//! [`hopcore_endpoint::Incoming::next_rejection`]. When the last client of an observation
//! leaves, its upstream registration is cancelled: the token is forgotten (a later
//! notification gets a RST) and a GET with Observe 1 is sent (§3.6). A response that is not
//! a notification (an error, or a 2.xx without Observe) ends the observation for every client.
//!
//! All state lives in one task (this module's `run`); the per-observation upstream tasks only
//! send it events.
//!
//! With OSCORE (CP): each client's notifications are protected with the layers removed from its
//! registration, in reverse order, each with its own Partial IV (CP §2.5, §2.5.1; the engine
//! does it). An upstream observation with a layer shared with the next hop verifies every
//! notification on that layer (CP §2.6) and drops those that fail (RFC 8613 §8.4 step 8). A
//! registration protected end to end (it carries an OSCORE option the proxy relays) differs
//! for every client and every registration, and its notifications can only be read by that
//! client: it gets an upstream observation of its own, never shared (`ObsKey::exclusive`), and
//! is not deregistered by the proxy with a request of its own (that would replay the client's
//! layer): forgetting the token ends it (RFC 7641 §3.6).
//!
//! [`Notifications`]: hopcore_endpoint::Notifications

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopcore_codec::registry::is_no_cache_key;
use hopcore_codec::{num, Code, Message, MsgType, Token};
use hopcore_layers::{ClientStack, ServerStack};
use hopcore_security::ContextId;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::decide::{Reject, Target, Upstream};
use crate::proxy::{answer, upstream_uri, Asker, Exchange, Failure, Job, Shared};
use crate::relay::{age_max_age, is_notification, relay_response};
use crate::security::{lock, protect_upstream, unprotect_upstream, LegError};

/// RFC 7641 §4.5: a notification is sent as CON at least every 24 hours, so that a client
/// that went away is noticed.
const CON_AT_LEAST_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Clients observing through the proxy at once (bounded memory); beyond it a registration
/// gets 5.03 (RFC 7252 §5.9.3.4) — RFC 7641 §4.1 lets a server decline to add an observer.
pub(crate) const MAX_OBSERVERS: usize = 16_384;

pub(crate) enum ObsCmd {
    /// A client registering (GET/FETCH with Observe 0).
    Register(Box<Job>),
    /// Observe 1, or a rejected notification.
    Leave { peer: SocketAddr, token: Token },
}

enum UpEvent {
    Response(Message),
    Failed(Failure),
}

struct UpMsg {
    obs: u64,
    event: UpEvent,
}

/// An observer: its endpoint and the token of its registration (RFC 7641 §4.1).
type ClientId = (SocketAddr, Token);

/// What makes two registrations the same observation: the target and the request's code,
/// cache-key options and payload (FETCH). Not part of it: NoCacheKey options, Observe, and
/// Hop-Limit (which differs with the clients' distance, not with the resource).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ObsKey {
    target: Target,
    code: Code,
    options: Vec<u8>,
    payload: Vec<u8>,
    /// Non-zero for a registration protected end to end: a key of its own (module docs).
    exclusive: u64,
}

impl ObsKey {
    fn new(up: &Upstream, exclusive: u64) -> ObsKey {
        let mut options = Vec::with_capacity(64);
        for o in up.request.options.iter() {
            if is_no_cache_key(o.number) || o.number == num::OBSERVE || o.number == num::HOP_LIMIT {
                continue;
            }
            options.extend_from_slice(&o.number.to_be_bytes());
            options.extend_from_slice(&(o.value.len() as u32).to_be_bytes());
            options.extend_from_slice(o.value);
        }
        ObsKey {
            target: up.target.clone(),
            code: up.request.code,
            options,
            payload: up.request.payload.clone(),
            exclusive,
        }
    }
}

struct Client {
    /// The registration request, while its response is outstanding.
    pending: Option<Asker>,
    last_con: Instant,
    /// The layers removed from the registration (CP §2.5: every notification gets them).
    layers: ServerStack<ContextId>,
}

struct Observation {
    key: ObsKey,
    route: Option<usize>,
    uri: String,
    /// The label of the layer shared with the next hop, if any (for the log).
    layers_out: Vec<String>,
    clients: HashMap<ClientId, Client>,
    /// The current representation (relayed form, without Observe) and when it arrived.
    latest: Option<(Message, Instant)>,
    /// Dropping it stops the upstream task, which then deregisters.
    _stop: oneshot::Sender<()>,
}

struct Relay {
    shared: Arc<Shared>,
    observations: HashMap<u64, Observation>,
    by_key: HashMap<ObsKey, u64>,
    by_client: HashMap<ClientId, u64>,
    next_id: u64,
    /// The last Observe value sent (24 bits, RFC 7641 §4.4).
    seq: u32,
    /// The last `ObsKey::exclusive` given out.
    exclusive: u64,
    events: mpsc::UnboundedSender<UpMsg>,
}

/// The relay task; ends (cancelling every upstream observation) when `cmds` closes.
pub(crate) async fn run(shared: Arc<Shared>, mut cmds: mpsc::UnboundedReceiver<ObsCmd>) {
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let mut relay = Relay {
        shared,
        observations: HashMap::new(),
        by_key: HashMap::new(),
        by_client: HashMap::new(),
        next_id: 1,
        seq: 1,
        exclusive: 0,
        events,
    };
    loop {
        tokio::select! {
            c = cmds.recv() => match c {
                Some(ObsCmd::Register(r)) => relay.register(r),
                Some(ObsCmd::Leave { peer, token }) => relay.leave((peer, token)),
                None => break,
            },
            Some(e) = events_rx.recv() => relay.upstream_event(e),
        }
    }
}

impl Relay {
    fn next_seq(&mut self) -> u32 {
        self.seq = (self.seq + 1) & 0xFF_FFFF;
        self.seq
    }

    fn register(&mut self, reg: Box<Job>) {
        let Job { asker, upstream, route, next_hop, via } = *reg;
        let id = (asker.handle.peer, asker.handle.token);
        let exclusive = if upstream.request.options.contains(num::OSCORE) {
            self.exclusive += 1;
            self.exclusive
        } else {
            0
        };
        let key = ObsKey::new(&upstream, exclusive);
        // The same token for another resource replaces the old registration.
        if let Some(old) = self.by_client.get(&id).copied() {
            if self.observations.get(&old).is_some_and(|o| o.key != key) {
                self.leave(id);
            }
        }
        if !self.by_client.contains_key(&id) && self.by_client.len() >= MAX_OBSERVERS {
            let mut m = Reject::new(Code::SERVICE_UNAVAILABLE, "too many observers").to_message();
            m.options.set_uint(num::MAX_AGE, 60);
            answer(&self.shared, asker, m, None);
            return;
        }
        let obs_id = match self.by_key.get(&key) {
            Some(&i) => i,
            None => self.start(key, upstream, route, next_hop, via),
        };
        self.by_client.insert(id, obs_id);
        let seq = self.next_seq();
        let Some(obs) = self.observations.get_mut(&obs_id) else { return };
        let now = Instant::now();
        match &obs.latest {
            // Established: the current representation at once (RFC 7641 §5).
            Some((m, at)) => {
                let mut m = m.clone();
                age_max_age(&mut m, at.elapsed());
                m.options.set_uint(num::OBSERVE, seq);
                // The first response to the registration: its layers' state stays with the
                // client for the notifications.
                let Asker { handle, method, mut layers, started, .. } = asker;
                let (out, code) = self.shared.protect_for_client(&mut layers, m);
                let target = Some((obs.uri.clone(), obs.layers_out.clone()));
                log(&self.shared, handle.peer, method, &layers, target, code, started);
                self.shared.client.respond(handle, out);
                obs.clients.insert(id, Client { pending: None, last_con: now, layers });
            }
            None => {
                let layers = ServerStack { layers: Vec::new() };
                obs.clients.insert(id, Client { pending: Some(asker), last_con: now, layers });
            }
        }
        debug!(client = %id.0, uri = %obs.uri, observers = obs.clients.len(), "observer registered");
    }

    /// Starts an upstream observation.
    fn start(
        &mut self,
        key: ObsKey,
        up: Upstream,
        route: Option<usize>,
        next_hop: Option<ContextId>,
        via: Option<Target>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let (stop, stop_rx) = oneshot::channel();
        let uri = upstream_uri(&up.target, &up.request.options);
        let layers_out = match (&self.shared.oscore, next_hop) {
            (Some(o), Some(ctx)) => vec![hopcore_layers::SecurityContexts::label(&*lock(o.sec.store_ref()), ctx)],
            _ => Vec::new(),
        };
        debug!(%uri, layers_out = ?layers_out, "upstream observation starts");
        // Sent to the upstream proxy, if there is one.
        let upstream = UpstreamObservation { target: via.unwrap_or(up.target), request: up.request, next_hop };
        tokio::spawn(upstream_task(self.shared.clone(), upstream, id, self.events.clone(), stop_rx));
        self.observations.insert(
            id,
            Observation {
                key: key.clone(),
                route,
                uri,
                layers_out,
                clients: HashMap::new(),
                latest: None,
                _stop: stop,
            },
        );
        self.by_key.insert(key, id);
        id
    }

    fn leave(&mut self, id: ClientId) {
        let Some(obs_id) = self.by_client.remove(&id) else { return };
        let Some(obs) = self.observations.get_mut(&obs_id) else { return };
        obs.clients.remove(&id);
        debug!(client = %id.0, uri = %obs.uri, observers = obs.clients.len(), "observer left");
        if obs.clients.is_empty() {
            self.end(obs_id);
        }
    }

    /// Forgets an observation; dropping it stops (and deregisters) its upstream task.
    fn end(&mut self, obs_id: u64) {
        if let Some(obs) = self.observations.remove(&obs_id) {
            debug!(uri = %obs.uri, "upstream observation ends");
            self.by_key.remove(&obs.key);
            for id in obs.clients.keys() {
                if self.by_client.get(id) == Some(&obs_id) {
                    self.by_client.remove(id);
                }
            }
        }
    }

    fn upstream_event(&mut self, e: UpMsg) {
        let Some(obs) = self.observations.get(&e.obs) else { return };
        let (message, keep) = match e.event {
            UpEvent::Response(m) => {
                let notification = is_notification(&m);
                let route = obs.route.and_then(|i| self.shared.cfg.routes.get(i));
                let m = relay_response(m, route, &self.shared.local);
                // relay_response may have turned it into a 5.02.
                let keep = notification && m.code.is_success();
                (m, keep)
            }
            UpEvent::Failed(f) => (f.reject(&obs.key.target).to_message(), false),
        };
        let con = message.mtype == MsgType::Con;
        let ids: Vec<ClientId> = obs.clients.keys().copied().collect();
        let now = Instant::now();
        for id in ids {
            let seq = if keep { Some(self.next_seq()) } else { None };
            let Some(obs) = self.observations.get_mut(&e.obs) else { return };
            let Some(client) = obs.clients.get_mut(&id) else { continue };
            let mut out = message.clone();
            if let Some(seq) = seq {
                out.options.set_uint(num::OBSERVE, seq);
            }
            match client.pending.take() {
                Some(p) => {
                    // The first response: its layers' state stays for the notifications.
                    let Asker { handle, method, layers, started, .. } = p;
                    client.layers = layers;
                    let (out, code) = self.shared.protect_for_client(&mut client.layers, out);
                    let target = Some((obs.uri.clone(), obs.layers_out.clone()));
                    log(&self.shared, handle.peer, method, &client.layers, target, code, started);
                    self.shared.client.respond(handle, out);
                }
                None => {
                    // Each hop chooses its own message types (RFC 7641 §5): CON when the
                    // origin used CON, and at least once a day (§4.5).
                    out.token = id.1;
                    out.mtype = if con || now.duration_since(client.last_con) >= CON_AT_LEAST_EVERY {
                        client.last_con = now;
                        MsgType::Con
                    } else {
                        MsgType::Non
                    };
                    // CP §2.5.1: each notification with the client's layers and an own Partial
                    // IV per layer.
                    // (Type and token are kept by the protection.)
                    let (out, _) = self.shared.protect_for_client(&mut client.layers, out);
                    self.shared.client.send(id.0, out);
                }
            }
        }
        if keep {
            if let Some(obs) = self.observations.get_mut(&e.obs) {
                obs.latest = Some((message, now));
            }
        } else {
            // RFC 7641 §3.2: a response that is not a notification ends the observation.
            self.end(e.obs);
        }
    }
}

/// Records an exchange of the relay.
fn log(
    shared: &Shared,
    client: std::net::SocketAddr,
    method: Code,
    layers: &ServerStack<ContextId>,
    target: Option<(String, Vec<String>)>,
    code: Code,
    started: Instant,
) {
    if !shared.records() {
        return;
    }
    let (target, layers_out) = match target {
        Some((t, l)) => (Some(t), l),
        None => (None, Vec::new()),
    };
    shared.record(Exchange { client, method, layers_in: layers.labels(), target, layers_out, code }, started);
}

/// What an upstream task registers with.
struct UpstreamObservation {
    target: Target,
    /// The plain (for the next hop) registration.
    request: Message,
    /// The context shared with the next hop (CP §2.3), if any.
    next_hop: Option<ContextId>,
}

/// The layer with the next hop of one upstream observation.
struct Leg {
    id: ContextId,
    stack: ClientStack<ContextId>,
    end_to_end: bool,
}

impl Leg {
    /// CP §2.6 on one response of the observation.
    fn unprotect(&mut self, shared: &Shared, m: &Message) -> Result<Message, LegError> {
        let Some(o) = &shared.oscore else { return Ok(m.clone()) };
        unprotect_upstream(m, &mut lock(o.sec.store_ref()), &mut self.stack, self.end_to_end)
    }
}

/// The request as sent to the next hop: protected with the context shared with it, if any.
fn protect_for_next_hop(
    shared: &Shared,
    req: &Message,
    next_hop: Option<ContextId>,
) -> Result<(Message, Option<Leg>), Failure> {
    let (Some(id), Some(o)) = (next_hop, &shared.oscore) else { return Ok((req.clone(), None)) };
    let (wire, stack) = protect_upstream(req, &mut lock(o.sec.store_ref()), id).map_err(Failure::Leg)?;
    Ok((wire, Some(Leg { id, stack, end_to_end: req.options.contains(num::OSCORE) })))
}

/// Holds one upstream registration: resolves the target, registers (first response within
/// the upstream timeout), relays every response as an event, and on `stop` deregisters.
async fn upstream_task(
    shared: Arc<Shared>,
    up: UpstreamObservation,
    obs: u64,
    events: mpsc::UnboundedSender<UpMsg>,
    mut stop: oneshot::Receiver<()>,
) {
    let send = |event| {
        let _ = events.send(UpMsg { obs, event });
    };
    let UpstreamObservation { target, request, next_hop } = up;
    let end_to_end = request.options.contains(num::OSCORE);
    let timeout = shared.cfg.upstream_timeout;
    let register = async {
        let (endpoint, addr) = shared.upstreams.route(&target).await?;
        let (wire, leg) = protect_for_next_hop(&shared, &request, next_hop)?;
        let mut n = endpoint.observe(addr, wire).map_err(Failure::from)?;
        let first = n.next().await;
        Ok::<_, Failure>(((endpoint.clone(), addr), n, leg, first))
    };
    let first = tokio::select! {
        r = tokio::time::timeout(timeout, register) => r,
        _ = &mut stop => return,
    };
    let ((endpoint, addr), mut notifications, mut leg) = match first {
        Err(_) => return send(UpEvent::Failed(Failure::Timeout)),
        Ok(Err(f)) => return send(UpEvent::Failed(f)),
        Ok(Ok((_, _, _, None))) => return send(UpEvent::Failed(Failure::Closed)),
        Ok(Ok((_, _, _, Some(Err(e))))) => return send(UpEvent::Failed(e.into())),
        Ok(Ok((at, n, mut leg, Some(Ok(m))))) => {
            // CP §2.6: the first response must verify on the layer with the next hop.
            let m = match leg.as_mut().map(|l| l.unprotect(&shared, &m)) {
                None => m,
                Some(Ok(plain)) => plain,
                Some(Err(e)) => return send(UpEvent::Failed(Failure::Leg(e))),
            };
            let more = is_notification(&m);
            send(UpEvent::Response(m));
            if !more {
                return;
            }
            (at, n, leg)
        }
    };
    loop {
        tokio::select! {
            n = notifications.next() => match n {
                Some(Ok(m)) => {
                    let m = match leg.as_mut().map(|l| l.unprotect(&shared, &m)) {
                        None => m,
                        Some(Ok(plain)) => plain,
                        // RFC 8613 §8.4 step 8: a notification that fails verification (forged,
                        // replayed, older) is dropped; the observation goes on.
                        Some(Err(e @ (LegError::Verify(_) | LegError::ExtraLayer))) => {
                            debug!(%target, error = %e, "notification dropped");
                            continue;
                        }
                        // The next hop answered without the layer: an error that ends it.
                        Some(Err(e)) => return send(UpEvent::Failed(Failure::Leg(e))),
                    };
                    let more = is_notification(&m);
                    send(UpEvent::Response(m));
                    if !more {
                        return;
                    }
                }
                Some(Err(e)) => return send(UpEvent::Failed(e.into())),
                None => return send(UpEvent::Failed(Failure::Closed)),
            },
            _ = &mut stop => break,
        }
    }
    // RFC 7641 §3.6: forget the token (a later notification gets a RST) and deregister with
    // a GET with Observe 1 on the same token, all other options as in the registration. Not
    // for a registration protected end to end: the proxy cannot make a new request in the
    // client's layer (module docs).
    let token = notifications.token();
    drop(notifications);
    if let (Some(token), false) = (token, end_to_end) {
        let mut dereg = request;
        dereg.options.set_uint(num::OBSERVE, 1);
        let Ok((mut wire, _)) = protect_for_next_hop(&shared, &dereg, leg.map(|l| l.id)) else { return };
        wire.token = token;
        let _ = tokio::time::timeout(timeout, endpoint.request(addr, wire)).await;
    }
}
