//! The part of Socket.IO v5 over Engine.IO v4 that the `cluster` scenario speaks to
//! python-socketio, on the websocket transport only (no long-polling upgrade):
//!
//! - connect to `/socket.io/?EIO=4&transport=websocket`; the server sends the Engine.IO open
//!   packet `0{"sid":...,"pingInterval":...}`;
//! - the client connects to the default namespace with `40`; the server answers `40{"sid":...}`
//!   (or `44{...}` if its connect handler refused);
//! - events are `42["name",data]`; the server pings with `2` and the client answers `3`.
//!
//! Senders emit `42["pub","PAYLOAD"]`; the server emits `42["m","PAYLOAD"]` to the room. The
//! payload is ASCII without quotes or backslashes, so it is sent and matched without JSON
//! encoding: one prefix comparison per received frame, as with the chat protocol.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::Ws;
use crate::payload;

/// The websocket-transport endpoint; a `role` query parameter is appended (sub or pub).
pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";
/// A sender's message is this prefix, the payload, this suffix.
pub const PUB_PREFIX: &[u8] = br#"42["pub",""#;
pub const PUB_SUFFIX: &[u8] = br#""]"#;
/// What the server sends room members: this prefix, the payload, `"]`.
pub const DELIVERY_PREFIX: &[u8] = br#"42["m",""#;
/// The Engine.IO pong a client answers each ping (`2`) with.
pub const PONG: &str = "3";

/// How long the Engine.IO open and the Socket.IO connect may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a received frame is, as far as the loadgen cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// An `m` event: the bytes from the start of its text to the end of the frame.
    Delivery(&'a [u8]),
    /// An Engine.IO ping: answer with PONG.
    Ping,
    /// Anything else (noop, other events, ...).
    Other,
}

pub fn classify(d: &[u8]) -> Packet<'_> {
    if let Some(text) = d.strip_prefix(DELIVERY_PREFIX) {
        return Packet::Delivery(text);
    }
    if d == b"2" { Packet::Ping } else { Packet::Other }
}

/// Engine.IO open, then Socket.IO connect to the default namespace; when it returns Ok the
/// server's connect handler has run (python-socketio answers `40` after it).
pub async fn handshake(ws: &mut Ws) -> Result<(), String> {
    let steps = async {
        let open = next_text(ws).await?;
        if !open.starts_with('0') {
            return Err(format!("expected the Engine.IO open packet, got {:?}", head(&open)));
        }
        ws.send(Message::text("40")).await.map_err(|e| format!("send connect: {e}"))?;
        loop {
            let t = next_text(ws).await?;
            if t.starts_with("40") {
                return Ok(());
            }
            if t.starts_with("44") {
                return Err(format!("connect refused: {}", head(&t)));
            }
            if t == "2" {
                ws.send(Message::text(PONG)).await.map_err(|e| format!("send pong: {e}"))?;
            }
        }
    };
    match timeout(HANDSHAKE_TIMEOUT, steps).await {
        Ok(r) => r,
        Err(_) => Err(format!("Socket.IO connect not answered within {}s", HANDSHAKE_TIMEOUT.as_secs())),
    }
}

async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(f))) => return Err(format!("server sent close {f:?} during the connect")),
            Some(Ok(m)) => {
                if let Some(d) = payload::data_of(&m) {
                    return Ok(String::from_utf8_lossy(d).into_owned());
                }
            }
            Some(Err(e)) => return Err(format!("during the connect: {e}")),
            None => return Err("connection closed during the connect".into()),
        }
    }
}

fn head(s: &str) -> &str {
    s.get(..80).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_frames() {
        let mut w = payload::PayloadWriter::framed(48, DELIVERY_PREFIX, br#""]"#);
        let h = payload::Header { sender: 2, seq: 40, sent_ns: 99 };
        let m = w.message(h);
        let Packet::Delivery(text) = classify(payload::data_of(&m).unwrap()) else { panic!("not a delivery") };
        assert_eq!(payload::parse(text), Some(h));
        assert_eq!(classify(b"2"), Packet::Ping);
        assert_eq!(classify(b"6"), Packet::Other);
        assert_eq!(classify(br#"42["other","x"]"#), Packet::Other);
        assert_eq!(classify(br#"40{"sid":"abc"}"#), Packet::Other);
    }
}
