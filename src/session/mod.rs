//! The tasks that run one connection from its first byte to its last: the HTTP handshake, then
//! one reader and one writer joined by the connection's bounded queue.

mod read;
mod write;

use read::read_loop;
use write::write_loop;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use tokio::sync::{oneshot, watch};

use crate::chat::session::ChatSession;
use crate::config::Relay;
use crate::connection::ConnHandle;
use crate::events::{ConnInfo, Decision, Event};
use crate::frames;
use crate::handshake::{self, Reply};
use crate::headers::Headers;
use crate::hub::Hub;
use crate::limits::Slot;
use crate::metrics::Refusal;
use crate::outbox;
use crate::request::{plain_http, read_head, write_reply};
use crate::tls::{self, Accepted};
use crate::ConnId;

/// Unregisters the connection and sends its last event however the task ends, even when it
/// is aborted at shutdown.
struct Lifecycle {
    hub: Arc<Hub>,
    id: ConnId,
    announced: bool,
    /// The handshake completed: the connection counts as open until this drops.
    accepted: bool,
    outcome: Option<(u16, String)>,
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
        if self.accepted {
            self.hub.metrics.closed();
        }
        if self.announced {
            let (code, reason) = self
                .outcome
                .take()
                .unwrap_or((1001, "server stopped before the connection closed".into()));
            self.hub
                .push_event(self.id, Event::Disconnect { code, reason });
        }
    }
}

/// A connection whose handshake is done: what its reader and writer need.
struct Open {
    stream: tls::Stream,
    leftover: Vec<u8>,
    handle: Arc<ConnHandle>,
    rx: outbox::Receiver,
    life: Lifecycle,
    deflate: Option<frames::Deflate>,
    /// Counts the connection against `max_connections` until it ends.
    _slot: Slot,
}

/// Runs one accepted TCP connection from its first byte to its last.
///
/// Every open connection keeps this future for its whole life, so it holds only what the open
/// connection needs. The handshake's state (TLS accept, the request, waiting for `on_connect`)
/// is boxed apart and freed once the connection is open: inline, it sized every idle
/// connection's future (3.6 KB of 10). For the same reason the arguments go into that box at
/// once, and what the handshake hands over comes boxed: an async fn keeps a copy of its
/// arguments' space for its whole life.
pub fn serve(
    hub: Arc<Hub>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<Option<Duration>>,
) -> impl Future<Output = ()> + Send {
    let handshake = Box::pin(handshake(hub.clone(), tcp, peer, shutdown));
    async move {
        if let Some(open) = handshake.await {
            run_open(hub, open).await;
        }
    }
}

/// The TLS and HTTP handshake, the checks and `on_connect`; `None` when the connection was
/// refused or lost (its answer, if any, already written).
async fn handshake(
    hub: Arc<Hub>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<Option<Duration>>,
) -> Option<Box<Open>> {
    let cfg = &hub.config;
    // Held for the whole connection; a refusal is answered once the request is read.
    let (mut slot, admitted) = hub.limits.admit();
    let mut stream = match tls::accept(tcp, hub.tls.as_ref(), cfg.handshake_timeout).await {
        Accepted::Ready(stream) => stream,
        Accepted::NotTls(mut plain) => {
            // Read the request first: closing on unread bytes resets the socket, and the
            // client would see a reset instead of the reason.
            let _ = read_head(
                &mut plain,
                cfg.max_header_bytes,
                cfg.handshake_timeout,
                shutdown,
            )
            .await;
            log::info!("{peer}: plaintext HTTP on the TLS port; 400");
            hub.metrics.refused(Refusal::Request, 400);
            let reply = Reply::new(
                400,
                "this port speaks TLS: connect with https:// or wss://\n",
            );
            return refuse(&mut plain, &reply).await;
        }
        Accepted::Failed(why) => {
            log::info!("{peer}: {why}");
            hub.metrics.tls_handshake_failed();
            return None;
        }
    };
    let (request, leftover) = match read_head(
        &mut stream,
        cfg.max_header_bytes,
        cfg.handshake_timeout,
        shutdown.clone(),
    )
    .await
    {
        Ok(Some(x)) => x,
        Ok(None) => return None,
        Err(reply) => {
            log::info!(
                "{peer}: refused handshake with {}: {}",
                reply.status,
                reply.body.trim_end()
            );
            hub.metrics.refused(Refusal::Request, reply.status);
            return refuse(&mut stream, &reply).await;
        }
    };
    // Behind a trusted proxy, the client is who the proxy says it is.
    let peer = hub.proxies.client(peer, &request);
    if let Err(why) = admitted.and_then(|()| slot.claim(peer.ip())) {
        hub.limits.log_refusal(&peer, 503, &why);
        hub.metrics.refused(Refusal::Limit, 503);
        let reply = Reply::new(503, format!("too many connections: {why}; retry later\n"))
            .header("Retry-After", "5");
        return refuse(&mut stream, &reply).await;
    }
    if !request.wants_websocket() {
        if let Some(status) = plain_http(&hub, &mut stream, request, leftover, peer).await {
            hub.metrics.http_response(status);
        }
        return None;
    }
    if let Err(why) = hub.limits.handshake(peer.ip(), std::time::Instant::now()) {
        hub.limits.log_refusal(&peer, 429, &why);
        hub.metrics.refused(Refusal::Limit, 429);
        let reply = Reply::new(429, format!("too many WebSocket handshakes: {why}\n"))
            .header("Retry-After", "1");
        return refuse(&mut stream, &reply).await;
    }
    if !cfg.serves_path(&request.path) {
        log::info!("{peer}: no WebSocket endpoint at {}; 404", request.path);
        hub.metrics.refused(Refusal::Request, 404);
        let reply = Reply::new(404, format!("no WebSocket endpoint at {}\n", request.path));
        return refuse(&mut stream, &reply).await;
    }
    if hub.origins.is_none() && request.header("cookie").is_some() {
        crate::origin::warn_cookies_without_policy(&hub.cookies_warned, &peer);
    }
    if let (Some(policy), Some(origin)) = (&hub.origins, request.header("origin")) {
        if !policy.allows(origin) {
            log::warn!("{peer}: Origin {origin:?} is not in allowed_origins; 403");
            hub.metrics.refused(Refusal::Origin, 403);
            let reply = Reply::new(403, format!("origin {origin} is not allowed here\n"));
            return refuse(&mut stream, &reply).await;
        }
    }
    let key = match handshake::validate_upgrade(&request) {
        Ok(key) => key,
        Err(reply) => {
            log::info!(
                "{peer}: bad upgrade request, {}: {}",
                reply.status,
                reply.body.trim_end()
            );
            hub.metrics.refused(Refusal::Request, reply.status);
            return refuse(&mut stream, &reply).await;
        }
    };
    let subprotocols = request.subprotocols();
    let deflate = cfg
        .compression
        .then(|| {
            let offers = request.headers.iter();
            frames::negotiate(
                offers
                    .filter(|(name, _)| name == "sec-websocket-extensions")
                    .map(|(_, value)| value.as_str()),
            )
        })
        .flatten();
    let subprotocol = handshake::choose_subprotocol(&subprotocols, &cfg.subprotocols);
    let info = Arc::new(ConnInfo {
        path: request.path,
        query: request.query,
        headers: Headers::from(&request.headers[..]),
        remote_addr: peer,
        secure: stream.is_tls(),
        subprotocols,
        subprotocol: subprotocol.clone(),
    });

    let relay = cfg.relay_for(&info.path);
    let id = hub.next_id();
    let (handle, rx) = ConnHandle::new(id, info.clone(), &hub);
    // Registered before the decision, so `on_connect` can already send and join rooms; the
    // frames wait in the queue until the handshake completes.
    hub.register(handle.clone());
    let mut life = Lifecycle {
        hub: hub.clone(),
        id,
        announced: false,
        accepted: false,
        outcome: None,
    };

    let routes = hub.routes();
    if routes.connect {
        let (tx, decision) = oneshot::channel();
        hub.await_decision(id, tx);
        hub.push_event(id, Event::Connect(info));
        match tokio::time::timeout(cfg.handshake_timeout, decision).await {
            Ok(Ok(Decision::Accept)) => {}
            Ok(Ok(Decision::Reject { status, body })) => {
                log::info!("connection {id} ({peer}): on_connect refused it with {status}");
                hub.metrics.refused(Refusal::OnConnect, status);
                return refuse(&mut stream, &Reply::new(status, body)).await;
            }
            Ok(Err(_)) | Err(_) => {
                hub.forget_decision(id);
                log::warn!(
                    "connection {id} ({peer}): on_connect did not decide within {:.1} s; 503",
                    cfg.handshake_timeout.as_secs_f64()
                );
                hub.metrics.refused(Refusal::OnConnectTimeout, 503);
                let reply = Reply::new(
                    503,
                    "the server did not accept the connection in time; retry\n",
                );
                return refuse(&mut stream, &reply).await;
            }
        }
    } else if routes.any() {
        hub.push_event(id, Event::Open(info));
    }
    life.announced = routes.any();
    if let Some(relay) = relay.filter(|r| r.join) {
        // Cannot fail: the handle was registered above and only this task unregisters it.
        let _ = hub.join(id, &relay.room);
    }

    if stream
        .write_all(
            &handshake::accept_reply(
                &key,
                subprotocol.as_deref(),
                deflate.as_ref().map(|(_, answer)| answer.as_str()),
            )
            .to_bytes(),
        )
        .await
        .is_err()
    {
        life.outcome = Some((1006, "connection lost during the handshake".into()));
        return None;
    }
    hub.metrics.accepted();
    life.accepted = true;
    if shutdown.borrow().is_some() {
        handle.close(1001, "server shutting down".into());
    }
    Some(Box::new(Open {
        stream,
        leftover,
        handle,
        rx,
        life,
        deflate: deflate.map(|(d, _)| d),
        _slot: slot,
    }))
}

/// The open connection: its writer task, and its reader in this one, until either ends.
async fn run_open(hub: Arc<Hub>, open: Box<Open>) {
    let Open {
        stream,
        leftover,
        handle,
        rx,
        mut life,
        deflate,
        _slot,
    } = *open;
    let cfg = &hub.config;
    let mut mode = match (cfg.relay_for(&handle.info.path), &hub.chat) {
        (Some(relay), _) => Mode::Relay(relay),
        (None, Some(chat)) => Mode::Chat(ChatSession::open(chat.clone(), &handle)),
        (None, None) => Mode::Hooks,
    };
    let (mut reader, writer) = frames::open(stream, leftover, cfg, deflate);
    let batch_bytes = cfg.write_buffer_size;
    let mut writer_task = tokio::spawn(write_loop(handle.clone(), writer, rx, batch_bytes));
    let outcome = read_loop(&hub, &handle, &mut reader, &mut mode).await;
    handle.open.store(false, Ordering::Release);
    if let Mode::Chat(session) = mode {
        Box::pin(session.close(&hub)).await;
    }
    // A Close of ours may still be in flight: give the writer a moment to finish it.
    if handle.close_request().is_some() {
        let grace = Duration::from_secs(1);
        if tokio::time::timeout(grace, &mut writer_task).await.is_err() {
            writer_task.abort();
        }
    } else {
        writer_task.abort();
    }
    // Hooks registered while the connection was open want its end too.
    life.announced |= hub.routes().any();
    life.outcome = Some(outcome);
}

/// Answers a refused handshake; the connection ends there.
async fn refuse(stream: &mut tls::Stream, reply: &Reply) -> Option<Box<Open>> {
    write_reply(stream, reply).await;
    None
}

/// What a connection's frames are for.
enum Mode<'a> {
    /// The application's hooks (or nothing, when none wants them).
    Hooks,
    /// Broadcast to a room in Rust, never reaching Python.
    Relay(&'a Relay),
    /// The chat preset.
    Chat(ChatSession),
}

impl Mode<'_> {
    /// Work of the mode's own, apart from frames (a chat token's expiry); pending otherwise.
    async fn timer(&mut self) {
        match self {
            Mode::Chat(session) => session.timer().await,
            _ => std::future::pending().await,
        }
    }
}
