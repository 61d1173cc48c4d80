//! The broker's settings from Python (`Server(broker=...)`).

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::broker::BrokerConfig;

pub fn config(settings: &Bound<'_, PyDict>) -> PyResult<BrokerConfig> {
    let mut c = BrokerConfig::default();
    for (key, value) in settings.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "url" => c.url = value.extract()?,
            "namespace" => c.namespace = value.extract()?,
            "buffer" => c.buffer = value.extract()?,
            "lease" => {
                let secs: f64 = value.extract()?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(PyValueError::new_err(format!(
                        "broker_lease must be a positive number of seconds (got {secs})"
                    )));
                }
                c.lease = Duration::from_secs_f64(secs);
            }
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "unknown broker setting {key:?}"
                )))
            }
        }
    }
    Ok(c)
}
