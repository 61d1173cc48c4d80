//! One chat room's people: who is online (by uid, however many connections each has) and who
//! is a member while away (their messages are kept). Pure data; `Chat` locks it per room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ConnId;

pub struct ChatRoom {
    pub name: Arc<str>,
    /// The `roomid` as the first entrant wrote it (string or number), for kept copies.
    pub id: Value,
    /// Distinct uids online, readable without the lock (heartbeat sweeps, `count`).
    num: AtomicUsize,
    /// An async lock: it is held while the offline store is awaited, so an entering member
    /// and a message to the room can never cross (exactly-once delivery of kept messages).
    pub state: tokio::sync::Mutex<People>,
}

impl ChatRoom {
    pub fn new(name: Arc<str>, id: Value) -> Self {
        Self {
            name,
            id,
            num: AtomicUsize::new(0),
            state: tokio::sync::Mutex::new(People::default()),
        }
    }

    pub fn num(&self) -> usize {
        self.num.load(Ordering::Relaxed)
    }

    /// Publishes the count after a change made under the lock.
    pub fn set_num(&self, people: &People) {
        self.num.store(people.online.len(), Ordering::Relaxed);
    }
}

pub struct Online {
    pub name: String,
    pub conns: Vec<ConnId>,
}

#[derive(Default)]
pub struct People {
    pub online: HashMap<Arc<str>, Online>,
    /// Members with no connection in the room, and since when. A uid is in `online` or here,
    /// never both.
    pub away: HashMap<Arc<str>, Instant>,
}

impl People {
    /// Adds a connection of `uid`; true if the user was not online here before.
    pub fn arrive(&mut self, uid: &Arc<str>, name: &str, conn: ConnId) -> bool {
        self.away.remove(uid);
        match self.online.get_mut(uid) {
            Some(user) => {
                user.name = name.to_owned();
                if !user.conns.contains(&conn) {
                    user.conns.push(conn);
                }
                false
            }
            None => {
                self.online.insert(
                    uid.clone(),
                    Online {
                        name: name.to_owned(),
                        conns: vec![conn],
                    },
                );
                true
            }
        }
    }

    /// Removes a connection of `uid`; true if it was the user's last one here (they are now
    /// away, still a member).
    pub fn depart(&mut self, uid: &Arc<str>, conn: ConnId) -> bool {
        let Some(user) = self.online.get_mut(uid) else {
            return false;
        };
        user.conns.retain(|c| *c != conn);
        if !user.conns.is_empty() {
            return false;
        }
        self.online.remove(uid);
        self.away.insert(uid.clone(), Instant::now());
        true
    }

    /// Ends `uid`'s membership; returns the connections it still had in the room.
    pub fn remove(&mut self, uid: &str) -> Vec<ConnId> {
        self.away.remove(uid);
        self.online.remove(uid).map(|u| u.conns).unwrap_or_default()
    }

    /// The members to keep a message for; memberships away longer than `retention` end here.
    pub fn absent(&mut self, retention: Duration) -> Vec<Arc<str>> {
        let now = Instant::now();
        self.away
            .retain(|_, since| now.duration_since(*since) < retention);
        self.away.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.online.is_empty() && self.away.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_counts_once_and_leaves_with_the_last_connection() {
        let mut p = People::default();
        let ann: Arc<str> = Arc::from("ann");
        assert!(p.arrive(&ann, "Ann", 1));
        assert!(!p.arrive(&ann, "Ann", 2));
        assert_eq!(p.online.len(), 1);
        assert!(!p.depart(&ann, 1));
        assert!(p.depart(&ann, 2));
        assert!(p.online.is_empty());
        assert_eq!(p.absent(Duration::from_secs(60)), vec![ann.clone()]);
        assert!(p.arrive(&ann, "Ann", 3));
        assert!(p.away.is_empty());
        assert_eq!(p.remove("ann"), vec![3]);
        assert!(p.is_empty());
    }

    #[test]
    fn long_absences_end_membership() {
        let mut p = People::default();
        let bob: Arc<str> = Arc::from("bob");
        p.arrive(&bob, "Bob", 1);
        p.depart(&bob, 1);
        assert!(p.absent(Duration::ZERO).is_empty());
        assert!(p.is_empty());
    }
}
