//! Server settings: every limit the core enforces, with its default, in one place.

use std::time::Duration;

use crate::broker::BrokerConfig;
use crate::chat::ChatConfig;

/// What to do when a connection's outbound queue is full (the client reads slower than we send).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Close the connection with 1013 (try again later) and log it. Nothing is silently lost:
    /// the client learns it fell behind and can reconnect.
    Close,
    /// Drop the message that did not fit, count it, and keep the connection.
    Drop,
}

impl OverflowPolicy {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "close" => Some(Self::Close),
            "drop" => Some(Self::Drop),
            _ => None,
        }
    }
}

/// A path whose messages are broadcast to a room by the core itself, never reaching Python.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relay {
    pub path: String,
    pub room: String,
    /// Connections to `path` join `room` when they open.
    pub join: bool,
    /// The sender receives its own messages too (when it is a member).
    pub echo: bool,
}

/// A fixed answer to a plain HTTP GET (a page, a script) on the WebSocket's port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub path: String,
    pub content_type: String,
    pub body: String,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Largest message (and frame) a client may send; larger ones close with 1009.
    pub max_message_size: usize,
    /// Outbound frames queued per connection before `overflow` applies.
    pub queue_size: usize,
    /// Outbound payload bytes queued per connection (and not yet written to its socket) before
    /// `overflow` applies: what one client that never reads can make the server hold. A
    /// message larger than this still goes out when the queue is empty.
    pub queue_bytes: usize,
    pub overflow: OverflowPolicy,
    /// Each connection is swept once per interval (a silent one is pinged, one silent since
    /// its Ping is closed); `None` turns the heartbeat off.
    pub heartbeat_interval: Option<Duration>,
    /// Also send `{"event":"heartbeat","message":"ping"}` at each sweep of a connection (heard
    /// from or not) and answer the text `ping`.
    pub app_heartbeat: bool,
    /// Bytes one read takes from a socket, into the I/O thread's scratch buffer (an idle
    /// connection holds no read buffer of its own).
    pub read_buffer_size: usize,
    /// Bytes gathered into one vectored write, at most (a larger frame goes out alone).
    pub write_buffer_size: usize,
    /// Negotiate permessage-deflate with clients that offer it (`frames/deflate.rs`).
    pub compression: bool,
    /// Messages smaller than this go out uncompressed even when deflate was negotiated.
    pub compression_threshold: usize,
    /// Largest HTTP request head (request line + headers); larger ones get 431.
    pub max_header_bytes: usize,
    /// Time a client has to finish its HTTP request, and `on_connect` has to decide; then 408/503.
    pub handshake_timeout: Duration,
    /// After we send a Close frame, how long we wait for the client's before dropping the socket.
    pub close_timeout: Duration,
    /// Paths served; `None` serves every path. Others get 404 at the handshake.
    pub paths: Option<Vec<String>>,
    /// Subprotocols the server speaks, in order of preference.
    pub subprotocols: Vec<String>,
    /// Events of one connection waiting for Python before its reader pauses (TCP backpressure).
    pub mailbox_limit: usize,
    /// Tokio worker threads; 0 means one per core.
    pub io_threads: usize,
    /// Paths relayed to rooms in Rust (see `Relay`); they are served whatever `paths` says.
    pub relays: Vec<Relay>,
    /// The chat preset (../shared/PROTOCOL.md) handles every WebSocket path but the relays.
    pub chat: Option<ChatConfig>,
    /// Answers to plain HTTP GETs; other plain requests get 426.
    pub pages: Vec<Page>,
    /// Plain HTTP requests (but `pages`) go to the application's HTTP threads (`http.rs`).
    pub http_app: bool,
    /// Largest request body handed to the application; larger ones get 413.
    pub max_body_size: usize,
    /// Requests waiting for an HTTP thread before new ones get 503.
    pub http_queue: usize,
    /// Time the application has to answer (and a client to send its body); then 504 (408).
    pub http_timeout: Duration,
    /// A plain HTTP GET of this path answers the server's metrics in Prometheus' text format;
    /// `None` serves no metrics.
    pub metrics_path: Option<String>,
    /// Web pages allowed to open a WebSocket (`origin.rs`); `None` allows any. A handshake
    /// with another Origin gets 403; one without the header (not a browser) passes.
    pub allowed_origins: Option<Vec<String>>,
    /// Sockets served at once, in total and per client address; past either, HTTP 503 with
    /// `Retry-After`. `None`: no limit.
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    /// WebSocket handshakes per second one address may make (a 2 s burst); then HTTP 429.
    pub handshake_rate_per_ip: Option<f64>,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` name the client (`proxies.rs`).
    pub trusted_proxies: Vec<String>,
    /// What one client may send (`ratelimit.rs`); `None`: no limit.
    pub rate_limit: Option<crate::ratelimit::RateLimit>,
    /// Bind with SO_REUSEPORT, so several processes (`--workers N`) share one port and the
    /// kernel spreads new connections across them.
    pub reuse_port: bool,
    /// Rooms shared with other nodes through Redis (`broker/`); `None` keeps them local.
    pub broker: Option<BrokerConfig>,
    /// Serve TLS (wss://, https://) with this certificate and key; `None` serves plaintext.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: 1 << 20,
            queue_size: 1024,
            queue_bytes: 1 << 20,
            overflow: OverflowPolicy::Close,
            heartbeat_interval: Some(Duration::from_secs(30)),
            app_heartbeat: false,
            read_buffer_size: 16 * 1024,
            write_buffer_size: 16 * 1024,
            compression: false,
            compression_threshold: 128,
            max_header_bytes: 16 * 1024,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            paths: None,
            subprotocols: Vec::new(),
            mailbox_limit: 256,
            io_threads: 0,
            relays: Vec::new(),
            chat: None,
            pages: Vec::new(),
            http_app: false,
            max_body_size: 10 << 20,
            http_queue: 1024,
            http_timeout: Duration::from_secs(60),
            metrics_path: None,
            allowed_origins: None,
            max_connections: None,
            max_connections_per_ip: None,
            trusted_proxies: Vec::new(),
            handshake_rate_per_ip: None,
            rate_limit: None,
            reuse_port: false,
            broker: None,
            tls: None,
        }
    }
}

impl Config {
    /// Rejects settings that cannot work, saying which and why.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(broker) = &self.broker {
            broker.validate()?;
        }
        crate::proxies::TrustedProxies::parse(&self.trusted_proxies)?;
        if let Some(origins) = &self.allowed_origins {
            crate::origin::OriginPolicy::parse(origins)?;
        }
        if let Some(r) = &self.rate_limit {
            let bad = |v: Option<f64>| v.is_some_and(|v| !(v.is_finite() && v > 0.0));
            if bad(r.messages_per_s) || bad(r.bytes_per_s) {
                return Err("rate_limit_messages and rate_limit_bytes must be positive numbers per second, or None".into());
            }
            if r.burst.is_zero() {
                return Err("rate_limit_burst must be a positive number of seconds".into());
            }
        }
        if self
            .handshake_rate_per_ip
            .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return Err(
                "handshake_rate_per_ip must be a positive number per second, or None".into(),
            );
        }
        if self.max_connections == Some(0) || self.max_connections_per_ip == Some(0) {
            return Err("max_connections and max_connections_per_ip must be at least 1, or None for no limit".into());
        }
        if self.max_message_size == 0 {
            return Err("max_message_size must be at least 1 byte".into());
        }
        if self.queue_size == 0 {
            return Err("queue_size must be at least 1 frame".into());
        }
        if self.queue_bytes == 0 {
            return Err("queue_bytes must be at least 1 byte".into());
        }
        if self.mailbox_limit == 0 {
            return Err("mailbox_limit must be at least 1 event".into());
        }
        if let Some(interval) = self.heartbeat_interval {
            if interval.is_zero() {
                return Err("heartbeat_interval must be positive, or None to turn it off".into());
            }
        }
        for (i, relay) in self.relays.iter().enumerate() {
            if !relay.path.starts_with('/') {
                return Err(format!("relay path {:?} must start with '/'", relay.path));
            }
            if self.relays[..i].iter().any(|r| r.path == relay.path) {
                return Err(format!("relay path {:?} is given twice", relay.path));
            }
        }
        for page in &self.pages {
            if !page.path.starts_with('/') {
                return Err(format!("page path {:?} must start with '/'", page.path));
            }
        }
        if let Some(chat) = &self.chat {
            if chat.offline_ttl.is_zero() {
                return Err("offline_ttl must be positive".into());
            }
            if chat.jwt_secret.as_deref() == Some("") {
                return Err("jwt_secret must not be empty (None turns auth off)".into());
            }
        }
        if let Some(path) = &self.metrics_path {
            if !path.starts_with('/') {
                return Err(format!("metrics_path {path:?} must start with '/'"));
            }
        }
        if self.http_queue == 0 {
            return Err("http_queue must be at least 1 request".into());
        }
        if self.max_header_bytes < 256 {
            return Err("max_header_bytes must be at least 256".into());
        }
        Ok(())
    }

    pub fn serves_path(&self, path: &str) -> bool {
        match &self.paths {
            None => true,
            Some(paths) => paths.iter().any(|p| p == path) || self.relay_for(path).is_some(),
        }
    }

    pub fn serves_metrics(&self, path: &str) -> bool {
        self.metrics_path.as_deref() == Some(path)
    }

    pub fn page_for(&self, path: &str) -> Option<&Page> {
        self.pages.iter().find(|p| p.path == path)
    }

    pub fn relay_for(&self, path: &str) -> Option<&Relay> {
        self.relays.iter().find(|r| r.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn zero_limits_are_refused_with_the_setting_named() {
        let c = Config {
            queue_size: 0,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().contains("queue_size"));
        let c = Config {
            heartbeat_interval: Some(Duration::ZERO),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().contains("heartbeat_interval"));
        let c = Config {
            metrics_path: Some("metrics".into()),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().contains("metrics_path"));
    }

    #[test]
    fn paths() {
        let c = Config {
            paths: Some(vec!["/ws".into()]),
            ..Config::default()
        };
        assert!(c.serves_path("/ws"));
        assert!(!c.serves_path("/other"));
        assert!(Config::default().serves_path("/anything"));
    }

    #[test]
    fn relay_paths_are_served_and_checked() {
        let relay = Relay {
            path: "/pub".into(),
            room: "r".into(),
            join: false,
            echo: false,
        };
        let c = Config {
            paths: Some(vec!["/ws".into()]),
            relays: vec![relay.clone()],
            ..Config::default()
        };
        assert!(c.serves_path("/pub"));
        assert_eq!(c.relay_for("/pub"), Some(&relay));
        assert!(c.relay_for("/ws").is_none());
        let twice = Config {
            relays: vec![relay.clone(), relay],
            ..Config::default()
        };
        assert!(twice.validate().unwrap_err().contains("twice"));
    }

    #[test]
    fn overflow_names() {
        assert_eq!(OverflowPolicy::parse("close"), Some(OverflowPolicy::Close));
        assert_eq!(OverflowPolicy::parse("drop"), Some(OverflowPolicy::Drop));
        assert_eq!(OverflowPolicy::parse("block"), None);
    }
}
