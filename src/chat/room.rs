//! One chat room on this node: its connections by user (however many each has), the room's
//! `num`, and remote traffic held while a member enters. `Chat` locks the people per room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::roster::Num;
use crate::broker::wire::ChatBody;
use crate::ConnId;

pub struct ChatRoom {
    pub name: Arc<str>,
    /// The `roomid` as the first entrant wrote it (string or number), for kept copies.
    pub id: Value,
    /// Distinct users online in the room (on every node, with a broker), readable without the
    /// room's lock (heartbeat sweeps, `count`).
    num: Mutex<Num>,
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
    pub fn new(name: Arc<str>, id: Value) -> Self {
        Self {
            name,
            id,
            num: Mutex::new(Num::default()),
            state: tokio::sync::Mutex::new(People::default()),
            held: Mutex::new(Held::default()),
        }
    }

    pub fn num(&self) -> usize {
        self.num.lock().unwrap().count
    }

    pub fn num_version(&self) -> Num {
        *self.num.lock().unwrap()
    }

    /// Takes a newer count (counts from several nodes may arrive out of order).
    pub fn set_num(&self, num: Num) {
        let mut current = self.num.lock().unwrap();
        if num.version >= current.version {
            *current = num;
        }
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
        let room = ChatRoom::new(Arc::from("r"), Value::Null);
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
