//! One sender's messages in flight: a ring of the messages not yet received by every
//! subscriber, what counts against the sender's window, and giving up on the stalled ones.
//! No I/O; the sender and the subscribers of `cluster` share one per sender.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use tokio::sync::Notify;

/// A message not complete this long after it was sent stops holding its sender's window slot
/// (it is still checked). Longer than the other scenarios' second: the slowest peers' queueing
/// latency at this scenario's load is seconds, and giving up on slots sooner would let the
/// senders outrun them.
pub const STALL_NS: u64 = 5_000_000_000;

/// A sent message still missing some deliveries (or complete, behind one that is not).
struct Entry {
    sent_ns: u64,
    remaining: u32,
    abandoned: bool,
}

/// Sequence numbers are the ring's indices from `base`.
#[derive(Default)]
pub struct Flow {
    ring: RefCell<VecDeque<Entry>>,
    base: Cell<u64>,
    /// Entries neither complete nor abandoned: what counts against the sender's window.
    incomplete: Cell<u32>,
    /// Entries before this sequence number are complete or abandoned.
    live_from: Cell<u64>,
    /// Messages sent in all (the next sequence number).
    sent: Cell<u64>,
    /// Notified when a message completes (a window slot frees up).
    pub progress: Notify,
}

impl Flow {
    /// Records a message sent at `sent_ns` that `receivers` subscribers must get; returns its
    /// sequence number.
    pub fn push(&self, sent_ns: u64, receivers: u32) -> u64 {
        let mut ring = self.ring.borrow_mut();
        ring.push_back(Entry { sent_ns, remaining: receivers, abandoned: false });
        let seq = self.base.get() + ring.len() as u64 - 1;
        self.sent.set(seq + 1);
        self.incomplete.set(self.incomplete.get() + 1);
        seq
    }

    /// Messages sent in all.
    pub fn sent(&self) -> u64 {
        self.sent.get()
    }

    /// Messages holding a window slot.
    pub fn incomplete(&self) -> u32 {
        self.incomplete.get()
    }

    /// Every message sent has been received by all its subscribers.
    pub fn is_idle(&self) -> bool {
        self.ring.borrow().is_empty()
    }

    /// One subscriber has `seq` (for the first time); true when nothing is in flight any more.
    pub fn delivered(&self, seq: u64) -> bool {
        let mut ring = self.ring.borrow_mut();
        let Some(e) = seq.checked_sub(self.base.get()).and_then(|i| ring.get_mut(i as usize)) else {
            return false;
        };
        if e.remaining == 0 {
            return false;
        }
        e.remaining -= 1;
        if e.remaining > 0 {
            return false;
        }
        if !e.abandoned {
            self.incomplete.set(self.incomplete.get() - 1);
            self.progress.notify_one();
        }
        while ring.front().is_some_and(|e| e.remaining == 0) {
            ring.pop_front();
            self.base.set(self.base.get() + 1);
        }
        ring.is_empty()
    }

    /// Gives up on entries incomplete for STALL_NS (they stop counting against the window and
    /// are still checked); returns how many, and the send time of the oldest still awaited.
    pub fn abandon_old(&self, now: u64) -> (u64, Option<u64>) {
        let mut ring = self.ring.borrow_mut();
        let base = self.base.get();
        let mut seq = self.live_from.get().max(base);
        let (mut n, mut oldest) = (0, None);
        while let Some(e) = ring.get_mut((seq - base) as usize) {
            if e.remaining > 0 && !e.abandoned {
                if e.sent_ns + STALL_NS > now {
                    oldest = Some(e.sent_ns);
                    break;
                }
                e.abandoned = true;
                self.incomplete.set(self.incomplete.get() - 1);
                n += 1;
            }
            seq += 1;
        }
        self.live_from.set(seq);
        (n, oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_when_every_receiver_has_it() {
        let f = Flow::default();
        assert_eq!((f.push(10, 2), f.push(20, 2)), (0, 1));
        assert_eq!((f.sent(), f.incomplete()), (2, 2));
        assert!(!f.delivered(1));
        assert!(!f.delivered(1));
        assert!(!f.delivered(1), "a third copy of a 2-receiver message changes nothing");
        assert_eq!(f.incomplete(), 1);
        assert!(!f.is_idle(), "0 is still in flight");
        assert!(!f.delivered(0));
        assert!(f.delivered(0));
        assert!(f.is_idle());
        assert!(!f.delivered(7), "unknown sequence numbers are ignored");
        assert_eq!(f.push(30, 1), 2);
    }

    #[test]
    fn stalled_messages_free_their_slot_and_may_still_complete() {
        let f = Flow::default();
        f.push(0, 1);
        f.push(STALL_NS, 1);
        assert_eq!(f.abandon_old(STALL_NS - 1), (0, Some(0)));
        assert_eq!(f.abandon_old(STALL_NS), (1, Some(STALL_NS)));
        assert_eq!(f.incomplete(), 1);
        assert_eq!(f.abandon_old(STALL_NS), (0, Some(STALL_NS)), "abandoned once");
        assert!(!f.delivered(0));
        assert_eq!(f.incomplete(), 1, "a late abandoned message frees no second slot");
        assert!(f.delivered(1));
        assert_eq!((f.incomplete(), f.abandon_old(u64::MAX)), (0, (0, None)));
    }
}
