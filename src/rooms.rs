//! Room membership: which connections are in which room, and the reverse index to leave them all
//! at once when a connection closes. Pure data, no I/O; the hub guards it with one lock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::ConnId;

/// Rooms whose members carry a value `M` (the hub stores each member's send handle, so a
/// broadcast needs no second lookup).
pub struct Rooms<M> {
    by_room: HashMap<Arc<str>, Room<M>>,
    by_conn: HashMap<ConnId, HashSet<Arc<str>>>,
    /// Memberships across all rooms, kept as they change so reading it costs nothing.
    memberships: usize,
}

/// A shared, read-only copy of a room's members, for broadcasting outside the lock.
pub type Snapshot<M> = Arc<[(ConnId, M)]>;

struct Room<M> {
    members: HashMap<ConnId, M>,
    /// Built on the first broadcast after a change and shared by the broadcasts that follow,
    /// so a broadcast to N members copies one pointer under the lock, not N.
    snapshot: Option<Snapshot<M>>,
}

impl<M> Default for Room<M> {
    fn default() -> Self {
        Self {
            members: HashMap::new(),
            snapshot: None,
        }
    }
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
            memberships: 0,
        }
    }

    /// Returns false if the connection was already a member.
    pub fn join(&mut self, room: &str, id: ConnId, member: M) -> bool {
        let key: Arc<str> = match self.by_room.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => Arc::from(room),
        };
        let room = self.by_room.entry(key.clone()).or_default();
        let added = room.members.insert(id, member).is_none();
        if added {
            room.snapshot = None;
            self.memberships += 1;
        }
        self.by_conn.entry(id).or_default().insert(key);
        added
    }

    /// Returns false if the connection was not a member. Empty rooms are removed.
    pub fn leave(&mut self, room: &str, id: ConnId) -> bool {
        let Some(entry) = self.by_room.get_mut(room) else {
            return false;
        };
        let removed = entry.members.remove(&id).is_some();
        self.memberships -= usize::from(removed);
        entry.snapshot = None;
        if entry.members.is_empty() {
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
            if let Some(entry) = self.by_room.get_mut(room) {
                if entry.members.remove(&id).is_some() {
                    self.memberships -= 1;
                }
                entry.snapshot = None;
                if entry.members.is_empty() {
                    self.by_room.remove(room);
                }
            }
        }
        rooms
    }

    /// Rooms with members.
    pub fn len(&self) -> usize {
        self.by_room.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_room.is_empty()
    }

    /// Memberships across all rooms (a connection in two rooms counts twice).
    pub fn memberships(&self) -> usize {
        self.memberships
    }

    pub fn count(&self, room: &str) -> usize {
        self.by_room.get(room).map_or(0, |r| r.members.len())
    }

    pub fn member_ids(&self, room: &str) -> Vec<ConnId> {
        self.by_room
            .get(room)
            .map(|r| r.members.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The members, for sending after the lock is released (filter exclusions then).
    pub fn snapshot(&mut self, room: &str) -> Option<Snapshot<M>> {
        let entry = self.by_room.get_mut(room)?;
        let snapshot = entry.snapshot.get_or_insert_with(|| {
            entry
                .members
                .iter()
                .map(|(id, m)| (*id, m.clone()))
                .collect()
        });
        Some(snapshot.clone())
    }

    /// The members' values except those excluded.
    pub fn members_except(&mut self, room: &str, exclude: &[ConnId]) -> Vec<M> {
        self.snapshot(room)
            .map(|s| {
                s.iter()
                    .filter(|(id, _)| !exclude.contains(id))
                    .map(|(_, m)| m.clone())
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
        assert_eq!((rooms.len(), rooms.memberships()), (2, 2));
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
        assert_eq!((rooms.len(), rooms.memberships()), (1, 1));
    }

    #[test]
    fn snapshots_are_shared_until_membership_changes() {
        let mut rooms = Rooms::new();
        rooms.join("r", 1, 10);
        let first = rooms.snapshot("r").unwrap();
        assert!(Arc::ptr_eq(&first, &rooms.snapshot("r").unwrap()));
        rooms.join("r", 2, 20);
        let second = rooms.snapshot("r").unwrap();
        assert_eq!(
            sorted(second.iter().map(|(_, m)| *m).collect()),
            vec![10, 20]
        );
        rooms.leave_all(1);
        assert_eq!(rooms.snapshot("r").unwrap().len(), 1);
        // The old snapshot is untouched by later changes.
        assert_eq!(first.len(), 1);
        assert!(rooms.snapshot("gone").is_none());
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
