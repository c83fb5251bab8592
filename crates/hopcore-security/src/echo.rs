//! Echo values for request freshness (RFC 9175 §2.4) as the OSCORE server uses them after a
//! reboot (RFC 8613 App. B.1.2).
//!
//! Construction: "List of Cached Random Values and Timestamps" (RFC 9175 App. A, method 1).
//! Each value is [`ECHO_LEN`] bytes from the operating system's CSPRNG, remembered together
//! with the context it was issued for and its expiry. A value verifies only for that context,
//! only before it expires, and only once (the B.1.2 exchange needs one verification; after
//! that the replay window is synchronized).
//!
//! Memory is bounded: at most [`EchoIssuer::MAX_PER_CONTEXT`] live values per context and
//! `capacity` in total; issuing beyond either evicts the oldest value. RFC 9175 App. A gives the
//! security level as `s = bits(r) − log2(n)` for `n` active values: 64 bits with at most 4
//! values per context (values verify only for their own context) leaves 62 bits.
//!
//! Time is a monotonic [`Instant`] (RFC 9175 §6: "Servers SHOULD use a monotonic clock"); the
//! `*_at` methods take it as an argument so the logic is testable without sleeping. The list
//! is memory only: after a restart all old values are gone, as RFC 9175 App. A requires ("If the
//! server loses time continuity, e.g. due to reboot, the entries in the old list MUST be
//! deleted").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::store::ContextId;

/// Length of an issued Echo value: 64 random bits (RFC 9175 §6: "the Echo option value SHOULD
/// contain 64 (pseudo-)random bits that are not predictable for any other party than the
/// server").
pub const ECHO_LEN: usize = 8;

/// How long an issued value stays valid by default. B.1.2 needs one round trip (the client
/// resends the request with the value); CoAP's EXCHANGE_LIFETIME (RFC 7252 §4.8.2) of 247 s
/// bounds a retransmitted exchange, and anything older is not a fresh reaction to the 4.01.
pub const DEFAULT_ECHO_LIFETIME: Duration = Duration::from_secs(247);

/// Default bound on the number of live Echo values per store.
pub const DEFAULT_ECHO_CAPACITY: usize = 1024;

struct Issued {
    context: ContextId,
    value: [u8; ECHO_LEN],
    expires: Instant,
}

/// Issues and verifies Echo values bound to security contexts (RFC 9175 §2.4, method 1 of
/// App. A). One per [`ContextStore`](crate::ContextStore).
pub struct EchoIssuer {
    issued: VecDeque<Issued>,
    lifetime: Duration,
    capacity: usize,
}

impl core::fmt::Debug for EchoIssuer {
    /// The values are short-lived secrets (guessing one defeats the freshness check): only counts.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EchoIssuer")
            .field("live", &self.issued.len())
            .field("lifetime", &self.lifetime)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for EchoIssuer {
    fn default() -> Self {
        EchoIssuer::new(DEFAULT_ECHO_LIFETIME, DEFAULT_ECHO_CAPACITY)
    }
}

impl EchoIssuer {
    /// Live values kept per context; a fifth issue for the same context evicts its oldest.
    pub const MAX_PER_CONTEXT: usize = 4;

    /// An issuer whose values expire after `lifetime`, keeping at most `capacity` (at least 1)
    /// live values.
    pub fn new(lifetime: Duration, capacity: usize) -> Self {
        EchoIssuer { issued: VecDeque::new(), lifetime, capacity: capacity.max(1) }
    }

    /// A fresh value for `id`, valid from now for the configured lifetime.
    pub fn issue(&mut self, id: ContextId) -> [u8; ECHO_LEN] {
        self.issue_at(id, Instant::now())
    }

    /// A fresh value for `id`, valid from `now`.
    pub fn issue_at(&mut self, id: ContextId, now: Instant) -> [u8; ECHO_LEN] {
        let mut value = [0u8; ECHO_LEN];
        // RFC 9175 §6: unpredictable values need a secure random source; OsRng is the OS CSPRNG.
        OsRng.fill_bytes(&mut value);
        self.insert(id, value, now);
        value
    }

    fn insert(&mut self, id: ContextId, value: [u8; ECHO_LEN], now: Instant) {
        self.expire(now);
        // Bounded memory (RFC 9175 §6: the cached-values method "may be vulnerable to resource
        // exhaustion attacks"): per context, then in total, the oldest value goes first.
        let mine = self.issued.iter().filter(|e| e.context == id).count();
        if mine >= Self::MAX_PER_CONTEXT {
            if let Some(pos) = self.issued.iter().position(|e| e.context == id) {
                self.issued.remove(pos);
            }
        }
        while self.issued.len() >= self.capacity {
            self.issued.pop_front();
        }
        let expires = now.checked_add(self.lifetime).unwrap_or(now);
        self.issued.push_back(Issued { context: id, value, expires });
    }

    /// Whether `echo` is a live value issued for `id`. A verified value is consumed.
    pub fn verify(&mut self, id: ContextId, echo: &[u8]) -> bool {
        self.verify_at(id, echo, Instant::now())
    }

    /// [`verify`](Self::verify) at time `now`.
    pub fn verify_at(&mut self, id: ContextId, echo: &[u8], now: Instant) -> bool {
        self.expire(now);
        if echo.len() != ECHO_LEN {
            return false;
        }
        // Compare every live value of this context in constant time, so the timing does not
        // tell how many leading bytes of a guess were right.
        let mut found = None;
        for (i, e) in self.issued.iter().enumerate() {
            if e.context == id && bool::from(e.value.ct_eq(echo)) {
                found = Some(i);
            }
        }
        match found {
            Some(i) => {
                self.issued.remove(i);
                true
            }
            None => false,
        }
    }

    /// Forgets every value issued for `id` (the context was removed or replaced).
    pub fn forget(&mut self, id: ContextId) {
        self.issued.retain(|e| e.context != id);
    }

    /// Number of live (issued, unexpired as of the last call, unused) values.
    pub fn live(&self) -> usize {
        self.issued.len()
    }

    fn expire(&mut self, now: Instant) {
        self.issued.retain(|e| e.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ContextId {
        ContextId::from_raw(n)
    }

    #[test]
    fn issued_value_verifies_once_for_its_context_only() {
        let mut issuer = EchoIssuer::default();
        let now = Instant::now();
        let a = issuer.issue_at(id(0), now);
        let b = issuer.issue_at(id(1), now);
        assert_ne!(a, b);
        assert!(!issuer.verify_at(id(1), &a, now), "bound to the context it was issued for");
        assert!(!issuer.verify_at(id(0), &a[..7], now));
        assert!(!issuer.verify_at(id(0), &[0; ECHO_LEN], now));
        assert!(issuer.verify_at(id(0), &a, now));
        assert!(!issuer.verify_at(id(0), &a, now), "single use");
        assert!(issuer.verify_at(id(1), &b, now));
    }

    #[test]
    fn values_expire() {
        let mut issuer = EchoIssuer::new(Duration::from_secs(10), 16);
        let t0 = Instant::now();
        let a = issuer.issue_at(id(0), t0);
        let b = issuer.issue_at(id(0), t0);
        assert!(issuer.verify_at(id(0), &a, t0 + Duration::from_secs(9)));
        assert!(!issuer.verify_at(id(0), &b, t0 + Duration::from_secs(10)));
        assert_eq!(issuer.live(), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let mut issuer = EchoIssuer::new(Duration::from_secs(60), 6);
        let now = Instant::now();
        let first = issuer.issue_at(id(0), now);
        for _ in 0..10 {
            issuer.issue_at(id(0), now);
        }
        assert_eq!(issuer.live(), EchoIssuer::MAX_PER_CONTEXT);
        assert!(!issuer.verify_at(id(0), &first, now), "oldest evicted");
        let other = issuer.issue_at(id(1), now);
        for n in 2..10 {
            issuer.issue_at(id(n), now);
        }
        assert_eq!(issuer.live(), 6);
        assert!(!issuer.verify_at(id(1), &other, now), "total capacity evicts the oldest");
        issuer.forget(id(9));
        assert_eq!(issuer.live(), 5);
    }

    #[test]
    fn debug_shows_no_values() {
        let mut issuer = EchoIssuer::default();
        let v = issuer.issue_at(id(0), Instant::now());
        let dbg = format!("{issuer:?}");
        assert!(!dbg.contains(&crate::params::to_hex(&v)));
        assert!(dbg.contains("live: 1"));
    }
}
