//! The core's one error type. The binding converts it to Python exceptions in one place.

use std::fmt;

use crate::ConnId;

#[derive(Debug)]
pub enum Error {
    /// The connection is closed, closing, or never existed.
    NotOpen(ConnId),
    /// A setting cannot work; the text names it.
    Config(String),
    /// The listening socket could not be opened.
    Bind {
        addr: String,
        source: std::io::Error,
    },
    /// The tokio runtime could not be built.
    Runtime(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotOpen(id) => write!(
                f,
                "connection {id} is closed; it can no longer send or join rooms (check conn.is_open, or handle on_disconnect)"
            ),
            Error::Config(msg) => write!(f, "invalid setting: {msg}"),
            Error::Bind { addr, source } => write!(
                f,
                "could not listen on {addr}: {source} (is another server using that port? pick another, or port=0 for a free one)"
            ),
            Error::Runtime(e) => write!(f, "could not start the I/O runtime: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Runtime(source) => Some(source),
            _ => None,
        }
    }
}
