//! One WebSocket connection's send handle: what rooms, the heartbeat and the API hold. Sending
//! never blocks; a full queue applies the overflow policy. The tasks that run the connection
//! are in `session.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::OverflowPolicy;
use crate::envelope;
use crate::events::ConnInfo;
use crate::frames::{Outgoing, Text};
use crate::heartbeat::{Beat, Liveness};
use crate::hub::Hub;
use crate::metrics::{Metrics, Traffic, TrafficTotals};
use crate::signal::Signal;
use crate::ConnId;

#[derive(Clone, Debug)]
pub(crate) struct CloseRequest {
    pub(crate) code: u16,
    pub(crate) reason: String,
    /// How long to wait for the client's Close after ours before dropping the socket.
    pub(crate) wait: Duration,
}

/// What the rest of the server holds of a connection. Cheap to share (`Arc`), safe from any
/// thread; sending never blocks.
pub struct ConnHandle {
    pub id: ConnId,
    pub info: Arc<ConnInfo>,
    pub(crate) tx: mpsc::Sender<Outgoing>,
    queue_size: usize,
    queue_bytes: usize,
    overflow: OverflowPolicy,
    close_timeout: Duration,
    pub(crate) app_heartbeat: bool,
    /// Payload bytes queued and not yet handed to the socket.
    pub(crate) queued_bytes: AtomicUsize,
    /// Whether a frame arrived since the last heartbeat sweep, and whether that sweep pinged.
    pub(crate) liveness: Liveness,
    /// Set while the reader waits for the application to catch up: the client is not silent,
    /// the server is not listening, so the heartbeat must not reap it.
    pub(crate) paused: AtomicBool,
    pub(crate) open: AtomicBool,
    dropped: AtomicU64,
    /// Data messages in and out; the reader and the writer each write their half.
    pub(crate) traffic: Traffic,
    /// The server's counters, for the events a handle sees (overflow, heartbeat timeout).
    metrics: Arc<Metrics>,
    // std Mutex: set once per connection, read by the reader and writer, never across .await.
    close_request: Mutex<Option<CloseRequest>>,
    /// Tells the writer to send the Close frame now, ahead of the queue.
    pub(crate) urgent: Signal,
    /// Tells the reader a close started, so it stops waiting for the client after a deadline.
    pub(crate) closing: Signal,
}

impl ConnHandle {
    pub fn new(
        id: ConnId,
        info: Arc<ConnInfo>,
        hub: &Hub,
    ) -> (Arc<Self>, mpsc::Receiver<Outgoing>) {
        let cfg = &hub.config;
        let (tx, rx) = mpsc::channel(cfg.queue_size);
        let handle = Arc::new(Self {
            id,
            info,
            tx,
            queue_size: cfg.queue_size,
            queue_bytes: cfg.queue_bytes,
            overflow: cfg.overflow,
            close_timeout: cfg.close_timeout,
            app_heartbeat: cfg.app_heartbeat,
            queued_bytes: AtomicUsize::new(0),
            liveness: Liveness::default(),
            paused: AtomicBool::new(false),
            open: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            traffic: Traffic::default(),
            metrics: hub.metrics.clone(),
            close_request: Mutex::new(None),
            urgent: Signal::default(),
            closing: Signal::default(),
        });
        (handle, rx)
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn buffered_amount(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Messages dropped by the `drop` overflow policy.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// This connection's traffic so far, its overflow drops included.
    pub fn traffic_totals(&self) -> TrafficTotals {
        self.traffic.totals(self.dropped())
    }

    /// Queues a frame without waiting. A full queue applies the overflow policy; the return
    /// value says whether the frame was queued.
    pub fn send(&self, out: Outgoing) -> bool {
        if !self.is_open() {
            return false;
        }
        let len = out.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        // Bounded in bytes as well as frames: 1024 frames of 1 MiB would be 1 GiB held for one
        // client that never reads. An empty queue takes any message, however large.
        if before > 0 && before + len > self.queue_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.overflowed();
            return false;
        }
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(err) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                if let mpsc::error::TrySendError::Full(_) = err {
                    self.overflowed();
                }
                false
            }
        }
    }

    fn overflowed(&self) {
        match self.overflow {
            OverflowPolicy::Close => {
                log::warn!(
                    "connection {}: outbound queue full ({} bytes waiting; bounds: queue_size {} frames, queue_bytes {} bytes); closing with 1013 (overflow='close')",
                    self.id, self.buffered_amount(), self.queue_size, self.queue_bytes
                );
                if self.request_close(
                    1013,
                    "outbound queue full: client reads too slowly".into(),
                    self.close_timeout,
                    true,
                ) {
                    self.metrics.slow_consumer_closed();
                }
            }
            OverflowPolicy::Drop => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    log::warn!(
                        "connection {}: outbound queue full ({} bytes waiting; bounds: queue_size {} frames, queue_bytes {} bytes); dropping messages it cannot take (overflow='drop')",
                        self.id, self.buffered_amount(), self.queue_size, self.queue_bytes
                    );
                }
            }
        }
    }

    /// Closes after the frames already queued (an orderly close).
    pub fn close(&self, code: u16, reason: String) {
        if !self.request_close(code, reason.clone(), self.close_timeout, false) {
            return;
        }
        let close = Outgoing::Close(code, reason);
        let len = close.len();
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if self.tx.try_send(close).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            // Queue full: the Close jumps it rather than wait behind a slow reader.
            self.urgent.raise();
        }
    }

    /// Closes now: the Close frame jumps the queue and the client is not waited for. False
    /// if a close had already started.
    pub fn terminate(&self, code: u16, reason: String) -> bool {
        self.request_close(code, reason, Duration::ZERO, true)
    }

    /// Records the first close request; later ones are ignored (close is idempotent).
    fn request_close(&self, code: u16, reason: String, wait: Duration, urgent: bool) -> bool {
        {
            let mut req = self.close_request.lock().unwrap();
            if req.is_some() {
                return false;
            }
            *req = Some(CloseRequest { code, reason, wait });
        }
        self.open.store(false, Ordering::Release);
        if urgent {
            self.urgent.raise();
        }
        self.closing.raise();
        true
    }

    pub(crate) fn close_request(&self) -> Option<CloseRequest> {
        self.close_request.lock().unwrap().clone()
    }

    /// Called on every frame received: a relaxed load, and a store once per sweep at most.
    #[inline]
    pub(crate) fn mark_alive(&self) {
        self.liveness.heard();
    }
}

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
