//! roomcast's WebSocket server core. Everything here is plain Rust, testable with `cargo test`;
//! the Python binding lives in `py/` and is compiled only with the `python` feature.

pub mod broker;
pub mod chat;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod envelope;
pub mod error;
pub mod events;
pub mod frames;
pub mod handshake;
pub mod headers;
pub mod heartbeat;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod origin;
pub mod outbox;
pub mod proxies;
pub mod pulse;
pub mod ratelimit;
pub mod request;
pub mod rooms;
pub mod server;
pub mod session;
pub mod signal;
pub mod tls;

#[cfg(feature = "python")]
mod py;

/// A connection's id: unique within one server, never reused.
pub type ConnId = u64;
