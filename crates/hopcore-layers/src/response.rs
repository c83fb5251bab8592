//! Protecting a response with the layers removed from its request, in reverse order (CP §2.5):
//! the server side of the nesting engine.

use hopcore_codec::Message;
use hopcore_oscore::{protect_response, ClassPolicy, Layer, NestedClasses, ProtectError, Rfc8613Classes};

use crate::contexts::SecurityContexts;
use crate::stack::ServerStack;

#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("no security context for layer {0}")]
    NoContext(usize),
    #[error("security context unusable for sending: {0}")]
    Store(String),
    #[error("protecting the response with layer {index} failed: {source}")]
    Protect { index: usize, source: ProtectError },
}

/// Protects `response` with the layers of `stack` (removed outermost first), innermost first.
///
/// The first response to a request may reuse each layer's request nonce; later ones (e.g.
/// notifications) carry the hop's own Partial IV (CP §2.5.1, RFC 8613 §8.3.1).
pub fn protect_response_layers<C: SecurityContexts>(
    response: &Message,
    contexts: &mut C,
    stack: &mut ServerStack<C::Id>,
) -> Result<Message, ResponseError> {
    static INNER: Rfc8613Classes = Rfc8613Classes;
    static OUTER: NestedClasses = NestedClasses(Rfc8613Classes);
    let mut msg = response.clone();
    let n = stack.layers.len();
    for (applied, removed) in stack.layers.iter_mut().rev().enumerate() {
        let index = n - 1 - applied;
        // The OSCORE option of a layer inside (applied here, or by the origin behind a
        // proxy) is Class E of this layer (CP §2.2); a message without one is plain RFC 8613.
        let classes: &dyn ClassPolicy = if msg.options.contains(hopcore_codec::num::OSCORE) { &OUTER } else { &INNER };
        let layer = Layer::RFC8613.with_classes(classes);
        // CP §2.5.1: own Partial IV unless this is the first response to the request.
        let own_piv = removed.binding.request_nonce_used();
        let ctx = contexts.prepare_send(removed.context).map_err(ResponseError::Store)?;
        msg = protect_response(&msg, ctx, &mut removed.binding, own_piv, &layer)
            .map_err(|source| ResponseError::Protect { index, source })?;
    }
    Ok(msg)
}
