//! Sender Sequence Number (RFC 8613 §3.2.2, §7.2, §7.2.1) with the reservation logic of
//! Appendix B.1.1, without any storage.
//!
//! With persistence enabled, numbers are handed out only from a block that the caller has
//! durably reserved:
//!
//! ```text
//! loop {
//!     match seq.next_piv() {
//!         Ok(piv) => { /* protect and send with piv */ break }
//!         Err(Error::PersistRequired { reserve_until, .. }) => {
//!             storage.write(reserve_until)?;          // durable, e.g. fsync
//!             seq.confirm_reserved(reserve_until);
//!         }
//!         Err(e) => return Err(e),                      // SequenceExhausted: rekey
//!     }
//! }
//! // after a reboot: SenderSequence::persistent(storage.read()?, k)
//! ```
//!
//! Storing the exclusive upper bound `SSN + K` and resuming from it is Appendix B.1.1 with the
//! `+ K` applied before the write (so `F` = 0 is safe: the write completes before any number of
//! the block is used).

use crate::error::Error;
use crate::option::{PartialIv, MAX_SEQUENCE_NUMBER};

/// One past the last usable sequence number (RFC 8613 §7.2.1: "SHALL be less than 2^40").
const SEQUENCE_LIMIT: u64 = MAX_SEQUENCE_NUMBER + 1;

/// The sender's sequence number counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SenderSequence {
    /// The number to use next; `SEQUENCE_LIMIT` when exhausted.
    next: u64,
    /// Exclusive bound of the durably reserved block (only meaningful when `step > 0`).
    reserved_until: u64,
    /// K of App. B.1.1; 0 = no persistence (volatile counter).
    step: u64,
}

impl Default for SenderSequence {
    /// A volatile counter starting at 0 (RFC 8613 §3.2.2: "The Sender Sequence Number is
    /// initialized to 0").
    fn default() -> Self {
        SenderSequence { next: 0, reserved_until: SEQUENCE_LIMIT, step: 0 }
    }
}

impl SenderSequence {
    /// A volatile counter starting at `start`, for contexts that are never reused after state
    /// loss (RFC 8613 §7.5). Values above 2^40 − 1 give an exhausted counter.
    pub fn volatile(start: u64) -> Self {
        SenderSequence { next: start.min(SEQUENCE_LIMIT), ..Self::default() }
    }

    /// A counter that requires numbers to be durably reserved in blocks of `k`
    /// (RFC 8613 App. B.1.1). `start` is 0 for a new context, or the value last stored via
    /// [`confirm_reserved`](Self::confirm_reserved) when resuming after a reboot. Nothing is
    /// reserved yet, so the first [`next_piv`](Self::next_piv) asks for a reservation.
    pub fn persistent(start: u64, k: u64) -> Result<Self, Error> {
        // App. B.1.1: "K is a positive integer".
        if k == 0 {
            return Err(Error::InvalidReservationStep);
        }
        let next = start.min(SEQUENCE_LIMIT);
        Ok(SenderSequence { next, reserved_until: next, step: k })
    }

    /// The number the next message would use (it may not be reserved yet).
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// The reservation step K, or `None` for a volatile counter.
    pub fn step(&self) -> Option<u64> {
        (self.step > 0).then_some(self.step)
    }

    /// Exclusive upper bound of the durably reserved numbers, or `None` for a volatile counter.
    pub fn reserved_until(&self) -> Option<u64> {
        (self.step > 0).then_some(self.reserved_until)
    }

    /// Whether the next number is outside the reserved block, so a reservation must be
    /// persisted before sending (RFC 8613 App. B.1.1). False once exhausted.
    pub fn needs_persist(&self) -> bool {
        self.step > 0 && !self.is_exhausted() && self.next >= self.reserved_until
    }

    /// The value to store durably to reserve the next block: `next + K`, capped at 2^40.
    pub fn reservation_target(&self) -> u64 {
        self.next.saturating_add(self.step).min(SEQUENCE_LIMIT)
    }

    /// Records that `until` (as returned by [`reservation_target`](Self::reservation_target) or
    /// [`Error::PersistRequired`]) has been durably stored. Reservations never shrink.
    pub fn confirm_reserved(&mut self, until: u64) {
        if self.step > 0 {
            self.reserved_until = self.reserved_until.max(until.min(SEQUENCE_LIMIT));
        }
    }

    /// Whether all 2^40 numbers have been used (RFC 8613 §7.2.1).
    pub fn is_exhausted(&self) -> bool {
        self.next > MAX_SEQUENCE_NUMBER
    }

    /// Takes the next sequence number and advances the counter.
    ///
    /// Errors: [`Error::SequenceExhausted`] after 2^40 − 1 has been used (RFC 8613 §7.2.1: "the
    /// endpoint MUST NOT process any more messages with the given Sender Context");
    /// [`Error::PersistRequired`] if persistence is on and the number is not reserved yet
    /// (the counter does not advance).
    pub fn next_sequence(&mut self) -> Result<u64, Error> {
        // RFC 8613 §7.2.1: maximum Sender Sequence Number is 2^40 − 1.
        if self.is_exhausted() {
            return Err(Error::SequenceExhausted);
        }
        // RFC 8613 App. B.1.1: store before using a number of a new block.
        if self.needs_persist() {
            return Err(Error::PersistRequired { next: self.next, reserve_until: self.reservation_target() });
        }
        let seq = self.next;
        self.next += 1;
        Ok(seq)
    }

    /// Like [`next_sequence`](Self::next_sequence), encoded as a Partial IV (RFC 8613 §5, §6.1).
    pub fn next_piv(&mut self) -> Result<PartialIv, Error> {
        let seq = self.next_sequence()?;
        PartialIv::from_sequence(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatile_counts_from_zero() {
        let mut s = SenderSequence::default();
        assert!(!s.needs_persist());
        assert_eq!(s.reserved_until(), None);
        assert_eq!(s.step(), None);
        assert_eq!(s.next_piv().unwrap().as_bytes(), [0x00]);
        assert_eq!(s.next_piv().unwrap().as_bytes(), [0x01]);
        assert_eq!(s.peek(), 2);
        let mut s = SenderSequence::volatile(20);
        // C.4: sender sequence number 20 → PIV 14.
        assert_eq!(s.next_piv().unwrap().as_bytes(), [0x14]);
    }

    #[test]
    fn exhaustion_after_2_pow_40_minus_1() {
        let mut s = SenderSequence::volatile(MAX_SEQUENCE_NUMBER - 1);
        assert_eq!(s.next_sequence(), Ok(MAX_SEQUENCE_NUMBER - 1));
        assert!(!s.is_exhausted());
        let last = s.next_piv().unwrap();
        assert_eq!(last.as_bytes(), [0xff; 5]);
        assert!(s.is_exhausted());
        assert_eq!(s.next_piv(), Err(Error::SequenceExhausted));
        assert_eq!(s.next_sequence(), Err(Error::SequenceExhausted));
        assert_eq!(s.peek(), SEQUENCE_LIMIT, "must stay exhausted, no wrap");
        assert!(SenderSequence::volatile(u64::MAX).is_exhausted());
    }

    #[test]
    fn persistent_requires_reservation_per_block() {
        let mut s = SenderSequence::persistent(0, 10).unwrap();
        assert!(s.needs_persist());
        assert_eq!(s.reserved_until(), Some(0));
        assert_eq!(s.next_sequence(), Err(Error::PersistRequired { next: 0, reserve_until: 10 }));
        assert_eq!(s.peek(), 0, "a refused call must not consume a number");
        s.confirm_reserved(10);
        assert!(!s.needs_persist());
        for expected in 0..10 {
            assert_eq!(s.next_sequence(), Ok(expected));
        }
        assert!(s.needs_persist());
        assert_eq!(s.next_sequence(), Err(Error::PersistRequired { next: 10, reserve_until: 20 }));
        // A stale confirmation does not shrink the reservation or unlock anything.
        s.confirm_reserved(5);
        assert_eq!(s.reserved_until(), Some(10));
        assert!(s.needs_persist());
        s.confirm_reserved(s.reservation_target());
        assert_eq!(s.next_sequence(), Ok(10));
    }

    #[test]
    fn resume_after_reboot_never_reuses_numbers() {
        let k = 16;
        let mut before = SenderSequence::persistent(0, k).unwrap();
        let mut stored = 0;
        let mut used = Vec::new();
        for _ in 0..40 {
            match before.next_sequence() {
                Ok(n) => used.push(n),
                Err(Error::PersistRequired { reserve_until, .. }) => {
                    stored = reserve_until;
                    before.confirm_reserved(reserve_until);
                    used.push(before.next_sequence().unwrap());
                }
                Err(e) => panic!("{e}"),
            }
        }
        // "Reboot": resume from the stored value.
        let mut after = SenderSequence::persistent(stored, k).unwrap();
        after.confirm_reserved(after.reservation_target());
        let first = after.next_sequence().unwrap();
        assert!(used.iter().all(|&u| u < first), "{first} reused");
        assert_eq!(first, 48);
    }

    #[test]
    fn reservation_is_capped_at_the_limit() {
        let mut s = SenderSequence::persistent(MAX_SEQUENCE_NUMBER - 2, 100).unwrap();
        assert_eq!(s.reservation_target(), SEQUENCE_LIMIT);
        s.confirm_reserved(u64::MAX);
        assert_eq!(s.reserved_until(), Some(SEQUENCE_LIMIT));
        for _ in 0..3 {
            s.next_sequence().unwrap();
        }
        assert!(!s.needs_persist());
        assert_eq!(s.next_sequence(), Err(Error::SequenceExhausted));
        assert_eq!(SenderSequence::persistent(0, 0), Err(Error::InvalidReservationStep));
    }
}
