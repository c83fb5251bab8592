//! Replay window for received requests (RFC 8613 §7.4, §3.2.2).
//!
//! The default mechanism is the anti-replay sliding window of RFC 6347 §4.1.2.6 with a window
//! size of 32 (RFC 8613 §3.2.2). Sizes up to 128 are supported (u128 bitmap).
//!
//! Processing a request is two steps:
//! 1. [`ReplayWindow::check`] before decrypting (cheap rejection, no state change);
//! 2. [`ReplayWindow::commit`] only **after** the AEAD verified the message. Updating the window
//!    for a message that fails authentication would let an attacker move the window forward
//!    with forged Partial IVs (test-vectors §8.6). `commit` re-validates, so the validation and
//!    the update are one atomic step under `&mut self` (RFC 8613 §7.4: "The operation of
//!    validating the Partial IV and updating the replay protection MUST be atomic"); two
//!    messages with the same Partial IV that both passed `check` cannot both be committed.

use crate::error::Error;

/// Default window size (RFC 8613 §3.2.2: "with a window size of 32").
pub const DEFAULT_REPLAY_WINDOW: u32 = 32;
/// Largest supported window size (bits in the bitmap).
pub const MAX_REPLAY_WINDOW: u32 = u128::BITS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum State {
    /// Fresh context: nothing received yet, every sequence number is acceptable
    /// (RFC 8613 §3.2.2).
    Empty,
    /// `highest` and `bitmap` are meaningful.
    Active,
    /// State was lost (RFC 8613 §7.5, App. B.1.2): refuse until synchronized.
    Unsynchronized,
}

/// Sliding replay window over received sequence numbers (RFC 8613 §7.4).
///
/// Bit `i` of the bitmap records whether `highest − i` was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayWindow {
    bitmap: u128,
    highest: u64,
    size: u8,
    state: State,
}

impl Default for ReplayWindow {
    /// A window of the default size 32 (RFC 8613 §3.2.2).
    fn default() -> Self {
        ReplayWindow { bitmap: 0, highest: 0, size: DEFAULT_REPLAY_WINDOW as u8, state: State::Empty }
    }
}

impl ReplayWindow {
    /// A fresh window of `size` sequence numbers (1..=128) for a newly derived context.
    pub fn new(size: u32) -> Result<Self, Error> {
        Ok(ReplayWindow { size: validate_size(size)?, ..Self::default() })
    }

    /// A window whose state was lost, e.g. after a reboot (RFC 8613 §7.5, App. B.1.2): every
    /// request is refused with [`Error::ReplayWindowUnsynchronized`] until
    /// [`synchronize`](Self::synchronize) is called once freshness has been established (Echo,
    /// RFC 9175).
    pub fn unsynchronized(size: u32) -> Result<Self, Error> {
        Ok(ReplayWindow { size: validate_size(size)?, state: State::Unsynchronized, ..Self::default() })
    }

    /// The window size.
    pub fn size(&self) -> u32 {
        u32::from(self.size)
    }

    /// The highest sequence number accepted so far, if any.
    pub fn highest(&self) -> Option<u64> {
        match self.state {
            State::Active => Some(self.highest),
            State::Empty | State::Unsynchronized => None,
        }
    }

    /// Whether the window can accept requests (false after [`unsynchronized`](Self::unsynchronized)).
    pub fn is_synchronized(&self) -> bool {
        self.state != State::Unsynchronized
    }

    /// Checks that `seq` has not been received and is not too old (RFC 8613 §7.4: "A server
    /// SHALL verify that the Sender Sequence Number received in the 'Partial IV' parameter ...
    /// has not been received before"). Does not change the window.
    pub fn check(&self, seq: u64) -> Result<(), Error> {
        match self.state {
            State::Unsynchronized => Err(Error::ReplayWindowUnsynchronized),
            State::Empty => Ok(()),
            State::Active => {
                if seq > self.highest {
                    return Ok(());
                }
                let offset = self.highest - seq;
                // RFC 6347 §4.1.2.6: "Received packets that contain sequence numbers outside
                // the window ... to the left of the window MUST be discarded".
                if offset >= u64::from(self.size) {
                    return Err(Error::ReplayTooOld { seq, highest: self.highest, window: self.size() });
                }
                if self.bitmap & (1u128 << offset) != 0 {
                    // RFC 6347 §4.1.2.6: duplicate → discard.
                    return Err(Error::Replay { seq });
                }
                Ok(())
            }
        }
    }

    /// Records `seq` as received. Call only after the message was successfully decrypted
    /// and verified (RFC 6347 §4.1.2.6: "The receive window is updated only if the MAC
    /// verification succeeds"). Re-validates first, so a replay is still refused here.
    pub fn commit(&mut self, seq: u64) -> Result<(), Error> {
        self.check(seq)?;
        match self.state {
            State::Unsynchronized => return Err(Error::ReplayWindowUnsynchronized),
            State::Empty => {
                self.highest = seq;
                self.bitmap = 1;
                self.state = State::Active;
            }
            State::Active if seq > self.highest => {
                // Slide the window right: old bits move to higher offsets.
                let shift = seq - self.highest;
                self.bitmap = if shift >= u64::from(u128::BITS) { 0 } else { self.bitmap << shift };
                self.bitmap |= 1;
                self.highest = seq;
            }
            State::Active => {
                // `check` guaranteed `highest − seq < size ≤ 128`.
                self.bitmap |= 1u128 << (self.highest - seq);
            }
        }
        self.bitmap &= self.mask();
        Ok(())
    }

    /// Establishes the window after a freshness check, e.g. a request verified with the Echo
    /// option (RFC 8613 App. B.1.2: "the Partial IV of the second request is set as the lower
    /// limit of the Replay Window"). `seq` and everything below it count as received; only
    /// higher sequence numbers are accepted afterwards.
    pub fn synchronize(&mut self, seq: u64) {
        self.highest = seq;
        self.bitmap = self.mask();
        self.state = State::Active;
    }

    fn mask(&self) -> u128 {
        if u32::from(self.size) >= u128::BITS {
            u128::MAX
        } else {
            (1u128 << self.size) - 1
        }
    }
}

fn validate_size(size: u32) -> Result<u8, Error> {
    if size == 0 || size > MAX_REPLAY_WINDOW {
        return Err(Error::InvalidWindowSize { size });
    }
    u8::try_from(size).map_err(|_| Error::InvalidWindowSize { size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn accept(w: &mut ReplayWindow, seq: u64) {
        w.check(seq).unwrap();
        w.commit(seq).unwrap();
    }

    #[test]
    fn default_is_32_and_accepts_anything_first() {
        let w = ReplayWindow::default();
        assert_eq!(w.size(), 32);
        assert_eq!(w.highest(), None);
        assert!(w.check(0).is_ok());
        assert!(w.check(1 << 39).is_ok());
        assert_eq!(ReplayWindow::new(32), Ok(w));
    }

    #[test]
    fn duplicates_and_too_old_are_rejected() {
        let mut w = ReplayWindow::default();
        accept(&mut w, 0);
        assert_eq!(w.check(0), Err(Error::Replay { seq: 0 }));
        accept(&mut w, 40);
        assert_eq!(w.highest(), Some(40));
        // Window covers 9..=40 (32 numbers).
        assert_eq!(w.check(8), Err(Error::ReplayTooOld { seq: 8, highest: 40, window: 32 }));
        assert_eq!(w.check(0), Err(Error::ReplayTooOld { seq: 0, highest: 40, window: 32 }));
        // Out-of-order but fresh, inside the window.
        accept(&mut w, 9);
        accept(&mut w, 39);
        accept(&mut w, 20);
        for seq in [9, 20, 39, 40] {
            assert_eq!(w.check(seq), Err(Error::Replay { seq }));
        }
        assert!(w.check(10).is_ok());
        assert!(w.check(41).is_ok());
    }

    #[test]
    fn check_does_not_update_only_commit_does() {
        let mut w = ReplayWindow::default();
        accept(&mut w, 5);
        // A message that fails decryption is checked but never committed.
        w.check(6).unwrap();
        assert_eq!(w.highest(), Some(5));
        assert!(w.check(6).is_ok(), "a failed message must not consume its number");
        // And a forged huge PIV that is not committed does not push the window.
        w.check(1 << 39).unwrap();
        assert!(w.check(4).is_ok());
    }

    #[test]
    fn interleaved_check_then_commit_is_atomic() {
        let mut w = ReplayWindow::default();
        // Two copies of the same request both pass `check` before either is committed.
        w.check(7).unwrap();
        w.check(7).unwrap();
        w.commit(7).unwrap();
        assert_eq!(w.commit(7), Err(Error::Replay { seq: 7 }));
    }

    #[test]
    fn large_jump_clears_history() {
        let mut w = ReplayWindow::new(64).unwrap();
        for s in 0..64 {
            accept(&mut w, s);
        }
        accept(&mut w, 1000);
        // 937..=999 are inside the window and fresh.
        assert!(w.check(937).is_ok());
        assert!(w.check(999).is_ok());
        assert!(matches!(w.check(936), Err(Error::ReplayTooOld { .. })));
        accept(&mut w, 1000 + 500);
        assert!(w.check(1000 + 499).is_ok());
    }

    #[test]
    fn window_64_and_128_edges() {
        for size in [1u32, 2, 64, 128] {
            let mut w = ReplayWindow::new(size).unwrap();
            accept(&mut w, 1000);
            let oldest = 1000 - u64::from(size) + 1;
            assert!(matches!(w.check(oldest - 1), Err(Error::ReplayTooOld { .. })), "size {size}");
            if oldest < 1000 {
                assert!(w.check(oldest).is_ok(), "size {size}");
                accept(&mut w, oldest);
            }
            assert_eq!(w.check(oldest), Err(Error::Replay { seq: oldest }));
            // Slide by exactly one: `oldest` falls out of the window.
            accept(&mut w, 1001);
            assert!(matches!(w.check(oldest), Err(Error::ReplayTooOld { .. })));
            assert_eq!(
                w.check(1000),
                if size > 1 {
                    Err(Error::Replay { seq: 1000 })
                } else {
                    Err(Error::ReplayTooOld { seq: 1000, highest: 1001, window: 1 })
                }
            );
        }
    }

    #[test]
    fn invalid_sizes() {
        assert_eq!(ReplayWindow::new(0), Err(Error::InvalidWindowSize { size: 0 }));
        assert_eq!(ReplayWindow::new(129), Err(Error::InvalidWindowSize { size: 129 }));
        assert_eq!(ReplayWindow::unsynchronized(1000), Err(Error::InvalidWindowSize { size: 1000 }));
    }

    #[test]
    fn unsynchronized_until_echo_verified() {
        let mut w = ReplayWindow::unsynchronized(32).unwrap();
        assert!(!w.is_synchronized());
        assert_eq!(w.check(3), Err(Error::ReplayWindowUnsynchronized));
        assert_eq!(w.commit(3), Err(Error::ReplayWindowUnsynchronized));
        // App. B.1.2: the PIV of the request verified fresh becomes the lower limit.
        w.synchronize(50);
        assert!(w.is_synchronized());
        assert_eq!(w.highest(), Some(50));
        assert_eq!(w.check(50), Err(Error::Replay { seq: 50 }));
        assert_eq!(w.check(49), Err(Error::Replay { seq: 49 }));
        assert!(matches!(w.check(10), Err(Error::ReplayTooOld { .. })));
        accept(&mut w, 51);
    }

    proptest! {
        /// Against a model (a set of everything accepted): accepted iff never seen and not below
        /// highest − size + 1. Never panics on any u64.
        #[test]
        fn matches_model(size in 1u32..=128, seqs in proptest::collection::vec(
            prop_oneof![0u64..300, any::<u64>()], 1..200)) {
            let mut w = ReplayWindow::new(size).unwrap();
            let mut seen = BTreeSet::new();
            let mut highest: Option<u64> = None;
            for seq in seqs {
                let fresh = !seen.contains(&seq)
                    && highest.is_none_or(|h| seq > h || h - seq < u64::from(size));
                let result = w.commit(seq);
                prop_assert_eq!(result.is_ok(), fresh, "seq {} highest {:?}", seq, highest);
                if fresh {
                    seen.insert(seq);
                    highest = Some(highest.map_or(seq, |h| h.max(seq)));
                }
                prop_assert_eq!(w.highest(), highest);
            }
        }
    }
}
