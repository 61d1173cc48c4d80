//! Room membership: which connections are in which room, and the reverse index to leave them all
//! at once when a connection closes. Pure data, no I/O; the hub guards it with one lock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::ConnId;

/// Rooms whose members carry a value `M` (the hub stores each member's send handle, so a
/// broadcast needs no second lookup).
pub struct Rooms<M> {
    by_room: HashMap<Arc<str>, HashMap<ConnId, M>>,
    by_conn: HashMap<ConnId, HashSet<Arc<str>>>,
}

impl<M: Clone> Default for Rooms<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Clone> Rooms<M> {
    pub fn new() -> Self {
        Self {
            by_room: HashMap::new(),
            by_conn: HashMap::new(),
        }
    }

    /// Returns false if the connection was already a member.
    pub fn join(&mut self, room: &str, id: ConnId, member: M) -> bool {
        let key: Arc<str> = match self.by_room.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => Arc::from(room),
        };
        let added = self
            .by_room
            .entry(key.clone())
            .or_default()
            .insert(id, member)
            .is_none();
        self.by_conn.entry(id).or_default().insert(key);
        added
    }

    /// Returns false if the connection was not a member. Empty rooms are removed.
    pub fn leave(&mut self, room: &str, id: ConnId) -> bool {
        let Some(members) = self.by_room.get_mut(room) else {
            return false;
        };
        let removed = members.remove(&id).is_some();
        if members.is_empty() {
            self.by_room.remove(room);
        }
        if let Some(rooms) = self.by_conn.get_mut(&id) {
            rooms.remove(room);
            if rooms.is_empty() {
                self.by_conn.remove(&id);
            }
        }
        removed
    }

    /// Removes the connection from every room; returns the rooms it was in.
    pub fn leave_all(&mut self, id: ConnId) -> Vec<Arc<str>> {
        let rooms: Vec<Arc<str>> = self.by_conn.remove(&id).into_iter().flatten().collect();
        for room in &rooms {
            if let Some(members) = self.by_room.get_mut(room) {
                members.remove(&id);
                if members.is_empty() {
                    self.by_room.remove(room);
                }
            }
        }
        rooms
    }

    pub fn count(&self, room: &str) -> usize {
        self.by_room.get(room).map_or(0, HashMap::len)
    }

    pub fn member_ids(&self, room: &str) -> Vec<ConnId> {
        self.by_room
            .get(room)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The members' values except those excluded, for sending after the lock is released.
    pub fn members_except(&self, room: &str, exclude: &[ConnId]) -> Vec<M> {
        self.by_room
            .get(room)
            .map(|m| {
                m.iter()
                    .filter(|(id, _)| !exclude.contains(id))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn rooms_of(&self, id: ConnId) -> Vec<String> {
        self.by_conn
            .get(&id)
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    }

    pub fn names(&self) -> Vec<String> {
        self.by_room.keys().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
        v.sort();
        v
    }

    #[test]
    fn join_leave_and_counts() {
        let mut rooms = Rooms::new();
        assert!(rooms.join("a", 1, "one"));
        assert!(!rooms.join("a", 1, "one"));
        assert!(rooms.join("a", 2, "two"));
        assert!(rooms.join("b", 1, "one"));
        assert_eq!(rooms.count("a"), 2);
        assert_eq!(sorted(rooms.rooms_of(1)), vec!["a", "b"]);
        assert!(rooms.leave("a", 1));
        assert!(!rooms.leave("a", 1));
        assert!(!rooms.leave("nope", 1));
        assert_eq!(rooms.member_ids("a"), vec![2]);
        assert_eq!(rooms.rooms_of(1), vec!["b"]);
    }

    #[test]
    fn empty_rooms_disappear() {
        let mut rooms = Rooms::new();
        rooms.join("a", 1, ());
        rooms.leave("a", 1);
        assert!(rooms.names().is_empty());
        assert!(rooms.rooms_of(1).is_empty());
    }

    #[test]
    fn leave_all_removes_every_membership() {
        let mut rooms = Rooms::new();
        rooms.join("a", 1, ());
        rooms.join("b", 1, ());
        rooms.join("b", 2, ());
        let left = sorted(rooms.leave_all(1).iter().map(|s| s.to_string()).collect());
        assert_eq!(left, vec!["a", "b"]);
        assert_eq!(rooms.names(), vec!["b"]);
        assert_eq!(rooms.count("b"), 1);
        assert!(rooms.leave_all(1).is_empty());
    }

    #[test]
    fn members_except_skips_excluded() {
        let mut rooms = Rooms::new();
        for id in 1..=4 {
            rooms.join("r", id, id * 10);
        }
        assert_eq!(sorted(rooms.members_except("r", &[2, 4])), vec![10, 30]);
        assert!(rooms.members_except("missing", &[]).is_empty());
    }
}
