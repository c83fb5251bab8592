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
//! [`Notifications`]: hopcore_endpoint::Notifications

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopcore_codec::registry::is_no_cache_key;
use hopcore_codec::{num, Code, Message, MsgType, Token};
use hopcore_endpoint::ResponseHandle;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::decide::{Reject, Target, Upstream};
use crate::proxy::{access_log, upstream_uri, Failure, Shared};
use crate::relay::{age_max_age, is_notification, relay_response};

/// RFC 7641 §4.5: a notification is sent as CON at least every 24 hours, so that a client
/// that went away is noticed.
const CON_AT_LEAST_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Clients observing through the proxy at once (bounded memory); beyond it a registration
/// gets 5.03 (RFC 7252 §5.9.3.4) — RFC 7641 §4.1 lets a server decline to add an observer.
pub(crate) const MAX_OBSERVERS: usize = 16_384;

/// A client registering (GET/FETCH with Observe 0).
pub(crate) struct Registration {
    pub handle: ResponseHandle,
    pub method: Code,
    pub upstream: Upstream,
    pub route: Option<usize>,
    pub started: Instant,
}

pub(crate) enum ObsCmd {
    Register(Registration),
    /// Observe 1, or a rejected notification.
    Leave {
        peer: SocketAddr,
        token: Token,
    },
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
}

impl ObsKey {
    fn new(up: &Upstream) -> ObsKey {
        let mut options = Vec::with_capacity(64);
        for o in up.request.options.iter() {
            if is_no_cache_key(o.number) || o.number == num::OBSERVE || o.number == num::HOP_LIMIT {
                continue;
            }
            options.extend_from_slice(&o.number.to_be_bytes());
            options.extend_from_slice(&(o.value.len() as u32).to_be_bytes());
            options.extend_from_slice(o.value);
        }
        ObsKey { target: up.target.clone(), code: up.request.code, options, payload: up.request.payload.clone() }
    }
}

struct Client {
    /// The registration request, while its response is outstanding.
    pending: Option<Pending>,
    last_con: Instant,
}

struct Pending {
    handle: ResponseHandle,
    method: Code,
    started: Instant,
}

struct Observation {
    key: ObsKey,
    route: Option<usize>,
    uri: String,
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

    fn register(&mut self, reg: Registration) {
        let id = (reg.handle.peer, reg.handle.token);
        let key = ObsKey::new(&reg.upstream);
        // The same token for another resource replaces the old registration.
        if let Some(old) = self.by_client.get(&id).copied() {
            if self.observations.get(&old).is_some_and(|o| o.key != key) {
                self.leave(id);
            }
        }
        if !self.by_client.contains_key(&id) && self.by_client.len() >= MAX_OBSERVERS {
            let mut m = Reject::new(Code::SERVICE_UNAVAILABLE, "too many observers").to_message();
            m.options.set_uint(num::MAX_AGE, 60);
            access_log(id.0, reg.method, "-", m.code, reg.started);
            self.shared.client.respond(reg.handle, m);
            return;
        }
        let obs_id = match self.by_key.get(&key) {
            Some(&i) => i,
            None => self.start(key, reg.upstream, reg.route),
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
                access_log(reg.handle.peer, reg.method, &obs.uri, m.code, reg.started);
                self.shared.client.respond(reg.handle, m);
                obs.clients.insert(id, Client { pending: None, last_con: now });
            }
            None => {
                let pending = Pending { handle: reg.handle, method: reg.method, started: reg.started };
                obs.clients.insert(id, Client { pending: Some(pending), last_con: now });
            }
        }
        debug!(client = %id.0, uri = %obs.uri, observers = obs.clients.len(), "observer registered");
    }

    /// Starts an upstream observation.
    fn start(&mut self, key: ObsKey, up: Upstream, route: Option<usize>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let (stop, stop_rx) = oneshot::channel();
        let uri = upstream_uri(&up.target, &up.request.options);
        debug!(%uri, "upstream observation starts");
        tokio::spawn(upstream_task(self.shared.clone(), up.target, up.request, id, self.events.clone(), stop_rx));
        self.observations.insert(
            id,
            Observation { key: key.clone(), route, uri, clients: HashMap::new(), latest: None, _stop: stop },
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
                    access_log(id.0, p.method, &obs.uri, out.code, p.started);
                    self.shared.client.respond(p.handle, out);
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

/// Holds one upstream registration: resolves the target, registers (first response within
/// the upstream timeout), relays every response as an event, and on `stop` deregisters.
async fn upstream_task(
    shared: Arc<Shared>,
    target: Target,
    request: Message,
    obs: u64,
    events: mpsc::UnboundedSender<UpMsg>,
    mut stop: oneshot::Receiver<()>,
) {
    let send = |event| {
        let _ = events.send(UpMsg { obs, event });
    };
    let timeout = shared.cfg.upstream_timeout;
    let register = async {
        let (endpoint, addr) = shared.upstreams.route(&target).await?;
        let mut n = endpoint.observe(addr, request.clone()).map_err(Failure::from)?;
        let first = n.next().await;
        Ok::<_, Failure>(((endpoint.clone(), addr), n, first))
    };
    let first = tokio::select! {
        r = tokio::time::timeout(timeout, register) => r,
        _ = &mut stop => return,
    };
    let ((endpoint, addr), mut notifications) = match first {
        Err(_) => return send(UpEvent::Failed(Failure::Timeout)),
        Ok(Err(f)) => return send(UpEvent::Failed(f)),
        Ok(Ok((_, _, None))) => return send(UpEvent::Failed(Failure::Closed)),
        Ok(Ok((_, _, Some(Err(e))))) => return send(UpEvent::Failed(e.into())),
        Ok(Ok((at, n, Some(Ok(m))))) => {
            let more = is_notification(&m);
            send(UpEvent::Response(m));
            if !more {
                return;
            }
            (at, n)
        }
    };
    loop {
        tokio::select! {
            n = notifications.next() => match n {
                Some(Ok(m)) => {
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
    // a GET with Observe 1 on the same token, all other options as in the registration.
    let token = notifications.token();
    drop(notifications);
    if let Some(token) = token {
        let mut dereg = request;
        dereg.options.set_uint(num::OBSERVE, 1);
        dereg.token = token;
        let _ = tokio::time::timeout(timeout, endpoint.request(addr, dereg)).await;
    }
}
