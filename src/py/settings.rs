//! The keyword settings of `Server(...)`: turned into the core's `Config`, and the core's
//! defaults handed back so the Python signature can be checked against them.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::config::{Config, OverflowPolicy, Page, Relay};
use crate::ratelimit::RateLimit;

fn secs(value: Option<f64>, name: &str) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v > 0.0 => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => Err(PyValueError::new_err(format!(
            "{name} must be a positive number of seconds (got {v})"
        ))),
    }
}

/// Builds a `Config` from the keyword settings; unknown names are an error, not ignored.
pub(super) fn config_from(settings: &Bound<'_, PyDict>) -> PyResult<Config> {
    let mut c = Config::default();
    let mut rate = RateLimit {
        messages_per_s: None,
        bytes_per_s: None,
        burst: Duration::from_secs(2),
        policy: OverflowPolicy::Close,
    };
    for (key, value) in settings.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "max_message_size" => c.max_message_size = value.extract()?,
            "queue_size" => c.queue_size = value.extract()?,
            "queue_bytes" => c.queue_bytes = value.extract()?,
            "overflow" => {
                let name: String = value.extract()?;
                c.overflow = OverflowPolicy::parse(&name).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "overflow must be 'close' or 'drop' (got {name:?})"
                    ))
                })?
            }
            "heartbeat_interval" => c.heartbeat_interval = secs(value.extract()?, &key)?,
            "app_heartbeat" => c.app_heartbeat = value.extract()?,
            "read_buffer_size" => c.read_buffer_size = value.extract()?,
            "write_buffer_size" => c.write_buffer_size = value.extract()?,
            "compression" => {
                let name: Option<String> = value.extract()?;
                c.compression = match name.as_deref() {
                    None => false,
                    Some("deflate") => true,
                    Some(other) => {
                        return Err(PyValueError::new_err(format!(
                            "compression must be 'deflate' or None (got {other:?})"
                        )))
                    }
                }
            }
            "compression_threshold" => c.compression_threshold = value.extract()?,
            "max_header_bytes" => c.max_header_bytes = value.extract()?,
            "handshake_timeout" => {
                c.handshake_timeout = secs(value.extract()?, &key)?.unwrap_or_default()
            }
            "close_timeout" => c.close_timeout = secs(value.extract()?, &key)?.unwrap_or_default(),
            "paths" => c.paths = value.extract()?,
            "subprotocols" => c.subprotocols = value.extract()?,
            "mailbox_limit" => c.mailbox_limit = value.extract()?,
            "io_threads" => c.io_threads = value.extract()?,
            "relays" => {
                let relays: Vec<(String, String, bool, bool)> = value.extract()?;
                c.relays = relays
                    .into_iter()
                    .map(|(path, room, join, echo)| Relay {
                        path,
                        room,
                        join,
                        echo,
                    })
                    .collect();
            }
            "http_app" => c.http_app = value.extract()?,
            "max_body_size" => c.max_body_size = value.extract()?,
            "http_queue" => c.http_queue = value.extract()?,
            "http_timeout" => c.http_timeout = secs(value.extract()?, &key)?.unwrap_or_default(),
            "metrics_path" => c.metrics_path = value.extract()?,
            "reuse_port" => c.reuse_port = value.extract()?,
            "tls" => c.tls = super::tls::files(&value)?,
            "rate_limit_messages" => rate.messages_per_s = value.extract()?,
            "rate_limit_bytes" => rate.bytes_per_s = value.extract()?,
            "rate_limit_burst" => rate.burst = secs(value.extract()?, &key)?.unwrap_or_default(),
            "rate_limit_policy" => {
                let name: String = value.extract()?;
                rate.policy = OverflowPolicy::parse(&name).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "rate_limit_policy must be 'close' or 'drop' (got {name:?})"
                    ))
                })?
            }
            "allowed_origins" => c.allowed_origins = value.extract()?,
            "max_connections" => c.max_connections = value.extract()?,
            "max_connections_per_ip" => c.max_connections_per_ip = value.extract()?,
            "trusted_proxies" => c.trusted_proxies = value.extract()?,
            "handshake_rate_per_ip" => c.handshake_rate_per_ip = value.extract()?,
            "broker" => {
                let broker: Option<Bound<'_, PyDict>> = value.extract()?;
                c.broker = broker.as_ref().map(super::broker::config).transpose()?;
            }
            "chat" => {
                let chat: Option<Bound<'_, PyDict>> = value.extract()?;
                c.chat = chat.as_ref().map(super::chat::config).transpose()?;
            }
            "pages" => {
                let pages: Vec<(String, String, String)> = value.extract()?;
                c.pages = pages
                    .into_iter()
                    .map(|(path, content_type, body)| Page {
                        path,
                        content_type,
                        body,
                    })
                    .collect();
            }
            _ => return Err(PyTypeError::new_err(format!("unknown setting {key:?}"))),
        }
    }
    if rate.messages_per_s.is_some() || rate.bytes_per_s.is_some() {
        c.rate_limit = Some(rate);
    }
    Ok(c)
}

/// The core's defaults, so the Python signature can be checked against them.
#[pyfunction]
pub fn default_settings(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let c = Config::default();
    let d = PyDict::new(py);
    d.set_item("max_message_size", c.max_message_size)?;
    d.set_item("queue_size", c.queue_size)?;
    d.set_item("queue_bytes", c.queue_bytes)?;
    d.set_item("overflow", "close")?;
    d.set_item(
        "heartbeat_interval",
        c.heartbeat_interval.map(|d| d.as_secs_f64()),
    )?;
    d.set_item("app_heartbeat", c.app_heartbeat)?;
    d.set_item("read_buffer_size", c.read_buffer_size)?;
    d.set_item("write_buffer_size", c.write_buffer_size)?;
    d.set_item("compression", c.compression.then_some("deflate"))?;
    d.set_item("compression_threshold", c.compression_threshold)?;
    d.set_item("max_header_bytes", c.max_header_bytes)?;
    d.set_item("handshake_timeout", c.handshake_timeout.as_secs_f64())?;
    d.set_item("close_timeout", c.close_timeout.as_secs_f64())?;
    d.set_item("paths", c.paths)?;
    d.set_item("subprotocols", c.subprotocols)?;
    d.set_item("mailbox_limit", c.mailbox_limit)?;
    d.set_item("io_threads", c.io_threads)?;
    d.set_item("relays", Vec::<(String, String, bool, bool)>::new())?;
    d.set_item("chat", py.None())?;
    d.set_item("http_app", c.http_app)?;
    d.set_item("max_body_size", c.max_body_size)?;
    d.set_item("http_queue", c.http_queue)?;
    d.set_item("http_timeout", c.http_timeout.as_secs_f64())?;
    d.set_item("pages", Vec::<(String, String, String)>::new())?;
    d.set_item("metrics_path", c.metrics_path)?;
    d.set_item("reuse_port", c.reuse_port)?;
    d.set_item("rate_limit_messages", py.None())?;
    d.set_item("rate_limit_bytes", py.None())?;
    d.set_item("rate_limit_burst", 2.0)?;
    d.set_item("rate_limit_policy", "close")?;
    d.set_item("allowed_origins", c.allowed_origins)?;
    d.set_item("max_connections", c.max_connections)?;
    d.set_item("max_connections_per_ip", c.max_connections_per_ip)?;
    d.set_item("trusted_proxies", Vec::<String>::new())?;
    d.set_item("handshake_rate_per_ip", c.handshake_rate_per_ip)?;
    d.set_item("broker", py.None())?;
    d.set_item("tls", py.None())?;
    Ok(d)
}
