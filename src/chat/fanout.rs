//! How chat frames reach connections: on this node, and through the broker on every other.
//! A frame names the users it was kept for; their connections never get it live as well,
//! wherever they entered, so a kept message reaches its user exactly once.

use std::sync::Arc;
use std::time::Duration;

use super::room::{ChatRoom, People};
use super::roster::{Num, Vanished};
use super::{frame, Chat};
use crate::broker::wire::ChatBody;
use crate::frames::{Outgoing, Text};
use crate::hub::Hub;
use crate::ConnId;

impl Chat {
    /// Sends `text` to the room on every node; `kept_for` users get it on entering instead
    /// (`people`, the room's people here, locked by the caller, says which connections are
    /// theirs); `unseat` names a user who left the room on purpose.
    pub(crate) fn broadcast(
        &self,
        hub: &Hub,
        room: &ChatRoom,
        text: Text,
        kept_for: &[Arc<str>],
        people: Option<&People>,
        unseat: Option<&str>,
    ) -> usize {
        if let Some(broker) = &hub.broker {
            let num = room.num_version();
            broker.chat(ChatBody {
                room: room.name.to_string(),
                frame: text.clone(),
                kept_for: kept_for.iter().map(|u| u.to_string()).collect(),
                num: num.count as u64,
                version: num.version,
                unseat: unseat.map(str::to_owned),
            });
        }
        let exclude = match people {
            Some(people) => kept_for
                .iter()
                .filter_map(|uid| people.online.get(uid))
                .flat_map(|user| user.conns.iter().copied())
                .collect(),
            None => Vec::new(),
        };
        hub.broadcast_local(&room.name, Outgoing::Text(text), &exclude)
    }

    /// This node's connections in `room` whose user matches.
    fn connections_of(&self, hub: &Hub, room: &str, matches: impl Fn(&str) -> bool) -> Vec<ConnId> {
        hub.room_members(room)
            .into_iter()
            .filter(|id| {
                self.conn(*id)
                    .is_some_and(|c| c.seat.lock().unwrap().uid.as_deref().is_some_and(&matches))
            })
            .collect()
    }

    /// A user's kept messages are out: what other nodes sent meanwhile follows them.
    pub(crate) fn release(&self, hub: &Hub, room: &Arc<ChatRoom>) {
        let mut held = room.held.lock().unwrap();
        for body in std::mem::take(&mut held.queue) {
            self.deliver(hub, room, body);
        }
        held.entering = false;
    }

    /// A chat frame from another node.
    pub fn remote(&self, hub: &Hub, body: ChatBody) {
        self.num_cell(&body.room).set(Num {
            count: body.num as usize,
            version: body.version,
        });
        let Some(room) = self.room(&body.room) else {
            return; // nobody is in that room here
        };
        let mut held = room.held.lock().unwrap();
        if held.entering {
            held.queue.push(body);
            return;
        }
        // Delivered under the lock, so a member starting to enter waits for it.
        self.deliver(hub, &room, body);
        drop(held);
    }

    fn deliver(&self, hub: &Hub, room: &Arc<ChatRoom>, body: ChatBody) {
        if let Some(uid) = &body.unseat {
            for id in self.connections_of(hub, &room.name, |u| u == uid) {
                self.clear_seat(hub, room, id);
            }
            self.roster.forget_local(&room.name, uid);
            let (room, uid) = (room.clone(), uid.clone());
            tokio::spawn(async move {
                room.state.lock().await.remove(&uid);
            });
        }
        // Most frames were kept for nobody: no member needs looking at.
        let exclude = if body.kept_for.is_empty() {
            Vec::new()
        } else {
            self.connections_of(hub, &room.name, |uid| {
                body.kept_for.iter().any(|k| k == uid)
            })
        };
        hub.broadcast_local(&room.name, Outgoing::Text(body.frame), &exclude);
    }

    /// Takes every connection of `uid` here out of the room (they left it on purpose).
    pub(crate) fn unseat(&self, hub: &Hub, room: &Arc<ChatRoom>, people: &mut People, uid: &str) {
        for id in people.remove(uid) {
            self.clear_seat(hub, room, id);
        }
    }

    fn clear_seat(&self, hub: &Hub, room: &Arc<ChatRoom>, id: ConnId) {
        hub.leave(id, &room.name);
        if let Some(other) = self.conn(id) {
            let mut seat = other.seat.lock().unwrap();
            if seat.room.as_ref().is_some_and(|r| Arc::ptr_eq(r, room)) {
                seat.room = None;
            }
        }
    }

    /// Renews this node's lease in the roster and announces the users of nodes whose lease
    /// ran out (`out` to their rooms). Runs while the server does; a no-op in memory.
    pub async fn run_roster(self: Arc<Self>, hub: Arc<Hub>, every: Duration) {
        loop {
            for gone in self.roster.tick().await {
                self.vanished(&hub, gone);
            }
            tokio::time::sleep(every).await;
        }
    }

    fn vanished(&self, hub: &Hub, gone: Vanished) {
        log::info!(
            "chat: user {:?} in room {:?} was on a node whose lease ran out; the room gets out",
            gone.uid,
            gone.room
        );
        let out = frame::out(&gone.name, gone.num.count);
        self.num_cell(&gone.room).set(gone.num);
        match self.room(&gone.room) {
            Some(room) => {
                self.broadcast(hub, &room, out, &[], None, None);
            }
            None => {
                if let Some(broker) = &hub.broker {
                    broker.chat(ChatBody {
                        room: gone.room,
                        frame: out,
                        kept_for: Vec::new(),
                        num: gone.num.count as u64,
                        version: gone.num.version,
                        unseat: None,
                    });
                }
            }
        }
    }
}
