//! The handshake request as Python reaches it: a handle on the core's own `ConnInfo`, read
//! field by field when asked. Every connection has one, so it holds nothing of its own:
//! building the headers and address as Python objects for every connection (about 1.5 KiB
//! each) is left to the hooks that read them.

use std::sync::Arc;

use pyo3::prelude::*;

use crate::events::ConnInfo;

#[pyclass(frozen, module = "roomcast._roomcast", name = "RequestInfo")]
pub struct RequestInfo(pub Arc<ConnInfo>);

#[pymethods]
impl RequestInfo {
    #[getter]
    fn path(&self) -> &str {
        &self.0.path
    }

    /// The subprotocol the server chose, if any.
    #[getter]
    fn subprotocol(&self) -> Option<&str> {
        self.0.subprotocol.as_deref()
    }

    /// Everything else: query string, headers, remote address, offered subprotocols, TLS.
    #[allow(clippy::type_complexity)]
    fn fields(&self) -> (&str, Vec<(&str, &str)>, (String, u16), Vec<String>, bool) {
        let info = &self.0;
        (
            info.query.as_str(),
            info.headers.iter().collect(),
            (info.remote_addr.ip().to_string(), info.remote_addr.port()),
            info.subprotocols.clone(),
            info.secure,
        )
    }
}
