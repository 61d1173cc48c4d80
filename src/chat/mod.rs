//! The chat preset: the multi-room chat of ../shared/PROTOCOL.md, run entirely in Rust.
//!
//! `Chat` holds this node's rooms (who is connected) and every chat connection's seat (its
//! room, uid, name and auth); the roster (`roster.rs`) holds membership, `num` and kept
//! messages, in memory or, with a broker, in Redis for every node. Fan-out goes through the
//! hub's rooms, so a chat room is also an ordinary room to Python (`app.room(id)`). Each room's
//! people are behind an async lock held across the roster's calls: a member entering and a
//! message to the room are ordered, which is what makes kept messages arrive exactly once and
//! before new traffic. Across nodes, a frame names the users it was kept for, and they never
//! get it live as well.

pub mod auth;
mod fanout;
pub mod frame;
pub mod offline;
pub mod room;
pub mod roster;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::connection::{ConnHandle, Pulse};
use crate::frames::{Outgoing, Text};
use crate::hub::Hub;
use crate::ConnId;
use auth::{Auth, Grant};
use frame::Object;
use offline::{Bounds, OfflineCounts};
use room::{ChatRoom, NumCell};
use roster::{MemoryRoster, Roster};

#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Turns auth on: HS256 tokens signed with this secret.
    pub jwt_secret: Option<String>,
    /// Kept messages per user per room; past it the oldest is dropped.
    pub offline_limit: usize,
    /// How long a kept message, and an away member's membership, lasts.
    pub offline_ttl: Duration,
}

impl ChatConfig {
    pub fn bounds(&self) -> Bounds {
        Bounds {
            limit: self.offline_limit,
            ttl: self.offline_ttl,
        }
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            offline_limit: 100,
            offline_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Where a connection stands: what the protocol remembers between its frames.
#[derive(Default)]
pub struct Seat {
    pub room: Option<Arc<ChatRoom>>,
    pub uid: Option<Arc<str>>,
    pub name: String,
    /// `None` while auth is on and no valid token was given.
    pub grant: Option<Grant>,
    /// The `enter` to replay when a connection whose token expired authenticates again.
    pub suspended: Option<Object>,
    /// Set once the connection ended, so a late `enter` cannot seat a closed connection.
    pub closed: bool,
}

pub struct ChatConn {
    pub handle: Arc<ConnHandle>,
    pub seat: Mutex<Seat>,
}

impl ChatConn {
    pub fn reply(&self, text: Text) {
        self.handle.send(Outgoing::Text(text));
    }

    pub fn error(&self, message: &str) {
        log::debug!("chat: connection {}: {message}", self.handle.id);
        self.reply(frame::error(message));
    }
}

pub struct Chat {
    pub(crate) auth: Option<Auth>,
    roster: Arc<dyn Roster>,
    rooms: Mutex<HashMap<Arc<str>, Arc<ChatRoom>>>,
    /// Every room's `num`, also of rooms with nobody here (other nodes count them).
    nums: Mutex<HashMap<Arc<str>, Arc<NumCell>>>,
    conns: Mutex<HashMap<ConnId, Arc<ChatConn>>>,
}

impl Chat {
    pub fn new(config: &ChatConfig) -> Self {
        Self::with_roster(config, Arc::new(MemoryRoster::new(config.bounds())))
    }

    pub fn with_roster(config: &ChatConfig, roster: Arc<dyn Roster>) -> Self {
        Self {
            auth: config.jwt_secret.as_deref().map(Auth::new),
            roster,
            rooms: Mutex::new(HashMap::new()),
            nums: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
        }
    }

    pub fn conn(&self, id: ConnId) -> Option<Arc<ChatConn>> {
        self.conns.lock().unwrap().get(&id).cloned()
    }

    pub(crate) fn room(&self, name: &str) -> Option<Arc<ChatRoom>> {
        self.rooms.lock().unwrap().get(name).cloned()
    }

    fn room_or_new(&self, name: String, id: &Value) -> Arc<ChatRoom> {
        let mut rooms = self.rooms.lock().unwrap();
        if let Some(room) = rooms.get(name.as_str()) {
            return room.clone();
        }
        let name: Arc<str> = Arc::from(name);
        let room = Arc::new(ChatRoom::new(
            name.clone(),
            id.clone(),
            self.num_cell(&name),
        ));
        rooms.insert(name, room.clone());
        room
    }

    /// Forgets a room nobody is in or away from. Called with the room's people locked, so
    /// nobody can be added meanwhile; a task that already looked the room up (holds a clone)
    /// keeps it alive and in the map.
    fn drop_if_empty(&self, room: &Arc<ChatRoom>, people: &room::People) {
        if !people.is_empty() || self.roster.remembers(&room.name) {
            return;
        }
        let mut rooms = self.rooms.lock().unwrap();
        // The map's reference and ours: nobody else is about to use it.
        if Arc::strong_count(room) == 2 {
            rooms.remove(&room.name);
        }
    }

    /// Distinct users online in `room` (the protocol's `num`; on every node, with a broker).
    pub fn count(&self, room: &str) -> usize {
        let nums = self.nums.lock().unwrap();
        nums.get(room).map_or(0, |n| n.get().count)
    }

    /// The room's count cell, made on first use. Cells of rooms that stayed empty for a while
    /// (and have no room here) are dropped as new ones are made, so the map stays bounded.
    pub(crate) fn num_cell(&self, room: &str) -> Arc<NumCell> {
        let mut nums = self.nums.lock().unwrap();
        if let Some(cell) = nums.get(room) {
            return cell.clone();
        }
        if nums.len() % 256 == 255 {
            nums.retain(|_, c| Arc::strong_count(c) > 1 || !c.idle(Duration::from_secs(10)));
        }
        let cell = Arc::new(NumCell::default());
        nums.insert(Arc::from(room), cell.clone());
        cell
    }

    /// uid → entered name of the users connected to `room` on this node.
    pub async fn users(&self, room: &str) -> Vec<(String, String)> {
        let Some(room) = self.room(room) else {
            return Vec::new();
        };
        let people = room.state.lock().await;
        people
            .online
            .iter()
            .map(|(uid, u)| (uid.to_string(), u.name.clone()))
            .collect()
    }

    pub fn offline_counts(&self) -> OfflineCounts {
        self.roster.counts()
    }

    /// The heartbeat of every connection: chat connections get the JSON ping with their
    /// room's `num`, built once per room per sweep.
    pub fn pulses(&self, handles: Vec<Arc<ConnHandle>>) -> Vec<Pulse> {
        let conns = self.conns.lock().unwrap();
        let mut by_room: HashMap<*const ChatRoom, Text> = HashMap::new();
        let mut no_room: Option<Text> = None;
        handles
            .into_iter()
            .map(|handle| {
                let Some(conn) = conns.get(&handle.id) else {
                    return Pulse::plain(handle); // a relay's connection
                };
                let room = conn.seat.lock().unwrap().room.clone();
                let ping = match room {
                    Some(room) => by_room
                        .entry(Arc::as_ptr(&room))
                        .or_insert_with(|| frame::heartbeat(Some(room.num())))
                        .clone(),
                    None => no_room
                        .get_or_insert_with(|| frame::heartbeat(None))
                        .clone(),
                };
                Pulse::new(handle, Some(ping))
            })
            .collect()
    }

    pub(crate) fn register(&self, handle: &Arc<ConnHandle>) -> Arc<ChatConn> {
        let conn = Arc::new(ChatConn {
            handle: handle.clone(),
            seat: Mutex::new(Seat::default()),
        });
        self.conns.lock().unwrap().insert(handle.id, conn.clone());
        conn
    }

    /// The connection ended: it leaves its room (the room gets `out` if it was the user's
    /// last connection there).
    pub async fn close(&self, hub: &Hub, id: ConnId) {
        let Some(conn) = self.conns.lock().unwrap().remove(&id) else {
            return;
        };
        conn.seat.lock().unwrap().closed = true;
        self.depart(hub, &conn).await;
    }

    /// What the preset does with one event of a connection (also what a Python hook hands
    /// back to it). Auth has been checked by the caller.
    pub async fn act(&self, hub: &Hub, conn: &Arc<ChatConn>, event: &str, obj: Object) {
        match event {
            "enter" => self.enter(hub, conn, obj).await,
            "leave" => self.leave(hub, conn).await,
            "heartbeat" => {}
            "auth" => self.authenticate(hub, conn, &obj).await,
            _ => self.say(hub, conn, event == "message", obj).await,
        }
    }

    async fn authenticate(&self, hub: &Hub, conn: &Arc<ChatConn>, obj: &Object) {
        let Some(auth) = &self.auth else {
            return; // auth is off: nothing to check, nothing to answer
        };
        let result = match frame::string(obj, "message") {
            Some(token) => auth.verify(token),
            None => Err("auth needs the token in \"message\"".into()),
        };
        match result {
            Ok(grant) => {
                let replay = {
                    let mut seat = conn.seat.lock().unwrap();
                    seat.grant = Some(grant);
                    seat.suspended.take()
                };
                if let Some(enter) = replay {
                    self.enter(hub, conn, enter).await;
                }
            }
            Err(why) => {
                log::info!("chat: connection {}: {why}; noauth", conn.handle.id);
                conn.seat.lock().unwrap().grant = None;
                conn.reply(Text::from_static(frame::NOAUTH));
            }
        }
    }

    /// The token ran out: the connection stops receiving its room until it sends a valid
    /// one, and the room sees it go.
    pub async fn suspend(&self, hub: &Hub, conn: &Arc<ChatConn>) {
        log::info!(
            "chat: connection {}: token expired; noauth, out of its room until it authenticates",
            conn.handle.id
        );
        let entered = {
            let mut seat = conn.seat.lock().unwrap();
            seat.grant = None;
            seat.room.as_ref().map(|room| {
                let mut enter = Object::new();
                enter.insert("event".into(), "enter".into());
                enter.insert("message".into(), seat.name.clone().into());
                enter.insert("roomid".into(), room.id.clone());
                let uid = seat.uid.as_deref().unwrap_or_default();
                enter.insert("uid".into(), uid.into());
                enter
            })
        };
        self.depart(hub, conn).await;
        conn.seat.lock().unwrap().suspended = entered;
        conn.reply(Text::from_static(frame::NOAUTH));
    }

    async fn enter(&self, hub: &Hub, conn: &Arc<ChatConn>, obj: Object) {
        let Some(room_name) = obj.get("roomid").and_then(frame::key) else {
            return conn.error("enter needs a \"roomid\" (a string or a number)");
        };
        let Some(uid) = obj.get("uid").and_then(frame::key) else {
            return conn.error("enter needs a \"uid\" (a string or a number) naming the user");
        };
        let name = frame::string(&obj, "message")
            .or_else(|| frame::string(&obj, "name"))
            .unwrap_or(&uid)
            .to_owned();
        let uid: Arc<str> = Arc::from(uid);
        let same_place = {
            let seat = conn.seat.lock().unwrap();
            seat.room.as_ref().is_some_and(|r| *r.name == room_name)
                && seat.uid.as_ref() == Some(&uid)
        };
        if !same_place {
            // A connection is in at most one room: entering another one moves it.
            self.depart(hub, conn).await;
        }
        let room = self.room_or_new(room_name, &obj["roomid"]);
        let id = conn.handle.id;
        let mut people = room.state.lock().await;
        {
            let mut seat = conn.seat.lock().unwrap();
            if seat.closed {
                drop(seat);
                return self.drop_if_empty(&room, &people);
            }
            seat.room = Some(room.clone());
            seat.uid = Some(uid.clone());
            seat.name = name.clone();
        }
        let first = people.arrive(&uid, &name, id);
        if first {
            // Kept messages go first: they are queued before the connection joins the
            // room's fan-out, the room is locked, and traffic from other nodes is held until
            // they are out, so nothing new can overtake them.
            room.held.lock().unwrap().entering = true;
            let arrival = self.roster.arrive(&room.name, &uid, &name).await;
            room.set_num(arrival.num);
            for kept in arrival.kept {
                conn.reply(kept);
            }
        }
        // Cannot fail for an open connection; a closed one is cleaned up by `close`.
        let _ = hub.join(id, &room.name);
        let text = frame::stamp(obj, &name, room.num());
        self.broadcast(hub, &room, text, &[], None, None);
        if first {
            // What other nodes sent meanwhile is new traffic: it follows the enter, as on one
            // node, where nothing can come between the kept messages and the enter.
            self.release(hub, &room);
        }
    }

    /// Takes the connection out of its room (closed, moved, or suspended).
    async fn depart(&self, hub: &Hub, conn: &Arc<ChatConn>) {
        let (room, uid, name) = {
            let mut seat = conn.seat.lock().unwrap();
            let Some(room) = seat.room.take() else {
                return;
            };
            (room, seat.uid.clone(), seat.name.clone())
        };
        let mut people = room.state.lock().await;
        hub.leave(conn.handle.id, &room.name);
        let last = uid
            .as_ref()
            .filter(|uid| people.depart(uid, conn.handle.id));
        if let Some(uid) = last {
            let departure = self.roster.depart(&room.name, uid).await;
            room.set_num(departure.num);
            if departure.gone {
                let out = frame::out(&name, room.num());
                self.broadcast(hub, &room, out, &[], None, None);
            }
        }
        self.drop_if_empty(&room, &people);
    }

    /// `leave`: the user stops being a member; all their connections in the room stop
    /// receiving it and nothing more is kept for them.
    async fn leave(&self, hub: &Hub, conn: &Arc<ChatConn>) {
        let (room, uid, name) = {
            let seat = conn.seat.lock().unwrap();
            let (Some(room), Some(uid)) = (seat.room.clone(), seat.uid.clone()) else {
                drop(seat);
                return conn.error("leave: this connection is in no room");
            };
            (room, uid, seat.name.clone())
        };
        let mut people = room.state.lock().await;
        self.unseat(hub, &room, &mut people, &uid);
        let departure = self.roster.leave(&room.name, &uid).await;
        room.set_num(departure.num);
        let out = frame::out(&name, room.num());
        self.broadcast(hub, &room, out, &[], None, Some(&uid));
        self.drop_if_empty(&room, &people);
    }

    /// `message` and every other event: broadcast to the room, sender included, with `name`
    /// and `num` stamped; a `message` is kept for the members who are away.
    async fn say(&self, hub: &Hub, conn: &Arc<ChatConn>, keep: bool, obj: Object) {
        let (room, name) = {
            let seat = conn.seat.lock().unwrap();
            (seat.room.clone(), seat.name.clone())
        };
        let Some(room) = room else {
            return conn.error(
                "enter a room first: send {\"event\":\"enter\",\"message\":NAME,\"roomid\":ROOM,\"uid\":UID}",
            );
        };
        if let Some(given) = obj.get("roomid") {
            if frame::key(given).as_deref() != Some(&*room.name) {
                return conn.error(&format!(
                    "roomid {given} is not the room this connection entered ({:?}); enter it first",
                    room.name
                ));
            }
        }
        self.publish(hub, &room, &name, keep, obj).await;
    }

    async fn publish(
        &self,
        hub: &Hub,
        room: &Arc<ChatRoom>,
        name: &str,
        keep: bool,
        obj: Object,
    ) -> usize {
        let had_roomid = obj.contains_key("roomid");
        let people = room.state.lock().await;
        let text = frame::stamp(obj, name, room.num());
        let kept_for = if keep {
            let kept = frame::kept_copy(&text, &room.id, had_roomid);
            self.roster.keep(&room.name, kept).await
        } else {
            Vec::new()
        };
        let n = self.broadcast(hub, room, text, &kept_for, Some(&people), None);
        self.drop_if_empty(room, &people);
        n
    }

    /// A message from the application (a bot, a notice): the same path as a member's, offline
    /// keeping included. Returns how many connections it was queued for; 0 (and nothing kept)
    /// when nobody ever entered the room.
    pub async fn post(&self, hub: &Hub, room: &str, name: &str, obj: Object) -> usize {
        let room = match self.room(room) {
            Some(room) => room,
            // With a broker the room may have members on other nodes, or away ones in Redis.
            None if hub.broker.is_some() => {
                self.room_or_new(room.to_owned(), &Value::String(room.to_owned()))
            }
            None => return 0,
        };
        let keep = frame::string(&obj, "event") == Some("message");
        self.publish(hub, &room, name, keep, obj).await
    }
}

#[cfg(test)]
mod tests;
