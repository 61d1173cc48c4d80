//! Who is a member of a chat room, who of them is online, and what is kept for the rest.
//!
//! `Chat` tracks this node's own connections (`room::People`); the roster decides for the
//! room as a whole, so it is where a cluster differs from one process: `MemoryRoster` is one
//! process's, the broker's `RedisRoster` is shared by every node. Calls for one room are made
//! under that room's lock on this node; a shared roster makes each call atomic in its store.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{self, BoxFuture};

use super::offline::{Bounds, MemoryStore, OfflineCounts, OfflineStore};
use crate::frames::Text;

/// A user's first connection on this node entered the room.
pub struct Arrival {
    /// What was kept for them while away, oldest first (each sent once, here).
    pub kept: Vec<Text>,
    pub num: Num,
}

/// A user's last connection on this node left the room, or the user left it on purpose.
pub struct Departure {
    /// The user has no connection left in the room anywhere (the room gets `out`).
    pub gone: bool,
    pub num: Num,
}

/// Distinct users online in a room, and the version of that count: counts computed on
/// different nodes arrive in any order, the highest version wins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Num {
    pub count: usize,
    pub version: u64,
}

/// A user whose node stopped (its lease ran out): their room gets `out`.
pub struct Vanished {
    pub room: String,
    pub uid: String,
    pub name: String,
    pub num: Num,
}

pub trait Roster: Send + Sync {
    fn arrive<'a>(&'a self, room: &'a str, uid: &'a str, name: &'a str) -> BoxFuture<'a, Arrival>;
    fn depart<'a>(&'a self, room: &'a str, uid: &'a str) -> BoxFuture<'a, Departure>;
    /// Ends the user's membership (they left on purpose); nothing more is kept for them.
    fn leave<'a>(&'a self, room: &'a str, uid: &'a str) -> BoxFuture<'a, Departure>;
    /// Keeps `frame` for every member with no connection; returns their uids.
    fn keep<'a>(&'a self, room: &'a str, frame: Text) -> BoxFuture<'a, Vec<Arc<str>>>;
    fn counts(&self) -> OfflineCounts;
    /// True while this process holds the room's members (an in-memory roster), so the room
    /// (and the `roomid` as first written) must outlive its last connection here.
    fn remembers(&self, room: &str) -> bool;
    /// Renews this node's lease (re-registering its users if the store lost them) and
    /// reports users whose node's lease ran out. A shared roster's business only.
    fn tick(&self) -> BoxFuture<'_, Vec<Vanished>> {
        Box::pin(future::ready(Vec::new()))
    }
    /// Another node ended `uid`'s membership: this node no longer holds them in `room`.
    fn forget_local(&self, _room: &str, _uid: &str) {}
}

#[derive(Default)]
struct Members {
    online: HashSet<Arc<str>>,
    /// Members with no connection, and since when.
    away: HashMap<Arc<str>, Instant>,
}

/// One process's roster: kept messages in a `MemoryStore`, gone with the process.
pub struct MemoryRoster {
    retention: Duration,
    store: MemoryStore,
    rooms: Mutex<HashMap<String, Members>>,
    version: AtomicU64,
}

impl MemoryRoster {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            retention: bounds.ttl,
            store: MemoryStore::new(bounds),
            rooms: Mutex::new(HashMap::new()),
            version: AtomicU64::new(0),
        }
    }

    fn num(&self, members: Option<&Members>) -> Num {
        Num {
            count: members.map_or(0, |m| m.online.len()),
            version: self.version.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Changes one room's members; forgets the room once nobody is in it or away from it.
    fn change<T>(&self, room: &str, f: impl FnOnce(&mut Members) -> T) -> (T, Num) {
        let mut rooms = self.rooms.lock().unwrap();
        let members = rooms.entry(room.to_owned()).or_default();
        let out = f(members);
        let num = self.num(Some(members));
        if members.online.is_empty() && members.away.is_empty() {
            rooms.remove(room);
        }
        (out, num)
    }
}

impl Roster for MemoryRoster {
    fn arrive<'a>(&'a self, room: &'a str, uid: &'a str, _name: &'a str) -> BoxFuture<'a, Arrival> {
        let ((), num) = self.change(room, |m| {
            let uid: Arc<str> = Arc::from(uid);
            m.away.remove(&uid);
            m.online.insert(uid);
        });
        Box::pin(async move {
            Arrival {
                kept: self.store.take(room, uid).await,
                num,
            }
        })
    }

    fn depart<'a>(&'a self, room: &'a str, uid: &'a str) -> BoxFuture<'a, Departure> {
        let (gone, num) = self.change(room, |m| {
            let gone = m.online.remove(uid);
            if gone {
                m.away.insert(Arc::from(uid), Instant::now());
            }
            gone
        });
        Box::pin(future::ready(Departure { gone, num }))
    }

    fn leave<'a>(&'a self, room: &'a str, uid: &'a str) -> BoxFuture<'a, Departure> {
        let ((), num) = self.change(room, |m| {
            m.online.remove(uid);
            m.away.remove(uid);
        });
        Box::pin(async move {
            self.store.forget(room, uid).await;
            Departure { gone: true, num }
        })
    }

    fn keep<'a>(&'a self, room: &'a str, frame: Text) -> BoxFuture<'a, Vec<Arc<str>>> {
        let absent: Vec<Arc<str>> = {
            let mut rooms = self.rooms.lock().unwrap();
            let Some(m) = rooms.get_mut(room) else {
                return Box::pin(future::ready(Vec::new()));
            };
            let now = Instant::now();
            // Memberships away longer than the retention end here.
            m.away
                .retain(|_, since| now.duration_since(*since) < self.retention);
            m.away.keys().cloned().collect()
        };
        Box::pin(async move {
            if !absent.is_empty() {
                self.store.keep(room, &absent, frame).await;
            }
            absent
        })
    }

    fn counts(&self) -> OfflineCounts {
        self.store.counts()
    }

    fn remembers(&self, room: &str) -> bool {
        self.rooms.lock().unwrap().contains_key(room)
    }
}
