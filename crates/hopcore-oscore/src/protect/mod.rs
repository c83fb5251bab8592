//! Message-level OSCORE (RFC 8613 §4-§8): protecting and verifying one layer of a CoAP
//! message, sans-I/O.
//!
//! | side   | request                                  | response                                    |
//! |--------|------------------------------------------|---------------------------------------------|
//! | client | [`protect_request`] → [`RequestBinding`] | [`unprotect_response`] with that binding    |
//! | server | [`unprotect_request`] → [`RequestBinding`] | [`protect_response`] with that binding    |
//!
//! ```
//! use std::collections::HashMap;
//! use hopcore_codec::{Code, Message};
//! use hopcore_oscore::{
//!     error_response, protect_request, protect_response, unprotect_request, unprotect_response,
//!     ContextInput, Layer, SecurityContext,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = [7u8; 16];
//! let mut client = SecurityContext::derive(&ContextInput::new(&secret, &[], &[0x01]))?;
//! // The server finds contexts by the client's Sender ID (its Recipient ID, the 'kid').
//! let mut contexts: HashMap<Vec<u8>, SecurityContext> = HashMap::new();
//! contexts.insert(vec![], SecurityContext::derive(&ContextInput::new(&secret, &[0x01], &[]))?);
//!
//! // Client: protect, keep the binding with the Token.
//! let mut request = Message::request(Code::GET);
//! request.set_path("/temperature");
//! let (oscore, mut client_binding) = protect_request(&request, &mut client, &Layer::RFC8613)?;
//! assert_eq!(oscore.code, Code::POST);
//!
//! // Server: verify; on error answer `error_response(&err)` unprotected.
//! let (received, mut server_binding, who) =
//!     match unprotect_request(&oscore, |kid, _| contexts.get_mut(kid), &Layer::RFC8613) {
//!         Ok(ok) => ok,
//!         Err(err) => panic!("would answer {:?}", error_response(&err).code),
//!     };
//! assert_eq!(received, request);
//! assert_eq!(who.kid(), &[] as &[u8]);
//!
//! // Server: respond (reusing the request nonce), client: verify.
//! let response = Message::response(Code::CONTENT).with_payload(*b"21.5 C");
//! let server = contexts.get_mut(&[][..]).ok_or("no context")?;
//! let protected = protect_response(&response, server, &mut server_binding, false, &Layer::RFC8613)?;
//! assert_eq!(protected.code, Code::CHANGED);
//! let verified = unprotect_response(&protected, &client, &mut client_binding, &Layer::RFC8613)?;
//! assert_eq!(verified, response);
//! # Ok(())
//! # }
//! ```
//!
//! Each call applies or removes exactly one OSCORE layer. A nesting engine (CP =
//! draft-ietf-core-oscore-capable-proxies) calls them once per layer, with a [`ClassPolicy`]
//! in [`Layer`] that implements its CP §2.2 rule; with [`NestedClasses`] (or any policy that
//! returns Class E for the OSCORE option) a message that already carries an OSCORE option is
//! protected again, the inner OSCORE option being encrypted (CP §2.2), and unprotecting gives
//! it back.
//!
//! What the layer does, beyond the plain split into Inner and Outer options:
//!
//! - **Proxy-Uri** (requests, when the policy makes it Class U or I): decomposed (RFC 8613
//!   §4.1.3.3, RFC 7252 §6.4); the Outer Proxy-Uri is the composition of scheme, host and port
//!   (`coap://example.com` as in the RFC's example), Uri-Path and Uri-Query go Inner. The
//!   receiver gets the request back in the equivalent decomposed form: Proxy-Scheme, Uri-Host,
//!   Uri-Port (always, the scheme's default if the URI had none, since RFC 7252 §6.5 would
//!   otherwise take the proxy's port), Uri-Path, Uri-Query; never a Proxy-Uri together with
//!   Uri-Path (RFC 7252 §5.10.2 forbids that combination).
//! - **Observe** (§4.1.3.5): Inner and Outer. In requests both carry the original value; in
//!   responses (notifications) the Inner value is empty and the Outer one the original value.
//!   The Outer code is FETCH for requests and 2.05 for responses whenever the OSCORE message
//!   carries an Outer Observe, POST / 2.04 otherwise (§4.2). A verified notification with a
//!   Partial IV comes back with Observe = the three least significant bytes of the Partial IV
//!   (§4.1.3.5.2: the client orders notifications by Partial IV and ignores the Outer Observe);
//!   one without Partial IV comes back with the Inner (empty = 0) value, the oldest.
//! - **Block1/Block2/Size1/Size2, Max-Age, No-Response, Echo, Request-Tag** in the message are
//!   Inner (end-to-end, §4.1.3.4.1). Outer instances (hop-by-hop fragmentation §4.1.3.4.2, an
//!   Outer Max-Age 0, ...) are what the caller passes in [`Layer::outer_options`]; the receiver
//!   discards them as §8.2 / §8.4 step 1 say (Outer Block options must have been reassembled by
//!   the caller before, §8.2.1 / §8.4.1).
//! - Outer options that also exist Inner are discarded on receipt (Inner wins), so an on-path
//!   party cannot add e.g. a second Uri-Host next to an authenticated one.
//!
//! Replay and response state:
//!
//! - Requests (§7.4): the replay window is checked before decryption and updated only after
//!   decryption *and* plaintext decoding succeeded, so a failed [`unprotect_request`] changes
//!   nothing. With an unsynchronized window (App. B.1.2) an authentic request is returned as
//!   [`UnprotectError::FreshnessUnverified`] for the Echo exchange.
//! - Responses (server): the request nonce (response without Partial IV) can be used for one
//!   response per binding; further responses, e.g. all but possibly the first notification
//!   (§8.3.1), must use an own Partial IV, otherwise [`ProtectError::RequestNonceUsed`]. A
//!   request whose freshness is unverified never lends its nonce (App. B.1.2).
//! - Responses (client, §7.4.1, §8.4.2, CP §2.6): per binding, at most one response without
//!   Partial IV is accepted, and only before any response with Partial IV (it is the oldest);
//!   every response with Partial IV must have a Partial IV greater than the highest accepted so
//!   far (the Notification Number), i.e. the stricter option of §7.4.1 ("only processes
//!   notifications that have a greater Partial IV"). The state changes only after successful
//!   verification. An Inner Observe in a response to a request without Observe is rejected
//!   (§4.1.3.5.2). For requests without Observe, the caller should drop the binding after the
//!   first response (§7.4: a single response is accepted); the binding itself still accepts
//!   later responses with increasing Partial IVs, as CP §2.6 needs for proxies that relay
//!   several responses.

mod error;
mod policy;
#[cfg(test)]
mod tests;

pub use error::{ProtectError, UnprotectError, UnverifiedRequest};
pub use policy::{ClassPolicy, Layer, MessageKind, NestedClasses, RegistryClasses, Rfc8613Classes};

use hopcore_codec::view::parse_option_sequence;
use hopcore_codec::{num, CoapUri, Code, EncodeError, Message, OptionWriter, Options, OscoreClass, UriError};

use crate::aad::ExternalAad;
use crate::alg::MAX_ID_LEN;
use crate::context::SecurityContext;
use crate::error::Error;
use crate::nonce::Nonce;
use crate::option::{OscoreOption, PartialIv, MAX_KID_CONTEXT_LEN, MAX_PIV_LEN};

/// Longest OSCORE option value this layer writes: flags, Partial IV, `s`, kid context, kid
/// (RFC 8613 §6.1).
const MAX_OPTION_LEN: usize = 1 + MAX_PIV_LEN + 1 + MAX_KID_CONTEXT_LEN + MAX_ID_LEN;
/// The payload marker (RFC 7252 §3, RFC 8613 §5.3).
const PAYLOAD_MARKER: u8 = 0xff;
/// AAD without Class I options fits in this many bytes (11-byte prefix, bstr head, array with
/// a 7-byte kid and a 5-byte Partial IV: 33 bytes at most).
const AAD_STACK_LEN: usize = 64;

/// Which side created a [`RequestBinding`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    /// Made by [`protect_request`]: verifies responses.
    Client,
    /// Made by [`unprotect_request`]: protects responses.
    Server,
}

/// A kid of at most [`MAX_ID_LEN`] bytes held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Kid {
    bytes: [u8; MAX_ID_LEN],
    len: u8,
}

impl Kid {
    fn new(kid: &[u8]) -> Option<Kid> {
        if kid.len() > MAX_ID_LEN {
            return None;
        }
        let mut bytes = [0u8; MAX_ID_LEN];
        bytes[..kid.len()].copy_from_slice(kid);
        Some(Kid { bytes, len: kid.len() as u8 })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl core::fmt::Debug for Kid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        crate::option::write_hex(f, self.as_bytes())
    }
}

/// What a response needs from its request (RFC 8613 §7.1, §8: "both endpoints MUST keep the
/// association (Token, {Security Context, Partial IV of the request})"): the request's kid and
/// Partial IV (the AAD of every response, §5.4), the request nonce (responses without Partial
/// IV, §5.2), whether the request registered an observation, and the per-request response state
/// described in the [module documentation](self).
///
/// Keep it next to the Token for as long as responses may come (the whole observation for
/// Observe). Deliberately not `Clone`: a copy would let the request nonce be used twice.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestBinding {
    role: Role,
    kid: Kid,
    piv: PartialIv,
    nonce: Nonce,
    observe: bool,
    /// Server: a response was protected with the request nonce (or the request's freshness is
    /// unverified). Client: a response without Partial IV was accepted.
    request_nonce_used: bool,
    /// Client: the highest Partial IV of an accepted response (the Notification Number).
    highest_response_piv: Option<u64>,
}

impl RequestBinding {
    /// The request's 'kid' (`request_kid` in the AAD, RFC 8613 §5.4).
    pub fn request_kid(&self) -> &[u8] {
        self.kid.as_bytes()
    }

    /// The request's Partial IV (`request_piv` in the AAD, RFC 8613 §5.4).
    pub fn request_piv(&self) -> &PartialIv {
        &self.piv
    }

    /// The request's AEAD nonce, reused by a response without Partial IV (RFC 8613 §5.2).
    pub fn request_nonce(&self) -> &Nonce {
        &self.nonce
    }

    /// Whether this binding was made by the client ([`protect_request`]).
    pub fn is_client(&self) -> bool {
        self.role == Role::Client
    }

    /// Whether the request was an Observe registration (Observe 0, RFC 7641 §2).
    pub fn is_observe_registration(&self) -> bool {
        self.observe
    }

    /// Whether the request nonce has been used by a response (server: protected; client:
    /// accepted).
    pub fn request_nonce_used(&self) -> bool {
        self.request_nonce_used
    }

    /// Client: the Notification Number, the highest Partial IV of an accepted response
    /// (RFC 8613 §4.1.3.5.2, §7.4.1).
    pub fn notification_number(&self) -> Option<u64> {
        self.highest_response_piv
    }
}

/// Who sent a verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    kid: Kid,
    id_context: Option<Box<[u8]>>,
    kid_context_sent: bool,
    piv: PartialIv,
}

impl RequestInfo {
    /// The client's Sender ID (the 'kid', equal to the context's Recipient ID).
    pub fn kid(&self) -> &[u8] {
        self.kid.as_bytes()
    }

    /// The ID Context of the security context that verified the request.
    pub fn id_context(&self) -> Option<&[u8]> {
        self.id_context.as_deref()
    }

    /// Whether the request carried it as 'kid context' (RFC 8613 §5.1).
    pub fn kid_context_sent(&self) -> bool {
        self.kid_context_sent
    }

    /// The request's Partial IV (its sequence number: `partial_iv().to_sequence()`).
    pub fn partial_iv(&self) -> &PartialIv {
        &self.piv
    }
}

/// Protects a request (RFC 8613 §8.1) with the Sender Context of `ctx`.
///
/// Returns the OSCORE message (same type, Message ID and Token; Outer code POST, or FETCH with
/// Observe; Outer options; OSCORE option with Partial IV, kid and, if `layer` asks and the
/// context has one, kid context; payload = ciphertext) and the binding for the response.
pub fn protect_request(
    msg: &Message,
    ctx: &mut SecurityContext,
    layer: &Layer<'_>,
) -> Result<(Message, RequestBinding), ProtectError> {
    let kind = MessageKind::Request;
    // RFC 8613 §4.3: signaling messages are protected as requests.
    if !(msg.code.is_request() || msg.code.class() == 7) {
        return Err(ProtectError::WrongCode(msg.code));
    }
    // RFC 8613 §8.1 step 2: the plaintext's options (and the Outer ones).
    let (inner, mut outer) = split_options(msg, kind, layer)?;

    // RFC 8613 §5.1: 'kid context' MAY be present in requests and MUST then be the ID Context.
    // Its length is checked before a sequence number is taken (§6.1: `s` is one byte).
    if let Some(c) = ctx.id_context().filter(|_| layer.include_kid_context) {
        if c.len() > MAX_KID_CONTEXT_LEN {
            return Err(Error::KidContextTooLong { len: c.len() }.into());
        }
    }

    // RFC 8613 §8.1 step 3: Partial IV from the Sender Sequence Number (incremented), nonce
    // from the Sender ID, Common IV and Partial IV (§5.2).
    let piv = ctx.next_partial_iv()?;
    let nonce = ctx.sender_nonce(&piv)?;
    let kid = Kid::new(ctx.sender_id()).ok_or(Error::IdTooLong {
        role: crate::error::IdRole::Sender,
        len: ctx.sender_id().len(),
        max: MAX_ID_LEN,
    })?;

    // RFC 8613 §8.1 step 4-5, §6.1: compressed COSE object, OSCORE option added as Outer.
    let kid_context = if layer.include_kid_context { ctx.id_context() } else { None };
    let mut option = [0u8; MAX_OPTION_LEN];
    let option_len = OscoreOption::request(piv, kid.as_bytes(), kid_context).encode(&mut option)?;
    outer.push(num::OSCORE, option.get(..option_len).unwrap_or_default());

    // RFC 8613 §4.2: Outer code POST; §4.1.3.5: FETCH for messages with the Observe option.
    let code = if outer.contains(num::OBSERVE) { Code::FETCH } else { Code::POST };

    // RFC 8613 §5.4: AAD with request_kid = own Sender ID, request_piv = this Partial IV.
    let class_i = class_i_options(&outer, layer, kind)?;
    let external = ExternalAad::new(ctx.aead(), kid.as_bytes(), piv.as_bytes()).with_class_i_options(&class_i);
    let payload = seal_plaintext(ctx, &nonce, &external, msg.code, &inner, &msg.payload)?;

    let binding = RequestBinding {
        role: Role::Client,
        kid,
        piv,
        nonce,
        observe: is_registration(&msg.options),
        request_nonce_used: false,
        highest_response_piv: None,
    };
    let protected =
        Message { mtype: msg.mtype, code, message_id: msg.message_id, token: msg.token, options: outer, payload };
    Ok((protected, binding))
}

/// Verifies a request (RFC 8613 §8.2) and restores the original.
///
/// `lookup(kid, kid_context)` finds the security context whose Recipient ID is the 'kid'
/// (and whose ID Context is the 'kid context', if one was sent); the returned context is
/// checked for both. Errors carry the §8.2 response code ([`UnprotectError::code`]).
pub fn unprotect_request<'c, F>(
    msg: &Message,
    lookup: F,
    layer: &Layer<'_>,
) -> Result<(Message, RequestBinding, RequestInfo), UnprotectError>
where
    F: FnOnce(&[u8], Option<&[u8]>) -> Option<&'c mut SecurityContext>,
{
    let kind = MessageKind::Request;
    // RFC 8613 §8.2 step 2: decompress the COSE object; failures are 4.02.
    let option = OscoreOption::parse(oscore_option_value(msg)?).map_err(UnprotectError::MalformedOption)?;
    // RFC 8613 §5: 'Partial IV' and 'kid' "SHALL be present in requests".
    let piv = option.partial_iv.ok_or(UnprotectError::MissingPartialIv)?;
    let kid_bytes = option.kid.ok_or(UnprotectError::MissingKid)?;
    // RFC 8613 §2: an OSCORE message without payload is malformed.
    if msg.payload.is_empty() {
        return Err(UnprotectError::EmptyPayload);
    }

    // RFC 8613 §8.2 step 2: retrieve the Recipient Context by 'kid' (and 'kid context', §5:
    // "the server SHALL use a security context with that ID Context").
    let ctx = lookup(kid_bytes, option.kid_context).ok_or(UnprotectError::ContextNotFound)?;
    if ctx.recipient_id() != kid_bytes || option.kid_context.is_some_and(|kc| ctx.id_context() != Some(kc)) {
        return Err(UnprotectError::ContextNotFound);
    }
    let kid = Kid::new(kid_bytes).ok_or(UnprotectError::ContextNotFound)?;

    // RFC 8613 §8.2 step 3: replay check before decrypting (§7.4); no state change yet.
    let seq = piv.to_sequence();
    let synchronized = match ctx.replay_window().check(seq) {
        Ok(()) => true,
        // App. B.1.2: decrypt anyway, the caller challenges freshness with Echo.
        Err(Error::ReplayWindowUnsynchronized) => false,
        Err(e) => return Err(UnprotectError::Replay(e)),
    };

    // RFC 8613 §8.2 steps 4-6: AAD, nonce from the Recipient ID and the Partial IV, decrypt.
    let class_i = class_i_options(&msg.options, layer, kind).map_err(UnprotectError::Encode)?;
    let external = ExternalAad::new(ctx.aead(), kid.as_bytes(), piv.as_bytes()).with_class_i_options(&class_i);
    let nonce = ctx.recipient_nonce(&piv).map_err(UnprotectError::Crypto)?;
    let plaintext = open_payload(ctx, &nonce, &external, &msg.payload)?;

    // RFC 8613 §8.2 step 7: decrypted code, options and payload; OSCORE option removed.
    let restored = restore(msg, plaintext, layer, kind)?;
    let mut binding = RequestBinding {
        role: Role::Server,
        kid,
        piv,
        nonce,
        observe: is_registration(&restored.message.options),
        request_nonce_used: false,
        highest_response_piv: None,
    };
    let info = RequestInfo {
        kid,
        id_context: ctx.id_context().map(Box::from),
        kid_context_sent: option.kid_context.is_some(),
        piv,
    };
    if !synchronized {
        // App. B.1.2: the response "MUST use its Partial IV": a replay of this request could
        // not be detected, and reusing its nonce twice would break the AEAD.
        binding.request_nonce_used = true;
        return Err(UnprotectError::FreshnessUnverified(Box::new(UnverifiedRequest {
            message: restored.message,
            binding,
            info,
        })));
    }
    // RFC 8613 §8.2 step 6: "If decryption succeeds, update the Replay Window" (atomic with
    // the check above under `&mut`, §7.4).
    ctx.replay_window_mut().commit(seq).map_err(UnprotectError::Replay)?;
    Ok((restored.message, binding, info))
}

/// Protects a response (RFC 8613 §8.3) to the request of `binding` (made by
/// [`unprotect_request`]).
///
/// With `use_own_piv` the response carries a Partial IV from the Sender Sequence Number and
/// its nonce is built from it (required for every notification but possibly the first,
/// §4.1.3.5.2, §8.3.1); otherwise it reuses the request nonce and the OSCORE option is empty
/// (§8.3 step 3-4), which is possible once per binding. Outer code 2.04, or 2.05 when the
/// OSCORE message carries an Outer Observe (§4.2, §4.1.3.5).
pub fn protect_response(
    msg: &Message,
    ctx: &mut SecurityContext,
    binding: &mut RequestBinding,
    use_own_piv: bool,
    layer: &Layer<'_>,
) -> Result<Message, ProtectError> {
    let kind = MessageKind::Response;
    if binding.role != Role::Server {
        return Err(ProtectError::WrongBindingRole);
    }
    if !(msg.code.is_response() || msg.code.class() == 7) {
        return Err(ProtectError::WrongCode(msg.code));
    }
    if !use_own_piv && binding.request_nonce_used {
        return Err(ProtectError::RequestNonceUsed);
    }
    let (inner, mut outer) = split_options(msg, kind, layer)?;

    // RFC 8613 §8.3 step 3: either the request nonce, or a new Partial IV with the nonce from
    // the own Sender ID (§5.2).
    let (nonce, piv) = if use_own_piv {
        let piv = ctx.next_partial_iv()?;
        (ctx.sender_nonce(&piv)?, Some(piv))
    } else {
        (binding.nonce, None)
    };
    // RFC 8613 §8.3 step 4: the new Partial IV "MUST be included"; with the request nonce it
    // "MUST NOT be included" (empty option value, §2).
    let mut option = [0u8; MAX_OPTION_LEN];
    let option_len = OscoreOption { partial_iv: piv, ..OscoreOption::default() }.encode(&mut option)?;
    outer.push(num::OSCORE, option.get(..option_len).unwrap_or_default());

    // RFC 8613 §4.2: Outer code 2.04; §4.1.3.5: 2.05 for messages with the Observe option.
    let code = if outer.contains(num::OBSERVE) { Code::CONTENT } else { Code::CHANGED };

    // RFC 8613 §5.4: request_kid and request_piv come from the request, also in responses.
    let class_i = class_i_options(&outer, layer, kind)?;
    let external =
        ExternalAad::new(ctx.aead(), binding.kid.as_bytes(), binding.piv.as_bytes()).with_class_i_options(&class_i);
    let payload = seal_plaintext(ctx, &nonce, &external, msg.code, &inner, &msg.payload)?;
    if piv.is_none() {
        binding.request_nonce_used = true;
    }
    Ok(Message { mtype: msg.mtype, code, message_id: msg.message_id, token: msg.token, options: outer, payload })
}

/// Verifies a response (RFC 8613 §8.4) to the request of `binding` (made by
/// [`protect_request`]) and restores the original. Enforces the response ordering rules of
/// the [module documentation](self) (§7.4.1, §8.4.2) and updates them only on success.
pub fn unprotect_response(
    msg: &Message,
    ctx: &SecurityContext,
    binding: &mut RequestBinding,
    layer: &Layer<'_>,
) -> Result<Message, UnprotectError> {
    let kind = MessageKind::Response;
    if binding.role != Role::Client {
        return Err(UnprotectError::WrongBindingRole);
    }
    // RFC 8613 §8.4 step 2: decompress; failure → stop (step 8). A 'kid' or 'kid context' in
    // a response (§5: "will not typically be present") is not used: the context is the one of
    // the request, and the nonce uses its Recipient ID (§8.4 step 4).
    let option = OscoreOption::parse(oscore_option_value(msg)?).map_err(UnprotectError::MalformedOption)?;
    if msg.payload.is_empty() {
        return Err(UnprotectError::EmptyPayload);
    }
    // RFC 8613 §8.4 step 4 and §7.4.1, checked before decrypting.
    let nonce = match option.partial_iv {
        Some(piv) => {
            let seq = piv.to_sequence();
            // §7.4.1: "The client MUST stop processing notifications with a Partial IV that
            // has been previously received"; we accept only greater ones.
            if let Some(highest) = binding.highest_response_piv.filter(|&h| seq <= h) {
                return Err(UnprotectError::ResponseReplay { seq, highest });
            }
            // §8.4 step 4: nonce from the Recipient ID and the response's Partial IV.
            ctx.recipient_nonce(&piv).map_err(UnprotectError::Crypto)?
        }
        None => {
            // §7.4.1: "at most one Observe notification without Partial IV, and treat it as
            // the oldest"; §8.4.2: not if "the AEAD nonce from the request was already used".
            if binding.request_nonce_used || binding.highest_response_piv.is_some() {
                return Err(UnprotectError::ResponseNonceReused);
            }
            // §8.4 step 4: "the AEAD nonce from the request is used".
            binding.nonce
        }
    };

    // RFC 8613 §8.4 steps 3 and 5.
    let class_i = class_i_options(&msg.options, layer, kind).map_err(UnprotectError::Encode)?;
    let external =
        ExternalAad::new(ctx.aead(), binding.kid.as_bytes(), binding.piv.as_bytes()).with_class_i_options(&class_i);
    let plaintext = open_payload(ctx, &nonce, &external, &msg.payload)?;

    // RFC 8613 §8.4 step 6.
    let mut restored = restore(msg, plaintext, layer, kind)?;
    if restored.inner_observe {
        // RFC 8613 §4.1.3.5.2: "If the client receives a response to a non-Observe request
        // with an Inner Observe option, then it stops processing the message".
        if !binding.observe {
            return Err(UnprotectError::UnexpectedObserve);
        }
        // RFC 8613 §4.1.3.5.2: the client "MAY set the Observe option value to the three least
        // significant bytes of the Partial IV" (and ignores the Outer Observe value).
        if let Some(piv) = option.partial_iv {
            restored.message.options.set_uint(num::OBSERVE, (piv.to_sequence() & 0x00ff_ffff) as u32);
        }
    }
    // RFC 8613 §7.4.1: "SHALL overwrite the corresponding Notification Number with the
    // received Partial IV" after successful verification.
    match option.partial_iv {
        Some(piv) => binding.highest_response_piv = Some(piv.to_sequence()),
        None => binding.request_nonce_used = true,
    }
    Ok(restored.message)
}

/// The unprotected error response for a failed [`unprotect_request`] (RFC 8613 §8.2, §7.4):
/// the error's code, an Outer Max-Age 0 (§4.1.3.1: "A server MAY set a Class U Max-Age
/// message field with value zero to such error responses"; §8.2) and the diagnostic payload.
///
/// Type, Message ID and Token are those of [`Message::response`]; the messaging layer sets
/// them for the request being answered. For [`UnprotectError::FreshnessUnverified`] the server
/// should rather send a *protected* 4.01 with Echo (App. B.1.2).
pub fn error_response(err: &UnprotectError) -> Message {
    let mut response = Message::response(err.code());
    response.options.set_uint(num::MAX_AGE, 0);
    response.payload = err.diagnostic().as_bytes().to_vec();
    response
}

/// Whether the options hold an Observe registration (Observe = 0, RFC 7641 §2).
fn is_registration(options: &Options) -> bool {
    options.get(num::OBSERVE).is_some_and(|v| v.len() <= 3 && hopcore_codec::uint::decode(v) == Some(0))
}

/// The value of the single OSCORE option of a received message.
fn oscore_option_value(msg: &Message) -> Result<&[u8], UnprotectError> {
    let mut values = msg.options.get_all(num::OSCORE);
    let value = values.next().ok_or(UnprotectError::NoOscoreOption)?;
    // RFC 8613 §2: the OSCORE option is not repeatable (a repeated critical option is
    // unrecognized, RFC 7252 §5.4.5).
    if values.next().is_some() {
        return Err(UnprotectError::RepeatedOscoreOption);
    }
    Ok(value)
}

/// Splits the options of an original message into Inner (plaintext) and Outer options
/// (RFC 8613 §4.1), with the special processing of §4.1.3.
fn split_options(msg: &Message, kind: MessageKind, layer: &Layer<'_>) -> Result<(Options, Options), ProtectError> {
    let mut inner = Options::new();
    let mut outer = Options::new();
    // RFC 8613 §4.1.3.3 applies when Proxy-Uri is an Outer option of this layer.
    let decompose = kind == MessageKind::Request
        && msg.options.contains(num::PROXY_URI)
        && !layer.class(num::PROXY_URI, kind).has_inner();
    if decompose
        && [num::PROXY_SCHEME, num::URI_HOST, num::URI_PORT, num::URI_PATH, num::URI_QUERY]
            .iter()
            .any(|&n| msg.options.contains(n))
    {
        return Err(ProtectError::ProxyUriConflict);
    }
    for o in msg.options.iter() {
        // RFC 8613 §4.1.3.7: an OSCORE option in the original message stops processing,
        // unless the policy encrypts it (CP §2.2).
        if o.number == num::OSCORE && !layer.class(num::OSCORE, kind).has_inner() {
            return Err(ProtectError::NestedOscore);
        }
        if decompose && o.number == num::PROXY_URI {
            // RFC 8613 §4.1.3.3: "decompose the Proxy-Uri value ... into the Proxy-Scheme,
            // Uri-Host, Uri-Port, Uri-Path, and Uri-Query options" (RFC 7252 §6.4).
            let text = core::str::from_utf8(o.value).map_err(|_| ProtectError::ProxyUri(UriError::NotUtf8))?;
            let CoapUri { scheme, host, port, path, query } = CoapUri::parse(text).map_err(ProtectError::ProxyUri)?;
            // "Uri-Path and Uri-Query are Class E options and SHALL be protected and processed as
            // Inner options" (their class is still the policy's).
            for segment in &path {
                place(&mut inner, &mut outer, layer, kind, num::URI_PATH, segment.as_bytes());
            }
            for argument in &query {
                place(&mut inner, &mut outer, layer, kind, num::URI_QUERY, argument.as_bytes());
            }
            // "The Proxy-Uri option of the OSCORE message SHALL be set to the composition of
            // Proxy-Scheme, Uri-Host, and Uri-Port options" (RFC 7252 §6.5), without the "/" of
            // an empty path as in the RFC's example ("coap://example.com").
            let mut authority = CoapUri { scheme, host, port, path: Vec::new(), query: Vec::new() }.compose();
            if authority.ends_with('/') {
                authority.pop();
            }
            outer.push(num::PROXY_URI, authority.as_bytes());
            continue;
        }
        place(&mut inner, &mut outer, layer, kind, o.number, o.value);
    }
    if let Some(extra) = layer.outer_options {
        for o in extra.iter() {
            if o.number == num::OSCORE {
                return Err(ProtectError::OscoreInOuterOptions);
            }
            outer.push(o.number, o.value);
        }
    }
    Ok((inner, outer))
}

/// Puts one option of the original message where its class says (RFC 8613 §4.1.1, §4.1.2).
fn place(inner: &mut Options, outer: &mut Options, layer: &Layer<'_>, kind: MessageKind, number: u16, value: &[u8]) {
    match layer.class(number, kind) {
        OscoreClass::E => inner.push(number, value),
        OscoreClass::U | OscoreClass::I => outer.push(number, value),
        OscoreClass::EU if number == num::OBSERVE => {
            match kind {
                // RFC 8613 §4.1.3.5.1: "The Inner and Outer Observe options in the request MUST
                // contain the Observe value of the original CoAP request".
                MessageKind::Request => inner.push(number, value),
                // RFC 8613 §4.1.3.5.2: "For notifications, the Inner Observe option value MUST
                // be empty"; the Outer one "MAY be set to the value of the Observe option in
                // the original CoAP message".
                MessageKind::Response => inner.push(number, &[]),
            }
            outer.push(number, value);
        }
        // RFC 8613 §4.1.3.1, §4.1.3.4.1, §4.1.3.6: the message's Max-Age, Block, Size and
        // No-Response are the end-to-end (Inner) ones; Outer instances are hop-by-hop and come
        // from `Layer::outer_options`.
        OscoreClass::EU => inner.push(number, value),
    }
}

/// The Class I options of the Outer options, delta-encoded among themselves (RFC 8613 §5.4
/// "options"). Computed from the final Outer options on both sides, so sender and receiver
/// agree by construction.
fn class_i_options(outer: &Options, layer: &Layer<'_>, kind: MessageKind) -> Result<Vec<u8>, EncodeError> {
    let mut encoded = Vec::new();
    let mut writer = OptionWriter::new(&mut encoded);
    for o in outer.iter() {
        if o.number != num::OSCORE && layer.class(o.number, kind) == OscoreClass::I {
            writer.option(o.number, o.value)?;
        }
    }
    Ok(encoded)
}

/// Serializes the AAD (RFC 8613 §5.4) into `stack` if it fits, else into `heap`.
fn write_aad<'b>(
    external: &ExternalAad<'_>,
    stack: &'b mut [u8; AAD_STACK_LEN],
    heap: &'b mut Vec<u8>,
) -> Result<&'b [u8], Error> {
    if external.aad_len() <= AAD_STACK_LEN {
        let len = external.write_aad(stack)?;
        Ok(stack.get(..len).unwrap_or_default())
    } else {
        external.write_aad_to_vec(heap)?;
        Ok(heap)
    }
}

/// Builds the plaintext `Code || Inner options || [0xFF payload]` (RFC 8613 §5.3) in the
/// buffer that becomes the OSCORE payload and encrypts it in place (§8.1 step 4, §8.3 step 4).
fn seal_plaintext(
    ctx: &SecurityContext,
    nonce: &Nonce,
    external: &ExternalAad<'_>,
    code: Code,
    inner: &Options,
    payload: &[u8],
) -> Result<Vec<u8>, ProtectError> {
    let options_len: usize = inner.iter().map(|o| o.value.len() + 5).sum();
    let mut buf = Vec::with_capacity(1 + options_len + 1 + payload.len() + ctx.aead().tag_len());
    buf.push(code.0);
    // RFC 8613 §5.3: deltas counted among the Class E options only.
    inner.encode_into(&mut buf)?;
    // RFC 8613 §5.3: "the Payload of original CoAP message, if present, and in that case
    // prefixed by the one-byte Payload Marker (0xff)".
    if !payload.is_empty() {
        buf.push(PAYLOAD_MARKER);
        buf.extend_from_slice(payload);
    }
    let mut stack = [0u8; AAD_STACK_LEN];
    let mut heap = Vec::new();
    let aad = write_aad(external, &mut stack, &mut heap)?;
    ctx.seal_vec(nonce, aad, &mut buf)?;
    Ok(buf)
}

/// Decrypts and verifies the OSCORE payload (RFC 8613 §8.2 step 6, §8.4 step 5).
fn open_payload(
    ctx: &SecurityContext,
    nonce: &Nonce,
    external: &ExternalAad<'_>,
    ciphertext: &[u8],
) -> Result<Vec<u8>, UnprotectError> {
    let mut stack = [0u8; AAD_STACK_LEN];
    let mut heap = Vec::new();
    let aad = write_aad(external, &mut stack, &mut heap).map_err(UnprotectError::Crypto)?;
    let mut buf = ciphertext.to_vec();
    ctx.open_vec(nonce, aad, &mut buf).map_err(|_| UnprotectError::DecryptFailed)?;
    Ok(buf)
}

/// Length of one encoded option with this delta and value length (RFC 7252 §3.1).
fn encoded_option_len(delta: u16, len: usize) -> usize {
    let ext = |v: usize| match v {
        0..=12 => 0,
        13..=268 => 1,
        _ => 2,
    };
    1 + ext(usize::from(delta)) + ext(len) + len
}

/// Splits a plaintext into its code, its encoded options and the offset of the payload
/// (RFC 8613 §5.3).
fn split_plaintext(plaintext: &[u8]) -> Result<(Code, &[u8], usize), UnprotectError> {
    let Some((&code, rest)) = plaintext.split_first() else {
        return Err(UnprotectError::MalformedPlaintext("empty plaintext (no code)"));
    };
    let mut pos = 0usize;
    let mut previous = 0u16;
    for item in parse_option_sequence(rest) {
        match item {
            Ok(o) => {
                pos += encoded_option_len(o.number.saturating_sub(previous), o.value.len());
                previous = o.number;
            }
            // The codec's option iterator stops with an error at the payload marker (delta
            // nibble 15); anything else is a malformed option.
            Err(_) if rest.get(pos) == Some(&PAYLOAD_MARKER) => {
                // RFC 7252 §3: a marker followed by a zero-length payload is a format error.
                if pos + 1 >= rest.len() {
                    return Err(UnprotectError::MalformedPlaintext("payload marker without payload"));
                }
                let options = rest.get(..pos).unwrap_or_default();
                return Ok((Code(code), options, 1 + pos + 1));
            }
            Err(_) => return Err(UnprotectError::MalformedPlaintext("malformed inner option")),
        }
    }
    Ok((Code(code), rest, plaintext.len()))
}

/// A restored message and what the caller needs to know about its Inner options.
struct Restored {
    message: Message,
    inner_observe: bool,
}

/// Rebuilds the original message from the received Outer parts and the verified plaintext
/// (RFC 8613 §8.2 steps 1 and 7, §8.4 steps 1 and 6).
fn restore(
    msg: &Message,
    mut plaintext: Vec<u8>,
    layer: &Layer<'_>,
    kind: MessageKind,
) -> Result<Restored, UnprotectError> {
    let (code, inner_bytes, payload_start) = split_plaintext(&plaintext)?;
    let code_ok = match kind {
        MessageKind::Request => code.is_request() || code.class() == 7,
        MessageKind::Response => code.is_response() || code.class() == 7,
    };
    if !code_ok {
        return Err(UnprotectError::MalformedPlaintext("inner code does not fit the message kind"));
    }

    let mut options = Options::new();
    // RFC 8613 §8.2 / §8.4 step 1: "Discard Code and all Class E options (marked in Figure 5
    // with 'x' in column E) present in the received message"; step 7 / 6: "The OSCORE option
    // is removed".
    for o in msg.options.iter() {
        if o.number != num::OSCORE && !layer.class(o.number, kind).has_inner() {
            options.push(o.number, o.value);
        }
    }
    let mut inner_observe = false;
    let mut inner_proxy_uri = false;
    let mut last_inner = None;
    for item in parse_option_sequence(inner_bytes) {
        let o = item.map_err(|_| UnprotectError::MalformedPlaintext("malformed inner option"))?;
        // RFC 8613 §4.1.3.7 (nesting only when the policy makes the OSCORE option Class E).
        if o.number == num::OSCORE && !layer.class(num::OSCORE, kind).has_inner() {
            return Err(UnprotectError::NestedOscore);
        }
        if last_inner != Some(o.number) {
            // Inner wins: an Outer instance of an option that is present Inner is dropped.
            options.remove(o.number);
            last_inner = Some(o.number);
        }
        inner_observe |= o.number == num::OBSERVE;
        inner_proxy_uri |= o.number == num::PROXY_URI;
        options.push(o.number, o.value);
    }
    if kind == MessageKind::Request && !inner_proxy_uri {
        decompose_outer_proxy_uri(&mut options)?;
    }

    // The payload is the tail of the plaintext buffer: no copy into a new allocation.
    let payload_start = payload_start.min(plaintext.len());
    plaintext.drain(..payload_start);
    let message =
        Message { mtype: msg.mtype, code, message_id: msg.message_id, token: msg.token, options, payload: plaintext };
    Ok(Restored { message, inner_observe })
}

/// Replaces an Outer Proxy-Uri (scheme and authority, RFC 8613 §4.1.3.3) by Proxy-Scheme,
/// Uri-Host and Uri-Port, so that together with the Inner Uri-Path and Uri-Query the restored
/// request is a valid forward-proxy request (RFC 7252 §5.10.2, §6.4).
fn decompose_outer_proxy_uri(options: &mut Options) -> Result<(), UnprotectError> {
    let Some(value) = options.get(num::PROXY_URI) else {
        return Ok(());
    };
    let text = core::str::from_utf8(value).map_err(|_| UnprotectError::ProxyUri(UriError::NotUtf8))?;
    let uri = CoapUri::parse(text).map_err(UnprotectError::ProxyUri)?;
    let inner_path = options.contains(num::URI_PATH) || options.contains(num::URI_QUERY);
    if inner_path && (!uri.path.is_empty() || !uri.query.is_empty()) {
        return Err(UnprotectError::ProxyUriConflict);
    }
    options.remove(num::PROXY_URI);
    options.set(num::PROXY_SCHEME, uri.scheme.as_bytes());
    options.set(num::URI_HOST, uri.host.as_bytes());
    options.set_uint(num::URI_PORT, u32::from(uri.port_or_default()));
    if !inner_path {
        uri.write_path_query(options);
    }
    Ok(())
}
