//! Opening WebSocket client connections: TCP connect (optionally from a given source IP,
//! optionally with SO_LINGER 0), the HTTP upgrade handshake, and bounded-concurrency opening.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::rawws;

pub type Ws = WebSocketStream<TcpStream>;

/// Per-connection limit on TCP connect + handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to connect and how.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// host:port as written in the request's Host header.
    pub authority: String,
}

impl Target {
    pub async fn resolve(host: &str, port: u16) -> Result<Self, String> {
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve {host}"))?;
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(Target { addr, authority })
    }
}

/// Client config for connections that carry `size`-byte messages: writes are batched until
/// flush. tungstenite zero-fills the whole read buffer before every read, so it is kept small
/// for small messages.
pub fn traffic_config(size: usize) -> WebSocketConfig {
    let read_buffer = if size <= 1024 { 8 * 1024 } else { 64 * 1024 };
    WebSocketConfig::default().read_buffer_size(read_buffer)
}

/// Client config for many quiet connections: small buffers.
pub fn idle_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

#[derive(Clone, Copy, Default)]
pub struct ConnectOpts {
    /// Bind the socket to this source address (port chosen by the kernel) before connecting.
    pub source: Option<IpAddr>,
    /// Set SO_LINGER 0 so that dropping the socket resets it (no TIME_WAIT).
    pub linger0: bool,
}

/// TCP connect + WebSocket handshake to `path`, bounded by CONNECT_TIMEOUT.
pub async fn connect(t: &Target, path: &str, cfg: WebSocketConfig, opts: ConnectOpts) -> Result<Ws, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(t, path, cfg, opts)).await {
        Ok(r) => r,
        Err(_) => Err(format!("connect+handshake timed out after {}s", CONNECT_TIMEOUT.as_secs())),
    }
}

async fn connect_inner(t: &Target, path: &str, cfg: WebSocketConfig, opts: ConnectOpts) -> Result<Ws, String> {
    let sock =
        if t.addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = opts.source {
        sock.bind(SocketAddr::new(ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
    }
    if opts.linger0 {
        sock.set_zero_linger().map_err(|e| format!("SO_LINGER: {e}"))?;
    }
    let tcp = sock.connect(t.addr).await.map_err(|e| format!("connect {}: {e}", t.addr))?;
    tcp.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let url = format!("ws://{}{}", t.authority, path);
    let (ws, _resp) =
        client_async_with_config(url.as_str(), tcp, Some(cfg)).await.map_err(|e| format!("handshake {path}: {e}"))?;
    Ok(ws)
}

/// Time allowed for opening all the connections of a traffic scenario.
pub const OPEN_BUDGET: Duration = Duration::from_secs(20);

/// A set of connections to open.
pub struct Batch<'a> {
    pub path: &'a str,
    pub n: usize,
    /// How many handshakes may be under way at once.
    pub concurrency: usize,
    pub cfg: WebSocketConfig,
    /// Source addresses to bind to, round-robin (empty: let the kernel choose).
    pub source_ips: &'a [IpAddr],
    /// Stop opening when this passes.
    pub deadline: tokio::time::Instant,
}

/// Opens the batch's connections; `on_result` gets each outcome with its index, in completion
/// order. Returns how many were still unopened when the deadline passed.
pub async fn open_many(t: &Target, b: Batch<'_>, mut on_result: impl FnMut(usize, Result<Ws, String>)) -> usize {
    let Batch { path, n, concurrency, cfg, source_ips, deadline } = b;
    let mut results = stream::iter(0..n)
        .map(|i| {
            let opts = ConnectOpts {
                source: if source_ips.is_empty() { None } else { Some(source_ips[i % source_ips.len()]) },
                linger0: false,
            };
            async move { (i, connect(t, path, cfg, opts).await) }
        })
        .buffer_unordered(concurrency.max(1));
    let mut done = 0;
    let all = async {
        while let Some((i, r)) = results.next().await {
            done += 1;
            on_result(i, r);
        }
    };
    let _ = tokio::time::timeout_at(deadline, all).await;
    n - done
}

/// Opens `n` traffic connections to `path` (100 at a time). Returns the open ones and how many
/// failed; failures are recorded under `label`.
pub async fn open_traffic(
    t: &Target,
    path: &str,
    n: usize,
    size: usize,
    rec: &crate::stats::Recorder,
    label: &str,
) -> (Vec<Ws>, u64) {
    let mut open = Vec::with_capacity(n);
    let mut failed = 0u64;
    let batch = Batch {
        path,
        n,
        concurrency: 100,
        cfg: traffic_config(size),
        source_ips: &[],
        deadline: tokio::time::Instant::now() + OPEN_BUDGET,
    };
    let unopened = open_many(t, batch, |_, r| match r {
        Ok(ws) => open.push(ws),
        Err(e) => {
            failed += 1;
            rec.error(label, e);
        }
    })
    .await;
    if unopened > 0 {
        failed += unopened as u64;
        rec.error(label, format!("{unopened} connections to {path} not open after {}s", OPEN_BUDGET.as_secs()));
    }
    (open, failed)
}

/// Opens `n` connections to `path` with the bare client (`rawws`), 100 at a time, within
/// OPEN_BUDGET. Returns the open ones and how many failed; failures are recorded under `label`.
pub async fn open_raw(
    t: &Target,
    path: &str,
    n: usize,
    rec: &crate::stats::Recorder,
    label: &str,
) -> (Vec<rawws::Ws>, u64) {
    let req = rawws::request(&t.authority, path, &format!("http://{}", t.authority));
    let one = |i: usize| {
        let req = &req;
        async move {
            let opened = async {
                let stream = rawws::connect(t.addr, req, rawws::SocketOpts::default(), None).await?;
                rawws::Ws::upgraded(stream, 0x5eed_0000 ^ i as u32).await
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, opened).await {
                Ok(r) => r.map_err(|f| f.detail),
                Err(_) => Err(format!("connect+handshake timed out after {}s", CONNECT_TIMEOUT.as_secs())),
            }
        }
    };
    let mut results = stream::iter(0..n).map(one).buffer_unordered(100);
    let (mut open, mut failed) = (Vec::with_capacity(n), 0u64);
    let all = async {
        while let Some(r) = results.next().await {
            match r {
                Ok(ws) => open.push(ws),
                Err(e) => {
                    failed += 1;
                    rec.error(label, e);
                }
            }
        }
    };
    if tokio::time::timeout(OPEN_BUDGET, all).await.is_err() {
        let unopened = n - open.len() - failed as usize;
        failed += unopened as u64;
        rec.error(label, format!("{unopened} connections to {path} not open after {}s", OPEN_BUDGET.as_secs()));
    }
    (open, failed)
}
