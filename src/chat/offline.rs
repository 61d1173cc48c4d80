//! Offline messages: what a room member misses while none of their connections is in the room,
//! kept until they enter it again. Behind `OfflineStore`, so a Redis store can replace the
//! in-memory one: its methods are async and batched (one call keeps a frame for many users).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{self, BoxFuture};

use crate::frames::Text;

/// Where kept messages live. Calls for one room are serialised by the caller (the room's
/// lock), so a store needs no ordering logic of its own: frames come out in the order kept.
pub trait OfflineStore: Send + Sync {
    /// Keeps `frame` for each of `uids` in `room`, applying the bounds.
    fn keep<'a>(&'a self, room: &'a str, uids: &'a [Arc<str>], frame: Text) -> BoxFuture<'a, ()>;
    /// Removes and returns what is kept for `uid` in `room`, oldest first.
    fn take<'a>(&'a self, room: &'a str, uid: &'a str) -> BoxFuture<'a, Vec<Text>>;
    /// Drops what is kept for `uid` in `room` (they left it on purpose).
    fn forget<'a>(&'a self, room: &'a str, uid: &'a str) -> BoxFuture<'a, ()>;
    fn counts(&self) -> OfflineCounts;
}

/// Per user and room: at most `limit` messages, none older than `ttl`.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub limit: usize,
    pub ttl: Duration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfflineCounts {
    /// Copies kept (one per user per message).
    pub kept: u64,
    /// Copies delivered on re-entry.
    pub delivered: u64,
    /// Copies dropped because a user's queue was full (oldest first).
    pub dropped_full: u64,
    /// Copies dropped because they were older than the ttl.
    pub dropped_expired: u64,
    /// Copies waiting now.
    pub waiting: u64,
    /// Calls to a shared store (Redis) that failed: it could not be reached in time. A message
    /// sent meanwhile may not have been kept for the members away.
    pub store_failures: u64,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<(Instant, Text)>,
    /// Logged once per overflow episode, not per dropped message.
    overflow_logged: bool,
}

/// Kept frames by room, then by uid.
type Rooms = HashMap<Arc<str>, HashMap<Arc<str>, Queue>>;

/// The default store: a map in this process (kept messages do not survive a restart).
pub struct MemoryStore {
    bounds: Bounds,
    rooms: Mutex<Rooms>,
    kept: AtomicU64,
    delivered: AtomicU64,
    dropped_full: AtomicU64,
    dropped_expired: AtomicU64,
    waiting: AtomicU64,
}

impl MemoryStore {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            rooms: Mutex::new(HashMap::new()),
            kept: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_expired: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
        }
    }

    fn expire(&self, queue: &mut Queue, now: Instant) {
        let mut expired = 0;
        while let Some((at, _)) = queue.frames.front() {
            if now.duration_since(*at) < self.bounds.ttl {
                break;
            }
            queue.frames.pop_front();
            expired += 1;
        }
        if expired > 0 {
            self.dropped_expired.fetch_add(expired, Ordering::Relaxed);
            self.waiting.fetch_sub(expired, Ordering::Relaxed);
        }
    }

    fn keep_now(&self, room: &str, uids: &[Arc<str>], frame: Text) {
        if self.bounds.limit == 0 {
            return; // offline keeping is off
        }
        let now = Instant::now();
        let mut rooms = self.rooms.lock().unwrap();
        let users = match rooms.get_mut(room) {
            Some(users) => users,
            None => rooms.entry(Arc::from(room)).or_default(),
        };
        for uid in uids {
            let queue = users.entry(uid.clone()).or_default();
            self.expire(queue, now);
            if queue.frames.len() >= self.bounds.limit {
                queue.frames.pop_front();
                self.dropped_full.fetch_add(1, Ordering::Relaxed);
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                if !queue.overflow_logged {
                    queue.overflow_logged = true;
                    log::info!(
                        "chat: offline queue of user {uid:?} in room {room:?} is full ({} messages, offline_limit); dropping the oldest",
                        self.bounds.limit
                    );
                }
            }
            queue.frames.push_back((now, frame.clone()));
            self.kept.fetch_add(1, Ordering::Relaxed);
            self.waiting.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn take_now(&self, room: &str, uid: &str) -> Vec<Text> {
        let mut rooms = self.rooms.lock().unwrap();
        let Some(users) = rooms.get_mut(room) else {
            return Vec::new();
        };
        let Some(mut queue) = users.remove(uid) else {
            return Vec::new();
        };
        if users.is_empty() {
            rooms.remove(room);
        }
        drop(rooms);
        self.expire(&mut queue, Instant::now());
        let n = queue.frames.len() as u64;
        self.delivered.fetch_add(n, Ordering::Relaxed);
        self.waiting.fetch_sub(n, Ordering::Relaxed);
        queue.frames.into_iter().map(|(_, f)| f).collect()
    }

    fn forget_now(&self, room: &str, uid: &str) {
        let mut rooms = self.rooms.lock().unwrap();
        let Some(users) = rooms.get_mut(room) else {
            return;
        };
        if let Some(queue) = users.remove(uid) {
            self.waiting
                .fetch_sub(queue.frames.len() as u64, Ordering::Relaxed);
        }
        if users.is_empty() {
            rooms.remove(room);
        }
    }
}

impl OfflineStore for MemoryStore {
    fn keep<'a>(&'a self, room: &'a str, uids: &'a [Arc<str>], frame: Text) -> BoxFuture<'a, ()> {
        self.keep_now(room, uids, frame);
        Box::pin(future::ready(()))
    }

    fn take<'a>(&'a self, room: &'a str, uid: &'a str) -> BoxFuture<'a, Vec<Text>> {
        Box::pin(future::ready(self.take_now(room, uid)))
    }

    fn forget<'a>(&'a self, room: &'a str, uid: &'a str) -> BoxFuture<'a, ()> {
        self.forget_now(room, uid);
        Box::pin(future::ready(()))
    }

    fn counts(&self) -> OfflineCounts {
        OfflineCounts {
            kept: self.kept.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped_full: self.dropped_full.load(Ordering::Relaxed),
            dropped_expired: self.dropped_expired.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            store_failures: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(limit: usize, ttl: Duration) -> MemoryStore {
        MemoryStore::new(Bounds { limit, ttl })
    }

    fn uids(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    fn texts(frames: Vec<Text>) -> Vec<String> {
        frames.iter().map(|t| t.as_str().to_owned()).collect()
    }

    #[tokio::test]
    async fn kept_in_order_taken_once() {
        let s = store(10, Duration::from_secs(60));
        for i in 0..3 {
            s.keep("r", &uids(&["a", "b"]), Text::from(format!("m{i}")))
                .await;
        }
        assert_eq!(texts(s.take("r", "a").await), vec!["m0", "m1", "m2"]);
        assert!(s.take("r", "a").await.is_empty());
        assert!(s.take("other", "b").await.is_empty());
        s.forget("r", "b").await;
        assert!(s.take("r", "b").await.is_empty());
        let c = s.counts();
        assert_eq!((c.kept, c.delivered, c.waiting), (6, 3, 0));
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_counts_it() {
        let s = store(2, Duration::from_secs(60));
        for i in 0..5 {
            s.keep("r", &uids(&["a"]), Text::from(format!("m{i}")))
                .await;
        }
        assert_eq!(s.counts().dropped_full, 3);
        assert_eq!(texts(s.take("r", "a").await), vec!["m3", "m4"]);
    }

    #[tokio::test]
    async fn old_messages_expire() {
        let s = store(10, Duration::from_millis(30));
        s.keep("r", &uids(&["a"]), Text::from("old")).await;
        std::thread::sleep(Duration::from_millis(40));
        s.keep("r", &uids(&["a"]), Text::from("new")).await;
        assert_eq!(texts(s.take("r", "a").await), vec!["new"]);
        assert_eq!(s.counts().dropped_expired, 1);
        assert_eq!(s.counts().waiting, 0);
    }
}
