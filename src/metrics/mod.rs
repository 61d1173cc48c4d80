//! The server's counters, read while it runs (`Hub::stats`). Each is a relaxed atomic bumped
//! where its event happens, once per event, never per member or per byte. What a connection's
//! frames add up to is counted on the connection itself (`Traffic`: one writer per field, so
//! no locked instruction and no cache line shared between I/O threads) and summed when read.
//!
//! `hooks` holds the hook duration buckets and the per-thread tally; `exposition` writes a `Snapshot` in
//! Prometheus' text format.

pub mod exposition;
mod hooks;

pub use hooks::{HookBuckets, HookTally, HookTime, HOOK_BUCKETS};

use std::ops::AddAssign;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::chat::offline::OfflineCounts;

/// Why a connection was refused before it opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The core refused the request itself: a path not served (404), a bad upgrade (400, 405,
    /// 426), a request head too slow or too large (408, 431), the server shutting down (503).
    Request,
    /// Its Origin is not in `allowed_origins` (403).
    Origin,
    /// Over `max_connections` or `max_connections_per_ip` (503).
    Limit,
    /// `on_connect` refused it: returned False (403), raised `Reject` (its status), raised
    /// anything else (500).
    OnConnect,
    /// `on_connect` did not decide within `handshake_timeout` (503).
    OnConnectTimeout,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Self::Request,
        Self::Origin,
        Self::Limit,
        Self::OnConnect,
        Self::OnConnectTimeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Origin => "origin",
            Self::Limit => "limit",
            Self::OnConnect => "on_connect",
            Self::OnConnectTimeout => "on_connect_timeout",
        }
    }
}

/// Refusal statuses are counted per status, 400 to 599 (anything else counts as 599).
const STATUS_BASE: u16 = 400;
const STATUSES: usize = 200;
/// Protocol errors are counted per close code, 1000 to 1015.
const CLOSE_BASE: u16 = 1000;
const CLOSE_CODES: usize = 16;
/// The close codes a protocol error is answered with, listed even when zero.
pub const PROTOCOL_ERROR_CODES: [u16; 4] = [1002, 1007, 1009, 1011];

/// Adds to a counter that only one task writes: a plain load and store, no locked instruction.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// One connection's data messages and their payload bytes. The reader is the only writer of
/// the received pair and the writer task of the sent pair (see `bump`); anyone may read.
#[derive(Default, Debug)]
pub struct Traffic {
    messages_received: AtomicU64,
    bytes_received: AtomicU64,
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
}

impl Traffic {
    /// A data message arrived. The connection's reader only.
    pub fn received(&self, bytes: usize) {
        bump(&self.messages_received, 1);
        bump(&self.bytes_received, bytes as u64);
    }

    /// Data messages were written to the socket. The connection's writer only.
    pub fn sent(&self, messages: u64, bytes: u64) {
        if messages > 0 {
            bump(&self.messages_sent, messages);
            bump(&self.bytes_sent, bytes);
        }
    }

    /// The counts so far, with `dropped` (the connection's overflow drops) beside them.
    pub fn totals(&self, dropped: u64) -> TrafficTotals {
        TrafficTotals {
            messages_received: self.messages_received.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            messages_sent: self.messages_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            messages_dropped: dropped,
        }
    }
}

/// `Traffic` summed over connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficTotals {
    pub messages_received: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    /// Messages the `drop` overflow policy dropped.
    pub messages_dropped: u64,
}

impl AddAssign for TrafficTotals {
    fn add_assign(&mut self, o: Self) {
        self.messages_received += o.messages_received;
        self.bytes_received += o.bytes_received;
        self.messages_sent += o.messages_sent;
        self.bytes_sent += o.bytes_sent;
        self.messages_dropped += o.messages_dropped;
    }
}

/// The server-wide counters. Shared (`Arc`) by the hub and every connection handle.
pub struct Metrics {
    accepted: AtomicU64,
    closed: AtomicU64,
    refused: [[AtomicU64; STATUSES]; Refusal::ALL.len()],
    broadcasts: AtomicU64,
    deliveries: AtomicU64,
    slow_consumer_closes: AtomicU64,
    rate_limited: AtomicU64,
    tls_handshake_failures: AtomicU64,
    heartbeat_timeouts: AtomicU64,
    protocol_errors: [AtomicU64; CLOSE_CODES],
    /// Plain HTTP answers by status class, 1xx to 5xx.
    http_responses: [AtomicU64; 5],
    hook_buckets: [AtomicU64; HOOK_BUCKETS.len() + 1],
    hook_nanos: AtomicU64,
    hook_errors: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            accepted: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            refused: std::array::from_fn(|_| zeros()),
            broadcasts: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            slow_consumer_closes: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            heartbeat_timeouts: AtomicU64::new(0),
            protocol_errors: zeros(),
            http_responses: zeros(),
            hook_buckets: zeros(),
            hook_nanos: AtomicU64::new(0),
            hook_errors: AtomicU64::new(0),
        }
    }

    /// The handshake completed (101 written): the connection is open.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }

    /// An accepted connection ended.
    pub fn closed(&self) {
        self.closed.fetch_add(1, Relaxed);
    }

    pub fn refused(&self, why: Refusal, status: u16) {
        let slot = usize::from(status.saturating_sub(STATUS_BASE)).min(STATUSES - 1);
        self.refused[why as usize][slot].fetch_add(1, Relaxed);
    }

    /// One broadcast call, queued for `deliveries` members.
    pub fn broadcast(&self, deliveries: usize) {
        self.broadcasts.fetch_add(1, Relaxed);
        self.delivered(deliveries);
    }

    /// Members a broadcast counted earlier (a deferred one) was queued for.
    pub fn delivered(&self, deliveries: usize) {
        if deliveries > 0 {
            self.deliveries.fetch_add(deliveries as u64, Relaxed);
        }
    }

    /// A message over its client's rate limit (closed with 1008, or dropped).
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    /// A socket on the TLS port that never completed the TLS handshake.
    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.fetch_add(1, Relaxed);
    }

    /// A connection was closed with 1013 by the `close` overflow policy.
    pub fn slow_consumer_closed(&self) {
        self.slow_consumer_closes.fetch_add(1, Relaxed);
    }

    pub fn heartbeat_timeout(&self) {
        self.heartbeat_timeouts.fetch_add(1, Relaxed);
    }

    /// A client broke the protocol and is closed with `code` (1002, 1007, 1009, ...).
    pub fn protocol_error(&self, code: u16) {
        let slot = usize::from(code.saturating_sub(CLOSE_BASE)).min(CLOSE_CODES - 1);
        self.protocol_errors[slot].fetch_add(1, Relaxed);
    }

    /// A plain HTTP request was answered with `status`.
    pub fn http_response(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.http_responses[class].fetch_add(1, Relaxed);
    }

    /// Hook runs timed by the dispatcher: one atomic add per bucket used, not per run.
    pub fn hooks(&self, tally: &HookTally) {
        for (counter, n) in self.hook_buckets.iter().zip(tally.buckets) {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
        if tally.nanos > 0 {
            self.hook_nanos.fetch_add(tally.nanos, Relaxed);
        }
        if tally.errors > 0 {
            self.hook_errors.fetch_add(tally.errors, Relaxed);
        }
    }

    /// The counters kept here; the hub adds the gauges and the connections' traffic.
    pub fn snapshot(&self) -> Snapshot {
        // Closed before accepted: every close read has its accept read too, so `open` is
        // never negative.
        let closed = self.closed.load(Relaxed);
        let accepted = self.accepted.load(Relaxed);
        let mut refused = Vec::new();
        for why in Refusal::ALL {
            for (slot, n) in self.refused[why as usize].iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    refused.push((why, STATUS_BASE + slot as u16, n));
                }
            }
        }
        let protocol_errors = self
            .protocol_errors
            .iter()
            .enumerate()
            .map(|(slot, n)| (CLOSE_BASE + slot as u16, n.load(Relaxed)))
            .filter(|(code, n)| *n > 0 || PROTOCOL_ERROR_CODES.contains(code))
            .collect();
        Snapshot {
            connections_open: accepted.saturating_sub(closed),
            connections_accepted: accepted,
            connections_closed: closed,
            refused,
            broadcasts: self.broadcasts.load(Relaxed),
            deliveries: self.deliveries.load(Relaxed),
            slow_consumer_closes: self.slow_consumer_closes.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
            heartbeat_timeouts: self.heartbeat_timeouts.load(Relaxed),
            protocol_errors,
            http_responses: std::array::from_fn(|i| self.http_responses[i].load(Relaxed)),
            hook_buckets: std::array::from_fn(|i| self.hook_buckets[i].load(Relaxed)),
            hook_nanos: self.hook_nanos.load(Relaxed),
            hook_errors: self.hook_errors.load(Relaxed),
            ..Snapshot::default()
        }
    }
}

/// Every counter and gauge at one moment (each read on its own: they are not a transaction).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub connections_closed: u64,
    /// `(why, status, count)`, the non-zero ones.
    pub refused: Vec<(Refusal, u16, u64)>,
    pub rooms: u64,
    /// Memberships: a connection in three rooms counts three times.
    pub room_members: u64,
    pub traffic: TrafficTotals,
    pub broadcasts: u64,
    pub deliveries: u64,
    pub slow_consumer_closes: u64,
    /// Messages from clients over their rate limit (the connection closed, or the message
    /// dropped).
    pub rate_limited: u64,
    /// Sockets on a TLS port whose TLS handshake failed or timed out.
    pub tls_handshake_failures: u64,
    pub heartbeat_timeouts: u64,
    /// `(close code, count)`: `PROTOCOL_ERROR_CODES` always, other codes when non-zero.
    pub protocol_errors: Vec<(u16, u64)>,
    /// By status class, 1xx to 5xx.
    pub http_responses: [u64; 5],
    /// Per bucket of `HOOK_BUCKETS`, not cumulative; the last is `+Inf`.
    pub hook_buckets: HookBuckets,
    pub hook_nanos: u64,
    pub hook_errors: u64,
    /// Events waiting for a hook worker.
    pub events_pending: u64,
    /// Tasks alive on the server's tokio runtime: a leak of connections' tasks shows here
    /// even when every counter above balances.
    pub runtime_tasks: u64,
    /// The chat preset's offline store, when the server runs it.
    pub chat: Option<OfflineCounts>,
    /// The Redis broker, when the server has one.
    pub broker: Option<crate::broker::BrokerStats>,
}

impl Snapshot {
    /// Hook runs timed (the histogram's count).
    pub fn hook_calls(&self) -> u64 {
        self.hook_buckets.iter().sum()
    }

    /// The histogram's buckets as Prometheus has them: cumulative, `(le, count)`, `+Inf` last.
    pub fn hook_cumulative(&self) -> Vec<(&'static str, u64)> {
        let labels = HOOK_BUCKETS.iter().map(|(_, le)| *le).chain(["+Inf"]);
        let mut total = 0;
        labels
            .zip(self.hook_buckets)
            .map(|(le, n)| {
                total += n;
                (le, total)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(nanos: u64) -> HookTime {
        HookTime {
            nanos,
            failed: false,
        }
    }

    #[test]
    fn counters_land_in_the_snapshot() {
        let m = Metrics::new();
        m.accepted();
        m.accepted();
        m.closed();
        m.refused(Refusal::Request, 404);
        m.refused(Refusal::Request, 404);
        m.refused(Refusal::OnConnect, 403);
        m.refused(Refusal::OnConnectTimeout, 503);
        m.broadcast(3);
        m.broadcast(0);
        m.delivered(2);
        m.slow_consumer_closed();
        m.heartbeat_timeout();
        m.protocol_error(1009);
        m.http_response(200);
        m.http_response(204);
        m.http_response(504);
        let s = m.snapshot();
        assert_eq!(
            (
                s.connections_open,
                s.connections_accepted,
                s.connections_closed
            ),
            (1, 2, 1)
        );
        assert_eq!(
            s.refused,
            vec![
                (Refusal::Request, 404, 2),
                (Refusal::OnConnect, 403, 1),
                (Refusal::OnConnectTimeout, 503, 1)
            ]
        );
        assert_eq!((s.broadcasts, s.deliveries), (2, 5));
        assert_eq!((s.slow_consumer_closes, s.heartbeat_timeouts), (1, 1));
        assert_eq!(
            s.protocol_errors,
            vec![(1002, 0), (1007, 0), (1009, 1), (1011, 0)]
        );
        assert_eq!(s.http_responses, [0, 2, 0, 0, 1]);
    }

    #[test]
    fn odd_statuses_and_codes_are_clamped_not_lost() {
        let m = Metrics::new();
        m.refused(Refusal::OnConnect, 999);
        m.protocol_error(1015);
        m.protocol_error(4000);
        m.http_response(0);
        let s = m.snapshot();
        assert_eq!(s.refused, vec![(Refusal::OnConnect, 599, 1)]);
        assert!(s.protocol_errors.contains(&(1015, 2)));
        assert_eq!(s.http_responses[0], 1);
    }

    #[test]
    fn hook_times_fall_in_their_buckets() {
        let m = Metrics::new();
        let failed = HookTime {
            nanos: 7_000,
            failed: true,
        };
        // On a bound counts in that bucket (le is "less than or equal").
        let mut tally = HookTally::default();
        for t in [ok(1), ok(5_000), failed, ok(3_000_000), ok(u64::MAX / 2)] {
            tally.add(t);
        }
        m.hooks(&tally);
        let s = m.snapshot();
        assert_eq!(s.hook_calls(), 5);
        assert_eq!(s.hook_errors, 1);
        assert_eq!(s.hook_buckets[0], 2);
        assert_eq!(s.hook_buckets[1], 1);
        assert_eq!(s.hook_buckets[9], 1); // (2.5 ms, 5 ms]
        assert_eq!(s.hook_buckets[HOOK_BUCKETS.len()], 1); // +Inf
        let cumulative = s.hook_cumulative();
        assert_eq!(cumulative[0], ("5e-06", 2));
        assert_eq!(cumulative.last(), Some(&("+Inf", 5)));
        assert!(cumulative.windows(2).all(|w| w[0].1 <= w[1].1));
        m.hooks(&HookTally::default());
        assert_eq!(m.snapshot().hook_nanos, s.hook_nanos);
    }

    #[test]
    fn traffic_adds_up() {
        let t = Traffic::default();
        t.received(10);
        t.received(5);
        t.sent(3, 300);
        t.sent(0, 0);
        let mut total = t.totals(4);
        assert_eq!(
            total,
            TrafficTotals {
                messages_received: 2,
                bytes_received: 15,
                messages_sent: 3,
                bytes_sent: 300,
                messages_dropped: 4,
            }
        );
        total += t.totals(0);
        assert_eq!(total.bytes_sent, 600);
    }
}
