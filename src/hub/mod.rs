//! The hub: every open connection and every room of one server, and the operations the
//! application calls on them (send, join, broadcast). A broadcast is built once and its bytes
//! shared by all members. This is the one place a cross-process backplane will sit behind.

mod deferred;

use deferred::Deferred;
pub use deferred::DEFER_AT_MOST;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::runtime::RuntimeMetrics;
use tokio::sync::{oneshot, Notify};

use crate::broker::{roster::RedisRoster, wire::Counts, Broker, Local};
use crate::chat::Chat;
use crate::config::Config;
use crate::connection::{ConnHandle, Pulse};
use crate::dispatch::{Dispatcher, Pushed};
use crate::error::Error;
use crate::events::{ConnInfo, Decision, Event, Routes};
use crate::frames::Outgoing;
use crate::heartbeat::{self, Slice};
use crate::http::HttpExchange;
use crate::limits::ConnLimits;
use crate::metrics::{self, Metrics, TrafficTotals};
use crate::origin::OriginPolicy;
use crate::proxies::TrustedProxies;
use crate::rooms::{Rooms, Snapshot};
use crate::tls::Tls;
use crate::ConnId;

pub struct Hub {
    pub config: Config,
    /// Events for the application's worker threads. Its wake-ups are deferred to the moment
    /// an I/O thread parks (see `Server::start`).
    pub events: Dispatcher<Event>,
    /// The chat preset, when the config turns it on.
    pub chat: Option<Arc<Chat>>,
    /// Rooms shared with other nodes through Redis, when the config names a broker.
    pub broker: Option<Arc<Broker>>,
    /// Plain HTTP requests for the application (when `http_app` is on).
    pub http: HttpExchange,
    /// The server's counters (`stats` adds the gauges and the connections' traffic).
    pub metrics: Arc<Metrics>,
    /// The Origin allow-list, when the config has one.
    pub origins: Option<OriginPolicy>,
    /// The TLS identity, when the server serves TLS (loaded by `Server::start`).
    pub tls: Option<Tls>,
    /// Set once a handshake with cookies met no Origin allow-list (and that was logged).
    pub cookies_warned: AtomicBool,
    /// Sockets served at once, in total and per address.
    pub limits: Arc<ConnLimits>,
    /// Whose forwarding headers name the client.
    pub proxies: TrustedProxies,
    // The maps below use std locks, not tokio's: they are taken from tokio tasks and Python
    // threads alike, never across an .await, and each critical section only moves pointers.
    // Senders are collected under a lock and used after it is released.
    conns: Mutex<Open>,
    rooms: Mutex<Rooms<Arc<ConnHandle>>>,
    decisions: Mutex<HashMap<ConnId, oneshot::Sender<Decision>>>,
    /// Read on every frame, written when a hook is registered: an RwLock keeps readers parallel.
    routes: RwLock<Arc<Routes>>,
    next_id: AtomicU64,
    /// Sends made by hook workers during a batch, applied by the I/O runtime in one go: waking
    /// an I/O thread per send would cost a context switch per message.
    deferred: Mutex<Vec<Deferred>>,
    /// The stash became non-empty: the flusher arms its `DEFER_AT_MOST` timer.
    deferred_started: Notify,
    /// A batch ended: flush now.
    deferred_flush: Notify,
    /// The runtime the server runs on, for its task count; set once it is built (the hub
    /// exists first). It holds the runtime's handle, which the runtime's shutdown outlives
    /// harmlessly: the tasks that hold the hub are dropped then.
    runtime: OnceLock<RuntimeMetrics>,
}

/// The open connections, and what the closed ones' traffic added up to: one lock for both,
/// so a reader summing them never counts a connection twice or not at all, and the totals
/// never go backwards.
#[derive(Default)]
struct Open {
    handles: Shards,
    retired: TrafficTotals,
}

/// The open connections by id, in `heartbeat::SHARDS` maps (by `id % SHARDS`): a heartbeat
/// tick lists its slice of them without walking the others.
struct Shards(Vec<HashMap<ConnId, Arc<ConnHandle>>>);

impl Default for Shards {
    fn default() -> Self {
        Self((0..heartbeat::SHARDS).map(|_| HashMap::new()).collect())
    }
}

impl Shards {
    fn insert(&mut self, handle: Arc<ConnHandle>) {
        self.0[heartbeat::shard(handle.id)].insert(handle.id, handle);
    }

    fn remove(&mut self, id: ConnId) -> Option<Arc<ConnHandle>> {
        self.0[heartbeat::shard(id)].remove(&id)
    }

    fn get(&self, id: ConnId) -> Option<&Arc<ConnHandle>> {
        self.0[heartbeat::shard(id)].get(&id)
    }

    fn len(&self) -> usize {
        self.0.iter().map(HashMap::len).sum()
    }

    fn values(&self) -> impl Iterator<Item = &Arc<ConnHandle>> {
        self.0.iter().flat_map(HashMap::values)
    }

    fn slice(&self, slice: Slice) -> impl Iterator<Item = &Arc<ConnHandle>> {
        slice.shards().flat_map(|s| self.0[s].values())
    }
}

impl Hub {
    pub fn new(config: Config) -> Self {
        let limit = config.mailbox_limit;
        let http_queue = config.http_queue;
        // The URL was checked by `Config::validate`.
        let broker = config
            .broker
            .clone()
            .map(|b| Arc::new(Broker::new(b).expect("a validated broker config")));
        // With a broker, the chat preset's roster is in Redis, shared by every node.
        let chat = config.chat.as_ref().map(|c| {
            Arc::new(match &broker {
                Some(b) => Chat::with_roster(c, Arc::new(RedisRoster::new(b.clone(), c.bounds()))),
                None => Chat::new(c),
            })
        });
        let origins = config
            .allowed_origins
            .as_ref()
            .map(|o| OriginPolicy::parse(o).expect("validated origins"));
        let limits = Arc::new(ConnLimits::new(
            config.max_connections,
            config.max_connections_per_ip,
            config.handshake_rate_per_ip,
        ));
        let proxies = TrustedProxies::parse(&config.trusted_proxies).expect("validated proxies");
        Self {
            tls: None,
            cookies_warned: AtomicBool::new(false),
            broker,
            origins,
            limits,
            proxies,
            config,
            events: Dispatcher::with_deferred_wakeups(limit, true),
            chat,
            http: HttpExchange::new(http_queue),
            metrics: Arc::new(Metrics::new()),
            conns: Mutex::new(Open::default()),
            rooms: Mutex::new(Rooms::new()),
            decisions: Mutex::new(HashMap::new()),
            routes: RwLock::new(Arc::new(Routes::default())),
            next_id: AtomicU64::new(1),
            deferred: Mutex::new(Vec::new()),
            deferred_started: Notify::new(),
            deferred_flush: Notify::new(),
            runtime: OnceLock::new(),
        }
    }

    /// The runtime whose tasks `stats` counts (the first one given; a hub serves one).
    pub fn attach_runtime(&self, metrics: RuntimeMetrics) {
        let _ = self.runtime.set(metrics);
    }

    pub fn next_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn routes(&self) -> Arc<Routes> {
        self.routes.read().unwrap().clone()
    }

    pub fn set_routes(&self, routes: Routes) {
        *self.routes.write().unwrap() = Arc::new(routes);
    }

    pub fn push_event(&self, id: ConnId, event: Event) -> Pushed {
        self.events.push(id, event)
    }

    pub fn register(&self, handle: Arc<ConnHandle>) {
        self.conns.lock().unwrap().handles.insert(handle);
    }

    pub fn unregister(&self, id: ConnId) {
        {
            let mut open = self.conns.lock().unwrap();
            if let Some(handle) = open.handles.remove(id) {
                open.retired += handle.traffic_totals();
            }
        }
        let left = self.rooms.lock().unwrap().leave_all(id);
        if let Some(broker) = &self.broker {
            for room in &left {
                broker.touched(room);
            }
        }
        self.decisions.lock().unwrap().remove(&id);
    }

    pub fn await_decision(&self, id: ConnId, tx: oneshot::Sender<Decision>) {
        self.decisions.lock().unwrap().insert(id, tx);
    }

    pub fn forget_decision(&self, id: ConnId) {
        self.decisions.lock().unwrap().remove(&id);
    }

    /// Answers a pending handshake. False if none is waiting (timed out, or the client left).
    pub fn decide(&self, id: ConnId, decision: Decision) -> bool {
        let tx = self.decisions.lock().unwrap().remove(&id);
        tx.is_some_and(|tx| tx.send(decision).is_ok())
    }

    pub(crate) fn get(&self, id: ConnId) -> Result<Arc<ConnHandle>, Error> {
        self.conns
            .lock()
            .unwrap()
            .handles
            .get(id)
            .cloned()
            .ok_or(Error::NotOpen(id))
    }

    pub fn info(&self, id: ConnId) -> Option<Arc<ConnInfo>> {
        self.get(id).ok().map(|h| h.info.clone())
    }

    pub fn is_open(&self, id: ConnId) -> bool {
        self.get(id).is_ok_and(|h| h.is_open())
    }

    pub fn buffered_amount(&self, id: ConnId) -> usize {
        self.get(id).map_or(0, |h| h.buffered_amount())
    }

    /// Queues a frame for one connection. Never waits; a full queue applies the overflow policy.
    pub fn send(&self, id: ConnId, out: Outgoing) -> Result<(), Error> {
        let handle = self.get(id)?;
        if !handle.is_open() {
            return Err(Error::NotOpen(id));
        }
        handle.send(out);
        Ok(())
    }

    pub fn close(&self, id: ConnId, code: u16, reason: String) {
        if let Ok(handle) = self.get(id) {
            handle.close(code, reason);
        }
    }

    pub fn close_all(&self, code: u16, reason: &str) {
        for handle in self.snapshot() {
            handle.close(code, reason.to_owned());
        }
    }

    pub fn join(&self, id: ConnId, room: &str) -> Result<bool, Error> {
        let handle = self.get(id)?;
        let joined = self.rooms.lock().unwrap().join(room, id, handle);
        if joined {
            self.touched(room);
        }
        Ok(joined)
    }

    pub fn leave(&self, id: ConnId, room: &str) -> bool {
        let left = self.rooms.lock().unwrap().leave(room, id);
        if left {
            self.touched(room);
        }
        left
    }

    fn touched(&self, room: &str) {
        if let Some(broker) = &self.broker {
            broker.touched(room);
        }
    }

    /// Publishes a broadcast to the other nodes, when there is a broker.
    fn publish(&self, room: Option<&str>, out: &Outgoing) {
        if let Some(broker) = &self.broker {
            broker.broadcast(room, out);
        }
    }

    pub fn rooms_of(&self, id: ConnId) -> Vec<String> {
        self.rooms.lock().unwrap().rooms_of(id)
    }

    /// Members of `room` on this node and, with a broker, on every other live node.
    pub fn room_count(&self, room: &str) -> usize {
        let local = self.rooms.lock().unwrap().count(room);
        local
            + self
                .broker
                .as_ref()
                .map_or(0, |b| b.remote_count(room) as usize)
    }

    pub fn room_members(&self, room: &str) -> Vec<ConnId> {
        self.rooms.lock().unwrap().member_ids(room)
    }

    /// This node's members of `room`, to wait on their queues (`Room.drain`).
    pub fn room_handles(&self, room: &str) -> Vec<Arc<ConnHandle>> {
        self.rooms.lock().unwrap().members_except(room, &[])
    }

    pub fn room_names(&self) -> Vec<String> {
        self.rooms.lock().unwrap().names()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.lock().unwrap().handles.len()
    }

    /// Sends one frame to every member of `room` but the excluded; returns how many were
    /// queued. The payload is shared, not copied, per member.
    pub fn broadcast_room(&self, room: &str, out: Outgoing, exclude: &[ConnId]) -> usize {
        self.publish(Some(room), &out);
        self.broadcast_local(room, out, exclude)
    }

    /// `broadcast_room` on this node only (for traffic the broker carries another way).
    pub fn broadcast_local(&self, room: &str, out: Outgoing, exclude: &[ConnId]) -> usize {
        let members = self.rooms.lock().unwrap().snapshot(room);
        let n = members.map_or(0, |m| send_to_room(&m, exclude, out));
        self.metrics.broadcast(n);
        n
    }

    /// Sends one frame to every open connection but the excluded.
    pub fn broadcast_all(&self, out: Outgoing, exclude: &[ConnId]) -> usize {
        self.publish(None, &out);
        let members: Vec<_> = self
            .snapshot()
            .into_iter()
            .filter(|h| !exclude.contains(&h.id))
            .collect();
        let n = fan_out(&members, out);
        self.metrics.broadcast(n);
        n
    }

    /// The connections of one heartbeat slice (`Slice::ALL`: every one), with the
    /// application-level ping each gets. The lock is held while the slice's handles are listed.
    pub fn pulses(&self, slice: Slice) -> Vec<Pulse> {
        let handles: Vec<_> = {
            let open = self.conns.lock().unwrap();
            open.handles.slice(slice).cloned().collect()
        };
        match &self.chat {
            Some(chat) => chat.pulses(handles),
            None => handles.into_iter().map(Pulse::plain).collect(),
        }
    }

    /// Every registered connection, for sweeps and shutdown (used after the lock is released).
    pub fn snapshot(&self) -> Vec<Arc<ConnHandle>> {
        self.conns
            .lock()
            .unwrap()
            .handles
            .values()
            .cloned()
            .collect()
    }

    /// Every counter and gauge, read while the server runs. Costs one pass over the open
    /// connections under the connections' lock (loads only), and the rooms' lock briefly.
    pub fn stats(&self) -> metrics::Snapshot {
        let mut s = self.metrics.snapshot();
        {
            let open = self.conns.lock().unwrap();
            s.traffic = open.retired;
            for handle in open.handles.values() {
                s.traffic += handle.traffic_totals();
            }
        }
        {
            let rooms = self.rooms.lock().unwrap();
            s.rooms = rooms.len() as u64;
            s.room_members = rooms.memberships() as u64;
        }
        s.events_pending = self.events.pending() as u64;
        s.runtime_tasks = self.runtime.get().map_or(0, |r| r.num_alive_tasks() as u64);
        s.chat = self.chat.as_ref().map(|c| c.offline_counts());
        s.broker = self.broker.as_ref().map(|b| b.stats());
        s
    }
}

/// What other nodes publish reaches this node's members here (never published again).
impl Local for Hub {
    fn deliver(&self, room: Option<&str>, out: Outgoing) -> usize {
        let n = match room {
            Some(room) => {
                let members = self.rooms.lock().unwrap().snapshot(room);
                members.map_or(0, |m| send_to_room(&m, &[], out))
            }
            None => fan_out(&self.snapshot(), out),
        };
        self.metrics.delivered(n);
        n
    }

    fn deliver_chat(&self, body: crate::broker::wire::ChatBody) {
        if let Some(chat) = &self.chat {
            chat.remote(self, body);
        }
    }

    fn counts(&self, rooms: Option<Vec<String>>) -> Counts {
        let guard = self.rooms.lock().unwrap();
        let names = rooms.unwrap_or_else(|| guard.names());
        names
            .into_iter()
            .map(|room| {
                let n = guard.count(&room) as u32;
                (room, n)
            })
            .collect()
    }
}

pub(crate) fn send_to_room(
    members: &Snapshot<Arc<ConnHandle>>,
    exclude: &[ConnId],
    out: Outgoing,
) -> usize {
    let out = crate::frames::share(out);
    members
        .iter()
        .filter(|(id, h)| !exclude.contains(id) && h.send(out.clone()))
        .count()
}

pub(crate) fn fan_out(members: &[Arc<ConnHandle>], out: Outgoing) -> usize {
    let out = crate::frames::share(out);
    members.iter().filter(|m| m.send(out.clone())).count()
}
