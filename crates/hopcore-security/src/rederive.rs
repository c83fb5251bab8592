//! Security context re-derivation with random ID Contexts (RFC 8613 App. B.2), sans-I/O,
//! both roles, on top of the message-level OSCORE layer.
//!
//! ```text
//!                   Client (Initiator)                 Server (Responder)
//!                        |                                   |
//! 1. R1, ctx1 = ID1 = R1 |--- request #1, kid_context ID1 -->| 2. verify with ctx1 (ID1)
//!                        |                                   |    R2, ctx2 = R2 || ID1
//! 3. verify with ctx2    |<-- response #1 (4.01), kid_c. R2 -|    protect with ctx2
//!    R3, ctx3 = R2 || R3 |                                   |
//!                        |--- request #2, kid_c. R2 || R3 -->| 4. R2 cached? verify with ctx3
//!                        |                                   |    ctx3 replaces the old context
//! 5. verify with ctx3;   |<-- response #2 (protected, ctx3) -|    protect with ctx3
//!    ctx3 replaces old   |                                   |
//! ```
//!
//! The server may initiate too (App. B.2: "in the latter case step 1 is omitted"): it answers
//! an ordinary request, protected with the current context whose ID Context is ID1, with
//! response #1 ([`Responder::initiate`]); the client notices the kid context in the response
//! ([`response_kid_context`]) and continues with [`Initiator::for_server_initiated`].
//!
//! Neither side retires its old context before the procedure succeeded: the [`Initiator`]
//! hands out the new context only from [`Initiator::finish`] after response #2 verified, the
//! [`Responder`] only with [`ResponderOutcome::Established`] after request #2 verified. The
//! caller then swaps it in with [`ContextStore::replace`](crate::ContextStore::replace); until
//! then the store keeps the old context, and a failed or abandoned run changes nothing.
//!
//! # Choices where RFC 8613 leaves room
//!
//! - **Encoding of the kid context.** B.2 says the request carries "R1 wrapped in a CBOR bstr
//!   as 'kid context'" (likewise R2 and R2 || R3). Californium, the implementation by the
//!   RFC's co-authors' group, reads this literally: the kid context bytes are the CBOR
//!   encoding of the bstr (`0x48 || R1` for 8 bytes), while the ID Context used for the
//!   derivation is R1 itself. [`KidContextEncoding::CborBstr`] (the default) does the same;
//!   [`KidContextEncoding::Raw`] sends the bytes as they are.
//! - **Response #1 nonce.** It carries an own Partial IV (from ctx2, which is fresh), as
//!   Californium does, rather than reusing the request nonce.
//! - **R2 state.** The responder caches its R2 values (B.2 step 2), bounded in number and
//!   lifetime (B.2.1: "set a timer when caching R2"); when full it refuses with
//!   [`RederiveError::Busy`], for which B.2.1 suggests an unprotected 5.03.
//! - **Nonce length.** R1, R2 and R3 are [`DEFAULT_NONCE_LEN`] = 8 bytes (B.2: "typically,
//!   at least 8 bytes long").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hopcore_codec::{num, Code, Message};
use hopcore_oscore::{
    protect_request, protect_response, unprotect_request, unprotect_response, Layer, OscoreOption, ProtectError,
    RequestBinding, RequestInfo, SecurityContext, UnprotectError, MAX_KID_CONTEXT_LEN,
};
use rand::{CryptoRng, RngCore};
use thiserror::Error;

use crate::params::ContextParams;

/// Length of R1, R2 and R3 (RFC 8613 App. B.2: "typically, at least 8 bytes long").
pub const DEFAULT_NONCE_LEN: usize = 8;
/// How long a responder keeps an R2 (CoAP's EXCHANGE_LIFETIME, RFC 7252 §4.8.2).
pub const DEFAULT_R2_LIFETIME: Duration = Duration::from_secs(247);
/// How many runs a responder keeps in parallel (App. B.2.1).
pub const DEFAULT_MAX_PENDING: usize = 4;

/// How the R values travel in the 'kid context' (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KidContextEncoding {
    /// The kid context is the CBOR encoding of a bstr holding the value (Californium).
    #[default]
    CborBstr,
    /// The kid context is the value itself.
    Raw,
}

impl KidContextEncoding {
    /// The kid context bytes for `value`.
    pub fn encode(self, value: &[u8]) -> Result<Vec<u8>, RederiveError> {
        let out = match self {
            KidContextEncoding::Raw => value.to_vec(),
            KidContextEncoding::CborBstr => {
                // RFC 8949 §3: major type 2, length in the head (one byte up to 23, 0x58 + one
                // byte up to 255).
                let mut out = Vec::with_capacity(value.len() + 2);
                match u8::try_from(value.len()) {
                    Ok(len @ 0..=23) => out.push(0x40 | len),
                    Ok(len) => out.extend_from_slice(&[0x58, len]),
                    Err(_) => return Err(RederiveError::IdContextTooLong { len: value.len() }),
                }
                out.extend_from_slice(value);
                out
            }
        };
        // RFC 8613 §6.1: the kid context length is one byte.
        if out.len() > MAX_KID_CONTEXT_LEN {
            return Err(RederiveError::IdContextTooLong { len: out.len() });
        }
        Ok(out)
    }

    /// The value carried in the kid context bytes.
    pub fn decode(self, kid_context: &[u8]) -> Result<Vec<u8>, RederiveError> {
        match self {
            KidContextEncoding::Raw => Ok(kid_context.to_vec()),
            KidContextEncoding::CborBstr => {
                let (len, rest) = match kid_context.split_first() {
                    Some((&h, rest)) if h & 0xe0 == 0x40 && h & 0x1f < 24 => (usize::from(h & 0x1f), rest),
                    Some((&0x58, rest)) => match rest.split_first() {
                        // Preferred serialization only: a length below 24 belongs in the head.
                        Some((&l, rest)) if l >= 24 => (usize::from(l), rest),
                        _ => return Err(RederiveError::BadKidContext),
                    },
                    _ => return Err(RederiveError::BadKidContext),
                };
                if rest.len() != len {
                    return Err(RederiveError::BadKidContext);
                }
                Ok(rest.to_vec())
            }
        }
    }
}

/// Why a step of the procedure failed. The procedure's state is unchanged by a failed step
/// (App. B.2: "If verification fails in any step, the endpoint stops processing that
/// message"), so a later, valid message can still complete it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RederiveError {
    /// The method does not fit the current step.
    #[error("not possible in this step: {0}")]
    WrongStep(&'static str),
    /// The message has no (single, well-formed) OSCORE option.
    #[error("no usable OSCORE option: {0}")]
    NoOscoreOption(&'static str),
    /// A response #1 without 'kid context' (it must carry R2).
    #[error("response carries no kid context (R2), so it is not response #1 of App. B.2")]
    NoKidContext,
    /// A request without kid context given to [`Responder::on_request`]: an ordinary request.
    #[error("request carries no kid context: not a step of App. B.2 started by the client")]
    NotRederivation,
    /// The kid context is not a CBOR bstr (with [`KidContextEncoding::CborBstr`]).
    #[error("kid context is not a CBOR byte string")]
    BadKidContext,
    /// The request's kid is not the Recipient ID of the responder's parameters.
    #[error("request kid is not this responder's recipient id")]
    WrongKid,
    /// Too many runs in parallel (App. B.2.1: answer with an unprotected 5.03).
    #[error("too many App. B.2 runs in parallel; answer 5.03 (Service Unavailable)")]
    Busy,
    /// An ID Context that does not fit the kid context.
    #[error("ID context / kid context of {len} bytes does not fit the OSCORE option (at most 255)")]
    IdContextTooLong {
        /// Its length.
        len: usize,
    },
    /// Derivation failed.
    #[error("derivation: {0}")]
    Oscore(#[from] hopcore_oscore::Error),
    /// Protecting failed.
    #[error("protect: {0}")]
    Protect(#[from] ProtectError),
    /// Verification failed.
    #[error("verification failed: {0}")]
    Unprotect(#[from] UnprotectError),
}

/// The 'kid context' of a response (or any message), decoded with `encoding`: `Some(R2)` for a
/// response #1 of App. B.2. A client that receives a response with a kid context to an
/// ordinary request sees the server initiating the procedure.
pub fn response_kid_context(msg: &Message, encoding: KidContextEncoding) -> Result<Option<Vec<u8>>, RederiveError> {
    let option = parse_option(msg)?;
    option.kid_context.map(|kc| encoding.decode(kc)).transpose()
}

fn parse_option(msg: &Message) -> Result<OscoreOption<'_>, RederiveError> {
    let mut all = msg.options.get_all(num::OSCORE);
    let (Some(value), None) = (all.next(), all.next()) else {
        return Err(RederiveError::NoOscoreOption("missing or repeated"));
    };
    OscoreOption::parse(value).map_err(|_| RederiveError::NoOscoreOption("malformed"))
}

/// Replaces the 'kid context' of the message's OSCORE option. The kid context is not part of
/// the AAD (RFC 8613 §5.4), so this does not touch the protection.
fn set_kid_context(msg: &mut Message, kid_context: Option<&[u8]>) -> Result<(), RederiveError> {
    let value = msg.options.get(num::OSCORE).map(<[u8]>::to_vec).ok_or(RederiveError::NoOscoreOption("missing"))?;
    let mut option = OscoreOption::parse(&value).map_err(|_| RederiveError::NoOscoreOption("malformed"))?;
    option.kid_context = kid_context;
    let mut out = Vec::new();
    option.encode_to_vec(&mut out)?;
    msg.options.set(num::OSCORE, &out);
    Ok(())
}

fn random(rng: &mut (impl RngCore + CryptoRng), len: usize) -> Vec<u8> {
    let mut r = vec![0u8; len];
    rng.fill_bytes(&mut r);
    r
}

fn concat(a: &[u8], b: Option<&[u8]>) -> Vec<u8> {
    let mut out = a.to_vec();
    out.extend_from_slice(b.unwrap_or_default());
    out
}

/// Where an [`Initiator`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitiatorStep {
    /// Request #1 can be sent; waiting for response #1.
    AwaitingResponse1,
    /// Response #1 verified; request #2 can be sent; waiting for response #2.
    AwaitingResponse2,
    /// Response #2 verified: [`Initiator::finish`] gives the new context.
    Complete,
}

enum InitiatorState {
    AwaitingResponse1 {
        /// ID1: R1 (client-initiated) or the current ID Context (server-initiated).
        id1: Option<Vec<u8>>,
        /// The context for request #1 (client-initiated only; the server-initiated variant
        /// used the caller's current context).
        ctx1: Option<SecurityContext>,
    },
    AwaitingResponse2 {
        ctx3: SecurityContext,
    },
    Complete {
        ctx3: SecurityContext,
    },
}

/// The client side of RFC 8613 App. B.2 (steps 1, 3 and 5).
pub struct Initiator {
    params: ContextParams,
    encoding: KidContextEncoding,
    nonce_len: usize,
    state: InitiatorState,
}

impl core::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Initiator").field("params", &self.params).field("step", &self.step()).finish_non_exhaustive()
    }
}

impl Initiator {
    /// Step 1: "generates a random string R1 and uses this as ID Context together with the
    /// input parameters shared with the server to derive a first security context".
    pub fn new(params: ContextParams, rng: &mut (impl RngCore + CryptoRng)) -> Result<Initiator, RederiveError> {
        Initiator::with_options(params, KidContextEncoding::default(), DEFAULT_NONCE_LEN, rng)
    }

    /// [`new`](Self::new) with another kid context encoding and nonce length (R1, R3).
    pub fn with_options(
        params: ContextParams,
        encoding: KidContextEncoding,
        nonce_len: usize,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Initiator, RederiveError> {
        let r1 = random(rng, nonce_len.max(1));
        encoding.encode(&r1)?;
        let ctx1 = params.derive_with_id_context(Some(&r1))?;
        Ok(Initiator {
            params,
            encoding,
            nonce_len: nonce_len.max(1),
            state: InitiatorState::AwaitingResponse1 { id1: Some(r1), ctx1: Some(ctx1) },
        })
    }

    /// The server-initiated variant: an ordinary request, protected with the current context
    /// (ID Context `id1`), was answered with a response #1. Continue with
    /// [`on_response1`](Self::on_response1).
    pub fn for_server_initiated(params: ContextParams, id1: Option<&[u8]>, encoding: KidContextEncoding) -> Initiator {
        Initiator {
            params,
            encoding,
            nonce_len: DEFAULT_NONCE_LEN,
            state: InitiatorState::AwaitingResponse1 { id1: id1.map(<[u8]>::to_vec), ctx1: None },
        }
    }

    /// The current step.
    pub fn step(&self) -> InitiatorStep {
        match self.state {
            InitiatorState::AwaitingResponse1 { .. } => InitiatorStep::AwaitingResponse1,
            InitiatorState::AwaitingResponse2 { .. } => InitiatorStep::AwaitingResponse2,
            InitiatorState::Complete { .. } => InitiatorStep::Complete,
        }
    }

    /// ID1 (R1, or the ID Context of the server-initiated variant).
    pub fn id1(&self) -> Option<&[u8]> {
        match &self.state {
            InitiatorState::AwaitingResponse1 { id1, .. } => id1.as_deref(),
            _ => None,
        }
    }

    /// Step 1: protects request #1 with the first context, "containing R1 wrapped in a CBOR
    /// bstr as 'kid context'". May be called again (e.g. to retry with a new request).
    pub fn protect_request1(
        &mut self,
        request: &Message,
        layer: &Layer<'_>,
    ) -> Result<(Message, RequestBinding), RederiveError> {
        let InitiatorState::AwaitingResponse1 { ctx1: Some(ctx1), id1 } = &mut self.state else {
            return Err(RederiveError::WrongStep("request #1 belongs to a client-initiated run awaiting response #1"));
        };
        let (mut msg, binding) = protect_request(request, ctx1, &layer.with_kid_context(true))?;
        let kid_context = self.encoding.encode(id1.as_deref().unwrap_or_default())?;
        set_kid_context(&mut msg, Some(&kid_context))?;
        Ok((msg, binding))
    }

    /// Step 3: verifies response #1 with the second context, ID Context = R2 || ID1, where R2
    /// is the response's kid context; on success generates R3 and derives the third context,
    /// ID Context = R2 || R3, for request #2. Returns the verified response (a 4.01).
    ///
    /// `binding` is the binding of request #1 (from [`protect_request1`](Self::protect_request1),
    /// or from the ordinary request in the server-initiated variant).
    pub fn on_response1(
        &mut self,
        response: &Message,
        binding: &mut RequestBinding,
        layer: &Layer<'_>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Message, RederiveError> {
        let InitiatorState::AwaitingResponse1 { id1, .. } = &self.state else {
            return Err(RederiveError::WrongStep("response #1 is expected only after request #1"));
        };
        // RFC 8613 App. B.2 step 3: "a response with 'kid context' containing a CBOR bstr
        // wrapping R2".
        let r2 = response_kid_context(response, self.encoding)?.ok_or(RederiveError::NoKidContext)?;
        // "The client derives a second security context using ID Context = ID2 = R2 || ID1."
        let id2 = concat(&r2, id1.as_deref());
        let ctx2 = self.params.derive_with_id_context(Some(&id2))?;
        // "If the client can verify the response (see Section 8.4) using the second security
        // context ..."
        let verified = unprotect_response(response, &ctx2, binding, layer)?;
        // "... then the client makes a request protected with a third security context derived
        // from ID Context = ID3 = R2 || R3, where R3 is a random byte string".
        let r3 = random(rng, self.nonce_len);
        let id3 = concat(&r2, Some(&r3));
        self.encoding.encode(&id3)?;
        let ctx3 = self.params.derive_with_id_context(Some(&id3))?;
        self.state = InitiatorState::AwaitingResponse2 { ctx3 };
        Ok(verified)
    }

    /// Step 3 (continued): protects request #2 with the third context; "the request includes
    /// R2 || R3 wrapped in a CBOR bstr as 'kid context'". Request #2 "can be an ordinary
    /// request". May be called again for another request while waiting.
    pub fn protect_request2(
        &mut self,
        request: &Message,
        layer: &Layer<'_>,
    ) -> Result<(Message, RequestBinding), RederiveError> {
        let InitiatorState::AwaitingResponse2 { ctx3 } = &mut self.state else {
            return Err(RederiveError::WrongStep("request #2 needs a verified response #1"));
        };
        let (mut msg, binding) = protect_request(request, ctx3, &layer.with_kid_context(true))?;
        let kid_context = self.encoding.encode(ctx3.id_context().unwrap_or_default())?;
        set_kid_context(&mut msg, Some(&kid_context))?;
        Ok((msg, binding))
    }

    /// Step 5: verifies response #2 with the third context. On success the procedure is
    /// complete; "the client acts on response #2 after having successfully completed step 5".
    pub fn on_response2(
        &mut self,
        response: &Message,
        binding: &mut RequestBinding,
        layer: &Layer<'_>,
    ) -> Result<Message, RederiveError> {
        let InitiatorState::AwaitingResponse2 { ctx3 } = &self.state else {
            return Err(RederiveError::WrongStep("response #2 is expected only after request #2"));
        };
        let verified = unprotect_response(response, ctx3, binding, layer)?;
        let state = std::mem::replace(&mut self.state, InitiatorState::AwaitingResponse1 { id1: None, ctx1: None });
        if let InitiatorState::AwaitingResponse2 { ctx3 } = state {
            self.state = InitiatorState::Complete { ctx3 };
        }
        Ok(verified)
    }

    /// The new context, once response #2 verified: "This security context replaces the
    /// previous security context with the server, and the first and second security contexts
    /// are deleted" (swap it in with [`ContextStore::replace`](crate::ContextStore::replace)).
    /// `None` before that (the initiator is consumed either way; check
    /// [`step`](Self::step) first to keep it).
    pub fn finish(self) -> Option<SecurityContext> {
        match self.state {
            InitiatorState::Complete { ctx3 } => Some(ctx3),
            _ => None,
        }
    }
}

struct PendingR2 {
    r2: Vec<u8>,
    expires: Instant,
}

/// What a [`Responder`] made of a request.
#[derive(Debug)]
pub enum ResponderOutcome {
    /// Request #1 verified (step 2): send `response`, the protected 4.01 carrying R2 as kid
    /// context. `request` is the decrypted request #1; the server does not act on it.
    Challenge {
        /// Response #1, ready to send.
        response: Message,
        /// The decrypted request #1.
        request: Message,
    },
    /// Request #2 verified (step 4): `context` (ID Context R2 || R3) "replaces the previous
    /// security context with the client" — swap it in with
    /// [`ContextStore::replace`](crate::ContextStore::replace), then process `request` and
    /// protect its response (response #2) with the new context and `binding`.
    Established {
        /// The decrypted request #2.
        request: Message,
        /// Its binding, for response #2.
        binding: RequestBinding,
        /// Who sent it.
        info: RequestInfo,
        /// The new context (its replay window already holds request #2).
        context: SecurityContext,
    },
}

/// The server side of RFC 8613 App. B.2 (steps 2 and 4) for one client, i.e. one set of
/// preestablished parameters.
pub struct Responder {
    params: ContextParams,
    encoding: KidContextEncoding,
    nonce_len: usize,
    max_pending: usize,
    lifetime: Duration,
    pending: VecDeque<PendingR2>,
}

impl core::fmt::Debug for Responder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Responder")
            .field("params", &self.params)
            .field("encoding", &self.encoding)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// A responder with the defaults: CBOR-bstr kid contexts, 8-byte R2, at most
    /// [`DEFAULT_MAX_PENDING`] runs for [`DEFAULT_R2_LIFETIME`].
    pub fn new(params: ContextParams) -> Responder {
        Responder::with_options(
            params,
            KidContextEncoding::default(),
            DEFAULT_NONCE_LEN,
            DEFAULT_MAX_PENDING,
            DEFAULT_R2_LIFETIME,
        )
    }

    /// A responder with explicit settings.
    pub fn with_options(
        params: ContextParams,
        encoding: KidContextEncoding,
        nonce_len: usize,
        max_pending: usize,
        lifetime: Duration,
    ) -> Responder {
        Responder {
            params,
            encoding,
            nonce_len: nonce_len.max(1),
            max_pending: max_pending.max(1),
            lifetime,
            pending: VecDeque::new(),
        }
    }

    /// The preestablished parameters.
    pub fn params(&self) -> &ContextParams {
        &self.params
    }

    /// Runs waiting for request #2.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A request the store could not place (RFC 8613 §8.2 step 2 failed: "the Recipient
    /// Context MAY be retrieved by deriving a new security context, e.g. as described in
    /// Appendix B.2"):
    /// - its kid context starts with a cached R2: step 4 ([`ResponderOutcome::Established`]);
    /// - otherwise its kid context is ID1 of a client-initiated run: step 2
    ///   ([`ResponderOutcome::Challenge`]).
    ///
    /// A request without kid context is [`RederiveError::NotRederivation`]; to start the
    /// procedure for such a request use [`initiate`](Self::initiate).
    pub fn on_request(
        &mut self,
        request: &Message,
        layer: &Layer<'_>,
        rng: &mut (impl RngCore + CryptoRng),
        now: Instant,
    ) -> Result<ResponderOutcome, RederiveError> {
        self.expire(now);
        let option = parse_option(request)?;
        if option.kid != Some(self.params.recipient_id()) {
            return Err(RederiveError::WrongKid);
        }
        let kid_context = option.kid_context.ok_or(RederiveError::NotRederivation)?;
        let value = self.encoding.decode(kid_context)?;
        let pending = self.pending.iter().position(|p| value.len() > p.r2.len() && value.starts_with(&p.r2));
        match pending {
            Some(_) => self.on_request2(request, &value, layer),
            None => {
                let (response, request) = self.challenge(request, Some(&value), layer, rng, now)?;
                Ok(ResponderOutcome::Challenge { response, request })
            }
        }
    }

    /// The server-initiated variant (App. B.2: "The client or the server may initiate the
    /// protocol, in the latter case step 1 is omitted"): `request` is an ordinary request of
    /// the client, protected with its current context, whose ID Context is `id1` (e.g. the
    /// server lost that context's mutable state). Verifies it with a freshly derived first
    /// context (ID Context = ID1) and returns response #1 and the decrypted request.
    pub fn initiate(
        &mut self,
        request: &Message,
        id1: Option<&[u8]>,
        layer: &Layer<'_>,
        rng: &mut (impl RngCore + CryptoRng),
        now: Instant,
    ) -> Result<ResponderOutcome, RederiveError> {
        self.expire(now);
        let option = parse_option(request)?;
        if option.kid != Some(self.params.recipient_id()) {
            return Err(RederiveError::WrongKid);
        }
        let (response, request) = self.challenge(request, id1, layer, rng, now)?;
        Ok(ResponderOutcome::Challenge { response, request })
    }

    /// Step 2.
    fn challenge(
        &mut self,
        request: &Message,
        id1: Option<&[u8]>,
        layer: &Layer<'_>,
        rng: &mut (impl RngCore + CryptoRng),
        now: Instant,
    ) -> Result<(Message, Message), RederiveError> {
        // App. B.2.1: "The server needs to handle the case when the maximum number of cached
        // R2s is reached ... it may respond with an unprotected 5.03".
        if self.pending.len() >= self.max_pending {
            return Err(RederiveError::Busy);
        }
        // Step 2: "If the server is able to verify the request (see Section 8.2) with the new
        // derived first security context using the received ID1 ... as ID Context and the
        // input parameters associated to the received 'kid'".
        let mut ctx1 = self.params.derive_with_id_context(id1)?;
        let stripped = without_kid_context(request)?;
        let (plain, mut binding, _info) = unprotect_request(&stripped, |_, _| Some(&mut ctx1), layer)?;

        // "... then the server generates a random string R2 and derives a second security
        // context with ID Context = ID2 = R2 || ID1." R2 MUST NOT be reused.
        let mut r2 = random(rng, self.nonce_len);
        while self.pending.iter().any(|p| p.r2 == r2) {
            r2 = random(rng, self.nonce_len);
        }
        let kid_context = self.encoding.encode(&r2)?;
        let id2 = concat(&r2, id1);
        let mut ctx2 = self.params.derive_with_id_context(Some(&id2))?;
        // "The server sends a 4.01 (Unauthorized) response protected with the second security
        // context, containing R2 wrapped in a CBOR bstr as 'kid context'". Own Partial IV
        // (ctx2 is fresh, so PIV 0 under a key never used before).
        let unauthorized = Message::response(Code::UNAUTHORIZED);
        let mut response = protect_response(&unauthorized, &mut ctx2, &mut binding, true, layer)?;
        set_kid_context(&mut response, Some(&kid_context))?;
        // "... and caches R2."
        let expires = now.checked_add(self.lifetime).unwrap_or(now);
        self.pending.push_back(PendingR2 { r2, expires });
        tracing::debug!(pending = self.pending.len(), "App. B.2: response #1 with a new R2");
        Ok((response, plain))
    }

    /// Step 4.
    fn on_request2(
        &mut self,
        request: &Message,
        id3: &[u8],
        layer: &Layer<'_>,
    ) -> Result<ResponderOutcome, RederiveError> {
        // "If the server receives a request with 'kid context' containing a CBOR bstr wrapping
        // ID3, where the first part of ID3 is identical to an R2 sent in a previous response
        // #1, which it has not received before, then the server derives a third security
        // context with ID Context = ID3."
        let mut ctx3 = self.params.derive_with_id_context(Some(id3))?;
        let stripped = without_kid_context(request)?;
        // "If the server can verify the request (see Section 8.2) with the third security
        // context ..."
        let (plain, binding, info) = unprotect_request(&stripped, |_, _| Some(&mut ctx3), layer)?;
        // "... then the server marks the third security context to be used with this client
        // and removes all instances of R2 associated to this security context from the cache."
        // Removing them is what makes a replayed request #2 fail ("The server MUST NOT accept
        // replayed request #2 messages"): no R2 matches any more, and the new context's replay
        // window already holds this request.
        self.pending.clear();
        tracing::info!("App. B.2: new security context established");
        Ok(ResponderOutcome::Established { request: plain, binding, info, context: ctx3 })
    }

    fn expire(&mut self, now: Instant) {
        self.pending.retain(|p| p.expires > now);
    }
}

/// A set of security contexts that can take part in App. B.2: what an endpoint running the
/// procedure needs besides [`SecurityContexts`](hopcore_layers::SecurityContexts), implemented
/// by [`ContextStore`](crate::ContextStore).
pub trait RederiveContexts: hopcore_layers::SecurityContexts {
    /// The preestablished input parameters of `id` if it may be re-derived (credentials
    /// `rederive = true` and parameters attached); `None` otherwise.
    fn rederive_params(&self, id: Self::Id) -> Option<&ContextParams>;

    /// Every context whose Recipient ID is `kid`, whatever its ID Context (RFC 8613 §8.2
    /// step 2 without the 'kid context').
    fn recipients(&self, kid: &[u8]) -> Vec<Self::Id>;

    /// The current context of `id`, for reading.
    fn current(&self, id: Self::Id) -> Option<&SecurityContext>;

    /// Swaps in the new context of a completed run (steps 4 and 5: "This security context
    /// replaces the previous security context"). Called only after the run succeeded.
    fn install_rederived(&mut self, id: Self::Id, ctx: SecurityContext) -> Result<(), String>;
}

impl RederiveContexts for crate::ContextStore {
    fn rederive_params(&self, id: crate::ContextId) -> Option<&ContextParams> {
        if self.rederive_allowed(id) {
            self.params(id)
        } else {
            None
        }
    }

    fn recipients(&self, kid: &[u8]) -> Vec<crate::ContextId> {
        self.lookup_recipient_all(kid, None)
    }

    fn current(&self, id: crate::ContextId) -> Option<&SecurityContext> {
        self.get(id)
    }

    fn install_rederived(&mut self, id: crate::ContextId, ctx: SecurityContext) -> Result<(), String> {
        self.replace(id, ctx).map(drop).map_err(|e| e.to_string())
    }
}

/// The message with the kid context removed from its OSCORE option, so that the message layer
/// looks the context up by kid only (the kid context may be CBOR-wrapped, which the layer would
/// not recognize as the ID Context). Not part of the AAD (RFC 8613 §5.4).
fn without_kid_context(msg: &Message) -> Result<Message, RederiveError> {
    let mut copy = msg.clone();
    set_kid_context(&mut copy, None)?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbor_bstr_kid_context() {
        let e = KidContextEncoding::CborBstr;
        assert_eq!(e.encode(&[1, 2]).unwrap(), [0x42, 1, 2]);
        assert_eq!(e.encode(&[]).unwrap(), [0x40]);
        let long = vec![7u8; 24];
        assert_eq!(e.encode(&long).unwrap()[..2], [0x58, 24]);
        assert_eq!(e.decode(&e.encode(&long).unwrap()).unwrap(), long);
        assert_eq!(e.decode(&[0x42, 1, 2]).unwrap(), [1, 2]);
        assert!(matches!(e.decode(&[0x42, 1]), Err(RederiveError::BadKidContext)));
        assert!(matches!(e.decode(&[0x42, 1, 2, 3]), Err(RederiveError::BadKidContext)));
        assert!(matches!(e.decode(&[0x58, 2, 1, 2]), Err(RederiveError::BadKidContext)), "not preferred");
        assert!(matches!(e.decode(&[0x01]), Err(RederiveError::BadKidContext)));
        assert!(matches!(e.decode(&[]), Err(RederiveError::BadKidContext)));
        assert!(matches!(e.encode(&[0; 254]), Err(RederiveError::IdContextTooLong { .. })));
        assert_eq!(e.encode(&[0; 253]).unwrap().len(), 255);
        assert_eq!(KidContextEncoding::Raw.encode(&[1]).unwrap(), [1]);
        assert_eq!(KidContextEncoding::Raw.decode(&[1]).unwrap(), [1]);
    }
}
