//! The heartbeat's view of a connection: is it alive, how to ping it, how to let it go.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::connection::ConnHandle;
use crate::envelope;
use crate::frames::{Outgoing, Text};
use crate::heartbeat::{Beat, Liveness};

/// One connection as a heartbeat sweep sees it, with the application-level ping it gets (the
/// static JSON ping, the chat preset's with its room's `num`, or none).
pub struct Pulse {
    handle: Arc<ConnHandle>,
    app_ping: Option<Text>,
}

impl Pulse {
    pub fn new(handle: Arc<ConnHandle>, app_ping: Option<Text>) -> Self {
        Self { handle, app_ping }
    }

    /// The plain server's pulse: the static JSON ping when `app_heartbeat` is on.
    pub fn plain(handle: Arc<ConnHandle>) -> Self {
        let app_ping = handle
            .app_heartbeat
            .then(|| Text::from_static(envelope::HEARTBEAT_PING));
        Self { handle, app_ping }
    }
}

impl Beat for Pulse {
    fn liveness(&self) -> &Liveness {
        &self.handle.liveness
    }

    fn excused(&self) -> bool {
        self.handle.paused.load(Ordering::Relaxed)
    }

    fn ping(&self) {
        self.handle.send(Outgoing::Ping);
    }

    /// The JSON heartbeat goes every interval, heard from or not: the chat protocol promises
    /// it, and clients take a server that sends nothing for an interval as gone.
    fn every_sweep(&self) {
        if let Some(ping) = &self.app_ping {
            self.handle.send(Outgoing::Text(ping.clone()));
        }
    }

    fn expire(&self, interval: Duration) {
        let id = self.handle.id;
        log::info!(
            "connection {id}: heartbeat timeout, nothing received for {:.1} s; closing",
            interval.as_secs_f64()
        );
        let reason = format!(
            "heartbeat timeout: nothing received for {:.1} s",
            interval.as_secs_f64()
        );
        if self.handle.terminate(1011, reason) {
            self.handle.metrics.heartbeat_timeout();
        }
    }
}
