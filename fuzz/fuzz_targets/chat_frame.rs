//! The chat preset on the text frames of three clients, as the session hands them over: the
//! frame parse, enter / message / leave / auth, rooms, kept messages and the server's answers,
//! in memory (no sockets, no Redis). Every text the server sends must be JSON ("pong" aside):
//! the stamped and kept copies are built by string surgery.
//!
//! Input: byte 0: bit 0 turns auth on, bit 1 registers Python-style hooks (`on_message` and
//! `on("custom")`). Then UTF-8 lines: the first is the handshake's query string (for
//! `?token=`); each other is a frame, from connection N when it starts with a digit N (0-2),
//! and with a `!` next the rest is claims that are signed with the server's secret and sent as
//! `{"event":"auth","message":TOKEN}`.
#![no_main]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use _roomcast::chat::session::ChatSession;
use _roomcast::chat::ChatConfig;
use _roomcast::config::Config;
use _roomcast::connection::ConnHandle;
use _roomcast::events::{ConnInfo, Routes};
use _roomcast::frames::{Outgoing, Text};
use _roomcast::hub::Hub;
use _roomcast::outbox::Receiver;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::runtime;
use serde_json::{json, Value};

const SECRET: &str = "fuzzing-secret-of-at-least-32-bytes!";
const CONNS: usize = 3;

fn sign(claims: &str) -> Option<String> {
    let claims: Value = serde_json::from_str(claims).ok()?;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).ok()
}

/// Drops what the server queued for a connection, checking that each text is JSON.
fn drain(rx: &mut Receiver) {
    while let Some(out) = rx.try_recv() {
        if let Outgoing::Text(t) = out {
            let t = t.as_str();
            assert!(
                t == "pong" || serde_json::from_str::<Value>(t).is_ok(),
                "the server sent a text that is not JSON: {t:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut lines = text.split('\n');
    let query = lines.next().unwrap_or_default();
    let config = Config {
        chat: Some(ChatConfig {
            jwt_secret: (flags & 1 != 0).then(|| SECRET.to_owned()),
            offline_limit: 4,
            ..ChatConfig::default()
        }),
        queue_size: 64,
        ..Config::default()
    };
    let hub = Hub::new(config);
    if flags & 2 != 0 {
        hub.set_routes(Routes {
            message: true,
            events: HashSet::from(["custom".to_owned()]),
            ..Routes::default()
        });
    }
    let chat = hub.chat.clone().unwrap();
    runtime().block_on(async {
        let mut conns: Vec<(ChatSession, Arc<ConnHandle>, Receiver)> = (0..CONNS)
            .map(|_| {
                let info = Arc::new(ConnInfo {
                    path: "/".into(),
                    query: query.to_owned(),
                    headers: Default::default(),
                    remote_addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
                    secure: false,
                    subprotocols: Vec::new(),
                    subprotocol: None,
                });
                let (handle, rx) = ConnHandle::new(hub.next_id(), info, &hub);
                hub.register(handle.clone());
                (ChatSession::open(chat.clone(), &handle), handle, rx)
            })
            .collect();
        for line in lines {
            let (who, line) = match line.as_bytes().first() {
                Some(d @ b'0'..=b'2') => (usize::from(d - b'0'), &line[1..]),
                _ => (0, line),
            };
            let frame = match line.strip_prefix('!') {
                Some(claims) => match sign(claims) {
                    Some(token) => json!({"event": "auth", "message": token}).to_string(),
                    None => continue,
                },
                None => line.to_owned(),
            };
            let (session, _, _) = &mut conns[who];
            // What a hook would get is the application's business: dropped here.
            let _ = session.text(&hub, Text::from(frame)).await;
            for (_, _, rx) in &mut conns {
                drain(rx);
            }
        }
        for (session, handle, mut rx) in conns {
            session.close(&hub).await;
            hub.unregister(handle.id);
            drain(&mut rx);
        }
    });
});
