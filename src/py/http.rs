//! Plain HTTP for the application's threads (`Server.wsgi`): take a request, give an answer.
//! Waiting for a request releases the GIL.

use std::time::Duration;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::core::Core;
use crate::http::HttpResponse;

type Addr = (String, u16);
/// `(id, method, path, query, headers, body, remote_addr, local_addr, scheme)`
type RequestTuple<'py> = (
    u64,
    String,
    String,
    String,
    Vec<(String, String)>,
    Bound<'py, PyBytes>,
    Addr,
    Option<Addr>,
    &'static str,
);

/// The next plain HTTP request, or `None` after `timeout` seconds or once the server stops.
#[pyfunction]
pub fn http_next<'py>(
    py: Python<'py>,
    core: &Bound<'py, Core>,
    timeout: f64,
) -> Option<RequestTuple<'py>> {
    let hub = core.get().server.hub().clone();
    let wait = Duration::from_secs_f64(timeout.max(0.0));
    let r = py.detach(|| hub.http.next(wait))?;
    let addr = |a: std::net::SocketAddr| (a.ip().to_string(), a.port());
    Some((
        r.id,
        r.method,
        r.path,
        r.query,
        r.headers,
        PyBytes::new(py, &r.body),
        addr(r.remote_addr),
        r.local_addr.map(addr),
        r.scheme,
    ))
}

/// Answers request `id`; False when its client is no longer waiting (it left, or timed out).
#[pyfunction]
pub fn http_respond(
    core: &Bound<'_, Core>,
    id: u64,
    status: u16,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> bool {
    let response = HttpResponse {
        status,
        headers,
        body: Bytes::copy_from_slice(body),
    };
    core.get().server.hub().http.respond(id, response)
}
