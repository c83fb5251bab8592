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

/// The class policy for wrapping `msg`: a message that already carries an OSCORE option (an
/// inner layer, applied here or by the original client behind a proxy) protects it as Class
/// E (CP §2.2); otherwise RFC 8613 Figure 5.
fn classes_for(msg: &Message) -> &'static dyn ClassPolicy {
    static PLAIN: Rfc8613Classes = Rfc8613Classes;
    static NESTED: NestedClasses = NestedClasses(Rfc8613Classes);
    if msg.options.contains(num::OSCORE) {
        &NESTED
    } else {
        &PLAIN
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
    // A proxy adding its layer on the next leg wraps the client's end-to-end layer: the
    // responses then keep that inner layer for the client (CP §2.6 concerns our own layers).
    let mut stack = ClientStack { inner_oscore: request.options.contains(num::OSCORE), ..ClientStack::default() };
    for (index, &id) in route.iter().enumerate() {
        let label = contexts.label(id);
        let classes = classes_for(&msg);
        let ctx = contexts.prepare_send(id).map_err(LayerError::Store)?;
        // RFC 8613 §5.1: a context with an ID Context sends it as 'kid context', so that the
        // recipient can tell contexts with the same Sender ID apart (e.g. the plugtest's c/d).
        let layer = Layer::RFC8613.with_classes(classes).with_kid_context(true);
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
        // Under our innermost layer there is only an OSCORE option if the request carried one
        // of someone else's (a proxy's next leg); between our layers there always is one.
        static PLAIN: Rfc8613Classes = Rfc8613Classes;
        static NESTED: NestedClasses = NestedClasses(Rfc8613Classes);
        let classes: &dyn ClassPolicy = if index > 0 || stack.inner_oscore { &NESTED } else { &PLAIN };
        let layer = Layer::RFC8613.with_classes(classes);
        msg = unprotect_response(&msg, ctx, &mut applied.binding, &layer).map_err(|source| LayerError::Verify {
            index,
            label,
            source,
        })?;
    }
    // CP §2.6: an OSCORE option left after removing every layer we added is an error, unless
    // the request carried an inner layer that is not ours.
    if !stack.is_empty() && !stack.inner_oscore && msg.options.contains(num::OSCORE) {
        return Err(LayerError::ExtraLayer(stack.len()));
    }
    Ok(msg)
}
