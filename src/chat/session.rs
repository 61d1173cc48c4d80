//! One chat connection's frames, as its reader hands them over: heartbeat answers first, then
//! auth, then either a Python hook (when one is registered for the event) or the preset.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use super::frame::{self, ClientFrame};
use super::{Chat, ChatConn};
use crate::connection::ConnHandle;
use crate::events::{ConnInfo, Event};
use crate::frames::{Outgoing, Text};
use crate::hub::Hub;

pub struct ChatSession {
    chat: Arc<Chat>,
    conn: Arc<ChatConn>,
    /// Fires when the connection's token expires (auth on, token with `exp`).
    expiry: Option<Pin<Box<Sleep>>>,
}

impl ChatSession {
    /// Seats a new connection; a `?token=` in its handshake authenticates it at once.
    pub fn open(chat: Arc<Chat>, handle: &Arc<ConnHandle>) -> Self {
        let conn = chat.register(handle);
        let mut session = Self {
            chat,
            conn,
            expiry: None,
        };
        let Some(auth) = &session.chat.auth else {
            return session;
        };
        if let Some(token) = query_param(&handle.info, "token") {
            match auth.verify(&token) {
                Ok(grant) => {
                    session.conn.seat.lock().unwrap().grant = Some(grant);
                    session.arm(grant.remaining());
                }
                Err(why) => {
                    log::info!(
                        "chat: connection {}: {why} (from ?token=); noauth",
                        handle.id
                    );
                    session.conn.reply(Text::from_static(frame::NOAUTH));
                }
            }
        }
        session
    }

    fn arm(&mut self, remaining: Option<f64>) {
        self.expiry = remaining
            .and_then(expiry_deadline)
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
    }

    /// Resolves when the session has work of its own to do (its token expired); never when
    /// it has none. Cancel-safe: the timer lives in the session.
    pub async fn timer(&mut self) {
        match self.expiry.as_mut() {
            Some(sleep) => sleep.await,
            None => std::future::pending().await,
        }
    }

    /// The timer fired.
    pub async fn expired(&mut self, hub: &Hub) {
        self.expiry = None;
        self.chat.suspend(hub, &self.conn).await;
    }

    pub async fn close(self, hub: &Hub) {
        self.chat.close(hub, self.conn.handle.id).await;
    }

    /// A binary frame: not part of the chat protocol, unless `on_message` wants it.
    pub fn binary(&self, hub: &Hub, data: Bytes) -> Option<Event> {
        if hub.routes().message {
            return Some(Event::Binary(data));
        }
        self.conn
            .error("binary frames are not part of the chat protocol; send JSON text frames");
        None
    }

    /// A text frame; returns the event for Python when a hook takes it.
    pub async fn text(&mut self, hub: &Hub, text: Text) -> Option<Event> {
        if text.as_str() == "ping" {
            // The client of seeds/004: plain text, before and after auth alike.
            self.conn
                .handle
                .send(Outgoing::Text(Text::from_static("pong")));
            return None;
        }
        let ClientFrame { event, obj } = match frame::parse(text.as_str()) {
            Ok(f) => f,
            Err(why) => {
                if hub.routes().message {
                    return Some(Event::Text(text));
                }
                self.conn.error(&why);
                return None;
            }
        };
        if event == "heartbeat" {
            return None; // the reader already marked the connection alive
        }
        if self.chat.auth.is_some() && event != "auth" && !self.authorised(hub).await {
            self.conn.reply(Text::from_static(frame::NOAUTH));
            return None;
        }
        let routes = hub.routes();
        if routes.events.contains(&event) {
            return Some(Event::Routed { event, text });
        }
        // With no hook at all nothing of this connection can be with Python: skip the
        // dispatcher's lock on the per-frame path.
        if routes.any() && hub.events.is_scheduled(self.conn.handle.id) {
            // Earlier frames of this connection are still with the hooks: keep the order.
            return Some(Event::Chat(text));
        }
        self.chat.act(hub, &self.conn, &event, obj).await;
        if event == "auth" {
            let grant = self.conn.seat.lock().unwrap().grant;
            self.arm(grant.and_then(|g| g.remaining()));
        }
        None
    }

    /// Whether the connection holds a token that is still valid; one that just expired is
    /// suspended from its room here (the timer may not have fired yet).
    async fn authorised(&mut self, hub: &Hub) -> bool {
        let grant = self.conn.seat.lock().unwrap().grant;
        match grant {
            None => false,
            Some(g) if g.expired() => {
                self.expiry = None;
                self.chat.suspend(hub, &self.conn).await;
                false
            }
            Some(_) => true,
        }
    }
}

/// When a token with `secs` left expires; `None` (no timer) when that is past what the clock
/// can represent: issuers write `exp` = i64::MAX for "never", and adding that to now panics.
fn expiry_deadline(secs: f64) -> Option<Instant> {
    Instant::now().checked_add(Duration::try_from_secs_f64(secs).ok()?)
}

/// A query parameter's value (the first), percent-decoded.
fn query_param(info: &ConnInfo, name: &str) -> Option<String> {
    info.query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push(hi * 16 + lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_expiry_past_the_clock_arms_no_timer() {
        // Seen by running the chat_frame fuzz target on a token signed with
        // {"exp": 10000000000000000000}: arming its timer panicked ("overflow when adding
        // duration to instant") and took the connection's task down.
        for secs in [
            1e19,
            i64::MAX as f64,
            u64::MAX as f64,
            1e300,
            f64::INFINITY,
            f64::NAN,
        ] {
            assert_eq!(expiry_deadline(secs), None, "{secs}");
        }
        // Far, but representable: the timer is armed and simply does not fire.
        let far = expiry_deadline(1e15).unwrap();
        let sleep = tokio::time::sleep_until(far);
        assert!(tokio::time::timeout(Duration::from_millis(1), sleep)
            .await
            .is_err());
        assert!(expiry_deadline(0.0).is_some());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Eb+c"), "a.b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("x%4"), "x%4");
        assert_eq!(percent_decode("%é"), "%é");
    }
}
