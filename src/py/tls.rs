//! TLS from Python: the certificate setting, and reloading it while the server runs.

use std::path::PathBuf;

use pyo3::prelude::*;

use super::core::Core;
use crate::tls::TlsFiles;

/// The `tls` setting: `None`, or `(certfile, keyfile)`.
pub fn files(value: &Bound<'_, PyAny>) -> PyResult<Option<TlsFiles>> {
    let pair: Option<(PathBuf, PathBuf)> = value.extract()?;
    Ok(pair.map(|(certfile, keyfile)| TlsFiles { certfile, keyfile }))
}

/// Reads the certificate and key files again (the GIL is released while they load).
#[pyfunction]
pub fn reload_tls(py: Python<'_>, core: &Bound<'_, Core>) -> PyResult<()> {
    let core = core.get();
    py.detach(|| core.server.reload_tls())?;
    Ok(())
}
