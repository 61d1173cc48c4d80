//! The receiver's side of exactly-once: per sending node, numbered messages are delivered in
//! order, each once. A repeat is dropped; a gap holds what came after it while the sender is
//! asked to replay (`Nack`), and is given up on (counted as lost) only when the sender says the
//! messages are gone, or after repeated asks, or when too much waits behind it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::wire::Body;

/// How long a gap waits for its replay before it is asked for again.
pub const GAP_WAIT: Duration = Duration::from_millis(500);
/// Asks per gap before it is given up on.
pub const GAP_TRIES: u32 = 6;

pub enum Action {
    Deliver { origin: u64, body: Body },
    Nack { target: u64, from: u64, to: u64 },
}

struct Origin {
    /// The number expected next.
    next: u64,
    /// Messages that came early, by number.
    pending: BTreeMap<u64, Body>,
    /// The highest number known to exist (from messages or beats).
    known: u64,
    /// When the open gap was last asked for.
    asked: Option<Instant>,
    /// Asks since the gap opened.
    tries: u32,
}

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboxCounts {
    pub delivered: u64,
    pub duplicates: u64,
    /// Gaps asked for (a replay followed, or the gap was given up on).
    pub gaps: u64,
    /// Messages given up on: the sender no longer had them.
    pub lost: u64,
}

pub struct Inbox {
    origins: HashMap<u64, Origin>,
    /// Messages held behind one gap before it is given up on.
    pending_limit: usize,
    pub counts: InboxCounts,
}

impl Inbox {
    pub fn new(pending_limit: usize) -> Self {
        Self {
            origins: HashMap::new(),
            pending_limit: pending_limit.max(1),
            counts: InboxCounts::default(),
        }
    }

    /// A numbered message from `origin`. The first one heard from a node sets where it starts.
    pub fn accept(
        &mut self,
        now: Instant,
        origin: u64,
        seq: u64,
        body: Body,
        out: &mut Vec<Action>,
    ) {
        let o = self.origins.entry(origin).or_insert_with(|| Origin {
            next: seq,
            pending: BTreeMap::new(),
            known: 0,
            asked: None,
            tries: 0,
        });
        o.known = o.known.max(seq);
        if seq < o.next || o.pending.contains_key(&seq) {
            self.counts.duplicates += 1;
            return;
        }
        o.pending.insert(seq, body);
        drain(origin, o, &mut self.counts, out);
        if o.pending.len() > self.pending_limit {
            let upto = *o.pending.keys().next().unwrap() - 1;
            give_up(origin, o, upto, &mut self.counts, out);
        }
        ask(now, origin, o, &mut self.counts, out);
    }

    /// A beat: `origin` has published up to `last`; anything past what we got is a tail gap.
    pub fn beat(&mut self, now: Instant, origin: u64, last: u64, out: &mut Vec<Action>) {
        let Some(o) = self.origins.get_mut(&origin) else {
            // Never heard from it: start after what it has published so far.
            self.origins.insert(
                origin,
                Origin {
                    next: last + 1,
                    pending: BTreeMap::new(),
                    known: last,
                    asked: None,
                    tries: 0,
                },
            );
            return;
        };
        o.known = o.known.max(last);
        ask(now, origin, o, &mut self.counts, out);
    }

    /// `origin` no longer keeps its messages up to `upto`: stop waiting for them.
    pub fn gone(&mut self, origin: u64, upto: u64, out: &mut Vec<Action>) {
        if let Some(o) = self.origins.get_mut(&origin) {
            give_up(origin, o, upto, &mut self.counts, out);
        }
    }

    /// Asks again for gaps whose replay is late, and gives up on those asked for too often.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        for (origin, o) in self.origins.iter_mut() {
            if let Some(at) = o.asked {
                if now.duration_since(at) < GAP_WAIT {
                    continue;
                }
                let tries = o.tries;
                if tries >= GAP_TRIES {
                    let upto = o.pending.keys().next().map_or(o.known, |first| first - 1);
                    log::warn!(
                        "broker: node {origin:016x} did not replay messages {}..={upto} after {tries} asks; giving up on them",
                        o.next
                    );
                    give_up(*origin, o, upto, &mut self.counts, out);
                } else {
                    o.asked = None;
                }
            }
            ask(now, *origin, o, &mut self.counts, out);
        }
    }
}

/// Delivers what is next in line.
fn drain(origin: u64, o: &mut Origin, counts: &mut InboxCounts, out: &mut Vec<Action>) {
    while let Some(body) = o.pending.remove(&o.next) {
        out.push(Action::Deliver { origin, body });
        counts.delivered += 1;
        o.next += 1;
    }
    if o.next > o.known {
        o.asked = None;
        o.tries = 0;
    }
}

/// Asks for the open gap, if there is one and it is not already asked for.
fn ask(now: Instant, origin: u64, o: &mut Origin, counts: &mut InboxCounts, out: &mut Vec<Action>) {
    if o.asked.is_some() || o.next > o.known {
        return;
    }
    let to = o.pending.keys().next().map_or(o.known, |first| first - 1);
    if to < o.next {
        return;
    }
    if o.tries == 0 {
        counts.gaps += 1;
    }
    o.tries += 1;
    o.asked = Some(now);
    out.push(Action::Nack {
        target: origin,
        from: o.next,
        to,
    });
}

/// Stops waiting for everything up to `upto`: what came early is delivered, the rest is lost.
fn give_up(
    origin: u64,
    o: &mut Origin,
    upto: u64,
    counts: &mut InboxCounts,
    out: &mut Vec<Action>,
) {
    while o.next <= upto {
        match o.pending.remove(&o.next) {
            Some(body) => {
                out.push(Action::Deliver { origin, body });
                counts.delivered += 1;
            }
            None => counts.lost += 1,
        }
        o.next += 1;
    }
    o.asked = None;
    o.tries = 0;
    drain(origin, o, counts, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(i: u64) -> Body {
        Body::Presence {
            counts: vec![(i.to_string(), 0)],
        }
    }

    fn delivered(out: &[Action]) -> Vec<u64> {
        out.iter()
            .filter_map(|a| match a {
                Action::Deliver {
                    body: Body::Presence { counts },
                    ..
                } => Some(counts[0].0.parse().unwrap()),
                _ => None,
            })
            .collect()
    }

    fn nacks(out: &[Action]) -> Vec<(u64, u64)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Nack { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn in_order_once_with_repeats_dropped() {
        let now = Instant::now();
        let mut inbox = Inbox::new(100);
        let mut out = Vec::new();
        for seq in [5, 6, 6, 7, 5] {
            inbox.accept(now, 1, seq, body(seq), &mut out);
        }
        assert_eq!(delivered(&out), vec![5, 6, 7]);
        assert_eq!(inbox.counts.duplicates, 2);
        assert!(nacks(&out).is_empty());
    }

    #[test]
    fn a_gap_is_asked_for_and_filled_in_order() {
        let now = Instant::now();
        let mut inbox = Inbox::new(100);
        let mut out = Vec::new();
        inbox.accept(now, 1, 1, body(1), &mut out);
        inbox.accept(now, 1, 4, body(4), &mut out);
        inbox.accept(now, 1, 5, body(5), &mut out);
        assert_eq!(delivered(&out), vec![1]);
        assert_eq!(nacks(&out), vec![(2, 3)]);
        out.clear();
        inbox.accept(now, 1, 3, body(3), &mut out);
        inbox.accept(now, 1, 2, body(2), &mut out);
        assert_eq!(delivered(&out), vec![2, 3, 4, 5]);
        assert_eq!(inbox.counts.lost, 0);
    }

    #[test]
    fn a_beat_reveals_a_tail_gap() {
        let now = Instant::now();
        let mut inbox = Inbox::new(100);
        let mut out = Vec::new();
        inbox.accept(now, 1, 1, body(1), &mut out);
        inbox.beat(now, 1, 3, &mut out);
        assert_eq!(nacks(&out), vec![(2, 3)]);
        out.clear();
        // Asked again only after GAP_WAIT.
        inbox.tick(now, &mut out);
        assert!(nacks(&out).is_empty());
        inbox.tick(now + GAP_WAIT, &mut out);
        assert_eq!(nacks(&out), vec![(2, 3)]);
    }

    #[test]
    fn gone_messages_are_counted_and_the_rest_delivered() {
        let now = Instant::now();
        let mut inbox = Inbox::new(100);
        let mut out = Vec::new();
        inbox.accept(now, 1, 1, body(1), &mut out);
        inbox.accept(now, 1, 5, body(5), &mut out);
        inbox.accept(now, 1, 3, body(3), &mut out);
        inbox.gone(1, 3, &mut out);
        assert_eq!(delivered(&out), vec![1, 3]);
        assert_eq!(inbox.counts.lost, 1); // 2; 4 is still awaited
        out.clear();
        inbox.gone(1, 4, &mut out);
        assert_eq!(delivered(&out), vec![5]);
        assert_eq!(inbox.counts.lost, 2);
    }

    #[test]
    fn repeated_asks_end_in_giving_up() {
        let start = Instant::now();
        let mut inbox = Inbox::new(100);
        let mut out = Vec::new();
        inbox.accept(start, 1, 1, body(1), &mut out);
        inbox.accept(start, 1, 3, body(3), &mut out);
        for i in 1..=GAP_TRIES {
            inbox.tick(start + GAP_WAIT * i, &mut out);
        }
        assert_eq!(delivered(&out), vec![1, 3]);
        assert_eq!(inbox.counts.lost, 1);
    }

    #[test]
    fn too_much_behind_a_gap_gives_it_up() {
        let now = Instant::now();
        let mut inbox = Inbox::new(2);
        let mut out = Vec::new();
        inbox.accept(now, 1, 1, body(1), &mut out);
        for seq in 3..=5 {
            inbox.accept(now, 1, seq, body(seq), &mut out);
        }
        assert_eq!(delivered(&out), vec![1, 3, 4, 5]);
        assert_eq!(inbox.counts.lost, 1);
    }

    #[test]
    fn a_beat_from_a_new_node_starts_after_it() {
        let now = Instant::now();
        let mut inbox = Inbox::new(10);
        let mut out = Vec::new();
        inbox.beat(now, 2, 40, &mut out);
        inbox.accept(now, 2, 41, body(41), &mut out);
        assert_eq!(delivered(&out), vec![41]);
        assert!(nacks(&out).is_empty());
    }
}
