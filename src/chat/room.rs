//! One chat room on this node: its connections by user (however many each has), the room's
//! `num`, and remote traffic held while a member enters. `Chat` locks the people per room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::roster::Num;
use crate::broker::wire::ChatBody;
use crate::ConnId;

pub struct ChatRoom {
    pub name: Arc<str>,
    /// The `roomid` as the first entrant wrote it (string or number), for kept copies.
    pub id: Value,
    /// Distinct users online in the room (on every node, with a broker), readable without the
    /// room's lock (heartbeat sweeps, `count`). Shared with `Chat`'s map, which outlives the
    /// room when its last connection here goes (the count still matters to `count`).
    num: Arc<NumCell>,
    /// An async lock: it is held while the roster is awaited, so an entering member and a
    /// message to the room can never cross (exactly-once delivery of kept messages).
    pub state: tokio::sync::Mutex<People>,
    /// Traffic from other nodes that arrived while a member was entering here: it waits until
    /// their kept messages are out, so it cannot overtake them.
    pub held: Mutex<Held>,
}

#[derive(Default)]
pub struct Held {
    pub entering: bool,
    pub queue: Vec<ChatBody>,
}

impl ChatRoom {
    pub fn new(name: Arc<str>, id: Value, num: Arc<NumCell>) -> Self {
        Self {
            name,
            id,
            num,
            state: tokio::sync::Mutex::new(People::default()),
            held: Mutex::new(Held::default()),
        }
    }

    pub fn num(&self) -> usize {
        self.num.get().count
    }

    pub fn num_version(&self) -> Num {
        self.num.get()
    }

    pub fn set_num(&self, num: Num) {
        self.num.set(num);
    }
}

/// A room's `num` and when it last changed.
pub struct NumCell(Mutex<(Num, Instant)>);

impl Default for NumCell {
    fn default() -> Self {
        Self(Mutex::new((Num::default(), Instant::now())))
    }
}

impl NumCell {
    pub fn get(&self) -> Num {
        self.0.lock().unwrap().0
    }

    /// Takes a newer count (counts from several nodes may arrive out of order).
    pub fn set(&self, num: Num) {
        let mut current = self.0.lock().unwrap();
        if num.version >= current.0.version {
            *current = (num, Instant::now());
        }
    }

    /// Zero for a while: no late count can still be newer, the cell can go.
    pub fn idle(&self, for_at_least: Duration) -> bool {
        let current = self.0.lock().unwrap();
        current.0.count == 0 && current.1.elapsed() >= for_at_least
    }
}

pub struct Online {
    pub name: String,
    pub conns: Vec<ConnId>,
}

/// This node's connections in the room, by user. Membership (who is away, what is kept for
/// them) is the roster's.
#[derive(Default)]
pub struct People {
    pub online: HashMap<Arc<str>, Online>,
}

impl People {
    /// Adds a connection of `uid`; true if the user had none here before.
    pub fn arrive(&mut self, uid: &Arc<str>, name: &str, conn: ConnId) -> bool {
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

    /// Removes a connection of `uid`; true if it was the user's last one here.
    pub fn depart(&mut self, uid: &Arc<str>, conn: ConnId) -> bool {
        let Some(user) = self.online.get_mut(uid) else {
            return false;
        };
        user.conns.retain(|c| *c != conn);
        if !user.conns.is_empty() {
            return false;
        }
        self.online.remove(uid);
        true
    }

    /// Forgets `uid` here; returns the connections it still had in the room.
    pub fn remove(&mut self, uid: &str) -> Vec<ConnId> {
        self.online.remove(uid).map(|u| u.conns).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.online.is_empty()
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
        assert!(p.is_empty());
        assert!(p.arrive(&ann, "Ann", 3));
        assert_eq!(p.remove("ann"), vec![3]);
        assert!(p.is_empty());
    }

    #[test]
    fn the_newest_count_wins() {
        let room = ChatRoom::new(Arc::from("r"), Value::Null, Arc::default());
        room.set_num(Num {
            count: 3,
            version: 5,
        });
        room.set_num(Num {
            count: 2,
            version: 4,
        });
        assert_eq!(room.num(), 3);
        room.set_num(Num {
            count: 1,
            version: 6,
        });
        assert_eq!(room.num(), 1);
    }
}
