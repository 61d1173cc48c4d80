//! Chat-protocol mode (`refserver PORT --chat`): the least a server must do to speak the
//! protocol of roomcast's chat preset (/work/shared/PROTOCOL.md, benches/PROTOCOL.md), so that
//! the preset is compared with pure Rust doing the same work per message: parse the frame as a
//! JSON object, stamp `name` and `num` on it, serialise it once, fan the one buffer out to the
//! room, sender included.
//!
//! Every path speaks it. `enter` seats the connection in a room (leaving its previous one) and
//! is broadcast stamped to the room, newcomer included; `num` is the number of distinct uids
//! with a connection in the room; `message` and every other event go to the room stamped; the
//! room gets `out` when a user's last connection leaves; the text `ping` is answered `pong`;
//! what cannot be acted on gets an `error` frame. Not done (roomcast does them): auth, the
//! server's heartbeats, offline messages, `leave`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::rooms::Room;

type Object = Map<String, Value>;

/// One chat room: its fan-out and who is in it.
struct ChatRoom {
    key: String,
    members: Room,
    /// uid -> open connections in the room.
    users: Mutex<HashMap<String, u32>>,
    /// users.len(), readable without the lock on every message.
    num: AtomicUsize,
}

/// The chat rooms, created on first `enter` (empty ones are kept: the benchmark reuses them).
#[derive(Default)]
pub struct ChatRooms {
    rooms: Mutex<HashMap<String, Arc<ChatRoom>>>,
}

impl ChatRooms {
    fn room(&self, key: String) -> Arc<ChatRoom> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(ChatRoom {
                    key,
                    members: Room::default(),
                    users: Mutex::new(HashMap::new()),
                    num: AtomicUsize::new(0),
                })
            })
            .clone()
    }
}

/// Where a connection sits after `enter`.
struct Seat {
    room: Arc<ChatRoom>,
    uid: String,
    name: String,
}

/// A room id or uid as a key: strings as given, numbers by their JSON text.
fn key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The frame as broadcast: serialised once, its buffer shared by every recipient.
fn stamp(mut obj: Object, name: &str, num: usize) -> Message {
    obj.insert("name".into(), Value::String(name.to_owned()));
    obj.insert("num".into(), num.into());
    Message::text(Value::Object(obj).to_string())
}

fn error(message: &str) -> Message {
    Message::text(json!({"event": "error", "message": message}).to_string())
}

fn enter(
    seat: &mut Option<Seat>,
    id: u64,
    rooms: &ChatRooms,
    tx: &mpsc::Sender<Message>,
    obj: Object,
) -> Option<Message> {
    let Some(room_key) = obj.get("roomid").and_then(key) else {
        return Some(error("enter needs a \"roomid\" (a string or a number)"));
    };
    let Some(uid) = obj.get("uid").and_then(key) else {
        return Some(error("enter needs a \"uid\" (a string or a number)"));
    };
    let name = obj
        .get("message")
        .or_else(|| obj.get("name"))
        .and_then(Value::as_str)
        .unwrap_or(&uid)
        .to_owned();
    if let Some(old) = seat.take() {
        depart(old, id);
    }
    let room = rooms.room(room_key);
    let num = {
        let mut users = room.users.lock().unwrap_or_else(|e| e.into_inner());
        *users.entry(uid.clone()).or_insert(0) += 1;
        room.num.store(users.len(), Ordering::Relaxed);
        users.len()
    };
    room.members.join(id, tx.clone());
    room.members.broadcast(&stamp(obj, &name, num));
    *seat = Some(Seat { room, uid, name });
    None
}

/// The connection leaves its room; the room gets `out` if it was the user's last one there.
fn depart(seat: Seat, id: u64) {
    let Seat { room, uid, name } = seat;
    room.members.leave(id);
    let last = {
        let mut users = room.users.lock().unwrap_or_else(|e| e.into_inner());
        let n = users.get_mut(&uid).map(|n| {
            *n -= 1;
            *n
        });
        if n == Some(0) {
            users.remove(&uid);
            room.num.store(users.len(), Ordering::Relaxed);
            Some(users.len())
        } else {
            None
        }
    };
    if let Some(num) = last {
        let out = json!({"event": "out", "name": name, "num": num});
        room.members.broadcast(&Message::text(out.to_string()));
    }
}

/// A `message` (or any other event): to the room, sender included, stamped.
fn say(seat: &Option<Seat>, obj: Object) -> Option<Message> {
    let Some(Seat { room, name, .. }) = seat else {
        return Some(error(
            "enter a room first: send {\"event\":\"enter\",\"message\":NAME,\"roomid\":ROOM,\"uid\":UID}",
        ));
    };
    if let Some(given) = obj.get("roomid") {
        if key(given).as_deref() != Some(room.key.as_str()) {
            return Some(error("roomid is not the room this connection entered"));
        }
    }
    let num = room.num.load(Ordering::Relaxed);
    room.members.broadcast(&stamp(obj, name, num));
    None
}

/// Reads the connection's frames until it ends, then takes it out of its room.
pub async fn read_loop(
    mut stream: SplitStream<WebSocketStream<TcpStream>>,
    id: u64,
    rooms: &ChatRooms,
    tx: mpsc::Sender<Message>,
) {
    let mut seat: Option<Seat> = None;
    // Ping/pong and the close reply are handled by tungstenite while we read.
    while let Some(Ok(msg)) = stream.next().await {
        let reply = match msg {
            Message::Text(text) if text.as_str() == "ping" => Some(Message::text("pong")),
            Message::Text(text) => match serde_json::from_str::<Value>(text.as_str()) {
                Ok(Value::Object(obj)) => match obj.get("event") {
                    Some(Value::String(e)) if e == "enter" => enter(&mut seat, id, rooms, &tx, obj),
                    Some(Value::String(e)) if e == "heartbeat" => None,
                    Some(Value::String(_)) => say(&seat, obj),
                    _ => Some(error("every frame needs a string \"event\" field")),
                },
                _ => Some(error("send one JSON object per text frame")),
            },
            Message::Binary(_) => {
                Some(error("the chat protocol is text: send JSON in text frames"))
            }
            _ => None,
        };
        if let Some(reply) = reply {
            if tx.send(reply).await.is_err() {
                break; // the writer has failed
            }
        }
    }
    if let Some(s) = seat {
        depart(s, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_in_place_keeping_order() {
        let obj: Object =
            serde_json::from_str(r#"{"event":"message","message":"hi","name":"liar","extra":[1]}"#)
                .unwrap();
        let Message::Text(t) = stamp(obj, "ann", 2) else {
            panic!("not text")
        };
        assert_eq!(
            t.as_str(),
            r#"{"event":"message","message":"hi","name":"ann","extra":[1],"num":2}"#
        );
        assert_eq!(key(&json!(5)), key(&json!("5")));
        assert_eq!(key(&json!("")), None);
        assert_eq!(key(&json!(null)), None);
    }
}
