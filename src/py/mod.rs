//! The Python binding, `roomcast._roomcast`: a thin layer over the core. Tokio threads never
//! enter here; Python threads call in, and release the GIL whenever they wait.

mod broker;
mod chat;
mod core;
mod drain;
mod errors;
mod http;
mod logs;
mod metrics;
mod request;
mod settings;
mod tls;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
fn _roomcast(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<core::Core>()?;
    m.add_class::<core::Batch>()?;
    m.add_class::<chat::ChatCore>()?;
    m.add_class::<request::RequestInfo>()?;
    m.add_function(wrap_pyfunction!(settings::default_settings, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::call_hook, m)?)?;
    m.add_function(wrap_pyfunction!(drain::conn_drain, m)?)?;
    m.add_function(wrap_pyfunction!(drain::room_drain, m)?)?;
    m.add_function(wrap_pyfunction!(http::http_next, m)?)?;
    m.add_function(wrap_pyfunction!(http::http_respond, m)?)?;
    m.add_function(wrap_pyfunction!(logs::next_log_records, m)?)?;
    m.add_function(wrap_pyfunction!(logs::set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(tls::reload_tls, m)?)?;
    errors::register(m)?;
    logs::install();
    drain::init_runtime();
    Ok(())
}
