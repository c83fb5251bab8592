//! The client's security hook: OSCORE (RFC 8613) between Block-wise/Observe and the endpoint.
//!
//! A [`Client`](super::Client) built with [`Client::with_security`](super::Client::with_security)
//! passes every single request it sends through a [`RequestProtector`] and every response
//! through the [`ResponseVerifier`] that protecting returned. The hook sits *below* the
//! block-wise and Observe logic and *above* the message layer:
//!
//! - **Inner block-wise** (RFC 8613 §4.1.3.4.1): Block1/Block2 are Class E, so each block
//!   request is its own OSCORE request with its own Partial IV, and each block response is
//!   verified before the block-wise logic sees it.
//! - **Observe** (RFC 8613 §4.1.3.5): the registration's verifier stays with the observation and
//!   verifies every notification; the oscore layer accepts only increasing Partial IVs
//!   (§7.4.1, §8.4.2), which replaces the RFC 7641 §3.4 ordering for protected observations.
//! - **Token and Message ID** stay the business of the message layer: the client picks the token
//!   before protecting, and the oscore layer copies type, Message ID and token into the OSCORE
//!   message, so the token of the protected message is the one the endpoint tracks.
//!
//! [`OscoreProtector`] implements the hook with the nesting engine of `hopcore-layers` over any
//! [`SecurityContexts`] store; its route is the list of contexts to apply, end-to-end first
//! (CP §2.3).
//!
//! [`RederiveProtector`] protects with one end-to-end context that may be re-derived with
//! RFC 8613 Appendix B.2 (a [`RederiveContexts`] store, e.g. `hopcore_security::ContextStore`,
//! with `rederive = true` for the context):
//!
//! - [`RederiveProtector::rederive`] runs the client-initiated procedure with a probe request
//!   before the application's requests: request #1 with the first context (ID Context R1,
//!   carried as 'kid context'), response #1 (4.01, verified with R2 || R1), request #2 with the
//!   third context (R2 || R3), response #2; only then does the third context replace the old
//!   one in the store.
//! - A **server-initiated** run is completed transparently: a response carrying a 'kid
//!   context' (R2) to an ordinary request is response #1; once verified, it comes back to the
//!   client's exchange loop as a 4.01 with an Echo option whose value is a one-time marker
//!   known only to this protector, so that the client repeats the request once (the loop that
//!   answers App. B.1.2 Echo challenges). The repetition carries the marker, which the
//!   protector removes before protecting the request as request #2. The marker never goes on
//!   the wire.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hopcore_codec::{num, CoapUri, Code, Message, MsgType, Token};
use hopcore_layers::{
    protect_request_layers, protect_route_request, unprotect_response_layers, ClientStack, LayerError, Route,
    SecurityContexts,
};
use hopcore_oscore::{Layer, RequestBinding, UnprotectError};
use hopcore_security::rederive::{response_kid_context, Initiator, KidContextEncoding, RederiveContexts};
use rand::rngs::OsRng;
use rand::RngCore;

use super::ClientError;
use crate::endpoint::Endpoint;

/// The longest diagnostic payload of an unprotected error kept for reporting.
const MAX_DIAGNOSTIC: usize = 256;

/// Why protecting a request or verifying a response failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// The request could not be protected (no usable context, sequence numbers exhausted, a
    /// store that cannot reserve sequence numbers durably, ...). Nothing was sent.
    #[error("{0}")]
    Protect(String),
    /// The response failed verification (RFC 8613 §8.4 step 8): it is dropped.
    #[error("{0}")]
    Verify(String),
    /// The response to a protected request came without protection: an RFC 8613 §8.2 error
    /// (4.00/4.01/4.02 with Max-Age 0) or an error of an intermediary. Never delivered as a
    /// response.
    #[error("answered unprotected {code}{}", if diagnostic.is_empty() { String::new() } else { format!(": {diagnostic}") })]
    Unprotected { code: Code, diagnostic: String },
    /// A notification whose Partial IV is not greater than that of the newest one accepted
    /// (RFC 8613 §7.4.1): an old or replayed notification, dropped without ending the
    /// observation.
    #[error("{0}")]
    Stale(String),
}

/// Protects the requests of a client. Called once per message sent: each block of a
/// block-wise transfer, each (re-)registration and deregistration of an observation.
pub trait RequestProtector: Send + Sync + fmt::Debug {
    /// Protects `request` (with its token already set) for `peer`, the first hop. Returns the
    /// message to send and the verifier for its responses.
    fn protect(
        &self,
        peer: SocketAddr,
        request: &Message,
    ) -> Result<(Message, Box<dyn ResponseVerifier>), SecurityError>;

    /// A short description for logs and `-v` output, e.g. "context 'server' (kid 01)". Never
    /// key material.
    fn describe(&self) -> String;
}

/// Verifies the responses to one protected request. Kept for as long as responses may come:
/// one exchange, or the whole observation for an Observe registration.
pub trait ResponseVerifier: Send + Sync + fmt::Debug {
    /// Verifies one response and returns the original (unprotected) one.
    fn verify(&mut self, response: &Message) -> Result<Message, SecurityError>;
}

/// OSCORE protection with the nesting engine: applies one layer per context of the route.
pub struct OscoreProtector<C: SecurityContexts> {
    contexts: Arc<Mutex<C>>,
    route: Vec<C::Id>,
    max_layers: usize,
}

impl<C: SecurityContexts> fmt::Debug for OscoreProtector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OscoreProtector").field("route", &self.route).field("max_layers", &self.max_layers).finish()
    }
}

impl<C: SecurityContexts> OscoreProtector<C> {
    /// Protection with the contexts of `route`, end-to-end first, then one per intermediary
    /// from the one closest to the server to the one closest to the client (CP §2.3). For a
    /// client talking to its server (directly, or through proxies that only forward, CF-4),
    /// the route is the one end-to-end context.
    pub fn new(contexts: Arc<Mutex<C>>, route: Vec<C::Id>) -> Self {
        let max_layers = hopcore_layers::Limits::default().max_layers;
        OscoreProtector { contexts, route, max_layers }
    }

    /// The most layers applied to one request (CP §2.1); a longer route fails to protect.
    pub fn with_max_layers(mut self, max_layers: usize) -> Self {
        self.max_layers = max_layers;
        self
    }

    /// The contexts applied to each request, end-to-end first.
    pub fn route(&self) -> &[C::Id] {
        &self.route
    }

    /// The shared context store.
    pub fn contexts(&self) -> &Arc<Mutex<C>> {
        &self.contexts
    }
}

/// Runs `protect` on the locked store and boxes the verifier for the resulting stack: the
/// common part of every protector.
fn protect_locked<C, F>(
    contexts: &Arc<Mutex<C>>,
    protect: F,
) -> Result<(Message, Box<dyn ResponseVerifier>), SecurityError>
where
    C: SecurityContexts + Send + 'static,
    F: FnOnce(&mut C) -> Result<(Message, ClientStack<C::Id>), String>,
{
    let mut guard =
        contexts.lock().map_err(|_| SecurityError::Protect("the security context store is unusable".into()))?;
    let (wire, stack) = protect(&mut *guard).map_err(SecurityError::Protect)?;
    drop(guard);
    Ok((wire, Box::new(OscoreVerifier { contexts: Arc::clone(contexts), stack })))
}

/// "'label' (kid 01)" for a context: labels and identifiers only, never keys.
fn describe_context<C: SecurityContexts>(contexts: &mut C, id: C::Id) -> String {
    let label = contexts.label(id);
    match contexts.context_mut(id) {
        Some(ctx) => format!("'{label}' (kid {})", hex_id(ctx.sender_id())),
        None => format!("'{label}'"),
    }
}

/// Lowercase hex of an identifier, "empty" for the empty one.
fn hex_id(id: &[u8]) -> String {
    if id.is_empty() {
        return "empty".into();
    }
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl<C> RequestProtector for OscoreProtector<C>
where
    C: SecurityContexts + Send + 'static,
{
    fn protect(
        &self,
        _peer: SocketAddr,
        request: &Message,
    ) -> Result<(Message, Box<dyn ResponseVerifier>), SecurityError> {
        // RFC 8613 §8.1, CP §2.3: one layer per context, the end-to-end one first.
        protect_locked(&self.contexts, |contexts| {
            protect_request_layers(request, contexts, &self.route, self.max_layers).map_err(|e| e.to_string())
        })
    }

    fn describe(&self) -> String {
        let Ok(mut contexts) = self.contexts.lock() else {
            return "OSCORE (context store unusable)".into();
        };
        let parts: Vec<String> = self.route.iter().map(|&id| describe_context(&mut *contexts, id)).collect();
        match parts.len() {
            0 => "no OSCORE context".into(),
            1 => format!("context {}", parts.join("")),
            _ => format!("contexts {} (end-to-end first)", parts.join(", ")),
        }
    }
}

/// OSCORE along a route of forward proxies (CP §2.3, onion forwarding): each request is
/// rebuilt for its target (taken from its Proxy-Uri, or Proxy-Scheme + Uri-Host + Uri-Port)
/// with the end-to-end layer and one layer per proxy the client shares a context with.
pub struct RouteProtector<C: SecurityContexts> {
    contexts: Arc<Mutex<C>>,
    route: Route<C::Id>,
    max_layers: usize,
}

impl<C: SecurityContexts> fmt::Debug for RouteProtector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteProtector").field("proxies", &self.route.proxies.len()).finish()
    }
}

impl<C: SecurityContexts> RouteProtector<C> {
    pub fn new(contexts: Arc<Mutex<C>>, route: Route<C::Id>) -> Self {
        RouteProtector { contexts, route, max_layers: hopcore_layers::Limits::default().max_layers }
    }
    pub fn route(&self) -> &Route<C::Id> {
        &self.route
    }
}

/// The origin a forward-proxy request is for (RFC 7252 §5.10.2, §6.5).
fn proxy_target(peer: SocketAddr, request: &Message) -> Result<CoapUri, SecurityError> {
    let bad = |e: hopcore_codec::UriError| SecurityError::Protect(format!("cannot tell the request's target: {e}"));
    match request.options.get_str(num::PROXY_URI) {
        Some(uri) => CoapUri::parse(uri).map_err(bad),
        None => CoapUri::from_options(&request.options, &peer.ip().to_string(), peer.port()).map_err(bad),
    }
}

impl<C> RequestProtector for RouteProtector<C>
where
    C: SecurityContexts + Send + 'static,
{
    fn protect(
        &self,
        peer: SocketAddr,
        request: &Message,
    ) -> Result<(Message, Box<dyn ResponseVerifier>), SecurityError> {
        let target = proxy_target(peer, request)?;
        // CP §2.3: the end-to-end layer first, then one per proxy from the origin side back.
        protect_locked(&self.contexts, |contexts| {
            protect_route_request(request, &target, &self.route, contexts, self.max_layers).map_err(|e| e.to_string())
        })
    }

    fn describe(&self) -> String {
        let Ok(mut contexts) = self.contexts.lock() else {
            return "OSCORE (context store unusable)".into();
        };
        let mut hops = vec!["client".to_string()];
        for p in &self.route.proxies {
            let layer = match p.context {
                Some(id) => format!(" [layer {}]", describe_context(&mut *contexts, id)),
                None => " [no layer]".into(),
            };
            hops.push(format!("proxy {}{layer}", p.uri.compose().trim_end_matches('/')));
        }
        let origin = match self.route.origin_context {
            Some(id) => format!("origin [end-to-end layer {}]", describe_context(&mut *contexts, id)),
            None => "origin [no end-to-end layer]".into(),
        };
        hops.push(origin);
        format!("route {} ({} layers)", hops.join(" -> "), self.route.layers())
    }
}

/// The verifier of one request protected by an [`OscoreProtector`]: the request's layers and
/// their bindings (RFC 8613 §7.1: the association of Token and request Partial IV).
struct OscoreVerifier<C: SecurityContexts> {
    contexts: Arc<Mutex<C>>,
    stack: ClientStack<C::Id>,
}

impl<C: SecurityContexts> fmt::Debug for OscoreVerifier<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OscoreVerifier").field("layers", &self.stack.labels()).finish()
    }
}

/// The diagnostic payload of an error response, as text (RFC 7252 §5.5.2), bounded.
fn diagnostic(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let text = text.trim();
    match text.char_indices().nth(MAX_DIAGNOSTIC) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

impl<C> ResponseVerifier for OscoreVerifier<C>
where
    C: SecurityContexts + Send + 'static,
{
    fn verify(&mut self, response: &Message) -> Result<Message, SecurityError> {
        // RFC 8613 §8.2: errors of the server's OSCORE processing come unprotected (4.00, 4.01,
        // 4.02 with Max-Age 0); so do errors of a proxy that only forwards. Their code and
        // diagnostic are reported, never delivered as the response.
        if !self.stack.is_empty() && !response.options.contains(num::OSCORE) {
            return Err(SecurityError::Unprotected { code: response.code, diagnostic: diagnostic(&response.payload) });
        }
        let mut contexts =
            self.contexts.lock().map_err(|_| SecurityError::Verify("the security context store is unusable".into()))?;
        // RFC 8613 §8.4, CP §2.6: remove the layers outermost first.
        // RFC 8613 App. B.2: a response with a 'kid context' is response #1 of a run the server
        // started; this protector does not take part (see RederiveProtector), so say why the
        // verification fails.
        let b2_challenge = response_kid_context(response, KidContextEncoding::default()).is_ok_and(|kc| kc.is_some());
        unprotect_response_layers(response, &mut *contexts, &mut self.stack).map_err(layer_error).map_err(|e| match e {
            SecurityError::Verify(reason) if b2_challenge => SecurityError::Verify(format!(
                "{reason} (the server started a security context re-derivation, RFC 8613 App. B.2; \
                 the context needs `rederive = true` to take part)"
            )),
            e => e,
        })
    }
}

/// How a re-derivation (RFC 8613 App. B.2) was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RederiveStart {
    /// By this client ([`RederiveProtector::rederive`]).
    Client,
    /// By the server, answering an ordinary request with response #1.
    Server,
}

/// A completed App. B.2 run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rederivation {
    /// The ID Context of the new context, R2 || R3 (not secret: it travels in the clear).
    pub id_context: Vec<u8>,
    /// Who started it.
    pub started_by: RederiveStart,
}

/// Where the App. B.2 run of a [`RederiveProtector`] is (RFC 8613 App. B.2, client side).
enum ClientRun {
    /// No run in progress.
    Idle,
    /// Request #1 sent (client-initiated); waiting for response #1.
    AwaitingResponse1(Initiator),
    /// Response #1 verified: the request repeated with `marker` as Echo becomes request #2.
    Ready { initiator: Initiator, marker: Vec<u8>, started_by: RederiveStart },
    /// Request #2 sent; waiting for response #2.
    AwaitingResponse2 { initiator: Initiator, started_by: RederiveStart },
}

/// Shared between the protector and its verifiers.
struct RunState {
    run: ClientRun,
    last: Option<Rederivation>,
}

/// Length of the one-time Echo marker (RFC 9175 §2.2.1 allows 1 to 40 bytes).
const MARKER_LEN: usize = 16;

/// OSCORE with one end-to-end context that may be re-derived with RFC 8613 App. B.2; see
/// the [module documentation](self). Requests are protected like [`OscoreProtector`] with the
/// route `[id]`, except request #1 and #2 of a run.
pub struct RederiveProtector<C: RederiveContexts> {
    contexts: Arc<Mutex<C>>,
    id: C::Id,
    encoding: KidContextEncoding,
    state: Arc<Mutex<RunState>>,
}

impl<C: RederiveContexts> fmt::Debug for RederiveProtector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RederiveProtector").field("id", &self.id).field("encoding", &self.encoding).finish()
    }
}

/// Locks the run state; a panic elsewhere does not make it unusable (every change is one
/// assignment).
fn lock_run(state: &Mutex<RunState>) -> std::sync::MutexGuard<'_, RunState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C: RederiveContexts + Send + 'static> RederiveProtector<C> {
    /// Protection with context `id` of `contexts`, re-derivable if the store says so
    /// ([`RederiveContexts::rederive_params`]); the 'kid context' encoding is the library
    /// default (a CBOR bstr, as Californium does).
    pub fn new(contexts: Arc<Mutex<C>>, id: C::Id) -> Self {
        RederiveProtector {
            contexts,
            id,
            encoding: KidContextEncoding::default(),
            state: Arc::new(Mutex::new(RunState { run: ClientRun::Idle, last: None })),
        }
    }

    /// The context used.
    pub fn id(&self) -> C::Id {
        self.id
    }

    /// The shared context store.
    pub fn contexts(&self) -> &Arc<Mutex<C>> {
        &self.contexts
    }

    /// Whether the store lets this context be re-derived.
    pub fn rederivable(&self) -> bool {
        self.contexts.lock().is_ok_and(|c| c.rederive_params(self.id).is_some())
    }

    /// The latest completed run, if any.
    pub fn last_rederivation(&self) -> Option<Rederivation> {
        lock_run(&self.state).last.clone()
    }

    /// The preestablished parameters, if the context may be re-derived.
    fn params(&self) -> Result<hopcore_security::ContextParams, SecurityError> {
        let contexts = self
            .contexts
            .lock()
            .map_err(|_| SecurityError::Protect("the security context store is unusable".into()))?;
        contexts.rederive_params(self.id).cloned().ok_or_else(|| {
            SecurityError::Protect(format!(
                "context '{}' may not be re-derived (RFC 8613 App. B.2 needs `rederive = true` in its credentials)",
                contexts.label(self.id)
            ))
        })
    }

    fn verifier(&self, expect: Expect<C::Id>) -> Box<dyn ResponseVerifier> {
        Box::new(RederiveVerifier {
            contexts: Arc::clone(&self.contexts),
            id: self.id,
            encoding: self.encoding,
            state: Arc::clone(&self.state),
            expect,
        })
    }

    /// Step 1: protects `probe` as request #1 with a first context derived from a fresh R1.
    fn protect_request1(&self, probe: &Message) -> Result<(Message, Box<dyn ResponseVerifier>), SecurityError> {
        let params = self.params()?;
        let mut initiator = Initiator::new(params, &mut OsRng).map_err(|e| SecurityError::Protect(e.to_string()))?;
        let (wire, binding) =
            initiator.protect_request1(probe, &Layer::RFC8613).map_err(|e| SecurityError::Protect(e.to_string()))?;
        lock_run(&self.state).run = ClientRun::AwaitingResponse1(initiator);
        Ok((wire, self.verifier(Expect::Response1(binding))))
    }

    /// Runs the client-initiated App. B.2 procedure with the server at `peer`: `probe` (e.g.
    /// a GET of the resource about to be requested; the server does not act on request #1 and
    /// serves request #2 normally) goes out as request #1 and, after response #1 verified, as
    /// request #2. When response #2 verifies, the new context (ID Context R2 || R3) replaces
    /// the old one in the store and is used for every later request. Each exchange waits at
    /// most `timeout`. On failure the store keeps the old context. Requests the client sends
    /// meanwhile are protected with the current (old) context.
    pub async fn rederive(
        &self,
        endpoint: &Endpoint,
        peer: SocketAddr,
        probe: &Message,
        timeout: std::time::Duration,
    ) -> Result<(Rederivation, Message), ClientError> {
        let security = |e| ClientError::from_security(e, peer);
        let mut probe = probe.clone();
        if !matches!(probe.mtype, MsgType::Con | MsgType::Non) {
            probe.mtype = MsgType::Con;
        }
        // RFC 8613 App. B.2 step 1.
        probe.token = fresh_token();
        let (wire, mut verifier) = self.protect_request1(&probe).map_err(security)?;
        let response1 = exchange(endpoint, peer, wire, probe.token, timeout).await.inspect_err(|_| self.abandon())?;
        // Step 3: response #1 verified with ID2 = R2 || R1 (an error resets the run).
        let challenge = verifier.verify(&response1).map_err(security)?;
        let Some(marker) = challenge.options.get(num::ECHO).map(<[u8]>::to_vec) else {
            self.abandon();
            return Err(security(SecurityError::Verify("response #1 of App. B.2 was not a 4.01".into())));
        };
        // Step 3 (continued): the same probe as request #2 with ID3 = R2 || R3.
        probe.token = fresh_token();
        probe.options.set(num::ECHO, &marker);
        let (wire, mut verifier) = self.protect(peer, &probe).map_err(security)?;
        let response2 = exchange(endpoint, peer, wire, probe.token, timeout).await.inspect_err(|_| self.abandon())?;
        // Step 5: response #2 verified with the third context, which then replaces the old one.
        let response = verifier.verify(&response2).map_err(security)?;
        let done = self
            .last_rederivation()
            .ok_or_else(|| security(SecurityError::Verify("App. B.2 did not complete".into())))?;
        Ok((done, response))
    }

    /// Forgets the run in progress (the store keeps the old context).
    fn abandon(&self) {
        lock_run(&self.state).run = ClientRun::Idle;
    }
}

/// A fresh random 8-byte token (RFC 9175 §4.2).
fn fresh_token() -> Token {
    let mut bytes = [0u8; 8];
    OsRng.fill_bytes(&mut bytes);
    Token::from_slice(&bytes).unwrap_or_default()
}

/// One exchange of a protected message on `endpoint`, at most `timeout`.
async fn exchange(
    endpoint: &Endpoint,
    peer: SocketAddr,
    mut wire: Message,
    token: Token,
    timeout: std::time::Duration,
) -> Result<Message, ClientError> {
    wire.token = token;
    wire.to_bytes().map_err(ClientError::Encode)?;
    let start = tokio::time::Instant::now();
    match tokio::time::timeout(timeout, endpoint.request(peer, wire)).await {
        Err(_) => Err(ClientError::Timeout { peer, elapsed: start.elapsed() }),
        Ok(Err(e)) => Err(ClientError::from_endpoint(e, peer, start.elapsed())),
        Ok(Ok(m)) => Ok(m),
    }
}

impl<C> RequestProtector for RederiveProtector<C>
where
    C: RederiveContexts + Send + 'static,
{
    fn protect(
        &self,
        _peer: SocketAddr,
        request: &Message,
    ) -> Result<(Message, Box<dyn ResponseVerifier>), SecurityError> {
        let mut state = lock_run(&self.state);
        let is_repeat = matches!(&state.run, ClientRun::Ready { marker, .. }
            if request.options.get(num::ECHO) == Some(marker.as_slice()));
        if is_repeat {
            let ClientRun::Ready { mut initiator, started_by, .. } = std::mem::replace(&mut state.run, ClientRun::Idle)
            else {
                return Err(SecurityError::Protect("App. B.2 run changed state".into()));
            };
            // RFC 8613 App. B.2 step 3: the repetition is request #2, protected with the third
            // context (ID3 = R2 || R3 as 'kid context'); the marker was only for the loop.
            let mut plain = request.clone();
            plain.options.remove(num::ECHO);
            let (wire, binding) = initiator
                .protect_request2(&plain, &Layer::RFC8613)
                .map_err(|e| SecurityError::Protect(e.to_string()))?;
            state.run = ClientRun::AwaitingResponse2 { initiator, started_by };
            drop(state);
            return Ok((wire, self.verifier(Expect::Response2(binding))));
        }
        drop(state);
        // An ordinary request with the current context (RFC 8613 §8.1).
        let mut contexts = self
            .contexts
            .lock()
            .map_err(|_| SecurityError::Protect("the security context store is unusable".into()))?;
        let max_layers = hopcore_layers::Limits::default().max_layers;
        let (wire, stack) = protect_request_layers(request, &mut *contexts, &[self.id], max_layers)
            .map_err(|e| SecurityError::Protect(e.to_string()))?;
        drop(contexts);
        Ok((wire, self.verifier(Expect::Ordinary(stack))))
    }

    fn describe(&self) -> String {
        let Ok(mut contexts) = self.contexts.lock() else {
            return "OSCORE (context store unusable)".into();
        };
        let rederivable = contexts.rederive_params(self.id).is_some();
        let context = describe_context(&mut *contexts, self.id);
        drop(contexts);
        let mut out = format!("context {context}");
        if rederivable {
            out.push_str(", re-derivable (RFC 8613 App. B.2)");
        }
        if let Some(r) = self.last_rederivation() {
            let by = match r.started_by {
                RederiveStart::Client => "client",
                RederiveStart::Server => "server",
            };
            out.push_str(&format!(", re-derived (started by the {by}): ID Context {}", hex_id(&r.id_context)));
        }
        out
    }
}

/// What a [`RederiveVerifier`] expects.
enum Expect<Id> {
    /// The response to an ordinary request (or response #1 of a server-initiated run).
    Ordinary(ClientStack<Id>),
    /// Response #1 of a client-initiated run, to request #1 with this binding.
    Response1(RequestBinding),
    /// Response #2, to request #2 with this binding.
    Response2(RequestBinding),
}

/// The verifier of one request protected by a [`RederiveProtector`].
struct RederiveVerifier<C: RederiveContexts> {
    contexts: Arc<Mutex<C>>,
    id: C::Id,
    encoding: KidContextEncoding,
    state: Arc<Mutex<RunState>>,
    expect: Expect<C::Id>,
}

impl<C: RederiveContexts> fmt::Debug for RederiveVerifier<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expect = match &self.expect {
            Expect::Ordinary(_) => "ordinary response",
            Expect::Response1(_) => "App. B.2 response #1",
            Expect::Response2(_) => "App. B.2 response #2",
        };
        f.debug_struct("RederiveVerifier").field("id", &self.id).field("expect", &expect).finish()
    }
}

/// Step 3 done: the verified response #1 goes back as a 4.01 with the one-time Echo marker,
/// so that the request is repeated once, as request #2.
fn challenge(
    state: &Mutex<RunState>,
    initiator: Initiator,
    verified: Message,
    started_by: RederiveStart,
) -> Result<Message, SecurityError> {
    // RFC 8613 App. B.2 step 2: response #1 is "a 4.01 (Unauthorized) response".
    if verified.code != Code::UNAUTHORIZED {
        lock_run(state).run = ClientRun::Idle;
        return Err(SecurityError::Verify(format!("App. B.2 response #1 is {}, not 4.01", verified.code)));
    }
    let mut marker = vec![0u8; MARKER_LEN];
    OsRng.fill_bytes(&mut marker);
    let mut out = verified;
    out.options.set(num::ECHO, &marker);
    lock_run(state).run = ClientRun::Ready { initiator, marker, started_by };
    tracing::debug!("App. B.2: response #1 verified; the request is repeated as request #2");
    Ok(out)
}

/// Response #1 of a run the server started, to an ordinary request with `binding`; `None`
/// when `response` is not one (no 'kid context') or the context may not be re-derived.
fn server_initiated<C: RederiveContexts>(
    contexts: &Mutex<C>,
    id: C::Id,
    encoding: KidContextEncoding,
    state: &Mutex<RunState>,
    response: &Message,
    binding: &mut RequestBinding,
) -> Option<Result<Message, SecurityError>> {
    // RFC 8613 App. B.2 step 3: "The client receives a response with 'kid context' containing
    // a CBOR bstr wrapping R2 to an OSCORE request it made with ID Context = ID1".
    response_kid_context(response, encoding).ok().flatten()?;
    let (params, id1) = {
        let contexts = contexts.lock().ok()?;
        let params = contexts.rederive_params(id)?.clone();
        let id1 = contexts.current(id)?.id_context().map(<[u8]>::to_vec);
        (params, id1)
    };
    let mut initiator = Initiator::for_server_initiated(params, id1.as_deref(), encoding);
    Some(match initiator.on_response1(response, binding, &Layer::RFC8613, &mut OsRng) {
        Ok(verified) => challenge(state, initiator, verified, RederiveStart::Server),
        Err(e) => Err(SecurityError::Verify(format!("App. B.2 response #1: {e}"))),
    })
}

impl<C> ResponseVerifier for RederiveVerifier<C>
where
    C: RederiveContexts + Send + 'static,
{
    fn verify(&mut self, response: &Message) -> Result<Message, SecurityError> {
        let RederiveVerifier { contexts, id, encoding, state, expect } = self;
        if !response.options.contains(num::OSCORE) {
            if !matches!(expect, Expect::Ordinary(_)) {
                // The server does not run App. B.2 for us (e.g. "Security context not found").
                lock_run(state).run = ClientRun::Idle;
            }
            return Err(SecurityError::Unprotected { code: response.code, diagnostic: diagnostic(&response.payload) });
        }
        let store_error = || SecurityError::Verify("the security context store is unusable".into());
        match expect {
            Expect::Ordinary(stack) => {
                if let [layer] = stack.layers.as_mut_slice() {
                    if let Some(result) =
                        server_initiated(contexts, *id, *encoding, state, response, &mut layer.binding)
                    {
                        return result;
                    }
                }
                let mut contexts = contexts.lock().map_err(|_| store_error())?;
                unprotect_response_layers(response, &mut *contexts, stack).map_err(layer_error)
            }
            Expect::Response1(binding) => {
                let run = std::mem::replace(&mut lock_run(state).run, ClientRun::Idle);
                let ClientRun::AwaitingResponse1(mut initiator) = run else {
                    return Err(SecurityError::Verify("no App. B.2 run awaits response #1".into()));
                };
                // Step 3: verify with ID2 = R2 || R1; on failure the run ends (this exchange is
                // over) and the store is untouched.
                match initiator.on_response1(response, binding, &Layer::RFC8613, &mut OsRng) {
                    Ok(verified) => challenge(state, initiator, verified, RederiveStart::Client),
                    Err(e) => Err(SecurityError::Verify(format!("App. B.2 response #1: {e}"))),
                }
            }
            Expect::Response2(binding) => {
                let mut state = lock_run(state);
                let ClientRun::AwaitingResponse2 { mut initiator, started_by } =
                    std::mem::replace(&mut state.run, ClientRun::Idle)
                else {
                    return Err(SecurityError::Verify("no App. B.2 run awaits response #2".into()));
                };
                // Step 5: verify with the third context; only then does it replace the old one.
                let verified = initiator
                    .on_response2(response, binding, &Layer::RFC8613)
                    .map_err(|e| SecurityError::Verify(format!("App. B.2 response #2: {e}")))?;
                let Some(ctx) = initiator.finish() else {
                    return Err(SecurityError::Verify("App. B.2 run did not complete".into()));
                };
                let id_context = ctx.id_context().map(<[u8]>::to_vec).unwrap_or_default();
                contexts
                    .lock()
                    .map_err(|_| store_error())?
                    .install_rederived(*id, ctx)
                    .map_err(SecurityError::Verify)?;
                tracing::info!(id_context = %hex_id(&id_context), "App. B.2: new security context in use");
                state.last = Some(Rederivation { id_context, started_by });
                Ok(verified)
            }
        }
    }
}

/// Maps an error of the nesting engine's response verification.
fn layer_error(e: LayerError) -> SecurityError {
    match e {
        // An inner layer is missing: a hop answered unprotected, inside the layers removed
        // so far.
        LayerError::Unprotected { code, diagnostic: d, .. } => {
            SecurityError::Unprotected { code, diagnostic: diagnostic(d.as_bytes()) }
        }
        // RFC 8613 §7.4.1: an old notification, not a forgery.
        e @ LayerError::Verify {
            source: UnprotectError::ResponseReplay { .. } | UnprotectError::ResponseNonceReused,
            ..
        } => SecurityError::Stale(e.to_string()),
        e => SecurityError::Verify(e.to_string()),
    }
}

/// The Echo value of an RFC 9175 §2.3 freshness challenge: a (verified) 4.01 Unauthorized
/// with an Echo option.
pub(super) fn echo_challenge(response: &Message) -> Option<&[u8]> {
    if response.code == Code::UNAUTHORIZED {
        response.options.get(num::ECHO)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_are_trimmed_and_bounded() {
        assert_eq!(diagnostic(b"Security context not found"), "Security context not found");
        assert_eq!(diagnostic(b" x \n"), "x");
        assert_eq!(diagnostic(&[0xff, b'a']), "\u{fffd}a");
        let long = vec![b'a'; 1000];
        assert_eq!(diagnostic(&long).len(), MAX_DIAGNOSTIC + 3);
    }

    #[test]
    fn unprotected_reads_well() {
        let e =
            SecurityError::Unprotected { code: Code::UNAUTHORIZED, diagnostic: "Security context not found".into() };
        assert_eq!(e.to_string(), "answered unprotected 4.01 Unauthorized: Security context not found");
        let e = SecurityError::Unprotected { code: Code::BAD_REQUEST, diagnostic: String::new() };
        assert_eq!(e.to_string(), "answered unprotected 4.00 Bad Request");
    }

    #[test]
    fn ids_in_hex() {
        assert_eq!(hex_id(&[]), "empty");
        assert_eq!(hex_id(&[1, 0xab]), "01ab");
    }
}
