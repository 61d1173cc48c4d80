//! Who is in which room on the other nodes, for cluster-wide counts. Each node reports its own
//! absolute counts; a node is dropped from every count when it has not been heard from for the
//! lease (it died, or lost Redis), or at once when it says goodbye.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::wire::Counts;

struct Node {
    rooms: HashMap<String, u32>,
    heard: Instant,
}

#[derive(Default)]
pub struct Presence {
    nodes: HashMap<u64, Node>,
    /// Sum over the nodes, per room, kept as counts change.
    totals: HashMap<String, u64>,
}

impl Presence {
    /// Any message from `origin` renews its lease.
    pub fn heard(&mut self, origin: u64, now: Instant) {
        self.nodes
            .entry(origin)
            .or_insert_with(|| Node {
                rooms: HashMap::new(),
                heard: now,
            })
            .heard = now;
    }

    /// Applies a node's counts; a snapshot replaces all it said before.
    pub fn apply(&mut self, origin: u64, counts: Counts, snapshot: bool, now: Instant) {
        self.heard(origin, now);
        let node = self.nodes.get_mut(&origin).unwrap();
        if snapshot {
            for (room, n) in node.rooms.drain() {
                sub(&mut self.totals, &room, n);
            }
        }
        for (room, n) in counts {
            let old = if n == 0 {
                node.rooms.remove(&room).unwrap_or(0)
            } else {
                node.rooms.insert(room.clone(), n).unwrap_or(0)
            };
            sub(&mut self.totals, &room, old);
            if n > 0 {
                *self.totals.entry(room).or_default() += u64::from(n);
            }
        }
    }

    pub fn remove(&mut self, origin: u64) -> bool {
        let Some(node) = self.nodes.remove(&origin) else {
            return false;
        };
        for (room, n) in node.rooms {
            sub(&mut self.totals, &room, n);
        }
        true
    }

    /// Drops the nodes whose lease ran out; returns them.
    pub fn expire(&mut self, now: Instant, lease: Duration) -> Vec<u64> {
        let dead: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| now.duration_since(n.heard) >= lease)
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            self.remove(*id);
        }
        dead
    }

    /// Renews every lease: after this node was cut off from Redis, silence proved nothing.
    pub fn renew_all(&mut self, now: Instant) {
        for node in self.nodes.values_mut() {
            node.heard = now;
        }
    }

    /// Members of `room` on the other nodes.
    pub fn count(&self, room: &str) -> u64 {
        self.totals.get(room).copied().unwrap_or(0)
    }

    /// Other nodes heard from within the lease.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Rooms with members on other nodes.
    pub fn rooms(&self) -> Vec<String> {
        self.totals.keys().cloned().collect()
    }
}

fn sub(totals: &mut HashMap<String, u64>, room: &str, n: u32) {
    if n == 0 {
        return;
    }
    if let Some(t) = totals.get_mut(room) {
        *t = t.saturating_sub(u64::from(n));
        if *t == 0 {
            totals.remove(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_across_nodes_and_snapshots_replace() {
        let now = Instant::now();
        let mut p = Presence::default();
        p.apply(1, vec![("a".into(), 2), ("b".into(), 1)], false, now);
        p.apply(2, vec![("a".into(), 3)], false, now);
        assert_eq!((p.count("a"), p.count("b"), p.nodes()), (5, 1, 2));
        p.apply(1, vec![("a".into(), 1)], false, now);
        assert_eq!(p.count("a"), 4);
        p.apply(1, vec![("c".into(), 7)], true, now);
        assert_eq!((p.count("a"), p.count("b"), p.count("c")), (3, 0, 7));
        p.apply(2, vec![("a".into(), 0)], false, now);
        assert_eq!(p.count("a"), 0);
        assert!(!p.rooms().contains(&"a".to_string()));
    }

    #[test]
    fn a_silent_node_expires_after_the_lease() {
        let start = Instant::now();
        let lease = Duration::from_secs(3);
        let mut p = Presence::default();
        p.apply(1, vec![("a".into(), 2)], false, start);
        p.apply(2, vec![("a".into(), 1)], false, start);
        p.heard(2, start + Duration::from_secs(2));
        assert!(p.expire(start + Duration::from_secs(2), lease).is_empty());
        assert_eq!(p.expire(start + lease, lease), vec![1]);
        assert_eq!(p.count("a"), 1);
        p.renew_all(start + Duration::from_secs(10));
        assert!(p.expire(start + Duration::from_secs(11), lease).is_empty());
        assert!(p.remove(2));
        assert_eq!((p.count("a"), p.nodes()), (0, 0));
    }
}
