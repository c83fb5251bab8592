//! Deduplication of incoming messages (RFC 7252 §4.5) with bounded memory.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use hopcore_codec::Token;

/// What the endpoint has done about an incoming message so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Handed to the application; no answer yet.
    Pending,
    /// An empty ACK was sent; the response will come separately (RFC 7252 §5.2.2).
    EmptyAcked,
    /// This is the answer (ACK with piggybacked response, or empty ACK): a duplicate gets it again.
    Answered(Vec<u8>),
    /// Handled, nothing to repeat (NON).
    Done,
}

#[derive(Debug)]
pub struct Entry {
    pub token: Token,
    pub expires: Instant,
    pub state: Handled,
}

type Key = (SocketAddr, u16);

/// Entries expire after their lifetime; when full, the oldest is dropped first.
#[derive(Debug)]
pub struct Dedup {
    map: HashMap<Key, Entry>,
    order: VecDeque<(Instant, Key)>,
    capacity: usize,
}

impl Dedup {
    pub fn new(capacity: usize) -> Self {
        Dedup { map: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops expired entries.
    pub fn sweep(&mut self, now: Instant) {
        while let Some(&(expires, key)) = self.order.front() {
            if expires > now && self.order.len() <= self.capacity {
                break;
            }
            self.order.pop_front();
            if self.map.get(&key).is_some_and(|e| e.expires == expires) {
                self.map.remove(&key);
            }
        }
    }

    /// The entry of a duplicate: same peer, Message ID and token. A message that reuses a
    /// Message ID with another token is a new message (IDs wrap within EXCHANGE_LIFETIME at high
    /// rates, and a retransmission is byte-identical), so it is not treated as a duplicate.
    pub fn duplicate(&mut self, peer: SocketAddr, mid: u16, token: &Token) -> Option<&mut Entry> {
        self.map.get_mut(&(peer, mid)).filter(|e| e.token == *token)
    }

    pub fn get_mut(&mut self, peer: SocketAddr, mid: u16) -> Option<&mut Entry> {
        self.map.get_mut(&(peer, mid))
    }

    pub fn insert(&mut self, now: Instant, peer: SocketAddr, mid: u16, token: Token, expires: Instant, state: Handled) {
        self.sweep(now);
        let key = (peer, mid);
        self.map.insert(key, Entry { token, expires, state });
        self.order.push_back((expires, key));
        if self.order.len() > self.capacity {
            self.sweep(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bounded_and_expiring() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let t0 = Instant::now();
        let mut d = Dedup::new(3);
        for mid in 0..10u16 {
            d.insert(t0, peer, mid, Token::EMPTY, t0 + Duration::from_secs(10), Handled::Done);
        }
        assert!(d.len() <= 3);
        assert!(d.duplicate(peer, 9, &Token::EMPTY).is_some());
        assert!(d.duplicate(peer, 0, &Token::EMPTY).is_none());
        // Same MID, other token: not a duplicate.
        assert!(d.duplicate(peer, 9, &Token::from_slice(&[1]).unwrap()).is_none());
        d.sweep(t0 + Duration::from_secs(11));
        assert_eq!(d.len(), 0);
    }
}
