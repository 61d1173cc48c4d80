//! The tasks that run one connection from its first byte to its last: the HTTP handshake, then
//! one reader and one writer joined by the connection's bounded queue.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::tls::{self, Accepted};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::chat::session::ChatSession;
use crate::config::Relay;
use crate::connection::ConnHandle;
use crate::dispatch::Pushed;
use crate::envelope;
use crate::events::{ConnInfo, Decision, Event};
use crate::frames::{self, FrameReader, FrameWriter, Incoming, Outgoing, ReadError, Text};
use crate::handshake::{self, Reply};
use crate::hub::Hub;
use crate::metrics::Refusal;
use crate::ratelimit::{self, Limiter};
use crate::request::{plain_http, read_head, write_reply};
use crate::tls::{ReadHalf, WriteHalf};
use crate::ConnId;

/// Frames written before one flush: enough to batch, few enough to keep latency flat.
const MAX_WRITE_BATCH: usize = 64;

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

/// Runs one accepted TCP connection from its first byte to its last.
pub async fn serve(
    hub: Arc<Hub>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<Option<Duration>>,
) {
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
            return write_reply(&mut plain, &reply).await;
        }
        Accepted::Failed(why) => {
            log::info!("{peer}: {why}");
            hub.metrics.tls_handshake_failed();
            return;
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
        Ok(None) => return,
        Err(reply) => {
            log::info!(
                "{peer}: refused handshake with {}: {}",
                reply.status,
                reply.body.trim_end()
            );
            hub.metrics.refused(Refusal::Request, reply.status);
            return write_reply(&mut stream, &reply).await;
        }
    };
    // Behind a trusted proxy, the client is who the proxy says it is.
    let peer = hub.proxies.client(peer, &request);
    if let Err(why) = admitted.and_then(|()| slot.claim(peer.ip())) {
        hub.limits.log_refusal(&peer, 503, &why);
        hub.metrics.refused(Refusal::Limit, 503);
        let reply = Reply::new(503, format!("too many connections: {why}; retry later\n"))
            .header("Retry-After", "5");
        return write_reply(&mut stream, &reply).await;
    }
    if !request.wants_websocket() {
        if let Some(status) = plain_http(&hub, &mut stream, request, leftover, peer).await {
            hub.metrics.http_response(status);
        }
        return;
    }
    if let Err(why) = hub.limits.handshake(peer.ip(), std::time::Instant::now()) {
        hub.limits.log_refusal(&peer, 429, &why);
        hub.metrics.refused(Refusal::Limit, 429);
        let reply = Reply::new(429, format!("too many WebSocket handshakes: {why}\n"))
            .header("Retry-After", "1");
        return write_reply(&mut stream, &reply).await;
    }
    if !cfg.serves_path(&request.path) {
        log::info!("{peer}: no WebSocket endpoint at {}; 404", request.path);
        hub.metrics.refused(Refusal::Request, 404);
        let reply = Reply::new(404, format!("no WebSocket endpoint at {}\n", request.path));
        return write_reply(&mut stream, &reply).await;
    }
    if hub.origins.is_none() && request.header("cookie").is_some() {
        crate::origin::warn_cookies_without_policy(&hub.cookies_warned, &peer);
    }
    if let (Some(policy), Some(origin)) = (&hub.origins, request.header("origin")) {
        if !policy.allows(origin) {
            log::warn!("{peer}: Origin {origin:?} is not in allowed_origins; 403");
            hub.metrics.refused(Refusal::Origin, 403);
            let reply = Reply::new(403, format!("origin {origin} is not allowed here\n"));
            return write_reply(&mut stream, &reply).await;
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
            return write_reply(&mut stream, &reply).await;
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
        headers: request.headers,
        remote_addr: peer,
        subprotocols,
        subprotocol: subprotocol.clone(),
    });

    let relay = cfg.relay_for(&info.path).cloned();
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
                return write_reply(&mut stream, &Reply::new(status, body)).await;
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
                return write_reply(&mut stream, &reply).await;
            }
        }
    } else if routes.any() {
        hub.push_event(id, Event::Open(info));
    }
    life.announced = routes.any();
    if let Some(relay) = relay.as_ref().filter(|r| r.join) {
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
        return;
    }
    hub.metrics.accepted();
    life.accepted = true;
    if shutdown.borrow().is_some() {
        handle.close(1001, "server shutting down".into());
    }
    let mut mode = match (relay.as_ref(), &hub.chat) {
        (Some(relay), _) => Mode::Relay(relay),
        (None, Some(chat)) => Mode::Chat(ChatSession::open(chat.clone(), &handle)),
        (None, None) => Mode::Hooks,
    };
    let (reader, writer) = frames::open(stream, leftover, cfg, deflate.map(|(d, _)| d));
    let batch_bytes = cfg.write_buffer_size;
    let mut writer_task = tokio::spawn(write_loop(handle.clone(), writer, rx, batch_bytes));
    let outcome = read_loop(&hub, &handle, reader, &mut mode).await;
    handle.open.store(false, Ordering::Release);
    if let Mode::Chat(session) = mode {
        session.close(&hub).await;
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

/// Delivers incoming frames until the connection ends; returns its close code and reason.
async fn read_loop(
    hub: &Hub,
    handle: &Arc<ConnHandle>,
    mut reader: FrameReader<ReadHalf>,
    mode: &mut Mode<'_>,
) -> (u16, String) {
    let id = handle.id;
    let relay_exclude: &[ConnId] = match mode {
        Mode::Relay(r) if !r.echo => std::slice::from_ref(&handle.id),
        _ => &[],
    };
    let mut peer_close: Option<(u16, String)> = None;
    let mut deadline: Option<Instant> = None;
    let mut limiter = hub
        .config
        .rate_limit
        .as_ref()
        .map(|r| (r, Limiter::new(r, std::time::Instant::now())));
    let mut over_logged = false;
    loop {
        // Two shapes, so the per-frame path builds no timer and reads no clock.
        let next = match deadline {
            None => tokio::select! {
                next = reader.next() => next,
                _ = handle.closing.raised() => {
                    let wait = handle.close_request().map_or(Duration::ZERO, |r| r.wait);
                    deadline = Some(Instant::now() + wait);
                    continue;
                }
                _ = mode.timer() => {
                    if let Mode::Chat(session) = mode {
                        session.expired(hub).await;
                    }
                    continue;
                }
            },
            Some(at) => tokio::select! {
                next = reader.next() => next,
                _ = tokio::time::sleep_until(at) => break,
            },
        };
        let incoming = match next {
            None => break,
            Some(Ok(incoming)) => incoming,
            Some(Err(ReadError::Lost)) => break,
            Some(Err(ReadError::Violation(code, reason))) => {
                log::info!("connection {id}: {reason}; closing with {code}");
                hub.metrics.protocol_error(code);
                handle.terminate(code, reason);
                break;
            }
        };
        handle.mark_alive();
        let len = match &incoming {
            Incoming::Text(text) => Some(text.len()),
            Incoming::Binary(data) => Some(data.len()),
            _ => None,
        };
        if let Some(len) = len {
            handle.traffic.received(len);
            if let Some((limit, bucket)) = &mut limiter {
                if !bucket.admit(len, std::time::Instant::now()) {
                    hub.metrics.rate_limited();
                    ratelimit::over(handle, limit, &mut over_logged);
                    continue;
                }
            }
        }
        let event = match (&mut *mode, incoming) {
            (_, Incoming::Control) => continue,
            (_, Incoming::Ping(payload)) => {
                handle.send(Outgoing::Pong(payload));
                continue;
            }
            (_, Incoming::Close(code, reason)) => {
                // Our Close went first: this is its answer, and the close code is ours.
                if handle.close_request().is_none() {
                    peer_close = Some((code, reason));
                    // The echo (RFC 6455, 5.5.1); the writer closes the socket after it.
                    handle.close(code, String::new());
                }
                break;
            }
            // Relayed in Rust: no event, no Python, the payload shared by every member.
            (Mode::Relay(relay), Incoming::Text(text)) => {
                hub.broadcast_room(&relay.room, Outgoing::Text(text), relay_exclude);
                continue;
            }
            (Mode::Relay(relay), Incoming::Binary(data)) => {
                hub.broadcast_room(&relay.room, Outgoing::Binary(data), relay_exclude);
                continue;
            }
            (Mode::Chat(session), Incoming::Text(text)) => session.text(hub, text).await,
            (Mode::Chat(session), Incoming::Binary(data)) => session.binary(hub, data),
            (Mode::Hooks, Incoming::Text(text)) => route_text(hub, handle, text),
            (Mode::Hooks, Incoming::Binary(data)) => {
                hub.routes().message.then_some(Event::Binary(data))
            }
        };
        let Some(event) = event else {
            continue;
        };
        if let Pushed::Full(drained) = hub.push_event(id, event) {
            // Python is behind on this connection: stop reading so TCP pushes back on the client.
            log::debug!(
                "connection {id}: {} events wait for hooks (mailbox_limit); reading paused until they catch up",
                hub.config.mailbox_limit
            );
            handle.paused.store(true, Ordering::Relaxed);
            tokio::select! {
                _ = drained.notified() => {}
                _ = handle.closing.raised(), if deadline.is_none() => {
                    let wait = handle.close_request().map_or(Duration::ZERO, |r| r.wait);
                    deadline = Some(Instant::now() + wait);
                }
            }
            handle.paused.store(false, Ordering::Relaxed);
        }
    }
    match (peer_close, handle.close_request()) {
        (Some(peer), _) => peer,
        (None, Some(req)) => (req.code, req.reason),
        (None, None) => (1006, "connection lost without a Close frame".into()),
    }
}

/// Decides what a text frame becomes: a routed event, a plain message, a heartbeat answer, or
/// nothing (no hook wants it).
fn route_text(hub: &Hub, handle: &ConnHandle, text: Text) -> Option<Event> {
    let routes = hub.routes();
    if handle.app_heartbeat && text.as_str() == "ping" {
        handle.send(Outgoing::Text(Text::from_static("pong")));
        return None;
    }
    let wants_envelope = !routes.events.is_empty() || handle.app_heartbeat;
    if wants_envelope {
        if let Some(env) = envelope::peek(text.as_str()) {
            if routes.events.contains(env.event.as_ref()) {
                let event = env.event.into_owned();
                return Some(Event::Routed { event, text });
            }
            if handle.app_heartbeat && envelope::is_heartbeat_pong(&env) {
                return None;
            }
        }
    }
    routes.message.then_some(Event::Text(text))
}

/// Writes queued frames: everything ready, then one flush.
async fn write_loop(
    handle: Arc<ConnHandle>,
    mut writer: FrameWriter<WriteHalf>,
    mut rx: mpsc::Receiver<Outgoing>,
    batch_bytes: usize,
) {
    loop {
        let first = tokio::select! {
            biased;
            _ = handle.urgent.raised() => {
                if let Some(req) = handle.close_request() {
                    writer.feed(Outgoing::Close(req.code, req.reason));
                    let _ = tokio::time::timeout(Duration::from_secs(1), writer.flush()).await;
                }
                return;
            }
            item = rx.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        let mut next = Some(first);
        let mut written = 0;
        let mut bytes = 0;
        // Data messages and their payload, counted once the batch is on the socket.
        let (mut messages, mut payload) = (0, 0);
        while let Some(item) = next.take() {
            let len = item.len();
            bytes += len;
            if let Outgoing::Text(_) | Outgoing::Binary(_) | Outgoing::Shared(_) = item {
                messages += 1;
                payload += len as u64;
            }
            let is_close = matches!(item, Outgoing::Close(..));
            writer.feed(item);
            if is_close {
                if writer.flush().await.is_ok() {
                    handle.traffic.sent(messages, payload);
                }
                return;
            }
            written += 1;
            if written < MAX_WRITE_BATCH && bytes < batch_bytes {
                next = rx.try_recv().ok();
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
        // Written to the socket now: once per batch, not per frame.
        handle.written(bytes);
        handle.traffic.sent(messages, payload);
    }
}
