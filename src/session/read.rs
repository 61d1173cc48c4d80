//! A connection's reader: frames in, events out to the hooks, relays and the chat preset.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Mode;
use crate::connection::ConnHandle;
use crate::dispatch::Pushed;
use crate::envelope;
use crate::events::Event;
use crate::frames::{FrameReader, Incoming, Outgoing, ReadError, Text};
use crate::hub::Hub;
use crate::ratelimit::{self, Limiter};
use crate::tls::ReadHalf;
use crate::ConnId;

/// Delivers incoming frames until the connection ends; returns its close code and reason.
///
/// Every open connection keeps this state while it waits, so it is kept small: the reader is
/// borrowed (an async fn would keep two copies of an argument it owns) and a rate limiter,
/// when there is one, is boxed.
pub(super) async fn read_loop(
    hub: &Hub,
    handle: &Arc<ConnHandle>,
    reader: &mut FrameReader<ReadHalf>,
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
        .map(|r| (r, Box::new(Limiter::new(r, std::time::Instant::now()))));
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
                        // Boxed, as the chat's other awaits below: the reader's state is kept
                        // by every open connection, and these are rare or chat-only.
                        Box::pin(session.expired(hub)).await;
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
            (Mode::Chat(session), Incoming::Text(text)) => Box::pin(session.text(hub, text)).await,
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
