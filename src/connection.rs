//! One WebSocket connection's send handle: what rooms, the heartbeat and the API hold. Sending
//! never blocks; a full queue applies the overflow policy, and a producer that would rather
//! wait awaits `drain()`. The tasks that run the connection are in `session.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_listener::Event;

use crate::config::OverflowPolicy;

use crate::events::ConnInfo;
use crate::frames::Outgoing;
use crate::heartbeat::Liveness;
use crate::hub::Hub;
use crate::metrics::{Metrics, Traffic, TrafficTotals};
use crate::outbox::{self, TrySendError};
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
    pub(crate) tx: outbox::Sender,
    queue_size: usize,
    queue_bytes: usize,
    overflow: OverflowPolicy,
    close_timeout: Duration,
    pub(crate) app_heartbeat: bool,
    /// Payload bytes queued and not yet handed to the socket.
    pub(crate) queued_bytes: AtomicUsize,
    /// Whether a frame arrived since the last heartbeat sweep, and whether that sweep pinged.
    pub(crate) liveness: Liveness,
    /// Set by a `drain()` waiter (after it starts listening), cleared by whoever wakes it: the
    /// writer checks one flag per batch while nobody waits.
    drain_wanted: AtomicBool,
    /// Wakes `drain()` waiters. One null pointer until something first waits on it.
    drained: Event,
    /// Set while the reader waits for the application to catch up: the client is not silent,
    /// the server is not listening, so the heartbeat must not reap it.
    pub(crate) paused: AtomicBool,
    pub(crate) open: AtomicBool,
    dropped: AtomicU64,
    /// Data messages in and out; the reader and the writer each write their half.
    pub(crate) traffic: Traffic,
    /// The server's counters, for the events a handle sees (overflow, heartbeat timeout).
    pub(crate) metrics: Arc<Metrics>,
    // std Mutex: set once per connection, read by the reader and writer, never across .await.
    close_request: Mutex<Option<CloseRequest>>,
    /// Tells the writer to send the Close frame now, ahead of the queue.
    pub(crate) urgent: Signal,
    /// Tells the reader a close started, so it stops waiting for the client after a deadline.
    pub(crate) closing: Signal,
}

impl ConnHandle {
    pub fn new(id: ConnId, info: Arc<ConnInfo>, hub: &Hub) -> (Arc<Self>, outbox::Receiver) {
        let cfg = &hub.config;
        let (tx, rx) = outbox::channel(cfg.queue_size);
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
            drain_wanted: AtomicBool::new(false),
            drained: Event::new(),
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

    /// The queue is at or below its low-water mark: at most half of `queue_bytes` bytes and
    /// half of `queue_size` frames wait. Below it, a message of up to `queue_bytes / 2` bytes
    /// fits.
    pub fn below_low_water(&self) -> bool {
        // SeqCst: a waiter's flag store and this load, against the writer's subtraction and
        // its flag load, are the two halves of a Dekker pair (see `drain`).
        let bytes = self.queued_bytes.load(Ordering::SeqCst);
        let frames = self.tx.len();
        bytes <= self.queue_bytes / 2 && frames <= self.queue_size / 2
    }

    /// Nothing to wait for: the queue is below its low-water mark, or the connection is
    /// closing or gone (its queue will never drain, and `send` refuses it).
    pub fn drain_ready(&self) -> bool {
        !self.open.load(Ordering::SeqCst) || self.tx.is_closed() || self.below_low_water()
    }

    /// Resolves once the queue is at or below its low-water mark, or the connection closes.
    /// Any number of tasks may wait, on any runtime; none costs a thread.
    pub async fn drain(&self) {
        loop {
            if self.drain_ready() {
                return;
            }
            // Listen first, then raise the flag, then look again: a writer that subtracts
            // after our look sees the flag and wakes the listener.
            let listener = self.drained.listen();
            self.drain_wanted.store(true, Ordering::SeqCst);
            if self.drain_ready() {
                return;
            }
            tokio::select! {
                _ = listener => {}
                // The writer is gone (the connection ended without a close request of ours).
                _ = self.tx.closed() => return,
            }
        }
    }

    /// `drain`, for at most `timeout` (`None`: no limit). False if the time ran out first.
    pub async fn drain_for(&self, timeout: Option<Duration>) -> bool {
        match timeout {
            None => {
                self.drain().await;
                true
            }
            Some(t) => tokio::time::timeout(t, self.drain()).await.is_ok(),
        }
    }

    /// The writer put `bytes` of the queue on the socket: subtracts them and, when someone
    /// waits in `drain` and the queue is now below its low-water mark, wakes them.
    pub(crate) fn written(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
        if self.drain_wanted.load(Ordering::SeqCst) && self.below_low_water() {
            self.wake_drainers();
        }
    }

    /// Wakes every `drain` waiter (they look again). Allocates nothing when none ever waited.
    fn wake_drainers(&self) {
        if self.drain_wanted.swap(false, Ordering::SeqCst) {
            self.drained.notify(usize::MAX);
        }
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
                if let TrySendError::Full(_) = err {
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
        // SeqCst: `drain` raises its flag, then reads this (see `below_low_water`).
        self.open.store(false, Ordering::SeqCst);
        self.wake_drainers();
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

/// Waits until every one of `members` is drained (see `ConnHandle::drain`) or `timeout`
/// passes; returns the ids of those still above their low-water mark, in `members`' order.
/// One task, whatever the number of members: each is waited for in turn, and one already
/// drained costs a few loads.
pub async fn drain_all(members: &[Arc<ConnHandle>], timeout: Option<Duration>) -> Vec<ConnId> {
    let all = async {
        for member in members {
            member.drain().await;
        }
    };
    match timeout {
        None => all.await,
        Some(t) => {
            let _ = tokio::time::timeout(t, all).await;
        }
    }
    members
        .iter()
        .filter(|m| !m.drain_ready())
        .map(|m| m.id)
        .collect()
}

pub use crate::pulse::Pulse;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::frames::Text;

    fn handle(queue_size: usize, queue_bytes: usize) -> (Arc<ConnHandle>, outbox::Receiver) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let hub = Hub::new(Config {
            queue_size,
            queue_bytes,
            ..Config::default()
        });
        let info = Arc::new(ConnInfo {
            path: "/".into(),
            query: String::new(),
            headers: Default::default(),
            remote_addr: "127.0.0.1:1".parse().unwrap(),
            secure: false,
            subprotocols: Vec::new(),
            subprotocol: None,
        });
        ConnHandle::new(NEXT.fetch_add(1, Ordering::Relaxed), info, &hub)
    }

    fn text(len: usize) -> Outgoing {
        Outgoing::Text(Text::from("x".repeat(len)))
    }

    /// What the writer does with `n` frames: takes them off the queue, then counts them
    /// written.
    fn write(h: &ConnHandle, rx: &mut outbox::Receiver, n: usize) {
        let bytes: usize = (0..n).map(|_| rx.try_recv().unwrap().len()).sum();
        h.written(bytes);
    }

    async fn pending(h: &ConnHandle) -> bool {
        tokio::time::timeout(Duration::from_millis(30), h.drain())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn drain_waits_above_the_low_water_mark_and_wakes_below_it() {
        let (h, mut rx) = handle(100, 1000);
        h.drain().await; // empty: at once
        for _ in 0..4 {
            assert!(h.send(text(200)));
        }
        assert!(!h.below_low_water());
        assert!(pending(&h).await);

        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.drain_for(Some(Duration::from_secs(5))).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        write(&h, &mut rx, 1); // 600 left: still above 500
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        write(&h, &mut rx, 1); // 400: at or below half
        assert!(waiter.await.unwrap());
        assert!(h.below_low_water());
        // Nobody waits now: the writer raises nothing.
        write(&h, &mut rx, 2);
        assert_eq!(h.buffered_amount(), 0);
        assert!(!h.drain_wanted.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn drain_counts_frames_too() {
        let (h, mut rx) = handle(10, 1 << 20);
        for _ in 0..6 {
            assert!(h.send(text(1)));
        }
        assert!(pending(&h).await, "6 of 10 frames is above half");
        write(&h, &mut rx, 1);
        assert!(!pending(&h).await);
    }

    #[tokio::test]
    async fn many_waiters_all_wake() {
        let (h, mut rx) = handle(100, 1000);
        assert!(h.send(text(600)));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.drain_for(Some(Duration::from_secs(5))).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        write(&h, &mut rx, 1);
        for w in waiters {
            assert!(w.await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_timeout_returns_false() {
        let (h, _rx) = handle(100, 1000);
        assert!(h.send(text(600)));
        assert!(!h.drain_for(Some(Duration::from_millis(20))).await);
        assert!(!h.drain_for(Some(Duration::ZERO)).await);
    }

    #[tokio::test]
    async fn a_close_ends_the_wait() {
        let (h, _rx) = handle(100, 1000);
        assert!(h.send(text(600)));
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.drain_for(Some(Duration::from_secs(5))).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        h.close(1000, String::new());
        assert!(waiter.await.unwrap());
        assert!(h.drain_ready());
    }

    #[tokio::test]
    async fn the_writer_ending_ends_the_wait() {
        let (h, rx) = handle(100, 1000);
        assert!(h.send(text(600)));
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.drain_for(Some(Duration::from_secs(5))).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx); // the connection ended: its writer task is gone, the queue never drains
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn drain_all_names_the_members_still_above() {
        let (fast, _fast_rx) = handle(100, 1000);
        let (slow, mut slow_rx) = handle(100, 1000);
        let members = [fast.clone(), slow.clone()];
        assert!(slow.send(text(600)));
        let ids = drain_all(&members, Some(Duration::from_millis(30))).await;
        assert_eq!(ids, vec![slow.id]);
        write(&slow, &mut slow_rx, 1);
        assert!(drain_all(&members, None).await.is_empty());
    }
}
