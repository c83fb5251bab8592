//! The per-hop decision on an incoming request: where OSCORE layers are removed.
//!
//! Every hop (server, proxy) runs the same algorithm, draft-ietf-core-oscore-capable-proxies
//! (CP) §2.4 Steps 1-6: proxy-related options decide forwarding, an OSCORE option is removed
//! with the context its 'kid' names and the algorithm starts again on the decrypted request,
//! and a request without either goes to the application.

use hopcore_codec::{num, CoapUri, Code, Message};
use hopcore_oscore::{error_response, unprotect_request, Layer, NestedClasses, UnprotectError};
use tracing::debug;

use crate::contexts::SecurityContexts;
use crate::stack::{RemovedLayer, ServerStack};

/// How this hop is configured with respect to proxying, and its authorization policy.
pub trait HopPolicy {
    /// CP §2.4 Step 2: whether this endpoint is configured as a forward proxy.
    fn forward_proxy(&self) -> bool {
        false
    }
    /// CP §2.4 Step 3: whether the request URI (Uri-Host, Uri-Port, Uri-Path) is one this
    /// endpoint serves as a reverse proxy.
    fn reverse_route(&self, _request: &Message) -> bool {
        false
    }
    /// CP §2.4 Step 4: whether the authority of a forward-proxy request identifies this
    /// endpoint itself (then the request is local).
    fn is_own_authority(&self, _request: &Message) -> bool {
        false
    }
    /// CP §2.4 Step 4: whether forwarding is acceptable, e.g. based on the contexts whose
    /// layers were removed (their labels, outermost first).
    fn authorize_forward(&self, _request: &Message, _removed: &[String]) -> bool {
        true
    }
}

/// A hop that is not a proxy: proxy-related options get 5.05 (CP §2.4 Step 2).
#[derive(Debug, Clone, Copy, Default)]
pub struct OriginServer;

impl HopPolicy for OriginServer {}

/// Limits of the engine.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most OSCORE layers removed from one incoming message (CP §2.1).
    pub max_layers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_layers: 8 }
    }
}

/// Whether a request is forwarded as a forward or as a reverse proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    Forward,
    Reverse,
}

/// The outcome of [`process_request`].
#[derive(Debug)]
pub enum Incoming<Id> {
    /// No proxy-related options, no OSCORE option left: hand the request to the application
    /// (CP §2.4 Step 5). `layers` were removed, outermost first.
    Deliver { request: Message, layers: ServerStack<Id> },
    /// Forward the request (CP §2.4 Step 4).
    Forward { request: Message, layers: ServerStack<Id>, mode: ForwardMode },
    /// Answer with this (plaintext) response, protected with `layers` in reverse order
    /// (CP §2.5: an error gets the layers that were removed successfully).
    Reply { response: Message, layers: ServerStack<Id>, reason: String },
}

/// Whether the request carries proxy-related options and of which kind (CP §2.4 Steps 1-3).
fn proxy_options(req: &Message) -> Option<ForwardMode> {
    let o = &req.options;
    // CP §2.4 Step 2: Proxy-Uri, or Proxy-Scheme with Uri-Host/Uri-Port/Uri-Path.
    if o.contains(num::PROXY_URI) || o.contains(num::PROXY_SCHEME) {
        return Some(ForwardMode::Forward);
    }
    // CP §2.4 Step 3: Uri-Host / Uri-Port / Uri-Path without Proxy-Scheme: a candidate for a
    // reverse proxy.
    if o.contains(num::URI_HOST) || o.contains(num::URI_PORT) || o.contains(num::URI_PATH) {
        return Some(ForwardMode::Reverse);
    }
    None
}

fn reply<Id>(code: Code, diagnostic: &str, layers: ServerStack<Id>) -> Incoming<Id> {
    let response = Message::response(code).with_payload(diagnostic.as_bytes().to_vec());
    Incoming::Reply { response, layers, reason: diagnostic.to_string() }
}

/// Runs CP §2.4 on an incoming request.
pub fn process_request<C: SecurityContexts>(
    request: Message,
    contexts: &mut C,
    policy: &dyn HopPolicy,
    limits: &Limits,
) -> Incoming<C::Id> {
    let mut req = request;
    let mut layers: ServerStack<C::Id> = ServerStack::default();
    loop {
        // CP §2.4 Steps 1-3.
        match proxy_options(&req) {
            Some(ForwardMode::Forward) => {
                // CP §2.4 Step 2: not a forward proxy → 5.05 (RFC 7252 §5.10.2).
                if !policy.forward_proxy() {
                    return reply(Code::PROXYING_NOT_SUPPORTED, "proxying not supported here", layers);
                }
                // CP §2.4 Step 4: a request for this endpoint's own authority is local; the
                // proxy options are consumed (RFC 7252 §5.7.2) and the algorithm restarts.
                if policy.is_own_authority(&req) {
                    // A Proxy-Uri carries the path and query too: keep them as Uri-Path and
                    // Uri-Query for the local request (RFC 7252 §6.4).
                    if let Some(uri) = req.options.get_str(num::PROXY_URI).and_then(|u| CoapUri::parse(u).ok()) {
                        uri.write_path_query(&mut req.options);
                    }
                    req.options.remove(num::PROXY_URI);
                    req.options.remove(num::PROXY_SCHEME);
                    req.options.remove(num::URI_HOST);
                    req.options.remove(num::URI_PORT);
                    continue;
                }
                return authorize(req, layers, policy, ForwardMode::Forward);
            }
            Some(ForwardMode::Reverse) if policy.reverse_route(&req) => {
                return authorize(req, layers, policy, ForwardMode::Reverse);
            }
            _ => {}
        }
        // CP §2.4 Step 5: no OSCORE option → the application.
        if !req.options.contains(num::OSCORE) {
            return Incoming::Deliver { request: req, layers };
        }
        // CP §2.1: no more layers than the limit; the 4.01 is protected with those removed.
        if layers.len() >= limits.max_layers {
            return reply(Code::UNAUTHORIZED, "too many OSCORE layers", layers);
        }
        // CP §2.4 Step 6: remove the layer with the context the OSCORE option names. An inner
        // OSCORE option in the result is legal (NestedClasses allows it).
        let classes: NestedClasses = NestedClasses::default();
        let layer = Layer::RFC8613.with_classes(&classes);
        let found = found_context(&req, contexts);
        // A layer that is not this hop's (no context for its kid) on a request that a reverse
        // route takes: an end-to-end request through a reverse proxy carries no Uri-* option
        // at all (the path is encrypted), so CP §2.4 Step 3 could not see it. Layers addressed
        // to this hop are still removed first (CP's reverse-proxy examples).
        if found.is_none() && policy.reverse_route(&req) {
            return authorize(req, layers, policy, ForwardMode::Reverse);
        }
        let outcome = unprotect_request(&req, |_, _| found.and_then(|id| contexts_context(contexts, id)), &layer);
        match outcome {
            Ok((inner, binding, _info)) => {
                let Some(id) = found else {
                    return reply(Code::UNAUTHORIZED, "Security context not found", layers);
                };
                layers.layers.push(RemovedLayer { context: id, label: contexts.label(id), binding });
                req = inner;
            }
            Err(UnprotectError::FreshnessUnverified(unverified)) => {
                // RFC 8613 App. B.1.2: authentic, but the replay window is not synchronized
                // (state lost): accept only with a fresh Echo (RFC 9175 §2.4), then initialize
                // the window from this request's Partial IV.
                let Some(id) = found else {
                    return reply(Code::UNAUTHORIZED, "Security context not found", layers);
                };
                let unverified = *unverified;
                let seq = unverified.info.partial_iv().to_sequence();
                let label = contexts.label(id);
                let echo_ok =
                    unverified.message.options.get(num::ECHO).is_some_and(|echo| contexts.verify_echo(id, echo));
                layers.layers.push(RemovedLayer { context: id, label, binding: unverified.binding });
                if echo_ok {
                    if let Some(ctx) = contexts.context_mut(id) {
                        ctx.replay_window_mut().synchronize(seq);
                    }
                    let mut inner = unverified.message;
                    // The Echo was for this layer's freshness check; the application does not
                    // see it.
                    inner.options.remove(num::ECHO);
                    req = inner;
                    continue;
                }
                // RFC 8613 App. B.1.2: 4.01 with an Inner Echo, protected with the request's
                // context (and its own Partial IV, which the binding enforces).
                let mut response = Message::response(Code::UNAUTHORIZED);
                match contexts.issue_echo(id) {
                    Some(echo) => response.options.set(num::ECHO, &echo),
                    None => {
                        debug!("replay window unsynchronized and no Echo support");
                    }
                }
                response.payload = b"Replay protection not initialized: repeat with Echo".to_vec();
                return Incoming::Reply { response, layers, reason: "freshness challenge (Echo)".into() };
            }
            Err(e) => {
                // RFC 8613 §8.2: the error response; CP §2.5: protected with the layers
                // removed so far (none: it goes out unprotected).
                debug!(error = %e, layers = layers.len(), "OSCORE layer could not be removed");
                let reason = e.to_string();
                return Incoming::Reply { response: error_response(&e), layers, reason };
            }
        }
    }
}

/// CP §2.4 Step 4: the authorization check before forwarding.
fn authorize<Id: Copy>(
    req: Message,
    layers: ServerStack<Id>,
    policy: &dyn HopPolicy,
    mode: ForwardMode,
) -> Incoming<Id> {
    if !policy.authorize_forward(&req, &layers.labels()) {
        return reply(Code::UNAUTHORIZED, "not authorized to forward to this destination", layers);
    }
    Incoming::Forward { request: req, layers, mode }
}

/// The context named by the OSCORE option of `req`, found before decrypting so that the
/// engine knows which handle it used. The lookup for the decryption itself goes through the
/// same handle.
fn found_context<C: SecurityContexts>(req: &Message, contexts: &C) -> Option<C::Id> {
    let value = req.options.get(num::OSCORE)?;
    let opt = hopcore_oscore::OscoreOption::parse(value).ok()?;
    contexts.lookup_recipient(opt.kid?, opt.kid_context)
}

fn contexts_context<C: SecurityContexts>(contexts: &mut C, id: C::Id) -> Option<&mut hopcore_oscore::SecurityContext> {
    contexts.context_mut(id)
}
