//! Sends made by hook workers, applied together when their batch ends: one wake-up of the
//! I/O threads for everything a batch of hooks sent.

use std::sync::Arc;
use std::time::Duration;

use super::{fan_out, send_to_room, Hub};
use crate::connection::ConnHandle;
use crate::error::Error;
use crate::frames::Outgoing;
use crate::rooms::Snapshot;
use crate::ConnId;

/// The longest a deferred send waits (a hook that sends, then blocks, still gets it out).
pub const DEFER_AT_MOST: Duration = Duration::from_millis(1);

pub(super) enum Deferred {
    Send(Arc<ConnHandle>, Outgoing),
    Room(Snapshot<Arc<ConnHandle>>, Vec<ConnId>, Outgoing),
    All(Vec<Arc<ConnHandle>>, Outgoing),
}

impl Hub {
    fn defer(&self, item: Deferred) {
        let mut stash = self.deferred.lock().unwrap();
        stash.push(item);
        if stash.len() == 1 {
            drop(stash);
            self.deferred_started.notify_one();
        }
    }

    /// Like `send`, applied by the I/O runtime at the end of the caller's batch (or after
    /// `DEFER_AT_MOST`). For hook workers; the order of one thread's sends is kept.
    pub fn send_deferred(&self, id: ConnId, out: Outgoing) -> Result<(), Error> {
        let handle = self.get(id)?;
        if !handle.is_open() {
            return Err(Error::NotOpen(id));
        }
        self.defer(Deferred::Send(handle, out));
        Ok(())
    }

    /// Like `broadcast_room` (or `broadcast_all` without a room), deferred as `send_deferred`.
    /// Members are taken now; returns how many the frame is addressed to.
    pub fn broadcast_deferred(
        &self,
        room: Option<&str>,
        out: Outgoing,
        exclude: &[ConnId],
    ) -> usize {
        self.publish(room, &out);
        let Some(room) = room else {
            let members: Vec<_> = self
                .snapshot()
                .into_iter()
                .filter(|h| !exclude.contains(&h.id))
                .collect();
            let n = members.len();
            self.metrics.broadcast(0);
            self.defer(Deferred::All(members, out));
            return n;
        };
        self.metrics.broadcast(0);
        let Some(members) = self.rooms.lock().unwrap().snapshot(room) else {
            return 0;
        };
        let n = members
            .iter()
            .filter(|(id, _)| !exclude.contains(id))
            .count();
        self.defer(Deferred::Room(members, exclude.to_vec(), out));
        n
    }

    /// Ends the caller's batch: the flusher applies the stash now.
    pub fn flush_deferred(&self) {
        self.deferred_flush.notify_one();
    }

    /// Applies the stash on the calling thread.
    pub fn apply_deferred(&self) {
        let stash = std::mem::take(&mut *self.deferred.lock().unwrap());
        for item in stash {
            match item {
                Deferred::Send(handle, out) => {
                    handle.send(out);
                }
                // Counted as broadcasts when deferred; their deliveries now.
                Deferred::Room(members, exclude, out) => {
                    self.metrics
                        .delivered(send_to_room(&members, &exclude, out));
                }
                Deferred::All(members, out) => {
                    self.metrics.delivered(fan_out(&members, out));
                }
            }
        }
    }

    /// The flusher task: applies deferred sends when a batch ends, or `DEFER_AT_MOST` after
    /// the first one.
    pub async fn run_deferred(self: Arc<Self>) {
        loop {
            self.deferred_started.notified().await;
            tokio::select! {
                _ = tokio::time::sleep(DEFER_AT_MOST) => {}
                _ = self.deferred_flush.notified() => {}
            }
            self.apply_deferred();
        }
    }
}
