//! Observe on the client side (RFC 7641 §3).
//!
//! [`Observation`] wraps the endpoint's [`Notifications`] of one registration and adds:
//! - ordering: a notification older than the newest one seen is dropped (§3.4);
//! - Block-wise: a notification carrying Block2 with M=1 is completed with GET requests for the
//!   following blocks, without Observe and with fresh tokens (RFC 7959 §2.6, §3.4);
//! - the end of the observation: a response without Observe, or an error response, is yielded
//!   and then the observation ends (§3.2);
//! - cancellation with a GET with Observe 1 on the observation's token ([`Observation::cancel`],
//!   §3.6); dropping the [`Observation`] just forgets the token, so that the next notification
//!   is answered with a Reset, which also ends the observation at the server (§3.6);
//! - optionally, re-registration when the latest notification's Max-Age runs out (§3.3.1).
//!
//! With a security hook ([`Client::with_security`]) the registration is protected and its
//! verifier checks every notification (RFC 8613 §8.4). The oscore layer accepts only
//! notifications with a Partial IV greater than the newest one accepted (§7.4.1, §8.4.2) and
//! gives them the Observe value of the Partial IV (§4.1.3.5.2), so that order replaces the
//! RFC 7641 §3.4 check. An older notification is dropped; one that fails verification is
//! dropped too (logged), unless the message layer ended the exchange with it, in which case
//! the observation ends with the error. Re-registrations and the deregistration are protected
//! as new requests.

use std::net::SocketAddr;
use std::time::Duration;

use hopcore_codec::{num, Message, Token};
use hopcore_messaging::RequestError;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::blockwise;
use super::security::{self, ResponseVerifier, SecurityError};
use super::{Client, ClientError};
use crate::endpoint::Notifications;

/// The 128 s after which sequence numbers are no longer compared (RFC 7641 §3.4).
const REORDER_WINDOW: Duration = Duration::from_secs(128);

/// Max-Age when the option is absent (RFC 7252 §5.10.5).
const DEFAULT_MAX_AGE: u32 = 60;

/// Extra wait after Max-Age before re-registering, for a notification that is on its way.
const REREGISTER_GRACE: Duration = Duration::from_secs(2);

/// RFC 7641 §3.4: is a notification with Observe value `v2` newer than the last one, with
/// value `v1`, received `since_v1` earlier? Values are compared as 24-bit serial numbers:
///
/// ```text
/// (V1 < V2 and V2 - V1 < 2^23) or
/// (V1 > V2 and V1 - V2 > 2^23) or
/// (T2 > T1 + 128 seconds)
/// ```
pub fn is_fresh(v1: u32, v2: u32, since_v1: Duration) -> bool {
    const HALF: u32 = 1 << 23;
    let (v1, v2) = (v1 & 0xFF_FFFF, v2 & 0xFF_FFFF);
    (v1 < v2 && v2 - v1 < HALF) || (v1 > v2 && v1 - v2 > HALF) || since_v1 > REORDER_WINDOW
}

/// A running observation, from [`Client::observe`].
#[derive(Debug)]
pub struct Observation {
    client: Client,
    peer: SocketAddr,
    /// The registration request, with its token and Observe 0.
    registration: Message,
    notifications: Option<Notifications>,
    /// The first response, reassembled, until [`Observation::next`] yields it.
    pending: Option<Message>,
    /// Observe value and arrival time of the newest notification (RFC 7641 §3.4).
    last: Option<(u32, Instant)>,
    /// When the (re-)registration request was sent.
    registered_at: Instant,
    /// When to re-register if nothing newer arrived (RFC 7641 §3.3.1).
    refresh_at: Option<Instant>,
    ended: bool,
    /// The verifier of the (latest) registration, with a security hook: it checks every
    /// notification and keeps their order (RFC 8613 §7.4.1).
    verifier: Option<Box<dyn ResponseVerifier>>,
}

enum Step {
    Item(Option<Result<Message, RequestError>>),
    Refresh,
}

/// The registration sent and its first response, verified.
struct Registered {
    notifications: Notifications,
    verifier: Option<Box<dyn ResponseVerifier>>,
    first: Message,
    start: Instant,
}

/// Sends the registration `req` (protected, with a security hook) and waits for the first
/// response (at most `request_timeout`), which is verified. `req.token` becomes the token the
/// message layer used.
async fn send_registration(client: &Client, peer: SocketAddr, req: &mut Message) -> Result<Registered, ClientError> {
    let (wire, mut verifier) = client.protect(peer, req.clone())?;
    wire.to_bytes().map_err(ClientError::Encode)?;
    let start = Instant::now();
    let mut notifications = client.endpoint().observe(peer, wire).map_err(|_| ClientError::Closed)?;
    let first = match tokio::time::timeout(client.config().request_timeout, notifications.next()).await {
        Err(_) => {
            drop(notifications);
            client.endpoint().forget(peer, req.token);
            return Err(ClientError::Timeout { peer, elapsed: start.elapsed() });
        }
        Ok(None) => return Err(ClientError::Closed),
        Ok(Some(Err(e))) => return Err(ClientError::from_request(e, peer, start.elapsed())),
        Ok(Some(Ok(m))) => m,
    };
    // The message layer could have replaced a token that was in use.
    req.token = notifications.token().unwrap_or(req.token);
    // RFC 8613 §8.4: the first response is verified like any other; on failure the
    // notifications are dropped, which forgets the token (later ones get a Reset).
    let first = match verifier.as_mut() {
        Some(v) => v.verify(&first).map_err(|e| ClientError::from_security(e, peer))?,
        None => first,
    };
    Ok(Registered { notifications, verifier, first, start })
}

/// Sends the registration and waits for the first response (at most `request_timeout`).
pub(super) async fn register(client: &Client, peer: SocketAddr, req: Message) -> Result<Observation, ClientError> {
    let mut req = req;
    // RFC 7641 §3.1: Observe 0 registers.
    req.options.set_uint(num::OBSERVE, 0);
    if req.token.is_empty() {
        req.token = client.fresh_token();
    }
    blockwise::early_block2(client, &mut req);
    req.to_bytes().map_err(ClientError::Encode)?;
    let mut echoed = false;
    let Registered { notifications, verifier, first, start } = loop {
        let registered = send_registration(client, peer, &mut req).await?;
        let echo = match (&registered.verifier, security::echo_challenge(&registered.first)) {
            (Some(_), Some(echo)) => echo.to_vec(),
            _ => break registered,
        };
        // RFC 8613 App. B.1.2, RFC 9175 §2.3: repeat the registration once with the Echo of
        // the (verified) 4.01; the challenge ended the first exchange.
        if echoed {
            return Err(ClientError::EchoRepeated { peer });
        }
        debug!(%peer, "freshness challenge (4.01 with Echo): repeating the registration with the Echo");
        echoed = true;
        drop(registered);
        req.options.set(num::ECHO, &echo);
        req.token = client.fresh_token();
    };
    if echoed {
        // The Echo was for that one request; re-registrations and the deregistration are new
        // requests that the server no longer challenges.
        req.options.remove(num::ECHO);
    }
    let mut obs = Observation {
        client: client.clone(),
        peer,
        registration: req,
        notifications: Some(notifications),
        pending: None,
        last: None,
        registered_at: start,
        refresh_at: None,
        ended: false,
        verifier,
    };
    match obs.process(first, true).await {
        Some(Ok(m)) => obs.pending = Some(m),
        Some(Err(e)) => return Err(e),
        None => {}
    }
    Ok(obs)
}

impl Observation {
    /// The first response, then each fresh notification, in order; `None` once the
    /// observation has ended (after yielding the response that ended it, or an error).
    ///
    /// Not cancel-safe while a notification is being completed block-wise: dropping the future
    /// then loses that notification (a later one still comes).
    pub async fn next(&mut self) -> Option<Result<Message, ClientError>> {
        if let Some(m) = self.pending.take() {
            return Some(Ok(m));
        }
        loop {
            if self.ended {
                return None;
            }
            let notifications = self.notifications.as_mut()?;
            let step = match self.refresh_at {
                Some(at) => tokio::select! {
                    item = notifications.next() => Step::Item(item),
                    _ = tokio::time::sleep_until(at) => Step::Refresh,
                },
                None => Step::Item(notifications.next().await),
            };
            match step {
                Step::Refresh => {
                    if let Err(e) = self.reregister() {
                        self.end();
                        return Some(Err(e));
                    }
                }
                Step::Item(None) => {
                    self.end();
                    return None;
                }
                Step::Item(Some(Err(e))) => {
                    self.end();
                    return Some(Err(ClientError::from_request(e, self.peer, self.registered_at.elapsed())));
                }
                Step::Item(Some(Ok(m))) => match self.verify(m) {
                    Ok(Some(m)) => {
                        if let Some(r) = self.process(m, false).await {
                            return Some(r);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.end();
                        return Some(Err(e));
                    }
                },
            }
        }
    }

    /// The peer being observed.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The token of the observation.
    pub fn token(&self) -> Token {
        self.registration.token
    }

    /// True once the server ended the observation, or it failed or was cancelled.
    pub fn is_ended(&self) -> bool {
        self.ended && self.pending.is_none()
    }

    /// Cancels the observation (RFC 7641 §3.6) with a deregistration request; errors of that
    /// request are only logged. Use [`Observation::deregister`] to see them.
    pub async fn cancel(self) {
        let peer = self.peer;
        if let Err(e) = self.deregister().await {
            debug!(%peer, error = %e, "deregistration failed; the server ends the observation on a Reset");
        }
    }

    /// Cancels the observation (RFC 7641 §3.6): forgets its token, then sends a GET with the
    /// same token and options as the registration, but Observe 1. Returns the response to that
    /// request (not completed block-wise; a notification that crossed it may come instead), or
    /// `None` if the observation had already ended.
    pub async fn deregister(mut self) -> Result<Option<Message>, ClientError> {
        if self.ended {
            return Ok(None);
        }
        self.end();
        // The Forget of the dropped Notifications and this one are handled before the new
        // request, so the token is free again when it goes out.
        self.notifications = None;
        self.client.endpoint().forget(self.peer, self.registration.token);
        let mut m = self.registration.clone();
        m.options.set_uint(num::OBSERVE, 1);
        self.client.exchange(self.peer, m).await.map(Some)
    }

    /// Verifies a notification with the registration's verifier (RFC 8613 §8.4). `Ok(None)`:
    /// dropped, the observation goes on.
    fn verify(&mut self, m: Message) -> Result<Option<Message>, ClientError> {
        let Some(verifier) = self.verifier.as_mut() else {
            return Ok(Some(m));
        };
        match verifier.verify(&m) {
            Ok(plain) => Ok(Some(plain)),
            Err(SecurityError::Stale(reason)) => {
                // RFC 8613 §7.4.1: older than the newest notification, or replayed.
                debug!(peer = %self.peer, %reason, "dropped an old notification");
                Ok(None)
            }
            Err(e) => {
                // The message layer ends the exchange on a response that is not a success with
                // Observe (RFC 7641 §3.2): then nothing else comes and the failure is the end.
                let last = !(m.code.is_success() && m.options.contains(num::OBSERVE));
                if last {
                    return Err(ClientError::from_security(e, self.peer));
                }
                // RFC 8613 §8.4 step 8: stop processing this message; a forged or damaged
                // notification does not end the observation.
                warn!(peer = %self.peer, error = %e, "dropped a notification that failed OSCORE verification");
                Ok(None)
            }
        }
    }

    fn end(&mut self) {
        self.ended = true;
        self.refresh_at = None;
    }

    /// RFC 7641 §3.3.1: re-registers with the same token and options, so that the server
    /// updates its entry rather than adding one.
    fn reregister(&mut self) -> Result<(), ClientError> {
        debug!(peer = %self.peer, token = %self.registration.token, "Max-Age expired without a notification: re-registering");
        self.notifications = None;
        self.client.endpoint().forget(self.peer, self.registration.token);
        // A new request: protected anew, with a new binding for its notifications.
        let (wire, verifier) = self.client.protect(self.peer, self.registration.clone())?;
        let n = self.client.endpoint().observe(self.peer, wire).map_err(|_| ClientError::Closed)?;
        self.notifications = Some(n);
        if verifier.is_some() {
            self.verifier = verifier;
        }
        self.registered_at = Instant::now();
        self.refresh_at = None;
        Ok(())
    }

    /// Handles one response or notification: `None` if it is to be skipped.
    async fn process(&mut self, m: Message, first: bool) -> Option<Result<Message, ClientError>> {
        let now = Instant::now();
        let observe = m.options.get_uint(num::OBSERVE).map(|v| v & 0xFF_FFFF);
        let Some(v) = observe.filter(|_| m.code.is_success()) else {
            // RFC 7641 §3.2: a response without Observe, or an error response, ends it.
            self.end();
            if m.code.is_success() && blockwise::has_more_blocks(&m) {
                return Some(self.reassemble(m, true).await);
            }
            return Some(Ok(m));
        };
        // Protected: the verifier already ordered the notifications by Partial IV (RFC 8613
        // §4.1.3.5.2, §7.4.1); the first response may carry 0 like the first notification
        // with a Partial IV of 0.
        if let Some((v1, t1)) = self.last.filter(|_| self.verifier.is_none()) {
            if !is_fresh(v1, v, now.saturating_duration_since(t1)) {
                // RFC 7641 §3.4: an older notification that arrived late.
                debug!(peer = %self.peer, last = v1, stale = v, "dropped a reordered notification");
                return None;
            }
        }
        self.last = Some((v, now));
        if self.client.config().observe_reregister {
            let max_age = m.options.get_uint(num::MAX_AGE).unwrap_or(DEFAULT_MAX_AGE);
            self.refresh_at = Some(now + Duration::from_secs(max_age.into()) + REREGISTER_GRACE);
        }
        if !blockwise::has_more_blocks(&m) {
            return Some(Ok(m));
        }
        match self.reassemble(m, first).await {
            Err(ClientError::EtagChanged { .. }) if !first => {
                // RFC 7959 §2.6: the representation changed while its blocks were fetched; a
                // notification for the new state follows.
                debug!(peer = %self.peer, observe = v, "notification superseded during its block-wise transfer");
                None
            }
            Ok(mut full) => {
                if !full.options.contains(num::OBSERVE) {
                    full.options.set_uint(num::OBSERVE, v);
                }
                Some(Ok(full))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// RFC 7959 §2.6: the rest of a notification is fetched as if its first block had answered
    /// a GET: the registration's options without Observe, with fresh tokens.
    async fn reassemble(&self, m: Message, restartable: bool) -> Result<Message, ClientError> {
        let mut template = self.registration.clone();
        template.options.remove(num::OBSERVE);
        template.token = Token::EMPTY;
        blockwise::collect(&self.client, self.peer, &template, m, restartable).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_rfc7641_3_4() {
        let s = Duration::from_secs(1);
        assert!(is_fresh(10, 11, s));
        assert!(!is_fresh(11, 10, s));
        assert!(!is_fresh(10, 10, s));
        // 24-bit wrap-around.
        assert!(is_fresh(0xFF_FFFF, 0, s));
        assert!(is_fresh(0xFF_FFF0, 5, s));
        assert!(!is_fresh(5, 0xFF_FFF0, s));
        // Exactly half the space apart is not newer either way.
        assert!(!is_fresh(0, 1 << 23, s));
        assert!(is_fresh(0, (1 << 23) - 1, s));
        // After 128 s, anything goes.
        assert!(is_fresh(11, 10, Duration::from_secs(129)));
        assert!(!is_fresh(11, 10, Duration::from_secs(128)));
    }
}
