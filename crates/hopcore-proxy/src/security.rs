//! The proxy as an OSCORE endpoint (draft-ietf-core-oscore-capable-proxies, "CP"): which
//! contexts it holds, the hop policy it gives the nesting engine, and the layer it shares with
//! the next hop.
//!
//! Every incoming request goes through the same engine as at a server,
//! [`hopcore_layers::process_request`] (CP §2.4), with `ProxyPolicy`: forwarding is enabled,
//! reverse routes are those of the configuration (CP §2.4 Step 3), the proxy's own authority
//! makes a request local (CP §2.4 Step 4), and `[[allow]]` rules authorize forwarding (CP §2.4
//! Step 4). The contexts the engine may use for a request are those of the proxy's clients
//! (credentials entries with `peer` labels), narrowed by the `[[source]]` rule of the request's
//! source address (CP §2.4.1, `SourceContexts`).
//!
//! Towards the next hop the proxy is a client: when one of its contexts has a `uri` pattern
//! matching the upstream request URI, it applies that layer (`protect_upstream`, CP §2.3,
//! §2.2: the relayed OSCORE option of an end-to-end layer is Class E) and removes it from the
//! responses (`unprotect_upstream`, CP §2.6). Responses to the client are protected with the
//! layers removed from its request in reverse order (CP §2.5,
//! [`hopcore_layers::protect_response_layers`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use hopcore_codec::{num, Code, Message, Options, Registry};
use hopcore_layers::{
    unprotect_response_layers, AppliedLayer, ClientStack, HopPolicy, LayerError, LayerTarget, SecurityContexts,
};
use hopcore_oscore::{protect_request, Layer, SecurityContext};
use hopcore_security::{ContextId, ContextStore, CredentialIndex, StoreError};
use thiserror::Error;

use crate::config::{AllowClient, ProxyConfig};
use crate::decide::{self, decide, Decision, Local, Upstream};
use crate::proxy::{upstream_uri, uri_without_port};

/// Locks the store; a panic elsewhere while holding the lock does not make it unusable (the
/// engine only changes contexts through complete operations).
pub(crate) fn lock(store: &Mutex<ContextStore>) -> MutexGuard<'_, ContextStore> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

/// The proxy's OSCORE contexts and their roles.
#[derive(Debug, Clone)]
pub struct ProxySecurity {
    store: Arc<Mutex<ContextStore>>,
    /// Contexts of clients: their layers are removed from incoming requests.
    clients: Vec<ContextId>,
    /// Contexts of next hops, by URI pattern (`*` wildcard).
    upstream: Vec<(String, ContextId)>,
}

/// A configuration that does not fit the proxy's contexts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecurityConfigError {
    #[error("allow rule #{index}: client {label:?} is not the label of a client context (a `peer` entry)")]
    AllowLabel { index: usize, label: String },
    #[error("source rule #{index}: {label:?} is not the label of a client context (a `peer` entry)")]
    SourceLabel { index: usize, label: String },
}

impl ProxySecurity {
    /// A proxy with the contexts of `store`, none of them assigned a role yet.
    pub fn new(store: ContextStore) -> ProxySecurity {
        ProxySecurity::shared(Arc::new(Mutex::new(store)))
    }

    /// Like [`ProxySecurity::new`], with a store the application also holds (e.g. to save the
    /// replay windows at shutdown).
    pub fn shared(store: Arc<Mutex<ContextStore>>) -> ProxySecurity {
        ProxySecurity { store, clients: Vec::new(), upstream: Vec::new() }
    }

    /// The roles from a credentials file: entries with `peer` labels are clients, entries
    /// with `uri` patterns are next hops.
    pub fn from_credentials(store: ContextStore, index: &CredentialIndex) -> ProxySecurity {
        let ids: Vec<ContextId> = store.iter().map(|(id, _, _)| id).collect();
        let mut sec = ProxySecurity::new(store);
        for id in ids {
            if index.label(id).and_then(|l| index.for_peer(l)) == Some(id) {
                sec.clients.push(id);
            }
        }
        for (pattern, id) in index.uri_patterns() {
            sec.upstream.push((pattern.to_string(), id));
        }
        sec
    }

    /// Accepts requests protected with `id` (a client's context).
    pub fn with_client(mut self, id: ContextId) -> ProxySecurity {
        if !self.clients.contains(&id) {
            self.clients.push(id);
        }
        self
    }

    /// Protects requests to URIs matching `pattern` with `id` (a next hop's context).
    pub fn with_upstream(mut self, pattern: impl Into<String>, id: ContextId) -> ProxySecurity {
        self.upstream.push((pattern.into(), id));
        self
    }

    /// The store.
    pub fn store(&self) -> Arc<Mutex<ContextStore>> {
        self.store.clone()
    }

    pub(crate) fn store_ref(&self) -> &Mutex<ContextStore> {
        &self.store
    }

    /// The client contexts.
    pub fn clients(&self) -> &[ContextId] {
        &self.clients
    }

    /// Clean shutdown: saves every replay window (RFC 8613 App. B.1.2), so that the next run
    /// needs no Echo exchange. Requests processed afterwards get Echo challenges.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        let mut store = lock(&self.store);
        let ids: Vec<ContextId> = store.iter().map(|(id, _, _)| id).collect();
        for id in ids {
            store.persist_replay(id)?;
        }
        Ok(())
    }

    /// The context shared with the next hop for a request to `uris` (the forms of one URI):
    /// the longest matching pattern; equally long ones in order.
    pub(crate) fn next_hop(&self, uris: &[String]) -> Option<ContextId> {
        let mut best: Option<(usize, ContextId)> = None;
        for (pattern, id) in &self.upstream {
            let hit = uris.iter().any(|u| hopcore_security::credentials::wildcard_match(pattern, u));
            if hit && best.is_none_or(|(len, _)| pattern.len() > len) {
                best = Some((pattern.len(), *id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// Resolves the labels of the configuration against the client contexts.
    pub(crate) fn resolve(&self, cfg: &ProxyConfig) -> Result<Resolved, SecurityConfigError> {
        let store = lock(&self.store);
        let by_label = |label: &str| self.clients.iter().copied().find(|&id| store.label(id) == label);
        for (i, rule) in cfg.allow.iter().enumerate() {
            if let AllowClient::Label(l) = &rule.client {
                if by_label(l).is_none() {
                    return Err(SecurityConfigError::AllowLabel { index: i + 1, label: l.clone() });
                }
            }
        }
        let mut sources = Vec::with_capacity(cfg.sources.len());
        for (i, rule) in cfg.sources.iter().enumerate() {
            let mut ids = Vec::with_capacity(rule.contexts.len());
            for l in &rule.contexts {
                let id =
                    by_label(l).ok_or_else(|| SecurityConfigError::SourceLabel { index: i + 1, label: l.clone() })?;
                ids.push(id);
            }
            ids.sort_unstable();
            sources.push(ids);
        }
        // Built once, so that a request costs a hash lookup and a binary search, however many
        // clients the proxy has.
        let mut clients = self.clients.clone();
        clients.sort_unstable();
        let mut kids: KidIndex = HashMap::new();
        for &id in &clients {
            if let Some(c) = store.get(id) {
                kids.entry(c.recipient_id().to_vec()).or_default().push((c.id_context().map(<[u8]>::to_vec), id));
            }
        }
        Ok(Resolved { sources, clients, kids })
    }
}

/// The `[[source]]` rules with their labels resolved, in configuration order; every list
/// sorted (membership by binary search).
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolved {
    sources: Vec<Vec<ContextId>>,
    /// All client contexts.
    clients: Vec<ContextId>,
    /// Client contexts by Recipient ID (the 'kid' of their requests), with their ID Context.
    kids: KidIndex,
}

/// Client contexts by Recipient ID, each with its ID Context.
type KidIndex = HashMap<Vec<u8>, Vec<(Option<Vec<u8>>, ContextId)>>;

impl Resolved {
    /// CP §2.4.1: the contexts a request from `peer` may be verified with.
    pub(crate) fn contexts_for<'a>(&'a self, cfg: &ProxyConfig, peer: IpAddr) -> &'a [ContextId] {
        let best = cfg
            .sources
            .iter()
            .enumerate()
            .filter(|(_, r)| r.from.contains(peer))
            .min_by_key(|(_, r)| std::cmp::Reverse(r.from.len))
            .map(|(i, _)| i);
        match best.and_then(|i| self.sources.get(i)) {
            Some(ids) => ids,
            None => &self.clients,
        }
    }
}

/// The store as the engine sees it for one request: lookups find only the contexts of the
/// request's source list (CP §2.4.1). The list is searched instead of the whole store, so a
/// context outside it is "not found" by construction: the same 4.01 through the same code
/// path, without first finding (let alone trying) the context.
pub(crate) struct SourceContexts<'a> {
    pub store: &'a mut ContextStore,
    pub allowed: &'a [ContextId],
}

/// The first context of `allowed` (sorted) for `kid` / `kid_context`, with the tie rules of
/// [`ContextStore::lookup_recipient`]: the store's index finds the candidates, membership is a
/// binary search.
fn lookup_in(store: &ContextStore, allowed: &[ContextId], kid: &[u8], kid_context: Option<&[u8]>) -> Option<ContextId> {
    store.lookup_recipient_all(kid, kid_context).into_iter().find(|id| allowed.binary_search(id).is_ok())
}

impl SecurityContexts for SourceContexts<'_> {
    type Id = ContextId;

    fn lookup_recipient(&self, kid: &[u8], kid_context: Option<&[u8]>) -> Option<ContextId> {
        lookup_in(self.store, self.allowed, kid, kid_context)
    }
    fn context_mut(&mut self, id: ContextId) -> Option<&mut SecurityContext> {
        self.store.get_mut(id)
    }
    fn prepare_send(&mut self, id: ContextId) -> Result<&mut SecurityContext, String> {
        ContextStore::prepare_send(self.store, id).map_err(|e| e.to_string())
    }
    fn label(&self, id: ContextId) -> String {
        SecurityContexts::label(&*self.store, id)
    }
    fn issue_echo(&mut self, id: ContextId) -> Option<Vec<u8>> {
        SecurityContexts::issue_echo(self.store, id)
    }
    fn verify_echo(&mut self, id: ContextId, echo: &[u8]) -> bool {
        SecurityContexts::verify_echo(self.store, id, echo)
    }
}

/// The proxy's answers to the engine's questions (CP §2.4 Steps 2-4).
pub(crate) struct ProxyPolicy<'a> {
    pub cfg: &'a ProxyConfig,
    pub local: &'a Local,
    /// The client contexts, indexed by kid.
    pub resolved: &'a Resolved,
    /// The contexts this request's source may use (sorted).
    pub allowed: &'a [ContextId],
}

impl ProxyPolicy<'_> {
    /// Whether the request carries an OSCORE option that names one of the contexts this
    /// source may use: a layer addressed to this proxy.
    fn layer_for_us(&self, req: &Message) -> bool {
        let Some(value) = req.options.get(num::OSCORE) else { return false };
        let Ok(opt) = hopcore_oscore::OscoreOption::parse(value) else { return false };
        let Some(kid) = opt.kid else { return false };
        self.resolved.kids.get(kid).is_some_and(|entries| {
            entries.iter().any(|(idc, id)| {
                opt.kid_context.is_none_or(|kc| idc.as_deref() == Some(kc)) && self.allowed.binary_search(id).is_ok()
            })
        })
    }
}

impl HopPolicy for ProxyPolicy<'_> {
    /// CP §2.4 Step 2: the proxy takes every forward-proxy request; with `forward = false`
    /// [`decide()`] answers 5.05 after the check whether the URI names the proxy itself
    /// (RFC 7252 §5.7.2), exactly as for plain requests.
    fn forward_proxy(&self) -> bool {
        true
    }

    /// CP §2.4 Step 3: a configured route. While the request still carries a layer addressed
    /// to this proxy, its request URI is not known yet (Uri-Path travels inside that layer, CP
    /// §2.2): the layer is removed first (Step 5 → 6) and the route decided on the result,
    /// as in CP's "With Reverse-Proxy; OSCORE: C-P, P-S" example.
    fn reverse_route(&self, req: &Message) -> bool {
        !self.layer_for_us(req) && decide::match_route(req, self.cfg).is_some()
    }

    /// CP §2.4 Step 4: a Proxy-Scheme request for the proxy's own authority is local. A
    /// Proxy-Uri naming the proxy is left to [`decide()`], which keeps its path (RFC 7252
    /// §5.7.2); the engine would drop it with the option.
    fn is_own_authority(&self, req: &Message) -> bool {
        !req.options.contains(num::PROXY_URI) && decide::names_self(req, self.local)
    }

    /// CP §2.4 Step 4, seed 002 REQ1/REQ2: the `[[allow]]` rules.
    fn authorize_forward(&self, req: &Message, removed: &[String]) -> bool {
        match decide(req, self.cfg, self.local) {
            Decision::Forward(up) | Decision::Reverse { upstream: up, .. } => authorized(self.cfg, removed, &up),
            // Not forwarded: the error or the local answer comes later.
            Decision::Local | Decision::Reject(_) => true,
        }
    }
}

/// The forms of the upstream request URI that patterns are matched against: with the port,
/// and without it when it is the default port (`coap://host/...`).
pub(crate) fn uri_forms(up: &Upstream) -> Vec<String> {
    let mut forms = vec![upstream_uri(&up.target, &up.request.options)];
    if up.target.port == up.target.scheme.default_port() {
        forms.push(uri_without_port(&up.target, &up.request.options));
    }
    forms
}

/// CP §2.4 Step 4: whether the `[[allow]]` rules let a request whose removed layers have the
/// labels `removed` be forwarded as `up`. No rules: yes.
pub(crate) fn authorized(cfg: &ProxyConfig, removed: &[String], up: &Upstream) -> bool {
    if cfg.allow.is_empty() {
        return true;
    }
    let uris = uri_forms(up);
    cfg.allow.iter().any(|r| r.matches(removed, &uris))
}

/// CP §2.2, last paragraph: the first option of a message the proxy protects that it does not
/// recognize (it must know each option's class). Such a request gets 4.02, such a response
/// 5.02.
pub(crate) fn unrecognized(options: &Options, local: &Local) -> Option<u16> {
    options.iter().map(|o| o.number).find(|&n| local.recognizes(n).is_none())
}

/// Why the P-S leg failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum LegError {
    #[error("cannot protect the request for the next hop: {0}")]
    Protect(String),
    /// RFC 8613 §8.4 step 8: the response fails verification.
    #[error("the response of the next hop fails verification: {0}")]
    Verify(String),
    /// The next hop answered without the layer: an RFC 8613 §8.2 error about this leg.
    #[error("the next hop answered unprotected {code}{}", if diagnostic.is_empty() { String::new() } else { format!(": {diagnostic}") })]
    Unprotected { code: Code, diagnostic: String },
    /// CP §2.6: an OSCORE option after the layer was removed, for a request that carried no
    /// end-to-end layer.
    #[error("the response of the next hop carries an extra OSCORE layer (CP §2.6)")]
    ExtraLayer,
}

/// CP §2.3 (the proxy as the source of the P-S layer): protects `req` with the context it
/// shares with the next hop. CP §2.2 with X = the next hop: a relayed OSCORE option of an
/// end-to-end layer becomes Class E, Uri-Host/Uri-Port stay outer without Proxy-Scheme (CP §2.2
/// Step 7), every other Class U/I option is encrypted. Towards an upstream proxy
/// (`upstream_proxy`, the P1-P2 layer) the request carries Proxy-Scheme, so Uri-Host and
/// Uri-Port are encrypted too: that proxy consumes them after removing the layer.
pub(crate) fn protect_upstream(
    req: &Message,
    store: &mut ContextStore,
    id: ContextId,
) -> Result<(Message, ClientStack<ContextId>), LegError> {
    let roles = vec![(num::OSCORE, hopcore_layers::OptionRole::relayed(vec![1]))];
    let has_proxy_scheme = req.options.contains(num::PROXY_SCHEME);
    let classes = LayerTarget { x: 1, roles, last: 1, has_proxy_scheme, registry: Registry::standard() };
    let label = SecurityContexts::label(&*store, id);
    let ctx = ContextStore::prepare_send(store, id).map_err(|e| LegError::Protect(e.to_string()))?;
    // RFC 8613 §5.1: the ID Context, if any, travels as 'kid context'.
    let layer = Layer::RFC8613.with_classes(&classes).with_kid_context(true);
    let (wire, binding) = protect_request(req, ctx, &layer).map_err(|e| LegError::Protect(e.to_string()))?;
    let mut stack = ClientStack::default();
    stack.layers.push(AppliedLayer { context: id, label, binding });
    Ok((wire, stack))
}

/// CP §2.6: removes the P-S layer of `stack` from a response with the nesting engine.
/// `end_to_end`: the request carried an end-to-end layer, whose OSCORE option the response
/// may carry inside.
pub(crate) fn unprotect_upstream(
    resp: &Message,
    store: &mut ContextStore,
    stack: &mut ClientStack<ContextId>,
    end_to_end: bool,
) -> Result<Message, LegError> {
    stack.inner_oscore = end_to_end;
    unprotect_response_layers(resp, store, stack).map_err(|e| match e {
        LayerError::Unprotected { code, diagnostic, .. } => LegError::Unprotected { code, diagnostic },
        LayerError::ExtraLayer(_) => LegError::ExtraLayer,
        e => LegError::Verify(e.to_string()),
    })
}

/// RFC 8613 App. B.1.2 on the P-S leg: the next hop lost its replay state for the proxy's
/// context and challenges freshness: a verified 4.01 with an Echo option and no inner layer.
pub(crate) fn echo_challenge(resp: &Message) -> Option<&[u8]> {
    (resp.code == Code::UNAUTHORIZED && !resp.options.contains(num::OSCORE))
        .then(|| resp.options.get(num::ECHO))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hopcore_oscore::ContextInput;
    use hopcore_security::ContextMeta;

    fn ctx(sid: &[u8], rid: &[u8], idc: Option<&[u8]>) -> SecurityContext {
        let mut input = ContextInput::new(&[3u8; 16], sid, rid);
        if let Some(c) = idc {
            input = input.id_context(c);
        }
        SecurityContext::derive(&input).unwrap()
    }

    /// CP §2.4.1: a context outside the source's list is not found, like an unknown one.
    #[test]
    fn source_lists_filter_lookups() {
        let mut store = ContextStore::volatile();
        let a = store.add(ctx(b"", b"\x01", None), ContextMeta::new(":a")).unwrap();
        let b = store.add(ctx(b"", b"\x02", None), ContextMeta::new(":b")).unwrap();
        let d = store.add(ctx(b"", b"\x01", Some(b"\x37")), ContextMeta::new(":d")).unwrap();
        let all = [a, b, d];
        let view = SourceContexts { store: &mut store, allowed: &all };
        assert_eq!(view.lookup_recipient(b"\x01", None), Some(a), "exact match first");
        assert_eq!(view.lookup_recipient(b"\x01", Some(b"\x37")), Some(d));
        assert_eq!(view.lookup_recipient(b"\x02", None), Some(b));
        let only_b = [b];
        let view = SourceContexts { store: &mut store, allowed: &only_b };
        assert_eq!(view.lookup_recipient(b"\x01", None), None);
        assert_eq!(view.lookup_recipient(b"\x02", None), Some(b));
        let only_d = [d];
        let view = SourceContexts { store: &mut store, allowed: &only_d };
        assert_eq!(view.lookup_recipient(b"\x01", None), Some(d), "kid context left out (RFC 8613 §5.1)");
        assert_eq!(view.lookup_recipient(b"\x03", None), None);
    }

    #[test]
    fn uri_forms_with_and_without_default_port() {
        let cfg = ProxyConfig::default();
        let local = Local::new("127.0.0.1:5690".parse().unwrap(), &cfg);
        let req = Message::request(Code::GET).with_option(num::PROXY_URI, b"coap://127.0.0.1/a?b");
        let Decision::Forward(up) = decide(&req, &cfg, &local) else { panic!("forward") };
        assert_eq!(uri_forms(&up), vec!["coap://127.0.0.1:5683/a?b", "coap://127.0.0.1/a?b"]);
        let req = Message::request(Code::GET).with_option(num::PROXY_URI, b"coap://[::1]:61616");
        let Decision::Forward(up) = decide(&req, &cfg, &local) else { panic!("forward") };
        assert_eq!(uri_forms(&up), vec!["coap://[::1]:61616/"]);
    }
}
