//! The chat preset as Python sees it: its settings, and `ChatCore`, the calls behind
//! `app.chat` (hand an event back to the preset, read a room's users, post into a room).
//! Calls that touch a room run on the server's runtime while the GIL is released.

use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::core::Core;
use crate::chat::frame;
use crate::chat::ChatConfig;
use crate::error::Error;
use crate::ConnId;

/// Builds the preset's settings from the dict `roomcast.presets.chat` passes.
pub fn config(settings: &Bound<'_, PyDict>) -> PyResult<ChatConfig> {
    let mut c = ChatConfig::default();
    for (key, value) in settings.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "jwt_secret" => c.jwt_secret = value.extract()?,
            "offline_limit" => c.offline_limit = value.extract()?,
            "offline_ttl" => {
                let secs: f64 = value.extract()?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(PyValueError::new_err(format!(
                        "offline_ttl must be a positive number of seconds (got {secs})"
                    )));
                }
                c.offline_ttl = Duration::from_secs_f64(secs);
            }
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "unknown chat setting {key:?}"
                )))
            }
        }
    }
    Ok(c)
}

/// Parses a JSON object the Python layer serialised; the error names what was wrong.
fn object(json: &str) -> PyResult<frame::Object> {
    match serde_json::from_str(json) {
        Ok(serde_json::Value::Object(obj)) => Ok(obj),
        _ => Err(PyValueError::new_err(
            "a chat event must be a JSON object (a dict)",
        )),
    }
}

#[pyclass(frozen, module = "roomcast._roomcast")]
pub struct ChatCore {
    core: Py<Core>,
}

impl ChatCore {
    pub fn new(core: Py<Core>) -> Self {
        Self { core }
    }
}

fn stopped() -> PyErr {
    PyRuntimeError::new_err("the server has stopped; app.chat works while it runs")
}

#[pymethods]
impl ChatCore {
    /// Runs the preset's behaviour for an event of connection `id` (what a hook hands back).
    fn handle(&self, py: Python<'_>, id: ConnId, data: &str) -> PyResult<()> {
        let obj = object(data)?;
        let Some(event) = frame::string(&obj, "event").map(str::to_owned) else {
            return Err(PyValueError::new_err(
                "the event needs a string \"event\" field",
            ));
        };
        let server = &self.core.get().server;
        let hub = server.hub();
        let chat = hub
            .chat
            .as_ref()
            .expect("ChatCore exists only for chat servers");
        let conn = chat.conn(id).ok_or(Error::NotOpen(id))?;
        py.detach(|| server.block_on(chat.act(hub, &conn, &event, obj)))
            .ok_or_else(stopped)
    }

    /// `(uid, name)` of every user online in `room`.
    fn users(&self, py: Python<'_>, room: &str) -> PyResult<Vec<(String, String)>> {
        let server = &self.core.get().server;
        let chat = server.hub().chat.as_ref().expect("a chat server");
        py.detach(|| server.block_on(chat.users(room)))
            .ok_or_else(stopped)
    }

    fn count(&self, room: &str) -> usize {
        let hub = self.core.get().server.hub();
        hub.chat.as_ref().map_or(0, |c| c.count(room))
    }

    /// Posts `data` (a JSON object) into `room` as `name`; returns the connections reached.
    fn post(&self, py: Python<'_>, room: &str, name: &str, data: &str) -> PyResult<usize> {
        let obj = object(data)?;
        let server = &self.core.get().server;
        let hub = server.hub();
        let chat = hub.chat.as_ref().expect("a chat server");
        py.detach(|| server.block_on(chat.post(hub, room, name, obj)))
            .ok_or_else(stopped)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let hub = self.core.get().server.hub();
        let c = hub.chat.as_ref().expect("a chat server").offline_counts();
        let d = PyDict::new(py);
        d.set_item("offline_kept", c.kept)?;
        d.set_item("offline_delivered", c.delivered)?;
        d.set_item("offline_dropped", c.dropped_full + c.dropped_expired)?;
        d.set_item("offline_dropped_full", c.dropped_full)?;
        d.set_item("offline_dropped_expired", c.dropped_expired)?;
        d.set_item("store_failures", c.store_failures)?;
        d.set_item("offline_waiting", c.waiting)?;
        Ok(d)
    }
}
