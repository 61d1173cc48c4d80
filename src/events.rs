//! What the core tells the application about a connection, and what it answers.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::frames::Text;
use crate::headers::Headers;

/// What is known of a connection from its handshake. Shared, never copied per event.
#[derive(Debug)]
pub struct ConnInfo {
    pub path: String,
    pub query: String,
    pub headers: Headers,
    pub remote_addr: SocketAddr,
    /// The connection came over TLS (wss://): what a WSGI environ of the handshake needs for
    /// `wsgi.url_scheme`, as plain HTTP requests get it (`http::HttpRequest::scheme`).
    pub secure: bool,
    /// Subprotocols the client offered, in its order.
    pub subprotocols: Vec<String>,
    /// The one the server chose, if any.
    pub subprotocol: Option<String>,
}

#[derive(Debug)]
pub enum Event {
    /// A handshake waiting for the application's `Decision`.
    Connect(Arc<ConnInfo>),
    /// A connection accepted without asking (no connect hook).
    Open(Arc<ConnInfo>),
    Text(Text),
    Binary(Bytes),
    /// A JSON text frame whose `"event"` has a handler of its own.
    Routed {
        event: String,
        text: Text,
    },
    /// A chat preset frame that no hook takes but that arrived while the connection's earlier
    /// events were with the hooks: it goes back to the preset after them, in order.
    Chat(Text),
    /// Always the last event of a connection that was announced by `Connect` or `Open`.
    Disconnect {
        code: u16,
        reason: String,
    },
}

#[derive(Debug)]
pub enum Decision {
    Accept,
    Reject { status: u16, body: String },
}

/// Which hooks the application registered: decides which frames become events at all (a frame
/// no hook wants never leaves Rust).
#[derive(Clone, Debug, Default)]
pub struct Routes {
    pub connect: bool,
    pub message: bool,
    pub disconnect: bool,
    pub events: HashSet<String>,
}

impl Routes {
    /// Whether the application wants to hear of connections at all.
    pub fn any(&self) -> bool {
        self.connect || self.message || self.disconnect || !self.events.is_empty()
    }
}
