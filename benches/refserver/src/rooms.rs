//! Rooms: named sets of connection queues with lock-light, never-blocking broadcast.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc::{error::TrySendError, Sender};
use tokio_tungstenite::tungstenite::Message;

/// Messages dropped because a member's queue was full (slow consumer).
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

type Members = Arc<Vec<(u64, Sender<Message>)>>;

/// A room keeps an immutable snapshot of its members, replaced on join/leave
/// (copy-on-write), so a broadcast holds the lock only to clone one `Arc`.
#[derive(Default)]
pub struct Room {
    members: Mutex<Members>,
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, Members> {
        // A poisoned lock only means another thread panicked mid-update; the data is still valid.
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn join(&self, id: u64, tx: Sender<Message>) {
        let mut members = self.lock();
        let mut next = Vec::with_capacity(members.len() + 1);
        next.extend(members.iter().cloned());
        next.push((id, tx));
        *members = Arc::new(next);
    }

    pub fn leave(&self, id: u64) {
        let mut members = self.lock();
        let next: Vec<_> = members.iter().filter(|(m, _)| *m != id).cloned().collect();
        *members = Arc::new(next);
    }

    /// Queues `msg` (payload shared, not copied) for every member; a full queue drops it.
    pub fn broadcast(&self, msg: &Message) {
        let members = Arc::clone(&self.lock());
        for (_, tx) in members.iter() {
            if let Err(TrySendError::Full(_)) = tx.try_send(msg.clone()) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The two rooms of the benchmark protocol.
#[derive(Default)]
pub struct Rooms {
    pub bench: Room,
    pub chat: Room,
}
