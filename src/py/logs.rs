//! Carries the core's log records to Python's `logging` (logger `roomcast`).
//!
//! Records are queued here by whatever thread logs (tokio's included, which must never take the
//! GIL) and emitted by a Python thread that waits in `next_log_records` with the GIL released.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;

/// Records held for Python at most; past that they are dropped and counted, never blocking I/O.
const CAPACITY: usize = 10_000;

struct Bridge {
    tx: SyncSender<(u8, String)>,
    // A std Mutex: one Python thread drains at a time, waiting with the GIL released.
    rx: Mutex<Receiver<(u8, String)>>,
    dropped: AtomicU64,
}

static BRIDGE: OnceLock<Bridge> = OnceLock::new();

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.target().starts_with("_roomcast")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(bridge) = BRIDGE.get() {
            let item = (python_level(record.level()), record.args().to_string());
            if bridge.tx.try_send(item).is_err() {
                bridge.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn flush(&self) {}
}

fn python_level(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 40,
        log::Level::Warn => 30,
        log::Level::Info => 20,
        log::Level::Debug | log::Level::Trace => 10,
    }
}

pub fn install() {
    BRIDGE.get_or_init(|| {
        let (tx, rx) = sync_channel(CAPACITY);
        Bridge {
            tx,
            rx: Mutex::new(rx),
            dropped: AtomicU64::new(0),
        }
    });
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Sets the most verbose level forwarded (a Python `logging` level number).
#[pyfunction]
pub fn set_log_level(level: u32) {
    let filter = match level {
        0..=10 => log::LevelFilter::Debug,
        11..=20 => log::LevelFilter::Info,
        21..=30 => log::LevelFilter::Warn,
        _ => log::LevelFilter::Error,
    };
    log::set_max_level(filter);
}

/// Waits up to `timeout` seconds for records; returns `(level, message)` pairs, and how many
/// were dropped since the last call because Python did not keep up.
#[pyfunction]
pub fn next_log_records(py: Python<'_>, timeout: f64) -> (Vec<(u8, String)>, u64) {
    let Some(bridge) = BRIDGE.get() else {
        return (Vec::new(), 0);
    };
    py.detach(|| {
        let rx = bridge.rx.lock().unwrap();
        let mut out = Vec::new();
        match rx.recv_timeout(Duration::from_secs_f64(timeout.max(0.0))) {
            Ok(item) => out.push(item),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
        while out.len() < 1000 {
            match rx.try_recv() {
                Ok(item) => out.push(item),
                Err(_) => break,
            }
        }
        (out, bridge.dropped.swap(0, Ordering::Relaxed))
    })
}
