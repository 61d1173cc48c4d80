//! `Core`: one running server as Python sees it. Every method is a short call into the hub;
//! the only ones that wait (`next_batch`, `stop`) release the GIL while they do.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyString};

use crate::dispatch;
use crate::events::{Decision, Event, Routes};
use crate::frames::{Outgoing, Text};
use crate::hub::Hub;
use crate::server::Server;
use crate::ConnId;

use super::request::RequestInfo;

// Event kinds as Python sees them (mirrored in roomcast/_dispatch.py).
const CONNECT: u8 = 0;
const OPEN: u8 = 1;
const TEXT: u8 = 2;
const BINARY: u8 = 3;
const ROUTED: u8 = 4;
const CLOSE: u8 = 5;
const CHAT: u8 = 6;

thread_local! {
    /// The hub whose batch this (worker) thread is running, as an address; 0 for none. Sends
    /// to that hub from this thread are deferred until the batch ends.
    static IN_BATCH: Cell<usize> = const { Cell::new(0) };
}

fn hub_key(hub: &Arc<Hub>) -> usize {
    Arc::as_ptr(hub) as usize
}

fn in_batch_of(hub: &Arc<Hub>) -> bool {
    IN_BATCH.with(|b| b.get() == hub_key(hub))
}

/// Several connections' events for one worker; `claim()` them one connection at a time.
#[pyclass(frozen, module = "roomcast._roomcast")]
pub struct Batch {
    batch: Arc<dispatch::Batch<Event>>,
    hub: Arc<Hub>,
}

#[pymethods]
impl Batch {
    /// The next connection's `(id, events)`, or `None` when the batch is done (or another
    /// worker took the rest because this one was stuck in a hook).
    fn claim<'py>(&self, py: Python<'py>) -> PyResult<Option<(ConnId, Vec<Bound<'py, PyAny>>)>> {
        IN_BATCH.with(|b| b.set(hub_key(&self.hub)));
        let Some((id, events)) = self.batch.claim() else {
            return Ok(None);
        };
        let events = events
            .into_iter()
            .map(|e| event_tuple(py, e))
            .collect::<PyResult<_>>()?;
        Ok(Some((id, events)))
    }
}

#[pyclass(frozen, module = "roomcast._roomcast")]
pub struct Core {
    pub(super) server: Server,
}

/// A frame payload from Python: `str` is text, bytes-like is binary. One copy, at this edge.
fn outgoing(data: &Bound<'_, PyAny>) -> PyResult<Outgoing> {
    if let Ok(s) = data.cast::<PyString>() {
        return Ok(Outgoing::Text(Text::from(s.to_cow()?.into_owned())));
    }
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(Outgoing::Binary(Bytes::copy_from_slice(b.as_bytes())));
    }
    if data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>() {
        let v: Vec<u8> = data.extract()?;
        return Ok(Outgoing::Binary(Bytes::from(v)));
    }
    Err(PyTypeError::new_err(format!(
        "can only send str (text frame) or bytes (binary frame), not {}",
        data.get_type().name()?
    )))
}

fn event_tuple<'py>(py: Python<'py>, event: Event) -> PyResult<Bound<'py, PyAny>> {
    let t = match event {
        Event::Connect(info) => (CONNECT, RequestInfo(info)).into_pyobject(py)?.into_any(),
        Event::Open(info) => (OPEN, RequestInfo(info)).into_pyobject(py)?.into_any(),
        Event::Text(text) => (TEXT, PyString::new(py, text.as_str()))
            .into_pyobject(py)?
            .into_any(),
        Event::Binary(data) => (BINARY, PyBytes::new(py, &data))
            .into_pyobject(py)?
            .into_any(),
        Event::Routed { event, text } => (ROUTED, PyString::new(py, text.as_str()), event)
            .into_pyobject(py)?
            .into_any(),
        Event::Disconnect { code, reason } => (CLOSE, code, reason).into_pyobject(py)?.into_any(),
        Event::Chat(text) => (CHAT, PyString::new(py, text.as_str()))
            .into_pyobject(py)?
            .into_any(),
    };
    Ok(t)
}

fn valid_close_code(code: u16) -> PyResult<u16> {
    // RFC 6455 §7.4: codes an endpoint may send.
    if matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        Ok(code)
    } else {
        Err(PyValueError::new_err(format!(
            "close code {code} cannot be sent; use 1000 (normal), 1001, 1008, 1011, or 3000-4999"
        )))
    }
}

#[pymethods]
impl Core {
    #[new]
    fn new(py: Python<'_>, host: &str, port: u16, settings: &Bound<'_, PyDict>) -> PyResult<Self> {
        let config = super::settings::config_from(settings)?;
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let server = py.detach(|| Server::start(config, &addr))?;
        Ok(Core { server })
    }

    #[getter]
    fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    #[getter]
    fn host(&self) -> String {
        self.server.local_addr().ip().to_string()
    }

    #[getter]
    fn running(&self) -> bool {
        self.server.is_running()
    }

    fn set_routes(&self, connect: bool, message: bool, disconnect: bool, events: Vec<String>) {
        let events: HashSet<String> = events.into_iter().collect();
        self.server.hub().set_routes(Routes {
            connect,
            message,
            disconnect,
            events,
        });
    }

    /// Graceful shutdown; blocks (GIL released) until every connection is closed.
    fn stop(&self, py: Python<'_>, timeout: f64) {
        py.detach(|| {
            self.server
                .shutdown(Duration::from_secs_f64(timeout.max(0.0)))
        });
    }

    /// Waits (GIL released) for connections with events; `None` after shutdown, or when
    /// `timeout` passes with nothing to do. First hands over the hook times this (worker)
    /// thread tallied since its last call (`call_hook`): one hand-over per batch.
    #[pyo3(signature = (timeout=None))]
    fn next_batch(&self, py: Python<'_>, timeout: Option<f64>) -> Option<Batch> {
        let hub = self.server.hub();
        super::metrics::flush_hook_tally(hub);
        if in_batch_of(hub) {
            // The previous batch is over: what its hooks sent goes out now, in one pass.
            IN_BATCH.with(|b| b.set(0));
            hub.flush_deferred();
        }
        let wait = timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
        let batch = py.detach(|| hub.events.next_batch(wait))?;
        Some(Batch {
            batch,
            hub: hub.clone(),
        })
    }

    /// Hook times measured in Python (`on_connect`'s; an async hook's, to its completion),
    /// in seconds, `-1 - seconds` for one that raised; also hands over what this thread's
    /// `call_hook` tallied.
    fn record_hook_times(&self, times: Vec<f64>) {
        super::metrics::record_hook_times(self.server.hub(), &times);
    }

    /// Every counter and gauge, read without stopping anything (`Server.stats`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        super::metrics::stats(py, &self.server.hub().stats())
    }

    fn finish(&self, id: ConnId) {
        self.server.hub().events.finish(id);
    }

    fn wake(&self, id: ConnId) {
        self.server.hub().events.wake(id);
    }

    fn accept(&self, id: ConnId) -> bool {
        self.server.hub().decide(id, Decision::Accept)
    }

    fn reject(&self, id: ConnId, status: u16, body: String) -> PyResult<bool> {
        if !(400..=599).contains(&status) {
            return Err(PyValueError::new_err(format!(
                "reject status must be an HTTP error status, 400-599 (got {status})"
            )));
        }
        Ok(self
            .server
            .hub()
            .decide(id, Decision::Reject { status, body }))
    }

    fn send(&self, id: ConnId, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let hub = self.server.hub();
        let out = outgoing(data)?;
        if in_batch_of(hub) {
            Ok(hub.send_deferred(id, out)?)
        } else {
            Ok(hub.send(id, out)?)
        }
    }

    fn close(&self, id: ConnId, code: u16, reason: &str) -> PyResult<()> {
        let code = valid_close_code(code)?;
        let hub = self.server.hub();
        if in_batch_of(hub) {
            // What this batch sent before the close goes first.
            hub.apply_deferred();
        }
        hub.close(id, code, reason.to_owned());
        Ok(())
    }

    fn is_open(&self, id: ConnId) -> bool {
        self.server.hub().is_open(id)
    }

    fn buffered_amount(&self, id: ConnId) -> usize {
        self.server.hub().buffered_amount(id)
    }

    fn info(&self, id: ConnId) -> Option<RequestInfo> {
        self.server.hub().info(id).map(RequestInfo)
    }

    fn join(&self, id: ConnId, room: &str) -> PyResult<bool> {
        Ok(self.server.hub().join(id, room)?)
    }

    fn leave(&self, id: ConnId, room: &str) -> bool {
        self.server.hub().leave(id, room)
    }

    fn rooms_of(&self, id: ConnId) -> Vec<String> {
        self.server.hub().rooms_of(id)
    }

    /// One frame to a room (or, with `room=None`, to every connection); returns how many
    /// connections it was queued for. Built once; members share its bytes.
    #[pyo3(signature = (room, data, exclude=Vec::new()))]
    fn broadcast(
        &self,
        room: Option<&str>,
        data: &Bound<'_, PyAny>,
        exclude: Vec<ConnId>,
    ) -> PyResult<usize> {
        let out = outgoing(data)?;
        let hub = self.server.hub();
        if in_batch_of(hub) {
            return Ok(hub.broadcast_deferred(room, out, &exclude));
        }
        Ok(match room {
            Some(room) => hub.broadcast_room(room, out, &exclude),
            None => hub.broadcast_all(out, &exclude),
        })
    }

    fn room_count(&self, room: &str) -> usize {
        self.server.hub().room_count(room)
    }

    fn room_members(&self, room: &str) -> Vec<ConnId> {
        self.server.hub().room_members(room)
    }

    fn room_names(&self) -> Vec<String> {
        self.server.hub().room_names()
    }

    fn connection_count(&self) -> usize {
        self.server.hub().connection_count()
    }

    /// The chat preset's calls, when this server runs it.
    fn chat(slf: &Bound<'_, Self>) -> Option<super::chat::ChatCore> {
        slf.get().server.hub().chat.as_ref()?;
        Some(super::chat::ChatCore::new(slf.clone().unbind()))
    }

    /// One heartbeat sweep now; False when the heartbeat is off.
    fn sweep_now(&self) -> bool {
        self.server.sweep_now()
    }

    fn pending_events(&self) -> usize {
        self.server.hub().events.pending()
    }
}
