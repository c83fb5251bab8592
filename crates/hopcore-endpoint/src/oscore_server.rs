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
//! # Context re-derivation (RFC 8613 App. B.2)
//!
//! [`OscoreServer::with_rederivation`] (needs a [`RederiveContexts`] store such as
//! `hopcore_security::ContextStore`) makes the server the responder of App. B.2 for the
//! contexts marked re-derivable (credentials `rederive = true`). It runs in front of the
//! nesting engine, on the outermost layer of a request:
//!
//! - **Client-initiated.** A request whose 'kid' names such a context but whose 'kid context'
//!   the store does not know is request #1 (R1) or request #2 (R2 || R3) of a run
//!   ([`Responder::on_request`]): request #1 is answered with response #1, a 4.01 protected
//!   with the second context and carrying R2 as 'kid context' (the request is not acted on);
//!   request #2, once verified, makes the third context replace the old one in the store
//!   (`install_rederived`, i.e. `ContextStore::replace`) and is then served like any request,
//!   its response (#2) protected with the new context. A request that fails verification in
//!   any step changes nothing and gets the usual §8.2 error; too many parallel runs get an
//!   unprotected 5.03 (App. B.2.1).
//! - **Server-initiated** ([`Responder::initiate`]): an ordinary request for such a context is
//!   answered with response #1 when the context's sender sequence numbers are exhausted
//!   (§7.2.1) or its replay window was lost (instead of the App. B.1.2 Echo exchange), and
//!   when a request fails with the current (re-derived) context but verifies with the
//!   preestablished parameters: the client lost the re-derived context (e.g. it restarted);
//!   likewise when a request carries a 'kid context' the server does not know as an ID Context
//!   and verifies with it: the server lost a re-derived context (B.2 step 2: "the server has
//!   lost part of its security context, e.g., ID Context").
//!
//! The re-derived context has no durable state (fresh random ID Context, fresh keys); after a
//! restart the store holds the preestablished context again, and a client still using the
//! re-derived one is taken through B.2 again by the server. B.2 applies to the outermost layer only: an inner
//! (end-to-end) layer behind a proxy layer is not re-derived by this hook.
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
    process_request, protect_response_layers, Incoming as Outcome, Limits, OriginServer, RemovedLayer,
    SecurityContexts, ServerStack,
};
use hopcore_oscore::{Layer, NestedClasses, OscoreOption, SecurityContext};
use hopcore_security::rederive::{KidContextEncoding, RederiveContexts, RederiveError, Responder, ResponderOutcome};
use rand::rngs::OsRng;
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
    /// RFC 8613 App. B.2, if enabled ([`OscoreServer::with_rederivation`]).
    rederive: Option<Box<dyn RederiveHook<C>>>,
}

impl<C: SecurityContexts> std::fmt::Debug for OscoreServer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OscoreServer")
            .field("server", &self.server)
            .field("require_oscore", &self.required_prefixes())
            .field("protected_observations", &self.observations.len())
            .field("rederivation", &self.rederive.is_some())
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
        OscoreServer {
            server,
            contexts,
            required: Vec::new(),
            limits: Limits::default(),
            observations: HashMap::new(),
            rederive: None,
        }
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

    /// Whether RFC 8613 App. B.2 runs ([`OscoreServer::with_rederivation`]).
    pub fn rederivation(&self) -> bool {
        self.rederive.is_some()
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
        // RFC 8613 App. B.2 runs in front of the engine, on the outermost layer: the engine
        // would answer a request whose 'kid context' it cannot place with 4.01 (§8.2 step 2).
        let mut original = None;
        if let Some(hook) = self.rederive.as_mut() {
            let mut contexts = lock(&self.contexts);
            match hook.intercept(&mut *contexts, &message, now) {
                Intercept::Unrelated => {}
                Intercept::Pass => original = Some(message.clone()),
                Intercept::Reply(response) => {
                    debug!(%peer, code = %response.code, "App. B.2 answer");
                    return Some(response);
                }
                Intercept::Established { request, layer } => {
                    drop(contexts);
                    // Step 4: "The server performs the action of the request and sends
                    // response #2" with the new context. The rest of the request (further
                    // layers, proxy options) goes through the engine as usual.
                    let limits = Limits { max_layers: self.limits.max_layers.saturating_sub(1) };
                    let outcome = {
                        let mut contexts = lock(&self.contexts);
                        process_request(request, &mut *contexts, &OriginServer, &limits)
                    };
                    let mut outer = ServerStack::default();
                    outer.layers.push(layer);
                    return self.dispatch(now, peer, token, outcome, outer);
                }
            }
        }
        let outcome = {
            let mut contexts = lock(&self.contexts);
            process_request(message, &mut *contexts, &OriginServer, &self.limits)
        };
        if let (Outcome::Reply { layers, .. }, Some(original), Some(hook)) =
            (&outcome, &original, self.rederive.as_mut())
        {
            // No layer could be removed: maybe the client still uses the preestablished context
            // that an earlier B.2 run replaced (App. B.2: the server initiates).
            if layers.is_empty() {
                let mut contexts = lock(&self.contexts);
                if let Some(response) = hook.after_failure(&mut *contexts, original, now) {
                    debug!(%peer, code = %response.code, "App. B.2 started by the server");
                    return Some(response);
                }
            }
        }
        self.dispatch(now, peer, token, outcome, ServerStack::default())
    }

    /// Acts on the engine's outcome; `outer` are layers removed before the engine ran (App.
    /// B.2 request #2), outermost first, in front of those the engine removed.
    fn dispatch(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: Token,
        outcome: Outcome<C::Id>,
        outer: ServerStack<C::Id>,
    ) -> Option<Message> {
        let with_outer = |inner: ServerStack<C::Id>| {
            let mut all = outer;
            all.layers.extend(inner.layers);
            all
        };
        match outcome {
            Outcome::Deliver { request, layers } => self.deliver(now, peer, token, request, with_outer(layers)),
            Outcome::Reply { response, layers, reason } => {
                let mut layers = with_outer(layers);
                // RFC 8613 §8.2 (unprotected, Max-Age 0, set by the engine), CP §2.5 (protected
                // with the layers removed so far), App. B.1.2 (4.01 with Echo).
                debug!(%peer, code = %response.code, layers = layers.len(), %reason, "OSCORE request not delivered");
                Some(self.protect(&response, &mut layers).unwrap_or_else(|e| e))
            }
            Outcome::Forward { layers, .. } => {
                let mut layers = with_outer(layers);
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

impl<C: RederiveContexts + 'static> OscoreServer<C> {
    /// Runs context re-derivation (RFC 8613 App. B.2) as the responder for every context the
    /// store marks as re-derivable (credentials `rederive = true`); see the
    /// [module documentation](self#context-re-derivation-rfc-8613-app-b2). Other contexts are
    /// not affected.
    pub fn with_rederivation(mut self) -> Self {
        self.rederive = Some(Box::new(ServerRederivation::<C::Id> { responders: HashMap::new() }));
        self
    }
}

/// What the App. B.2 hook made of a request before the nesting engine sees it.
enum Intercept<Id> {
    /// The request names no re-derivable context: the engine processes it as usual.
    Unrelated,
    /// Not a B.2 message (yet) for a re-derivable context: the engine processes it, and if
    /// it fails, [`RederiveHook::after_failure`] has a look.
    Pass,
    /// Answer with this message (response #1, already protected; or an unprotected error).
    Reply(Message),
    /// Request #2 verified and the new context installed (step 4): `layer` is the outermost
    /// layer, removed with the new context; `request` is what was inside it.
    Established { request: Message, layer: RemovedLayer<Id> },
}

/// App. B.2 at the server, behind a trait object so that [`OscoreServer`] stays generic over
/// any [`SecurityContexts`] while the procedure needs [`RederiveContexts`].
trait RederiveHook<C: SecurityContexts>: Send {
    /// Before the engine: request #1 and #2 of a client-initiated run, and the server's own
    /// start when the context the request names cannot go on (sequence numbers exhausted,
    /// replay window lost).
    fn intercept(&mut self, contexts: &mut C, request: &Message, now: Instant) -> Intercept<C::Id>;
    /// After the engine failed to remove the outermost layer of `request`: response #1 if the
    /// request verifies with the preestablished parameters of a context an earlier run
    /// replaced (the client lost the re-derived context, e.g. it restarted).
    fn after_failure(&mut self, contexts: &mut C, request: &Message, now: Instant) -> Option<Message>;
}

/// The responders, one per re-derivable context (each caches the R2 values of its runs).
struct ServerRederivation<Id> {
    responders: HashMap<Id, Responder>,
}

/// The 'kid' and 'kid context' of a message's OSCORE option (owned), if it has a well-formed
/// one with a kid.
fn kid_and_context(message: &Message) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let option = OscoreOption::parse(message.options.get(num::OSCORE)?).ok()?;
    Some((option.kid?.to_vec(), option.kid_context.map(<[u8]>::to_vec)))
}

/// App. B.2.1: "If the server receives a request #1 and is not capable of executing it then
/// it may respond with an unprotected 5.03 (Service Unavailable) error message."
fn busy() -> Message {
    let mut m = diagnostic(Code::SERVICE_UNAVAILABLE, "Too many security context re-derivations in progress");
    // Retry when a run may have expired or completed.
    m.options.set_uint(num::MAX_AGE, 10);
    m
}

impl<Id: Copy + Eq + std::hash::Hash> ServerRederivation<Id> {
    /// The responder of `id`, created from the context's preestablished parameters.
    fn responder<C: RederiveContexts<Id = Id>>(&mut self, contexts: &C, id: Id) -> Option<&mut Responder> {
        match self.responders.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                Some(e.insert(Responder::new(contexts.rederive_params(id)?.clone())))
            }
        }
    }

    /// The server-initiated variant: response #1 to an ordinary request that verifies with
    /// ID Context `id1` (App. B.2: "in the latter case step 1 is omitted").
    fn initiate<C: RederiveContexts<Id = Id>>(
        &mut self,
        contexts: &C,
        id: Id,
        request: &Message,
        id1: Option<&[u8]>,
        now: Instant,
        why: &str,
    ) -> Option<Message> {
        let classes: NestedClasses = NestedClasses::default();
        let layer = Layer::RFC8613.with_classes(&classes);
        let label = contexts.label(id);
        let responder = self.responder(contexts, id)?;
        match responder.initiate(request, id1, &layer, &mut OsRng, now) {
            Ok(ResponderOutcome::Challenge { response, .. }) => {
                info!(peer = %label, reason = why, "App. B.2: server-initiated context re-derivation (response #1)");
                Some(response)
            }
            Ok(ResponderOutcome::Established { .. }) => None,
            Err(RederiveError::Busy) => Some(busy()),
            Err(e) => {
                debug!(peer = %label, error = %e, "App. B.2: not started");
                None
            }
        }
    }
}

/// The re-derivable contexts whose Recipient ID is `kid`.
fn rederivable<C: RederiveContexts>(contexts: &C, kid: &[u8]) -> Vec<C::Id> {
    contexts.recipients(kid).into_iter().filter(|&id| contexts.rederive_params(id).is_some()).collect()
}

impl<C: RederiveContexts> RederiveHook<C> for ServerRederivation<C::Id> {
    fn intercept(&mut self, contexts: &mut C, request: &Message, now: Instant) -> Intercept<C::Id> {
        let Some((kid, kid_context)) = kid_and_context(request) else {
            return Intercept::Unrelated;
        };
        let candidates = rederivable(contexts, &kid);
        if candidates.is_empty() {
            return Intercept::Unrelated;
        }
        let classes: NestedClasses = NestedClasses::default();
        let layer = Layer::RFC8613.with_classes(&classes);
        match contexts.lookup_recipient(&kid, kid_context.as_deref()) {
            // RFC 8613 §8.2 step 2 finds no context for this kid context: "the Recipient
            // Context MAY be retrieved by deriving a new security context, e.g. as described
            // in Appendix B.2" (steps 2 and 4).
            None if kid_context.is_some() => {
                // Request #2 of a completed run once more: its kid context wraps the ID Context
                // the context has now. Derived again as an R1 it would verify with a fresh
                // replay window; "The server MUST NOT accept replayed request #2 messages", so
                // it gets the engine's §8.2 answer instead.
                let wrapped = kid_context.as_deref().and_then(|kc| KidContextEncoding::default().decode(kc).ok());
                if wrapped.is_some()
                    && candidates
                        .iter()
                        .any(|&id| contexts.current(id).and_then(SecurityContext::id_context) == wrapped.as_deref())
                {
                    debug!("App. B.2: request #2 of a completed run again; rejected");
                    return Intercept::Pass;
                }
                for id in candidates {
                    let label = contexts.label(id);
                    let Some(responder) = self.responder(contexts, id) else { continue };
                    match responder.on_request(request, &layer, &mut OsRng, now) {
                        Ok(ResponderOutcome::Challenge { response, .. }) => {
                            info!(peer = %label, "App. B.2: request #1 verified, answering with response #1 (R2)");
                            return Intercept::Reply(response);
                        }
                        Ok(ResponderOutcome::Established { request, binding, context, .. }) => {
                            // Step 4: only now, after request #2 verified, does the new context
                            // replace the old one.
                            let id_context = context.id_context().map(hex).unwrap_or_default();
                            if let Err(e) = contexts.install_rederived(id, context) {
                                warn!(peer = %label, error = %e, "App. B.2: cannot install the new context");
                                let mut m = diagnostic(Code::INTERNAL_SERVER_ERROR, "Security context unusable");
                                m.options.set_uint(num::MAX_AGE, 0);
                                return Intercept::Reply(m);
                            }
                            info!(peer = %label, id_context = %id_context, "App. B.2: new security context in use");
                            return Intercept::Established {
                                request,
                                layer: RemovedLayer { context: id, label, binding },
                            };
                        }
                        Err(RederiveError::Busy) => return Intercept::Reply(busy()),
                        // "If verification fails in any step, the endpoint stops processing
                        // that message": the engine answers it as usual (§8.2).
                        Err(e) => debug!(peer = %label, error = %e, "App. B.2: request not part of a run"),
                    }
                }
                // Step 2, "because the server has lost part of its security context, e.g., ID
                // Context": an ordinary request with the ID Context of a context this server
                // no longer has (a re-derived one, lost in a restart) as 'kid context'. If it
                // verifies with that ID Context, the server initiates.
                for id in rederivable(contexts, &kid) {
                    let why = "unknown ID Context (the server lost a re-derived context)";
                    if let Some(response) = self.initiate(contexts, id, request, kid_context.as_deref(), now, why) {
                        return Intercept::Reply(response);
                    }
                }
                Intercept::Pass
            }
            // The context cannot go on: the server initiates.
            Some(id) if candidates.contains(&id) => {
                let Some(ctx) = contexts.current(id) else { return Intercept::Pass };
                // RFC 8613 §7.2.1: no more messages with an exhausted Sender Context; App. B.2:
                // "the server has lost part of its security context, e.g., ... Sender
                // Sequence Number or Replay Window".
                let why = if ctx.sequence().is_exhausted() {
                    "sender sequence numbers exhausted"
                } else if !ctx.replay_window().is_synchronized() {
                    "replay window lost"
                } else {
                    return Intercept::Pass;
                };
                let id1 = ctx.id_context().map(<[u8]>::to_vec);
                match self.initiate(contexts, id, request, id1.as_deref(), now, why) {
                    Some(response) => Intercept::Reply(response),
                    None => Intercept::Pass,
                }
            }
            _ => Intercept::Pass,
        }
    }

    fn after_failure(&mut self, contexts: &mut C, request: &Message, now: Instant) -> Option<Message> {
        let (kid, kid_context) = kid_and_context(request)?;
        for id in rederivable(contexts, &kid) {
            let (Some(params), Some(current)) = (contexts.rederive_params(id), contexts.current(id)) else {
                continue;
            };
            // Only contexts an earlier run replaced, and only requests that can be protected
            // with the preestablished ID Context.
            let preestablished = params.id_context().map(<[u8]>::to_vec);
            if current.id_context() == preestablished.as_deref()
                || kid_context.as_ref().is_some_and(|kc| Some(kc) != preestablished.as_ref())
            {
                continue;
            }
            let why = "the client uses the preestablished context";
            if let Some(response) = self.initiate(contexts, id, request, preestablished.as_deref(), now, why) {
                return Some(response);
            }
        }
        None
    }
}

/// Lowercase hex, for logs of identifiers (never keys).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    #[test]
    fn garbage_never_panics_with_rederivation() {
        use hopcore_security::rederive::Initiator;
        use hopcore_security::{ContextMeta, ContextParams, ContextStore};
        use rand::{Rng, SeedableRng};
        let server_params = ContextParams::new(&SECRET, b"S", b"C");
        let client_params = ContextParams::new(&SECRET, b"C", b"S");
        let mut store = ContextStore::volatile();
        let id = store.add(server_params.derive().unwrap(), ContextMeta::new(":alice")).unwrap();
        store.set_params(id, server_params).unwrap();
        store.set_rederive(id, true).unwrap();
        let mut server = Server::new();
        server.add_resource("/who", resource_fn(|req| text(req.identity.clone().unwrap_or_default())));
        let mut s = OscoreServer::new(server, store).with_rederivation();
        assert!(s.rederivation());
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let start = Instant::now();
        let layer = Layer::RFC8613;
        for i in 0..600u32 {
            // Cached R2 values expire between iterations, so runs are not refused as busy.
            let now = start + std::time::Duration::from_secs(u64::from(i) * 300);
            let mut initiator = Initiator::new(client_params.clone(), &mut OsRng).unwrap();
            let (mut wire, mut binding) = initiator.protect_request1(&get("/who", 5), &layer).unwrap();
            // Every other run gets as far as request #2.
            if i % 2 == 1 {
                if let Some(r1) = s.handle_request(now, peer(), wire.clone()) {
                    if initiator.on_response1(&r1, &mut binding, &layer, &mut OsRng).is_ok() {
                        wire = initiator.protect_request2(&get("/who", 6), &layer).unwrap().0;
                    }
                }
            }
            match i % 8 {
                0 | 1 => {
                    let j = rng.gen_range(0..wire.payload.len());
                    wire.payload[j] ^= 1 << rng.gen_range(0..8);
                }
                2 | 3 => {
                    let mut v = wire.options.get(num::OSCORE).unwrap().to_vec();
                    let j = rng.gen_range(0..v.len());
                    v[j] = rng.gen();
                    wire.options.set(num::OSCORE, &v);
                }
                4 | 5 => {
                    let v: Vec<u8> = (0..rng.gen_range(0..20)).map(|_| rng.gen()).collect();
                    wire.options.set(num::OSCORE, &v);
                }
                _ => wire.payload.truncate(rng.gen_range(0..wire.payload.len())),
            }
            if let Some(r) = s.handle_request(now, peer(), wire) {
                assert!(r.code.is_response());
            }
        }
    }
}
