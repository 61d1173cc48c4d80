//! The one place core errors become Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::error::Error;

create_exception!(
    roomcast,
    RoomcastError,
    PyException,
    "Base class of every error roomcast raises."
);
create_exception!(
    roomcast,
    ConnectionClosed,
    RoomcastError,
    "The connection is closed: it can no longer send or join rooms."
);

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let text = err.to_string();
        match err {
            Error::NotOpen(_) => ConnectionClosed::new_err(text),
            Error::Config(_) => PyValueError::new_err(text),
            Error::Bind { .. } => PyOSError::new_err(text),
            Error::Runtime(_) => PyRuntimeError::new_err(text),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RoomcastError", py.get_type::<RoomcastError>())?;
    m.add("ConnectionClosed", py.get_type::<ConnectionClosed>())?;
    Ok(())
}
