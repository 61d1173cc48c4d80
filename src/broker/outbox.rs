//! The publisher's side of exactly-once: every numbered message this node publishes is kept in
//! a bounded ring until it is old enough to be pushed out, so it can be published again when
//! Redis was away (not yet sent) or a receiver missed it (asked for by a `Nack`).

use std::collections::VecDeque;

use bytes::Bytes;

use super::wire::{self, Body};

pub struct Outbox {
    origin: u64,
    capacity: usize,
    /// The number the next message gets; numbers start at 1 (0 marks control messages).
    next_seq: u64,
    /// Consecutive numbers, oldest first.
    ring: VecDeque<(u64, Bytes)>,
    /// Highest number Redis has accepted.
    sent_upto: u64,
    /// Control messages and replays, sent before the next numbered batch.
    control: VecDeque<Bytes>,
    /// Messages pushed out of the ring before Redis ever took them (an outage past the bound).
    pub dropped: u64,
}

/// What one pipeline to Redis carries.
pub struct Batch {
    pub messages: Vec<Bytes>,
    /// The highest number in it (0 when it holds control messages only).
    pub upto: u64,
}

/// Control messages waiting past this are dropped: they are beats and requests that are
/// repeated anyway, and replays a receiver asks for again.
const CONTROL_LIMIT: usize = 4096;

impl Outbox {
    pub fn new(origin: u64, capacity: usize) -> Self {
        Self {
            origin,
            capacity: capacity.max(1),
            next_seq: 1,
            ring: VecDeque::new(),
            sent_upto: 0,
            control: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Numbers and keeps a message; returns its number. When the ring is full a broadcast
    /// pushes the oldest out, counted as dropped if Redis never took it. Presence updates never
    /// push anything out (they are few, and only made while Redis is reachable), so the bound
    /// is what it says: `capacity` broadcasts survive an outage.
    pub fn push(&mut self, body: &Body) -> u64 {
        debug_assert!(body.is_sequenced());
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ring
            .push_back((seq, wire::encode(self.origin, seq, body)));
        let broadcast = matches!(body, Body::Room { .. } | Body::All { .. } | Body::Chat(_));
        while broadcast && self.ring.len() > self.capacity {
            let (old, _) = self.ring.pop_front().unwrap();
            if old > self.sent_upto {
                self.dropped += 1;
            }
        }
        seq
    }

    pub fn push_control(&mut self, body: &Body) {
        self.control.push_back(wire::encode(self.origin, 0, body));
        if self.control.len() > CONTROL_LIMIT {
            self.control.pop_front();
        }
    }

    /// The next messages to publish, in order: control first, then up to `max` numbered ones
    /// Redis has not taken yet. `None` when there is nothing to send.
    pub fn batch(&mut self, max: usize) -> Option<Batch> {
        let mut messages: Vec<Bytes> = self.control.drain(..).collect();
        let mut upto = 0;
        let first = self.ring.front().map_or(self.next_seq, |(s, _)| *s);
        let start = (self.sent_upto + 1).max(first);
        let from = ((start - first) as usize).min(self.ring.len());
        let to = (from + max).min(self.ring.len());
        for (seq, data) in self.ring.range(from..to) {
            messages.push(data.clone());
            upto = *seq;
        }
        (!messages.is_empty()).then_some(Batch { messages, upto })
    }

    /// Redis took everything up to `upto`.
    pub fn sent(&mut self, upto: u64) {
        self.sent_upto = self.sent_upto.max(upto);
    }

    /// The highest number Redis has taken (what a beat announces).
    pub fn sent_upto(&self) -> u64 {
        self.sent_upto
    }

    /// Numbered messages Redis has not taken yet.
    pub fn unsent(&self) -> u64 {
        let first = self.ring.front().map_or(self.next_seq, |(s, _)| *s);
        (self.next_seq - 1).saturating_sub(self.sent_upto.max(first - 1))
    }

    /// Queues the messages `from..=to` again for a receiver that missed them. Returns the number
    /// of the newest one no longer kept, if the range reaches that far back (the receiver is
    /// told with `Gone` and stops waiting for them). Unsent ones are left to go out in order.
    pub fn replay(&mut self, from: u64, to: u64) -> usize {
        let to = to.min(self.sent_upto);
        let first = self.ring.front().map_or(self.next_seq, |(s, _)| *s);
        if from < first {
            self.push_control(&Body::Gone { upto: first - 1 });
        }
        let mut n = 0;
        for (seq, data) in self.ring.iter() {
            if *seq > to {
                break;
            }
            if *seq >= from {
                self.control.push_back(data.clone());
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::wire::{decode, Frame};
    use crate::frames::Text;

    fn room(i: u32) -> Body {
        Body::Room {
            room: "r".into(),
            frame: Frame::Text(Text::from(i.to_string())),
        }
    }

    fn seqs(batch: &Batch) -> Vec<u64> {
        batch
            .messages
            .iter()
            .map(|m| decode(m.clone()).unwrap().seq)
            .collect()
    }

    #[test]
    fn batches_go_in_order_and_resume_after_a_failure() {
        let mut out = Outbox::new(9, 100);
        for i in 0..5 {
            assert_eq!(out.push(&room(i)), u64::from(i) + 1);
        }
        let b = out.batch(3).unwrap();
        assert_eq!((seqs(&b), b.upto), (vec![1, 2, 3], 3));
        // The pipeline failed: the same messages come again.
        let b = out.batch(3).unwrap();
        assert_eq!(seqs(&b), vec![1, 2, 3]);
        out.sent(3);
        assert_eq!(out.unsent(), 2);
        let b = out.batch(10).unwrap();
        assert_eq!(seqs(&b), vec![4, 5]);
        out.sent(b.upto);
        assert!(out.batch(10).is_none());
        assert_eq!(out.unsent(), 0);
    }

    #[test]
    fn an_outage_past_the_bound_drops_the_oldest_and_counts_it() {
        let mut out = Outbox::new(1, 3);
        for i in 0..5 {
            out.push(&room(i));
        }
        assert_eq!(out.dropped, 2);
        assert_eq!(out.unsent(), 3);
        let b = out.batch(10).unwrap();
        assert_eq!(seqs(&b), vec![3, 4, 5]);
    }

    #[test]
    fn presence_never_pushes_a_broadcast_out() {
        let mut out = Outbox::new(1, 2);
        out.push(&room(0));
        out.push(&room(1));
        out.push(&Body::Snapshot { counts: vec![] });
        assert_eq!((out.dropped, out.unsent()), (0, 3));
        out.push(&room(2));
        assert_eq!(out.dropped, 2);
        assert_eq!(seqs(&out.batch(10).unwrap()), vec![3, 4]);
    }

    #[test]
    fn replays_what_it_kept_and_says_what_is_gone() {
        let mut out = Outbox::new(1, 3);
        for i in 0..5 {
            out.push(&room(i));
        }
        out.sent(5);
        assert_eq!(out.replay(1, 4), 2);
        let b = out.batch(10).unwrap();
        let msgs: Vec<_> = b.messages.into_iter().map(|m| decode(m).unwrap()).collect();
        assert_eq!(msgs[0].body, Body::Gone { upto: 2 });
        assert_eq!(msgs[1].seq, 3);
        assert_eq!(msgs[2].seq, 4);
        assert_eq!(msgs.len(), 3);
    }
}
