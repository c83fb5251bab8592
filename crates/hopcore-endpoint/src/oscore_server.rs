//! OSCORE at a server endpoint (RFC 8613 §8.2, §8.3): [`OscoreServer`] wraps a [`Server`] and
//! a set of security contexts.
//!
//! Every incoming request goes through the nesting engine ([`hopcore_layers::process_request`]
//! with the [`OriginServer`] policy). A request whose OSCORE layers were all removed reaches the
//! resources through [`Server::handle_request`] with the **identity of the innermost context**
//! (the end-to-end peer, [`ServerStack::innermost_label`]) in
//! [`Request::identity`](crate::server::Request::identity); its
//! response is protected with the same layers in reverse order
//! ([`hopcore_layers::protect_response_layers`], CP §2.5). Requests that fail verification get
//! the engine's error response: unprotected with Max-Age 0 when no layer could be removed
//! (RFC 8613 §8.2), protected with the layers removed so far otherwise (CP §2.5), or a
//! protected 4.01 with Echo when the replay window must be re-synchronized (RFC 8613 App.
//! B.1.2).
//!
//! - **Policy.** Path prefixes can require OSCORE ([`OscoreServer::require_oscore`]): a plain
//!   request to them gets 4.01 "OSCORE required" and never reaches the resource. Resources that
//!   want finer rules read [`Request::identity`](crate::server::Request::identity) (`None` for
//!   plain CoAP).
//! - **Observe** (RFC 8613 §4.1.3.5, §8.3.1). The layers of a registration are kept per
//!   (peer, token) for as long as the observation lasts, so that every notification is
//!   protected with the registration's contexts and binding; each notification after the
//!   first response carries its own Partial IV (the engine enforces it). The layers are dropped
//!   when the observation ends: deregistration or a response without Observe for that token, a
//!   final (error) notification, or a rejected notification (RST, or a CON never acknowledged,
//!   RFC 7641 §3.6, §4.5).
//! - **Block-wise** is inner (RFC 8613 §4.1.3.4.1): the server's Block1/Block2 machinery works
//!   on the decrypted messages unchanged, each block being its own OSCORE exchange.
//! - **Token binding** (RFC 8613 §7.1, §8: the server keeps the association of Token and
//!   security context): a request that reuses the token of a protected observation from the same
//!   peer but arrives through other contexts (or none) gets 4.01 and does not touch the
//!   observation.
//!
//! Sans-I/O core: [`OscoreServer::handle_request`], [`OscoreServer::poll_notifications`],
//! [`OscoreServer::remove_observer`], [`OscoreServer::handle_timeout`]; [`OscoreServer::run`]
//! drives them on an [`Endpoint`] like [`Server::run`] does for plain CoAP.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use hopcore_endpoint::oscore_server::OscoreServer;
//! use hopcore_endpoint::server::{resource::text, resource_fn, Server};
//! use hopcore_layers::ContextList;
//! use hopcore_oscore::{ContextInput, SecurityContext};
//!
//! let secret = [7u8; 16];
//! let mut contexts = ContextList::new();
//! let ctx = SecurityContext::derive(&ContextInput::new(&secret, &[0x01], &[])).expect("context");
//! contexts.add(ctx, ":client");
//! let mut server = Server::new();
//! server.add_resource(
//!     "/secret/whoami",
//!     resource_fn(|req| text(req.identity.clone().unwrap_or_default())),
//! );
//! let handle = OscoreServer::new(server, contexts)
//!     .require_oscore("/secret")
//!     .start("127.0.0.1:5683".parse().expect("address"))
//!     .await?;
//! # drop(handle); Ok(()) }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use hopcore_codec::{num, BlockValue, Code, Message, Token};
use hopcore_layers::{
    process_request, protect_response_layers, Incoming as Outcome, Limits, OriginServer, SecurityContexts, ServerStack,
};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::endpoint::{Endpoint, Incoming};
use crate::server::{Notification, Notifier, Server};

/// The diagnostic payload of the 4.01 for a plain request to a path that requires OSCORE.
pub const OSCORE_REQUIRED: &str = "OSCORE required";

/// Locks the contexts; a panic elsewhere while holding the lock does not make them unusable
/// (the engine only changes them through complete operations).
fn lock<C>(m: &Mutex<C>) -> MutexGuard<'_, C> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key a path prefix is compared under: "/" and its non-empty segments.
fn normalize_prefix(prefix: &str) -> Vec<String> {
    prefix.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Whether the request's Uri-Path starts with the segments of `prefix` (segment-wise: "/a"
/// covers "/a" and "/a/b", not "/ab").
fn path_has_prefix(request: &Message, prefix: &[String]) -> bool {
    let mut segs = request.options.get_all(num::URI_PATH).filter(|s| !s.is_empty());
    prefix.iter().all(|p| segs.next().is_some_and(|s| s == p.as_bytes()))
}

/// Whether the request asks for a later block of a response (RFC 7959 §2.6: such requests
/// neither register nor end an observation).
fn is_later_block(request: &Message) -> bool {
    request.options.get(num::BLOCK2).and_then(|v| BlockValue::decode(v).ok()).is_some_and(|b| b.num > 0)
}

/// A plain diagnostic response.
fn diagnostic(code: Code, text: &str) -> Message {
    Message::response(code).with_payload(text.as_bytes().to_vec())
}

/// Whether two stacks went through the same contexts, in the same order.
fn same_contexts<Id: PartialEq>(a: &ServerStack<Id>, b: &ServerStack<Id>) -> bool {
    a.layers.len() == b.layers.len() && a.layers.iter().zip(&b.layers).all(|(x, y)| x.context == y.context)
}

/// A [`Server`] behind OSCORE; see the [module documentation](self).
pub struct OscoreServer<C: SecurityContexts> {
    server: Server,
    contexts: Arc<Mutex<C>>,
    /// Path prefixes (as segments) that plain requests may not reach.
    required: Vec<Vec<String>>,
    limits: Limits,
    /// The layers of each protected observation, by (peer, token).
    observations: HashMap<(SocketAddr, Token), ServerStack<C::Id>>,
}

impl<C: SecurityContexts> std::fmt::Debug for OscoreServer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OscoreServer")
            .field("server", &self.server)
            .field("require_oscore", &self.required_prefixes())
            .field("protected_observations", &self.observations.len())
            .finish()
    }
}

impl<C: SecurityContexts> OscoreServer<C> {
    /// Wraps `server`; requests are verified with `contexts`.
    pub fn new(server: Server, contexts: C) -> Self {
        Self::with_shared_contexts(server, Arc::new(Mutex::new(contexts)))
    }

    /// Like [`OscoreServer::new`], with contexts the application also holds (e.g. to add
    /// contexts or inspect sequence numbers while the server runs). The lock is only held for
    /// the duration of one protect or unprotect operation, never across an `await`.
    pub fn with_shared_contexts(server: Server, contexts: Arc<Mutex<C>>) -> Self {
        OscoreServer { server, contexts, required: Vec::new(), limits: Limits::default(), observations: HashMap::new() }
    }

    /// Requires OSCORE for every resource under `prefix` ("/" for all of them): plain requests
    /// to them get 4.01 "OSCORE required".
    pub fn require_oscore(mut self, prefix: &str) -> Self {
        self.required.push(normalize_prefix(prefix));
        self
    }

    /// Limits of the nesting engine (the most layers removed from one request, CP §2.1).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The prefixes given to [`OscoreServer::require_oscore`], normalized.
    pub fn required_prefixes(&self) -> Vec<String> {
        self.required.iter().map(|p| format!("/{}", p.join("/"))).collect()
    }

    /// The security contexts.
    pub fn contexts(&self) -> Arc<Mutex<C>> {
        self.contexts.clone()
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    pub fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }

    /// The number of observations whose notifications are protected.
    pub fn protected_observations(&self) -> usize {
        self.observations.len()
    }

    fn requires_oscore(&self, request: &Message) -> bool {
        self.required.iter().any(|p| path_has_prefix(request, p))
    }

    /// Protects `response` with `layers` (none: returned as is). On failure nothing protected
    /// can be sent: the answer is an unprotected 5.00 without details (and without the
    /// response's content, which must not leak in the clear).
    fn protect(&self, response: &Message, layers: &mut ServerStack<C::Id>) -> Result<Message, Message> {
        if layers.is_empty() {
            return Ok(response.clone());
        }
        let mut contexts = lock(&self.contexts);
        protect_response_layers(response, &mut *contexts, layers).map_err(|e| {
            warn!(error = %e, labels = ?layers.labels(), "cannot protect a response");
            let mut m = diagnostic(Code::INTERNAL_SERVER_ERROR, "Security context unusable");
            // As for the RFC 8613 §8.2 errors: an unprotected error is not to be cached.
            m.options.set_uint(num::MAX_AGE, 0);
            m
        })
    }

    /// Processes one request as received (possibly OSCORE-protected) and returns the response
    /// to send, protected as the request was; `None` when the request is rejected without a
    /// response (RFC 7252 §5.4.1 for NON).
    pub fn handle_request(&mut self, now: Instant, peer: SocketAddr, message: Message) -> Option<Message> {
        if !message.code.is_request() {
            return None;
        }
        let token = message.token;
        let outcome = {
            let mut contexts = lock(&self.contexts);
            process_request(message, &mut *contexts, &OriginServer, &self.limits)
        };
        match outcome {
            Outcome::Deliver { request, layers } => self.deliver(now, peer, token, request, layers),
            Outcome::Reply { response, mut layers, reason } => {
                // RFC 8613 §8.2 (unprotected, Max-Age 0, set by the engine), CP §2.5 (protected
                // with the layers removed so far), App. B.1.2 (4.01 with Echo).
                debug!(%peer, code = %response.code, layers = layers.len(), %reason, "OSCORE request not delivered");
                Some(self.protect(&response, &mut layers).unwrap_or_else(|e| e))
            }
            Outcome::Forward { mut layers, .. } => {
                // Not reachable with the OriginServer policy (it answers 5.05 itself); kept total.
                let response = diagnostic(Code::PROXYING_NOT_SUPPORTED, "proxying not supported here");
                Some(self.protect(&response, &mut layers).unwrap_or_else(|e| e))
            }
        }
    }

    fn deliver(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: Token,
        request: Message,
        mut layers: ServerStack<C::Id>,
    ) -> Option<Message> {
        let key = (peer, token);
        // RFC 8613 §7.1, §8: the token of a protected observation belongs to its contexts.
        if let Some(existing) = self.observations.get(&key) {
            if !same_contexts(existing, &layers) {
                debug!(%peer, %token, "token of a protected observation reused through other contexts");
                let response = diagnostic(Code::UNAUTHORIZED, "Token in use by another security context");
                return Some(self.protect(&response, &mut layers).unwrap_or_else(|e| e));
            }
        }
        if layers.is_empty() && self.requires_oscore(&request) {
            debug!(%peer, path = %request.path(), "plain request to a resource that requires OSCORE");
            return Some(diagnostic(Code::UNAUTHORIZED, OSCORE_REQUIRED));
        }
        let later_block = is_later_block(&request);
        let identity = layers.innermost_label().map(str::to_owned);
        let response = self.server.handle_request(now, peer, request, identity)?;
        // RFC 7641 §4.1: the response carries Observe exactly when an observation was (re-)
        // registered; one without ends any observation of this token, except for a later
        // block (RFC 7959 §2.6).
        let registered = response.options.contains(num::OBSERVE);
        match self.protect(&response, &mut layers) {
            Ok(protected) => {
                if registered && !layers.is_empty() {
                    self.observations.insert(key, layers);
                } else if !later_block {
                    self.observations.remove(&key);
                }
                Some(protected)
            }
            Err(error) => {
                if registered {
                    self.server.remove_observer(peer, token);
                }
                self.observations.remove(&key);
                Some(error)
            }
        }
    }

    /// The notifications of resources that changed (see [`Server::poll_notifications`]), each
    /// protected with the layers of its registration (RFC 8613 §8.3, with an own Partial IV,
    /// §4.1.3.5.2). A notification that cannot be protected is not sent, and its observation
    /// ends.
    pub fn poll_notifications(&mut self, now: Instant) -> Vec<Notification> {
        let mut out = Vec::new();
        for mut n in self.server.poll_notifications(now) {
            let key = (n.peer, n.token);
            // RFC 7641 §4.2: a notification without Observe (an error) is the last one.
            let last = !n.message.options.contains(num::OBSERVE);
            let Some(stack) = self.observations.get_mut(&key) else {
                if n.identity.is_some() {
                    // An observation made through OSCORE whose layers are gone: never send
                    // its notifications in the clear.
                    warn!(peer = %n.peer, token = %n.token, "protected observation without its layers; ended");
                    self.server.remove_observer(n.peer, n.token);
                } else {
                    out.push(n);
                }
                continue;
            };
            let protected = {
                let mut contexts = lock(&self.contexts);
                protect_response_layers(&n.message, &mut *contexts, stack)
            };
            match protected {
                Ok(m) => {
                    n.message = m;
                    out.push(n);
                    if last {
                        self.observations.remove(&key);
                    }
                }
                Err(e) => {
                    warn!(peer = %n.peer, token = %n.token, error = %e, "cannot protect a notification; observation ended");
                    self.server.remove_observer(n.peer, n.token);
                    self.observations.remove(&key);
                }
            }
        }
        out
    }

    /// Ends the observation of `peer` with `token` (RST or unacknowledged CON notification,
    /// RFC 7641 §3.6, §4.5) and drops its layers.
    pub fn remove_observer(&mut self, peer: SocketAddr, token: Token) -> bool {
        let layers = self.observations.remove(&(peer, token)).is_some();
        self.server.remove_observer(peer, token) || layers
    }

    /// Expires old block-wise state (see [`Server::handle_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.server.handle_timeout(now);
    }
}

impl<C: SecurityContexts> crate::server::ServerCore for OscoreServer<C> {
    fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }
    fn handle_request(&mut self, now: Instant, peer: SocketAddr, message: Message) -> Option<Message> {
        OscoreServer::handle_request(self, now, peer, message)
    }
    fn poll_notifications(&mut self, now: Instant) -> Vec<Notification> {
        OscoreServer::poll_notifications(self, now)
    }
    fn remove_observer(&mut self, peer: SocketAddr, token: Token) -> bool {
        OscoreServer::remove_observer(self, peer, token)
    }
    fn handle_timeout(&mut self, now: Instant) {
        OscoreServer::handle_timeout(self, now)
    }
}

impl<C> OscoreServer<C>
where
    C: SecurityContexts + Send + 'static,
{
    /// Serves requests arriving at `endpoint` until the endpoint stops or
    /// [`OscoreServerHandle::shutdown`] is called; the loop of [`Server::run`] with OSCORE
    /// around it. Tasks added with [`Server::on_start`] run meanwhile.
    pub async fn run(mut self, endpoint: Endpoint, incoming: Incoming) {
        info!(
            local = %endpoint.local_addr(),
            resources = self.server.paths().count(),
            require_oscore = ?self.required_prefixes(),
            "CoAP server with OSCORE running"
        );
        crate::server::run_drive(&mut self, &endpoint, incoming).await;
        info!(local = %endpoint.local_addr(), "CoAP server with OSCORE stopped");
    }

    /// Runs the server on a task of its own.
    pub fn spawn(self, endpoint: Endpoint, incoming: Incoming) -> OscoreServerHandle<C> {
        let notifier = self.server.notifier();
        let contexts = self.contexts.clone();
        let task = tokio::spawn(self.run(endpoint.clone(), incoming));
        OscoreServerHandle { notifier, task, endpoint, contexts }
    }

    /// Binds a UDP endpoint at `addr` and runs the server on a task of its own.
    pub async fn start(self, addr: SocketAddr) -> io::Result<OscoreServerHandle<C>> {
        let (endpoint, incoming) = Endpoint::bind(addr).await?;
        Ok(self.spawn(endpoint, incoming))
    }
}

/// An [`OscoreServer`] running on its own task. Dropping the handle leaves it running; call
/// [`OscoreServerHandle::shutdown`] to stop it.
pub struct OscoreServerHandle<C> {
    /// The server's shared state (through the notifier, which holds it).
    notifier: Notifier,
    task: JoinHandle<()>,
    endpoint: Endpoint,
    contexts: Arc<Mutex<C>>,
}

impl<C> std::fmt::Debug for OscoreServerHandle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OscoreServerHandle").field("endpoint", &self.endpoint).finish()
    }
}

impl<C> OscoreServerHandle<C> {
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }
    /// The endpoint the server answers on.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    pub fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }
    /// The security contexts the server uses.
    pub fn contexts(&self) -> Arc<Mutex<C>> {
        self.contexts.clone()
    }
    /// The current number of observers (RFC 7641), plain and protected.
    pub fn observer_count(&self) -> usize {
        self.notifier.shared.observers.load(Ordering::Relaxed)
    }
    /// Asks the server to stop; it returns from [`OscoreServer::run`] soon after.
    pub fn shutdown(&self) {
        self.notifier.shared.shutdown.store(true, Ordering::Release);
        self.notifier.shared.stop.notify_one();
    }
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
    /// Waits until the server stopped.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            debug!(error = %e, "OSCORE server task ended abnormally");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::resource::{resource_fn, text};
    use crate::server::Attributes;
    use hopcore_layers::{protect_request_layers, unprotect_response_layers, ContextList, LayerError};
    use hopcore_oscore::{ContextInput, SecurityContext};

    const SECRET: [u8; 16] = [0x0b; 16];

    fn pair(client_id: &[u8], server_id: &[u8]) -> (SecurityContext, SecurityContext) {
        let c = SecurityContext::derive(&ContextInput::new(&SECRET, client_id, server_id)).unwrap();
        let s = SecurityContext::derive(&ContextInput::new(&SECRET, server_id, client_id)).unwrap();
        (c, s)
    }

    fn peer() -> SocketAddr {
        "192.0.2.7:40000".parse().unwrap()
    }

    fn get(path: &str, token: u8) -> Message {
        let mut m = Message::request(Code::GET);
        m.set_path(path);
        m.token = Token::from_slice(&[token]).unwrap();
        m
    }

    fn setup() -> (OscoreServer<ContextList>, ContextList) {
        let (c, s) = pair(b"C", b"S");
        let mut server_contexts = ContextList::new();
        server_contexts.add(s, ":alice");
        let mut client = ContextList::new();
        client.add(c, "server");
        let mut server = Server::new();
        server.add_resource("/who", resource_fn(|req| text(req.identity.clone().unwrap_or_else(|| "-".into()))));
        server.add_resource("/private/who", resource_fn(|req| text(req.identity.clone().unwrap_or_default())));
        server.add_resource(
            "/obs",
            resource_fn(|req| text(req.identity.clone().unwrap_or_default()))
                .with_attributes(Attributes::new().observable()),
        );
        (OscoreServer::new(server, server_contexts).require_oscore("/private"), client)
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let m = get("/private/x", 1);
        assert!(path_has_prefix(&m, &normalize_prefix("/private")));
        assert!(path_has_prefix(&m, &normalize_prefix("/")));
        assert!(path_has_prefix(&m, &normalize_prefix("private/x/")));
        assert!(!path_has_prefix(&m, &normalize_prefix("/priv")));
        assert!(!path_has_prefix(&get("/privatex", 1), &normalize_prefix("/private")));
        assert!(!path_has_prefix(&get("/", 1), &normalize_prefix("/private")));
    }

    #[test]
    fn identity_plain_and_protected() {
        let (mut s, mut client) = setup();
        let now = Instant::now();
        let r = s.handle_request(now, peer(), get("/who", 1)).unwrap();
        assert_eq!(r.payload, b"-");
        let r = s.handle_request(now, peer(), get("/private/who", 1)).unwrap();
        assert_eq!(r.code, Code::UNAUTHORIZED);
        assert_eq!(r.payload, OSCORE_REQUIRED.as_bytes());

        let (wire, mut stack) = protect_request_layers(&get("/private/who", 2), &mut client, &[0], 4).unwrap();
        let r = s.handle_request(now, peer(), wire).unwrap();
        assert!(r.options.contains(num::OSCORE));
        let r = unprotect_response_layers(&r, &mut client, &mut stack).unwrap();
        assert_eq!(r.payload, b":alice");
    }

    #[test]
    fn observation_layers_live_as_long_as_the_observation() {
        let (mut s, mut client) = setup();
        let now = Instant::now();
        let reg = get("/obs", 9).with_option(num::OBSERVE, b"");
        let (wire, mut stack) = protect_request_layers(&reg, &mut client, &[0], 4).unwrap();
        let r = s.handle_request(now, peer(), wire).unwrap();
        let r = unprotect_response_layers(&r, &mut client, &mut stack).unwrap();
        assert!(r.options.contains(num::OBSERVE));
        assert_eq!(s.protected_observations(), 1);

        // A plain request with the observation's token does not touch it.
        let r = s.handle_request(now, peer(), get("/obs", 9)).unwrap();
        assert_eq!(r.code, Code::UNAUTHORIZED);
        assert_eq!(s.server().observer_count(), 1);

        for _ in 0..3 {
            s.server().notifier().notify("/obs");
            let n = s.poll_notifications(now);
            assert_eq!(n.len(), 1);
            let m = unprotect_response_layers(&n[0].message, &mut client, &mut stack).unwrap();
            assert_eq!(m.payload, b":alice");
        }
        // Deregistration (protected, same token): the layers go with the observation.
        let dereg = get("/obs", 9).with_option(num::OBSERVE, &[1]);
        let (wire, mut stack2) = protect_request_layers(&dereg, &mut client, &[0], 4).unwrap();
        let r = s.handle_request(now, peer(), wire).unwrap();
        let r = unprotect_response_layers(&r, &mut client, &mut stack2).unwrap();
        assert!(!r.options.contains(num::OBSERVE));
        assert_eq!(s.protected_observations(), 0);
        assert_eq!(s.server().observer_count(), 0);
    }

    #[test]
    fn rejection_drops_the_layers() {
        let (mut s, mut client) = setup();
        let reg = get("/obs", 3).with_option(num::OBSERVE, b"");
        let (wire, _) = protect_request_layers(&reg, &mut client, &[0], 4).unwrap();
        s.handle_request(Instant::now(), peer(), wire).unwrap();
        assert_eq!(s.protected_observations(), 1);
        assert!(s.remove_observer(peer(), Token::from_slice(&[3]).unwrap()));
        assert_eq!(s.protected_observations(), 0);
        assert_eq!(s.server().observer_count(), 0);
    }

    #[test]
    fn unknown_context_is_an_unprotected_4_01() {
        let (mut s, _) = setup();
        let (c, _) = pair(b"X", b"S");
        let mut stranger = ContextList::new();
        stranger.add(c, "server");
        let (wire, mut stack) = protect_request_layers(&get("/who", 4), &mut stranger, &[0], 4).unwrap();
        let r = s.handle_request(Instant::now(), peer(), wire).unwrap();
        assert_eq!(r.code, Code::UNAUTHORIZED);
        assert_eq!(r.options.get_uint(num::MAX_AGE), Some(0));
        assert!(matches!(
            unprotect_response_layers(&r, &mut stranger, &mut stack),
            Err(LayerError::Unprotected { code: Code::UNAUTHORIZED, .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let (mut s, mut client) = setup();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let now = Instant::now();
        for i in 0..3000u32 {
            let (mut wire, _) = protect_request_layers(&get("/who", 5), &mut client, &[0], 4).unwrap();
            match i % 4 {
                0 => {
                    let j = rng.gen_range(0..wire.payload.len());
                    wire.payload[j] ^= 1 << rng.gen_range(0..8);
                }
                1 => {
                    let v: Vec<u8> = (0..rng.gen_range(0..12)).map(|_| rng.gen()).collect();
                    wire.options.set(num::OSCORE, &v);
                }
                2 => wire.payload.truncate(rng.gen_range(0..wire.payload.len())),
                _ => {
                    let n = [1u16, 4, 6, 11, 23, 27, 35, 39, 252][rng.gen_range(0..9)];
                    wire.options.push(n, &[rng.gen()]);
                }
            }
            if let Some(r) = s.handle_request(now, peer(), wire) {
                assert!(r.code.is_response());
            }
        }
    }
}
