//! A client's route through forward proxies, and the layered request it sends (CP §2.3,
//! onion forwarding of draft-tiloca-core-oscore-capable-proxies-02 Appendix A).
//!
//! The client knows the proxies in path order and which of them it shares a context with.
//! It builds the request from the origin outwards:
//!
//! 1. the request for the origin; with proxies, the last proxy's forward-proxy options
//!    (Proxy-Uri, or Proxy-Scheme + Uri-Host + Uri-Port) address the origin;
//! 2. the end-to-end layer, if the client shares a context with the origin (CP §2.3: first);
//! 3. for each proxy from the one closest to the origin back to the nearest: the options that
//!    tell it the next hop (for every proxy but the last), then its layer, if the client shares a
//!    context with it. Each layer's option classes follow CP §2.2 ([`LayerTarget`]), so a
//!    proxy's next-hop options travel inside that proxy's layer: **each proxy learns only the
//!    next hop**.
//!
//! Options of two hops cannot share one message level (Proxy-Scheme and Uri-Host do not
//! repeat): a proxy's next-hop options must sit inside its own layer, apart from the last
//! proxy's options for the origin. So in a chain every proxy needs a context; a single
//! proxy works without one (its options for the origin are the only ones).

use hopcore_codec::{num, CoapUri, Message, Registry};
use hopcore_oscore::{protect_request, Layer};

use crate::classes::{Hop, LayerTarget, OptionRole};
use crate::contexts::SecurityContexts;
use crate::outgoing::LayerError;
use crate::stack::{AppliedLayer, ClientStack};

/// One forward proxy of a route.
#[derive(Debug, Clone)]
pub struct RouteProxy<Id> {
    /// How the previous hop reaches this proxy (scheme, host, port).
    pub uri: CoapUri,
    /// The context the client shares with this proxy, if any.
    pub context: Option<Id>,
}

/// A client's route: proxies in path order (nearest first) and the origin's context.
#[derive(Debug, Clone)]
pub struct Route<Id> {
    pub proxies: Vec<RouteProxy<Id>>,
    /// The end-to-end context shared with the origin server, if any.
    pub origin_context: Option<Id>,
    /// Address the last proxy with Proxy-Uri instead of Proxy-Scheme + Uri-Host + Uri-Port.
    pub proxy_uri_form: bool,
}

impl<Id> Route<Id> {
    pub fn direct(origin_context: Option<Id>) -> Route<Id> {
        Route { proxies: Vec::new(), origin_context, proxy_uri_form: false }
    }
    /// The number of OSCORE layers the request will carry.
    pub fn layers(&self) -> usize {
        self.proxies.iter().filter(|p| p.context.is_some()).count() + usize::from(self.origin_context.is_some())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(
        "proxy #{index} ({uri}) shares no OSCORE context with the client: in a chain, every proxy needs one, \
         so that each hop's forwarding options travel in its own layer (onion forwarding)"
    )]
    ProxyWithoutContext { index: usize, uri: String },
    #[error(transparent)]
    Layer(#[from] LayerError),
}

/// The forward-proxy options that address `next` (RFC 7252 §5.10.2, §6.4).
fn address(options: &mut hopcore_codec::Options, next: &CoapUri) {
    options.set(num::PROXY_SCHEME, next.scheme.as_bytes());
    options.set(num::URI_HOST, next.host.as_bytes());
    options.set_uint(num::URI_PORT, u32::from(next.port_or_default()));
}

/// Builds the request `request` (method, payload, and any options except the URI ones) for
/// `target` along `route`, applying the client's layers. Returns the message for the first
/// hop and the stack to verify responses with ([`crate::unprotect_response_layers`]).
pub fn protect_route_request<C: SecurityContexts>(
    request: &Message,
    target: &CoapUri,
    route: &Route<C::Id>,
    contexts: &mut C,
    max_layers: usize,
) -> Result<(Message, ClientStack<C::Id>), RouteError> {
    let n = route.proxies.len();
    // In a chain every proxy needs a layer for its forwarding options (module docs).
    if let Some((index, p)) = route.proxies.iter().enumerate().filter(|_| n > 1).find(|(_, p)| p.context.is_none()) {
        return Err(RouteError::ProxyWithoutContext { index: index + 1, uri: p.uri.compose() });
    }
    // CP §2.1: an outgoing request beyond the limit is not sent.
    if route.layers() > max_layers {
        return Err(LayerError::TooManyLayers { layers: route.layers(), limit: max_layers }.into());
    }

    // 1. The request for the origin.
    let mut msg = request.clone();
    for n in [num::URI_HOST, num::URI_PORT, num::URI_PATH, num::URI_QUERY, num::PROXY_URI, num::PROXY_SCHEME] {
        msg.options.remove(n);
    }
    if n == 0 {
        target.write_options(&mut msg.options);
    } else if route.proxy_uri_form {
        msg.options.set(num::PROXY_URI, target.compose().as_bytes());
    } else {
        target.write_proxy_scheme_options(&mut msg.options);
    }
    // CP §2.2 positions ("next hop", "immediately next consumer") are counted, for each
    // layer, from the first hop that sees that layer as the outermost one: with onion
    // forwarding a proxy that is further away only ever sees the message after the nearer
    // proxies removed their layers. Counting over the whole path instead would make Step 4
    // encrypt the last proxy's options into the end-to-end layer, where it cannot read them.
    let proxy_options = [num::PROXY_URI, num::PROXY_SCHEME, num::URI_HOST, num::URI_PORT];
    let mut stack = ClientStack::default();
    let registry = Registry::standard();

    // 2. The end-to-end layer (CP §2.3: applied first). Its first reader is the last proxy
    // (hop 1), which consumes the proxy options; the origin is X (hop 2). Without proxies
    // the origin is hop 1 and consumes Uri-Host/Uri-Port itself.
    if let Some(id) = route.origin_context {
        let (x, option_consumer): (Hop, Hop) = if n == 0 { (1, 1) } else { (2, 1) };
        let roles = proxy_options.iter().map(|&o| (o, OptionRole::added(vec![option_consumer]))).collect();
        let target_classes =
            LayerTarget { x, roles, last: x, has_proxy_scheme: msg.options.contains(num::PROXY_SCHEME), registry };
        apply(&mut msg, &mut stack, contexts, id, &target_classes, 0)?;
    }

    // 3. The proxies, from the one closest to the origin back to the nearest. For proxy k's
    // layer, proxy k is X and the first reader (hop 1): it consumes the proxy options now in
    // the message (CP §2.2 → Class E); the OSCORE option of the layer inside is consumed by
    // the next hop (hop 2; Step 4 → Class E as well).
    for k in (1..=n).rev() {
        let proxy = &route.proxies[k - 1];
        if k < n {
            // The next hop of proxy k is proxy k + 1 (onion forwarding).
            address(&mut msg.options, &route.proxies[k].uri);
        }
        let Some(id) = proxy.context else { continue };
        let mut roles: Vec<(u16, OptionRole)> =
            proxy_options.iter().map(|&o| (o, OptionRole::added(vec![1]))).collect();
        roles.push((num::OSCORE, OptionRole::added(vec![2])));
        let target_classes =
            LayerTarget { x: 1, roles, last: 2, has_proxy_scheme: msg.options.contains(num::PROXY_SCHEME), registry };
        let index = stack.len();
        apply(&mut msg, &mut stack, contexts, id, &target_classes, index)?;
    }
    Ok((msg, stack))
}

fn apply<C: SecurityContexts>(
    msg: &mut Message,
    stack: &mut ClientStack<C::Id>,
    contexts: &mut C,
    id: C::Id,
    classes: &LayerTarget<'_>,
    index: usize,
) -> Result<(), LayerError> {
    let label = contexts.label(id);
    let ctx = contexts.prepare_send(id).map_err(LayerError::Store)?;
    // RFC 8613 §5.1: the ID Context, if any, travels as 'kid context'.
    let layer = Layer::RFC8613.with_classes(classes).with_kid_context(true);
    let (protected, binding) =
        protect_request(msg, ctx, &layer).map_err(|source| LayerError::Protect { index, source })?;
    stack.layers.push(AppliedLayer { context: id, label, binding });
    *msg = protected;
    Ok(())
}
