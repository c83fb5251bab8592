//! The client role: requests with Block-wise transfers (RFC 7959) and Observe (RFC 7641) on
//! top of an [`Endpoint`].
//!
//! - [`Client::request`] sends a request and returns one complete response: a request body
//!   larger than the block size goes out in Block1 blocks, and a response in Block2 blocks is
//!   fetched block by block and reassembled.
//! - [`Client::observe`] registers an observation and returns an [`Observation`] that yields
//!   the notifications in order, reassembled when they come in blocks.
//! - [`resolve`] and [`build_request`] turn a [`hopcore_codec::CoapUri`] into a first hop and
//!   a request message.
//!
//! Every exchange uses a fresh token (RFC 9175 §4.2), except the deregistration of an
//! observation, which reuses the observation's token (RFC 7641 §3.6).
//!
//! With [`Client::with_security`], every message the client sends goes through a
//! [`RequestProtector`] (e.g. [`OscoreProtector`], RFC 8613) *below* Block-wise and Observe: each
//! block request is its own OSCORE request and each notification is verified with the
//! registration's binding (see the [`security`] module). A verified 4.01 with an Echo option is
//! answered by repeating the request once with that Echo (RFC 8613 App. B.1.2, RFC 9175 §2.3).

mod blockwise;
mod error;
mod observe;
pub mod security;
mod uri;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopcore_codec::block::szx_for_size;
use hopcore_codec::{num, Message, MsgType, Token};
use tokio::time::Instant;
use tracing::{debug, trace};

use crate::endpoint::Endpoint;

pub use error::ClientError;
pub use observe::{is_fresh, Observation};
pub use security::{OscoreProtector, RequestProtector, ResponseVerifier, RouteProtector, SecurityError};
pub use uri::{build_request, resolve, Target};

/// Settings of a [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Preferred block size for Block1 and Block2 (16..=1024, rounded down to a power of two;
    /// RFC 7959 §2.2). Below 1024 it is proposed to the server with Block2 in the initial
    /// request (early negotiation, RFC 7959 §2.4).
    pub block_size: usize,
    /// Largest response body reassembled from blocks; larger ones fail with
    /// [`ClientError::BodyTooLarge`].
    pub max_body_size: usize,
    /// Upper bound on one exchange (a request and its response, including the retransmissions
    /// of a CON and the wait for a separate response). The message layer gives up by itself
    /// after MAX_TRANSMIT_WAIT (93 s with the default parameters, RFC 7252 §4.8.2); the default
    /// 95 s only catches what it does not. A block-wise transfer gets this bound per block.
    pub request_timeout: Duration,
    /// Sends every request as NON (RFC 7252 §4.3), whatever the type of the message passed
    /// in. When false, each request keeps its own type (`Message::request` makes a CON), and
    /// the follow-up requests of a block-wise transfer use the type of the first one.
    pub non_confirmable: bool,
    /// Re-registers an observation (RFC 7641 §3.3.1) when the Max-Age of its latest
    /// notification has expired without a newer one.
    pub observe_reregister: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            block_size: 1024,
            max_body_size: 16 << 20,
            request_timeout: Duration::from_secs(95),
            non_confirmable: false,
            observe_reregister: false,
        }
    }
}

impl ClientConfig {
    /// The SZX of the configured block size (RFC 7959 §2.2).
    pub fn szx(&self) -> u8 {
        szx_for_size(self.block_size)
    }
}

/// The client role over an [`Endpoint`]. Cheap to clone; clones share the endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: Endpoint,
    config: ClientConfig,
    /// Block1 operations in progress, by peer and cache key, with the Request-Tag each one
    /// uses (`None`: no Request-Tag), RFC 9175 §3.5.2.
    block1_ops: Mutex<Block1Ops>,
    /// The security hook every request goes through (OSCORE), if any.
    protector: Option<Arc<dyn RequestProtector>>,
}

/// Request-Tags (`None`: absent) of the Block1 operations in progress, by peer and the
/// operation's cache key.
type Block1Ops = HashMap<(SocketAddr, Vec<u8>), Vec<Option<Vec<u8>>>>;

impl Client {
    pub fn new(endpoint: Endpoint, config: ClientConfig) -> Client {
        Client { inner: Arc::new(Inner { endpoint, config, block1_ops: Mutex::new(HashMap::new()), protector: None }) }
    }

    /// A client whose every request is protected by `protector` and whose every response is
    /// verified by it (RFC 8613 §8.1, §8.4), below Block-wise and Observe. A response that
    /// fails verification or comes unprotected is never returned: the operation fails with
    /// [`ClientError::Verification`] or [`ClientError::Unprotected`].
    pub fn with_security(endpoint: Endpoint, config: ClientConfig, protector: Arc<dyn RequestProtector>) -> Client {
        Client {
            inner: Arc::new(Inner {
                endpoint,
                config,
                block1_ops: Mutex::new(HashMap::new()),
                protector: Some(protector),
            }),
        }
    }

    /// The security hook of this client, if it has one.
    pub fn protector(&self) -> Option<&Arc<dyn RequestProtector>> {
        self.inner.protector.as_ref()
    }

    /// A client with the default [`ClientConfig`].
    pub fn with_defaults(endpoint: Endpoint) -> Client {
        Client::new(endpoint, ClientConfig::default())
    }

    /// Binds a UDP socket for a pure client: requests arriving there are answered with 4.04.
    pub async fn bind(addr: SocketAddr, config: ClientConfig) -> std::io::Result<Client> {
        let (endpoint, _incoming) = Endpoint::bind(addr).await?;
        Ok(Client::new(endpoint, config))
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Sends a request and returns its complete response.
    ///
    /// - A payload larger than the block size is sent in Block1 blocks (RFC 7959 §2.5); see
    ///   the `blockwise` module for 2.31, SZX and 4.13 handling. A request that already carries
    ///   Block1 is sent as it is.
    /// - A response with Block2 and M=1 is completed with further requests for the following
    ///   blocks (RFC 7959 §2.4, §2.7) and returned as one message without Block2. A request
    ///   that asks for a block other than 0 itself gets just that block.
    ///
    /// Error responses (4.xx, 5.xx) are responses, not errors.
    pub async fn request(&self, peer: SocketAddr, req: Message) -> Result<Message, ClientError> {
        let mut req = req;
        self.set_type(&mut req);
        blockwise::request(self, peer, req).await
    }

    /// Registers an observation (RFC 7641 §3.1: the request gets Observe 0) and waits for the
    /// first response. The [`Observation`] yields that response first, then the notifications.
    pub async fn observe(&self, peer: SocketAddr, req: Message) -> Result<Observation, ClientError> {
        let mut req = req;
        self.set_type(&mut req);
        observe::register(self, peer, req).await
    }

    fn set_type(&self, m: &mut Message) {
        if self.inner.config.non_confirmable {
            m.mtype = MsgType::Non;
        } else if !matches!(m.mtype, MsgType::Con | MsgType::Non) {
            m.mtype = MsgType::Con;
        }
    }

    /// A fresh random token of the endpoint's configured length (RFC 7252 §5.3.1,
    /// RFC 9175 §4.2). The client picks its tokens itself so that it can forget an exchange it
    /// gives up on.
    fn fresh_token(&self) -> Token {
        let len = self.inner.endpoint.messaging_config().token_len.clamp(1, 8);
        let bytes: [u8; 8] = rand::random();
        Token::from_slice(&bytes[..len]).unwrap_or_default()
    }

    /// Protects a request with the client's security hook (its token already set): the message
    /// to send and the verifier of its responses; the request itself and no verifier without
    /// a hook.
    fn protect(
        &self,
        peer: SocketAddr,
        msg: Message,
    ) -> Result<(Message, Option<Box<dyn ResponseVerifier>>), ClientError> {
        match &self.inner.protector {
            None => Ok((msg, None)),
            Some(p) => {
                let (mut wire, verifier) = p.protect(peer, &msg).map_err(|e| ClientError::from_security(e, peer))?;
                // The oscore layer copies the token (it is not part of the AAD); the endpoint
                // tracks the request by it, so a hook must not change it.
                wire.token = msg.token;
                Ok((wire, Some(verifier)))
            }
        }
    }

    /// One exchange: sends `msg` (with a fresh token if it has none) and waits for the response
    /// at most `request_timeout`. With a security hook the request is protected and the
    /// response verified; a verified 4.01 with Echo is answered once by repeating the request
    /// with that Echo (RFC 8613 App. B.1.2, RFC 9175 §2.3), and the response to the repetition
    /// is returned.
    async fn exchange(&self, peer: SocketAddr, mut msg: Message) -> Result<Message, ClientError> {
        if msg.token.is_empty() {
            msg.token = self.fresh_token();
        }
        if self.inner.protector.is_none() {
            return self.exchange_wire(peer, msg).await;
        }
        let mut echoed = false;
        loop {
            let (wire, verifier) = self.protect(peer, msg.clone())?;
            let response = self.exchange_wire(peer, wire).await?;
            let Some(mut verifier) = verifier else {
                return Ok(response);
            };
            // RFC 8613 §8.4: only a verified response is returned; one that fails is dropped
            // and reported (§8.4 step 8).
            let response = verifier.verify(&response).map_err(|e| ClientError::from_security(e, peer))?;
            let Some(echo) = security::echo_challenge(&response) else {
                return Ok(response);
            };
            // RFC 9175 §2.3: "the client SHOULD resend the original request with the addition of
            // an Echo option with the received Echo option value"; an Inner Echo goes back Inner,
            // in the same security context. Once: a second challenge means the server does not
            // accept the Echo.
            if echoed {
                return Err(ClientError::EchoRepeated { peer });
            }
            debug!(%peer, "freshness challenge (4.01 with Echo): repeating the request with the Echo");
            echoed = true;
            msg.options.set(num::ECHO, echo);
            // A new request: a fresh token (RFC 9175 §4.2) and, under OSCORE, a new Partial IV.
            msg.token = self.fresh_token();
        }
    }

    /// One exchange of a message as it goes on the wire: waits for the response at most
    /// `request_timeout`. Given up or cancelled (the future dropped), the token is forgotten so
    /// that the messenger frees its NSTART slot (RFC 7252 §4.7).
    async fn exchange_wire(&self, peer: SocketAddr, msg: Message) -> Result<Message, ClientError> {
        msg.to_bytes().map_err(ClientError::Encode)?;
        trace!(%peer, token = %msg.token, code = %msg.code, "client exchange");
        let mut guard = ForgetOnDrop { endpoint: &self.inner.endpoint, peer, token: msg.token, armed: true };
        let start = Instant::now();
        let result =
            tokio::time::timeout(self.inner.config.request_timeout, self.inner.endpoint.request(peer, msg)).await;
        match result {
            Err(_) => Err(ClientError::Timeout { peer, elapsed: start.elapsed() }),
            Ok(Ok(m)) => {
                guard.armed = false;
                Ok(m)
            }
            Ok(Err(e)) => {
                // The messenger already dropped the request.
                guard.armed = false;
                Err(ClientError::from_endpoint(e, peer, start.elapsed()))
            }
        }
    }
}

/// Forgets a request's token when an exchange is abandoned.
struct ForgetOnDrop<'a> {
    endpoint: &'a Endpoint,
    peer: SocketAddr,
    token: Token,
    armed: bool,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.endpoint.forget(self.peer, self.token);
        }
    }
}
