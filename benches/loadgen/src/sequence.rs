//! Exactly-once, in-order checking of one receiver's messages, per sender: every message
//! carries its sender's sequence number (0, 1, 2, ...), so a receiver can tell a lost message,
//! a duplicate and one that arrived after a later one from the same sender. Pure, no I/O.

/// What one received sequence number was, for the sender it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The next one expected: the common case.
    InOrder,
    /// Later than the next one expected: the ones between are missing (so far).
    AfterGap,
    /// One that was missing: it arrived after a later one (reordered, not lost).
    Late,
    /// Already received.
    Duplicate,
}

/// One sender's messages as one receiver has them.
#[derive(Default, Clone)]
struct Track {
    /// The sequence number expected next: all before it arrived, or are in `missing`.
    next: u64,
    /// Missing sequence numbers below `next`, as half-open ranges in ascending order. Almost
    /// always empty; ranges keep a large gap (a node that lost a million messages) small.
    missing: Vec<(u64, u64)>,
}

impl Track {
    fn see(&mut self, seq: u64) -> Seen {
        if seq == self.next {
            self.next += 1;
            return Seen::InOrder;
        }
        if seq > self.next {
            self.missing.push((self.next, seq));
            self.next = seq + 1;
            return Seen::AfterGap;
        }
        // Below `next`: a late arrival if it is in a missing range, else a repeat.
        let Some(i) = self.missing.iter().position(|&(a, b)| a <= seq && seq < b) else {
            return Seen::Duplicate;
        };
        let (a, b) = self.missing[i];
        match (seq == a, seq + 1 == b) {
            (true, true) => {
                self.missing.remove(i);
            }
            (true, false) => self.missing[i].0 = seq + 1,
            (false, true) => self.missing[i].1 = seq,
            (false, false) => {
                self.missing[i].1 = seq;
                self.missing.insert(i + 1, (seq + 1, b));
            }
        }
        Seen::Late
    }

    /// Messages of the `sent` this sender sent (sequence numbers 0..sent) never received.
    fn lost(&self, sent: u64) -> u64 {
        let gaps: u64 = self.missing.iter().map(|&(a, b)| b - a).sum();
        gaps + sent.saturating_sub(self.next)
    }
}

/// Counts of what went wrong at one receiver, or summed over many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

impl Faults {
    pub fn add(&mut self, o: Faults) {
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
    }

    pub fn is_clean(&self) -> bool {
        *self == Faults::default()
    }
}

/// Every sender's messages as one receiver has them.
pub struct Checker {
    tracks: Vec<Track>,
    duplicated: u64,
    reordered: u64,
}

impl Checker {
    /// A receiver of `senders` senders, numbered 0..senders.
    pub fn new(senders: usize) -> Self {
        Checker { tracks: vec![Track::default(); senders], duplicated: 0, reordered: 0 }
    }

    /// Checks one received message; None if `sender` is not one of the senders.
    pub fn see(&mut self, sender: u32, seq: u64) -> Option<Seen> {
        let seen = self.tracks.get_mut(sender as usize)?.see(seq);
        match seen {
            Seen::Duplicate => self.duplicated += 1,
            Seen::Late => self.reordered += 1,
            Seen::InOrder | Seen::AfterGap => {}
        }
        Some(seen)
    }

    /// The faults, given how many messages each sender sent in all.
    pub fn faults(&self, sent: &[u64]) -> Faults {
        let lost = self.tracks.iter().zip(sent).map(|(t, &n)| t.lost(n)).sum();
        Faults { lost, duplicated: self.duplicated, reordered: self.reordered }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64], sent: u64) -> (Vec<Seen>, Faults) {
        let mut c = Checker::new(1);
        let seen = seqs.iter().map(|&s| c.see(0, s).unwrap()).collect();
        (seen, c.faults(&[sent]))
    }

    #[test]
    fn in_order_is_clean() {
        let (seen, f) = run(&[0, 1, 2, 3], 4);
        assert!(seen.iter().all(|&s| s == Seen::InOrder));
        assert!(f.is_clean());
    }

    #[test]
    fn tail_and_gaps_are_lost() {
        assert_eq!(run(&[0, 1], 4).1, Faults { lost: 2, ..Faults::default() });
        assert_eq!(run(&[0, 3, 4, 9], 10).1, Faults { lost: 6, ..Faults::default() });
        assert_eq!(run(&[], 3).1.lost, 3);
    }

    #[test]
    fn duplicates_are_counted_once_each() {
        let (seen, f) = run(&[0, 1, 1, 0, 2, 2], 3);
        assert_eq!(seen[2], Seen::Duplicate);
        assert_eq!(f, Faults { lost: 0, duplicated: 3, reordered: 0 });
    }

    #[test]
    fn late_arrivals_are_reordered_not_lost() {
        let (seen, f) = run(&[0, 3, 1, 2, 4], 5);
        assert_eq!(seen, [Seen::InOrder, Seen::AfterGap, Seen::Late, Seen::Late, Seen::InOrder]);
        assert_eq!(f, Faults { lost: 0, duplicated: 0, reordered: 2 });
        // A late one in the middle of a gap splits it; a repeat of it is then a duplicate.
        let (_, f) = run(&[0, 10, 5, 5, 1, 9], 11);
        assert_eq!(f, Faults { lost: 6, duplicated: 1, reordered: 3 });
    }

    #[test]
    fn senders_are_independent() {
        let mut c = Checker::new(2);
        assert_eq!(c.see(0, 0), Some(Seen::InOrder));
        assert_eq!(c.see(1, 0), Some(Seen::InOrder));
        assert_eq!(c.see(1, 1), Some(Seen::InOrder));
        assert_eq!(c.see(2, 0), None);
        assert_eq!(c.faults(&[2, 2]), Faults { lost: 1, ..Faults::default() });
    }
}
