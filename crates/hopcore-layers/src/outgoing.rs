//! Applying OSCORE layers to an outgoing request (CP §2.3) and removing them from its
//! responses (CP §2.6): the client side of the nesting engine.

use hopcore_codec::{num, Message};
use hopcore_oscore::{protect_request, unprotect_response, ClassPolicy, Layer, NestedClasses, Rfc8613Classes};
use thiserror::Error;

use crate::contexts::SecurityContexts;
use crate::stack::{AppliedLayer, ClientStack};

#[derive(Debug, Error)]
pub enum LayerError {
    #[error("no security context for layer {index}")]
    NoContext { index: usize },
    #[error("security context unusable for sending: {0}")]
    Store(String),
    #[error("protecting layer {index} failed: {source}")]
    Protect { index: usize, source: hopcore_oscore::ProtectError },
    #[error("the response fails verification at layer {index} ({label}): {source}")]
    Verify { index: usize, label: String, source: hopcore_oscore::UnprotectError },
    #[error("the response carries an OSCORE option after all {0} layers were removed (CP §2.6)")]
    ExtraLayer(usize),
    #[error("the response lacks the OSCORE layer of {label}; it was answered unprotected with {code}")]
    Unprotected {
        label: String,
        code: hopcore_codec::Code,
        /// The diagnostic payload of that answer (RFC 7252 §5.5.2).
        diagnostic: String,
    },
    #[error("{layers} layers exceed the limit of {limit} (CP §2.1)")]
    TooManyLayers { layers: usize, limit: usize },
}

/// The class policy of layer `index` (0 = innermost). The innermost layer follows RFC 8613
/// Figure 5; outer layers protect the inner OSCORE option as Class E (CP §2.2).
fn classes_for(index: usize) -> &'static dyn ClassPolicy {
    static INNER: Rfc8613Classes = Rfc8613Classes;
    static OUTER: NestedClasses = NestedClasses(Rfc8613Classes);
    if index == 0 {
        &INNER
    } else {
        &OUTER
    }
}

/// Applies one layer per context in `route`, in order: the end-to-end context first, then
/// one per intermediary from the one closest to the server back to the one closest to the
/// client (CP §2.3). An empty route returns the request unchanged.
pub fn protect_request_layers<C: SecurityContexts>(
    request: &Message,
    contexts: &mut C,
    route: &[C::Id],
    max_layers: usize,
) -> Result<(Message, ClientStack<C::Id>), LayerError> {
    // CP §2.1: an outgoing request beyond the limit is not sent.
    if route.len() > max_layers {
        return Err(LayerError::TooManyLayers { layers: route.len(), limit: max_layers });
    }
    let mut msg = request.clone();
    let mut stack = ClientStack::default();
    for (index, &id) in route.iter().enumerate() {
        let label = contexts.label(id);
        let ctx = contexts.prepare_send(id).map_err(LayerError::Store)?;
        // RFC 8613 §5.1: a context with an ID Context sends it as 'kid context', so that the
        // recipient can tell contexts with the same Sender ID apart (e.g. the plugtest's c/d).
        let layer = Layer::RFC8613.with_classes(classes_for(index)).with_kid_context(true);
        let (protected, binding) =
            protect_request(&msg, ctx, &layer).map_err(|source| LayerError::Protect { index, source })?;
        stack.layers.push(AppliedLayer { context: id, label, binding });
        msg = protected;
    }
    Ok((msg, stack))
}

/// Removes the layers of `stack` from a response, outermost first (CP §2.6). A response that
/// still carries an OSCORE option afterwards is dropped; one that lacks a layer (an
/// unprotected error from a hop) is reported as such.
pub fn unprotect_response_layers<C: SecurityContexts>(
    response: &Message,
    contexts: &mut C,
    stack: &mut ClientStack<C::Id>,
) -> Result<Message, LayerError> {
    let mut msg = response.clone();
    for index in (0..stack.layers.len()).rev() {
        let applied = &mut stack.layers[index];
        if !msg.options.contains(num::OSCORE) {
            // RFC 8613 §8.2 errors are sent unprotected: surface the code, not a decryption
            // failure.
            let diagnostic = String::from_utf8_lossy(&msg.payload).chars().take(200).collect();
            return Err(LayerError::Unprotected { label: applied.label.clone(), code: msg.code, diagnostic });
        }
        let label = applied.label.clone();
        let ctx = contexts.context_mut(applied.context).ok_or(LayerError::NoContext { index })?;
        let layer = Layer::RFC8613.with_classes(classes_for(index));
        msg = unprotect_response(&msg, ctx, &mut applied.binding, &layer).map_err(|source| LayerError::Verify {
            index,
            label,
            source,
        })?;
    }
    // CP §2.6: an OSCORE option left after removing every layer we added is an error.
    if !stack.is_empty() && msg.options.contains(num::OSCORE) {
        return Err(LayerError::ExtraLayer(stack.len()));
    }
    Ok(msg)
}
