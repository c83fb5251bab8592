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

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hopcore_codec::{num, CoapUri, Code, Message};
use hopcore_layers::{
    protect_request_layers, protect_route_request, unprotect_response_layers, ClientStack, LayerError, Route,
    SecurityContexts,
};
use hopcore_oscore::UnprotectError;

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
        unprotect_response_layers(response, &mut *contexts, &mut self.stack).map_err(|e| match e {
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
        })
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
