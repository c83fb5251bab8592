//! Observe, server side (RFC 7641): the list of observers and the [`Notifier`] handle.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hopcore_codec::{Message, MsgType, Token};
use tokio::sync::Notify;

/// State shared between a server, its [`Notifier`]s and its [`super::ServerHandle`].
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Paths whose state changed since the server last looked (coalesced).
    dirty: Mutex<HashSet<String>>,
    /// Wakes the server loop when `dirty` gained an entry.
    pub(crate) wake: Notify,
    pub(crate) shutdown: AtomicBool,
    pub(crate) stop: Notify,
    /// The number of observers, for monitoring and tests.
    pub(crate) observers: AtomicUsize,
}

impl Shared {
    pub(crate) fn take_dirty(&self) -> Vec<String> {
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        d.drain().collect()
    }
}

/// Tells a server that resources changed, so that it notifies their observers (RFC 7641 §4.2).
///
/// Cheap to clone and `Send`; usable from any thread or task. Changes are coalesced: several
/// calls for one path before the server gets to it produce one notification per observer.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub(crate) shared: Arc<Shared>,
}

impl Notifier {
    /// The resource at `path` (e.g. "/time", as given to [`super::Server::add_resource`])
    /// changed.
    pub fn notify(&self, path: &str) {
        let path = super::core::normalize(path);
        let mut d = self.shared.dirty.lock().unwrap_or_else(|e| e.into_inner());
        d.insert(path);
        drop(d);
        self.shared.wake.notify_one();
    }
}

/// One entry of the list of observers (RFC 7641 §4.1): keyed by client endpoint and token.
#[derive(Debug, Clone)]
pub(crate) struct Observer {
    pub path: String,
    /// The registration request, re-run for each notification (with Block2 removed).
    pub request: Message,
    pub identity: Option<String>,
    /// The block size the client asked for in the registration (RFC 7959 §2.6).
    pub szx: Option<u8>,
    /// Notifications sent since the last confirmable one.
    pub since_con: u32,
    pub last_con: Instant,
}

/// The list of observers of all resources of a server.
#[derive(Debug)]
pub(crate) struct Observers {
    map: HashMap<(SocketAddr, Token), Observer>,
    /// RFC 7641 §4.4: the Observe value is the 24 least significant bits of a strictly
    /// increasing sequence number. One counter for the whole server keeps the values strictly
    /// increasing per observer, also across re-registrations.
    next_seq: u32,
    max: usize,
    shared: Arc<Shared>,
}

impl Observers {
    pub(crate) fn new(max: usize, shared: Arc<Shared>) -> Observers {
        Observers { map: HashMap::new(), next_seq: 1, max, shared }
    }

    fn publish(&self) {
        self.shared.observers.store(self.map.len(), Ordering::Relaxed);
    }

    /// The next Observe value, 24 bits, wrapping (RFC 7641 §4.4).
    pub(crate) fn next_seq(&mut self) -> u32 {
        let v = self.next_seq;
        self.next_seq = (v + 1) & 0xFF_FFFF;
        v
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, peer: SocketAddr, token: Token) -> Option<&Observer> {
        self.map.get(&(peer, token))
    }

    /// Adds or replaces an entry; false if the list is full (RFC 7641 §4.1: a server unable to
    /// add an entry processes the GET as usual, without Observe).
    pub(crate) fn register(&mut self, peer: SocketAddr, token: Token, observer: Observer) -> bool {
        let key = (peer, token);
        if !self.map.contains_key(&key) && self.map.len() >= self.max {
            return false;
        }
        // RFC 7641 §4.1: a matching endpoint/token entry is replaced, not added twice.
        self.map.insert(key, observer);
        self.publish();
        true
    }

    pub(crate) fn remove(&mut self, peer: SocketAddr, token: Token) -> Option<Observer> {
        let o = self.map.remove(&(peer, token));
        self.publish();
        o
    }

    /// The observers of `path`.
    pub(crate) fn of_path(&self, path: &str) -> Vec<(SocketAddr, Token)> {
        self.map.iter().filter(|(_, o)| o.path == path).map(|(k, _)| *k).collect()
    }

    /// Chooses CON or NON for the next notification to an observer and records it: NON
    /// mostly, CON every `con_every`-th time and at least every `con_interval` (RFC 7641 §4.5:
    /// a CON at least every 24 hours, so that a client that went away is noticed).
    pub(crate) fn message_type(
        &mut self,
        peer: SocketAddr,
        token: Token,
        now: Instant,
        con_every: u32,
        con_interval: Duration,
    ) -> MsgType {
        let Some(o) = self.map.get_mut(&(peer, token)) else { return MsgType::Con };
        o.since_con = o.since_con.saturating_add(1);
        if o.since_con >= con_every.max(1) || now.saturating_duration_since(o.last_con) >= con_interval {
            o.since_con = 0;
            o.last_con = now;
            MsgType::Con
        } else {
            MsgType::Non
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_wraps_at_24_bits() {
        let mut o = Observers::new(1, Arc::default());
        o.next_seq = 0xFF_FFFF;
        assert_eq!(o.next_seq(), 0xFF_FFFF);
        assert_eq!(o.next_seq(), 0);
        assert_eq!(o.next_seq(), 1);
    }

    #[test]
    fn con_every_nth_and_bounded() {
        let shared = Arc::new(Shared::default());
        let mut o = Observers::new(1, shared.clone());
        let now = Instant::now();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let t = Token::from_slice(&[1]).unwrap();
        let obs = Observer {
            path: "/x".into(),
            request: Message::request(hopcore_codec::Code::GET),
            identity: None,
            szx: None,
            since_con: 0,
            last_con: now,
        };
        assert!(o.register(peer, t, obs.clone()));
        assert!(o.register(peer, t, obs.clone()), "re-registration replaces");
        assert!(!o.register(peer, Token::from_slice(&[2]).unwrap(), obs.clone()), "full");
        assert_eq!(shared.observers.load(Ordering::Relaxed), 1);
        let day = Duration::from_secs(86_400);
        let types: Vec<MsgType> = (0..6).map(|_| o.message_type(peer, t, now, 3, day)).collect();
        use MsgType::{Con, Non};
        assert_eq!(types, [Non, Non, Con, Non, Non, Con]);
        // A day without a CON forces one.
        assert_eq!(o.message_type(peer, t, now + day, 3, day), Con);
        assert_eq!(o.of_path("/x"), vec![(peer, t)]);
        assert!(o.remove(peer, t).is_some());
        assert_eq!(shared.observers.load(Ordering::Relaxed), 0);
    }
}
