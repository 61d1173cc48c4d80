//! `await conn.drain()` and `await room.drain()`: a connection's queue falling to its low-water
//! mark, as a Python awaitable. The wait is a Rust future (`ConnHandle::drain`) polled by
//! pyo3-async-runtimes' tokio runtime, which `init_runtime` keeps to one worker thread: no
//! thread waits per caller, and a process that never drains starts none.
//!
//! Called from a coroutine (`Connection.drain` is `async def`): pyo3-async-runtimes takes the
//! running asyncio loop of the calling thread and resolves the awaitable on it.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::core::Core;
use crate::connection;
use crate::ConnId;

/// Sets up the runtime the waits run on; nothing starts until the first wait.
pub fn init_runtime() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(1)
        // Each finished wait hands its result to Python from a blocking-pool thread (it takes
        // the GIL there, not on the worker); a few are plenty.
        .max_blocking_threads(4)
        .thread_name("roomcast-drain")
        .enable_all();
    pyo3_async_runtimes::tokio::init(builder);
}

fn timeout_from(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(format!(
            "timeout must be None or a number of seconds >= 0 (got {t})"
        ))),
        // Too long to represent (inf included): no limit.
        Some(t) => Ok(Duration::try_from_secs_f64(t).ok()),
    }
}

/// `None` when there is nothing to wait for: the connection's queue is at or below its
/// low-water mark, or the connection is closed or unknown. Otherwise an awaitable: True once
/// it is (or the connection closes), False when `timeout` seconds pass first.
#[pyfunction]
#[pyo3(signature = (core, id, timeout=None))]
pub fn conn_drain<'py>(
    py: Python<'py>,
    core: &Bound<'py, Core>,
    id: ConnId,
    timeout: Option<f64>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let timeout = timeout_from(timeout)?;
    let Ok(handle) = core.get().server.hub().get(id) else {
        return Ok(None);
    };
    if handle.drain_ready() {
        return Ok(None);
    }
    let wait = async move { Ok(handle.drain_for(timeout).await) };
    pyo3_async_runtimes::tokio::future_into_py(py, wait).map(Some)
}

/// `None` when every local member of `room` is at or below its low-water mark (or closed).
/// Otherwise an awaitable: the ids of the members still above it once all are below, or when
/// `timeout` seconds pass (an empty list: all drained). Members are those at the time of the
/// call; one future waits for all of them.
#[pyfunction]
#[pyo3(signature = (core, room, timeout=None))]
pub fn room_drain<'py>(
    py: Python<'py>,
    core: &Bound<'py, Core>,
    room: &str,
    timeout: Option<f64>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let timeout = timeout_from(timeout)?;
    let members = core.get().server.hub().room_handles(room);
    if members.iter().all(|m| m.drain_ready()) {
        return Ok(None);
    }
    let wait = async move { Ok(connection::drain_all(&members, timeout).await) };
    pyo3_async_runtimes::tokio::future_into_py(py, wait).map(Some)
}
