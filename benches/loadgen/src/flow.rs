//! One sender's messages in flight to many subscribers: a ring of the messages not yet
//! received by every subscriber, what counts against the sender's window, and giving up on the
//! stalled ones. No I/O; a sender and its subscribers share one (`fanout`'s publisher, each of
//! `cluster`'s senders).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use tokio::sync::Notify;

use crate::stats::Window;

/// A sent message still missing some deliveries (or complete, behind one that is not).
struct Entry {
    sent_ns: u64,
    remaining: u32,
    abandoned: bool,
}

/// Sequence numbers are the ring's indices from `base`.
pub struct Flow {
    /// A message not complete this long after it was sent stops holding a window slot (it may
    /// still complete, and is still checked).
    stall_ns: u64,
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
    /// An empty flow whose messages stall after `stall_ns`.
    pub fn new(stall_ns: u64) -> Self {
        Flow {
            stall_ns,
            ring: RefCell::default(),
            base: Cell::default(),
            incomplete: Cell::default(),
            live_from: Cell::default(),
            sent: Cell::default(),
            progress: Notify::new(),
        }
    }

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

    /// Messages sent within `window` that some subscriber has not received (yet).
    pub fn undelivered_sent_in(&self, window: &Window) -> usize {
        self.ring.borrow().iter().filter(|e| e.remaining > 0 && window.contains(e.sent_ns)).count()
    }

    /// Gives up on entries incomplete for the stall time (they stop counting against the window
    /// and may still complete); returns how many, and when the oldest entry still awaited will
    /// stall (None: none is awaited).
    pub fn abandon_old(&self, now: u64) -> (u64, Option<u64>) {
        let mut ring = self.ring.borrow_mut();
        let base = self.base.get();
        let mut seq = self.live_from.get().max(base);
        let (mut n, mut next_stall) = (0, None);
        while let Some(e) = ring.get_mut((seq - base) as usize) {
            if e.remaining > 0 && !e.abandoned {
                if e.sent_ns + self.stall_ns > now {
                    next_stall = Some(e.sent_ns + self.stall_ns);
                    break;
                }
                e.abandoned = true;
                self.incomplete.set(self.incomplete.get() - 1);
                n += 1;
            }
            seq += 1;
        }
        self.live_from.set(seq);
        (n, next_stall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: u64 = 1_000;

    #[test]
    fn completes_when_every_receiver_has_it() {
        let f = Flow::new(STALL);
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
        let f = Flow::new(STALL);
        f.push(0, 1);
        f.push(STALL, 1);
        assert_eq!(f.abandon_old(STALL - 1), (0, Some(STALL)));
        assert_eq!(f.abandon_old(STALL), (1, Some(2 * STALL)));
        assert_eq!(f.incomplete(), 1);
        assert_eq!(f.abandon_old(STALL), (0, Some(2 * STALL)), "abandoned once");
        assert!(!f.delivered(0));
        assert_eq!(f.incomplete(), 1, "a late abandoned message frees no second slot");
        assert!(f.delivered(1));
        assert_eq!((f.incomplete(), f.abandon_old(u64::MAX)), (0, (0, None)));
    }

    #[test]
    fn undelivered_counts_only_the_window() {
        let f = Flow::new(STALL);
        let window = Window { start_ns: 10, end_ns: 30 };
        for sent in [5, 10, 20, 30] {
            f.push(sent, 2);
        }
        assert_eq!(f.undelivered_sent_in(&window), 2);
        f.delivered(1);
        assert_eq!(f.undelivered_sent_in(&window), 2, "one of two copies");
        f.delivered(1);
        assert_eq!(f.undelivered_sent_in(&window), 1, "complete, behind one that is not");
        f.abandon_old(u64::MAX / 2);
        assert_eq!(f.undelivered_sent_in(&window), 1, "abandoned is still undelivered");
    }
}
