//! The counters as Python sees them: `Core.stats()` builds the dict behind `Server.stats()`;
//! `call_hook` runs a hook and times it into a tally of the calling thread's own, which the
//! thread hands to its server with its next `next_batch` (a worker) or `record_hook_times`:
//! no Python bytecode, no shared cache line and no allocation per call.

use std::cell::RefCell;
use std::time::Instant;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::hub::Hub;
use crate::metrics::{HookTally, HookTime, Refusal, Snapshot, HOOK_BUCKETS};

thread_local! {
    /// Hook times of this thread not yet handed to a server.
    static TALLY: RefCell<HookTally> = const { RefCell::new(HookTally::new()) };
}

/// `call_hook(hook, *args)`: `hook(*args)`, timed. A hook that returns an awaitable is not
/// timed here: the caller times it to its completion (`record_hook_times`).
#[pyfunction(signature = (hook, *args))]
pub fn call_hook<'py>(
    hook: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let start = Instant::now();
    let result = hook.call1(args);
    let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let failed = match &result {
        Ok(value) if !value.is_none() && value.hasattr(intern!(hook.py(), "__await__"))? => {
            return result;
        }
        Ok(_) => false,
        Err(_) => true,
    };
    TALLY.with_borrow_mut(|t| t.add(HookTime { nanos, failed }));
    result
}

/// Hands this thread's tally to `hub`.
pub fn flush_hook_tally(hub: &Hub) {
    let tally = TALLY.with_borrow_mut(std::mem::take);
    if tally.calls() > 0 {
        hub.metrics.hooks(&tally);
    }
}

/// Records times measured in Python (seconds; `-1 - seconds` for a hook that raised), and
/// this thread's tally.
pub fn record_hook_times(hub: &Hub, times: &[f64]) {
    TALLY.with_borrow_mut(|tally| {
        for &t in times {
            let (secs, failed) = if t < 0.0 {
                (-1.0 - t, true)
            } else {
                (t, false)
            };
            // `as` saturates (and maps NaN to 0): a clock oddity cannot panic here.
            let nanos = (secs * 1e9) as u64;
            tally.add(HookTime { nanos, failed });
        }
    });
    flush_hook_tally(hub);
}

/// `Server.stats()`: flat counts, with a dict where a count has a label.
pub fn stats<'py>(py: Python<'py>, s: &Snapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("connections_open", s.connections_open)?;
    d.set_item("connections_accepted", s.connections_accepted)?;
    d.set_item("connections_closed", s.connections_closed)?;
    let refused = PyDict::new(py);
    for why in Refusal::ALL {
        let by_status = PyDict::new(py);
        for (_, status, n) in s.refused.iter().filter(|r| r.0 == why) {
            by_status.set_item(status, n)?;
        }
        refused.set_item(why.name(), by_status)?;
    }
    d.set_item("connections_refused", refused)?;
    d.set_item("rooms", s.rooms)?;
    d.set_item("room_members", s.room_members)?;
    let t = &s.traffic;
    d.set_item("messages_received", t.messages_received)?;
    d.set_item("bytes_received", t.bytes_received)?;
    d.set_item("messages_sent", t.messages_sent)?;
    d.set_item("bytes_sent", t.bytes_sent)?;
    d.set_item("broadcasts", s.broadcasts)?;
    d.set_item("broadcast_deliveries", s.deliveries)?;
    d.set_item("messages_dropped", t.messages_dropped)?;
    d.set_item("slow_consumer_closes", s.slow_consumer_closes)?;
    d.set_item("rate_limited", s.rate_limited)?;
    d.set_item("tls_handshake_failures", s.tls_handshake_failures)?;
    d.set_item("heartbeat_timeouts", s.heartbeat_timeouts)?;
    let errors = PyDict::new(py);
    for (code, n) in &s.protocol_errors {
        errors.set_item(code, n)?;
    }
    d.set_item("protocol_errors", errors)?;
    d.set_item("hook_calls", s.hook_calls())?;
    d.set_item("hook_errors", s.hook_errors)?;
    let histogram = PyDict::new(py);
    let bounds = HOOK_BUCKETS.iter().map(|(nanos, _)| *nanos as f64 / 1e9);
    let buckets: Vec<(f64, u64)> = bounds
        .chain([f64::INFINITY])
        .zip(s.hook_cumulative().into_iter().map(|(_, n)| n))
        .collect();
    histogram.set_item("buckets", buckets)?;
    histogram.set_item("sum", s.hook_nanos as f64 / 1e9)?;
    histogram.set_item("count", s.hook_calls())?;
    d.set_item("hook_duration", histogram)?;
    d.set_item("events_pending", s.events_pending)?;
    d.set_item("runtime_tasks", s.runtime_tasks)?;
    let http = PyDict::new(py);
    for (i, n) in s.http_responses.iter().enumerate() {
        http.set_item(format!("{}xx", i + 1), n)?;
    }
    d.set_item("http_responses", http)?;
    match &s.chat {
        Some(c) => {
            let chat = PyDict::new(py);
            chat.set_item("offline_kept", c.kept)?;
            chat.set_item("offline_delivered", c.delivered)?;
            chat.set_item("offline_dropped_full", c.dropped_full)?;
            chat.set_item("offline_dropped_expired", c.dropped_expired)?;
            chat.set_item("store_failures", c.store_failures)?;
            chat.set_item("offline_waiting", c.waiting)?;
            d.set_item("chat", chat)?;
        }
        None => d.set_item("chat", py.None())?,
    }
    match &s.broker {
        Some(b) => {
            let broker = PyDict::new(py);
            broker.set_item("published", b.published)?;
            broker.set_item("received", b.received)?;
            broker.set_item("duplicates", b.duplicates)?;
            broker.set_item("gaps", b.gaps)?;
            broker.set_item("lost", b.lost)?;
            broker.set_item("unsent", b.unsent)?;
            broker.set_item("dropped", b.dropped)?;
            broker.set_item("malformed", b.malformed)?;
            broker.set_item("reconnects", b.reconnects)?;
            broker.set_item("nodes", b.nodes)?;
            broker.set_item("connected", b.connected)?;
            d.set_item("broker", broker)?;
        }
        None => d.set_item("broker", py.None())?,
    }
    Ok(d)
}
