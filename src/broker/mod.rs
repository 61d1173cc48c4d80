//! The broker: rooms shared by several roomcast nodes (processes or machines) through Redis.
//!
//! Every node publishes its room broadcasts, stamped with its node id and a sequence number,
//! on one Redis pub/sub channel, and delivers what the others publish to its local members.
//! Sequence numbers make delivery exactly once and in order per node: a gap is filled from
//! the publisher's replay ring, a repeat is dropped. Presence (who is in which room) travels
//! the same way, and a node that stops beating is dropped from every count when its lease ends.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// `redis://host:port/db` (or `rediss://`, `unix://`).
    pub url: String,
    /// Prefix of the channel and keys, so several applications can share one Redis.
    pub namespace: String,
    /// Messages kept for replay and for Redis outages; past it the oldest is dropped, counted.
    pub buffer: usize,
    /// A node not heard from for this long is dropped from every count.
    pub lease: Duration,
}

impl BrokerConfig {
    pub fn validate(&self) -> Result<(), String> {
        redis::Client::open(self.url.as_str()).map_err(|e| {
            format!(
                "broker URL {:?} is not a Redis URL ({e}); use redis://host:port/db",
                self.url
            )
        })?;
        if self.buffer == 0 {
            return Err("broker_buffer must hold at least 1 message".into());
        }
        if self.namespace.is_empty() {
            return Err("broker_namespace must not be empty".into());
        }
        Ok(())
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            namespace: "roomcast".into(),
            buffer: 65_536,
            lease: Duration::from_secs(3),
        }
    }
}

mod inbox;
mod link;
mod outbox;
mod presence;
pub mod roster;
pub mod wire;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::frames::Outgoing;
use inbox::Inbox;
use outbox::Outbox;
use presence::Presence;
use wire::{Body, Counts, Frame};

/// What the broker needs from the node it serves (the hub): deliver what other nodes
/// published, and read this node's own room counts.
pub trait Local: Send + Sync + 'static {
    /// Sends a frame from another node to this node's members of `room` (every connection
    /// when `None`); never published again.
    fn deliver(&self, room: Option<&str>, out: Outgoing) -> usize;
    /// A chat preset frame from another node (`chat/fanout.rs`).
    fn deliver_chat(&self, body: wire::ChatBody);
    /// This node's member counts of `rooms` (of every room with members when `None`).
    fn counts(&self, rooms: Option<Vec<String>>) -> Counts;
}

/// The broker's counters, for `stats()` and the metrics endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Messages Redis accepted from this node (replays included).
    pub published: u64,
    /// Numbered messages from other nodes delivered here, in order, once.
    pub received: u64,
    /// Repeats dropped (a replay or a re-sent batch that had already arrived).
    pub duplicates: u64,
    /// Gaps noticed and asked for.
    pub gaps: u64,
    /// Messages from other nodes given up on (they were past the sender's buffer).
    pub lost: u64,
    /// Messages waiting for Redis (it is away or slow).
    pub unsent: u64,
    /// Messages this node dropped unsent because its buffer was full during an outage.
    pub dropped: u64,
    /// Bus messages that could not be read (not ours, or a newer version).
    pub malformed: u64,
    /// Times a connection to Redis was made again after it was lost.
    pub reconnects: u64,
    /// Other nodes heard from within the lease.
    pub nodes: u64,
    pub connected: bool,
}

pub struct Broker {
    pub config: BrokerConfig,
    /// This node's id on the bus: random per start, so a restarted node counts from 1 again.
    pub node: u64,
    channel: String,
    client: redis::Client,
    outbox: Mutex<Outbox>,
    /// The outbox has something, or presence changed.
    wake: Notify,
    /// Rooms whose local membership changed since presence was last published.
    dirty: Mutex<HashSet<String>>,
    inbox: Mutex<Inbox>,
    presence: Mutex<Presence>,
    published: AtomicU64,
    malformed: AtomicU64,
    reconnects: AtomicU64,
    publishing: AtomicBool,
    subscribed: AtomicBool,
    /// Another node said hello: publish a snapshot of this node's rooms.
    snapshot_wanted: AtomicBool,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The publishing connection while it is up: the chat roster's scripts run on it too.
    pub(crate) conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl Broker {
    /// Checks the URL; connecting happens in the background (Redis may be down at start).
    pub fn new(config: BrokerConfig) -> Result<Self, String> {
        config.validate()?;
        let client = redis::Client::open(config.url.as_str()).map_err(|e| e.to_string())?;
        let node = random_id();
        Ok(Self {
            channel: format!("{}:bus", config.namespace),
            client,
            outbox: Mutex::new(Outbox::new(node, config.buffer)),
            wake: Notify::new(),
            dirty: Mutex::new(HashSet::new()),
            inbox: Mutex::new(Inbox::new(config.buffer)),
            presence: Mutex::new(Presence::default()),
            published: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            publishing: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            snapshot_wanted: AtomicBool::new(false),
            stop: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
            conn: Mutex::new(None),
            node,
            config,
        })
    }

    /// Publishes a broadcast to `room` (to every connection when `None`) to the other nodes.
    pub fn broadcast(&self, room: Option<&str>, out: &Outgoing) {
        let Some(frame) = Frame::from_outgoing(out) else {
            return;
        };
        let body = match room {
            Some(room) => Body::Room {
                room: room.to_owned(),
                frame,
            },
            None => Body::All { frame },
        };
        self.publish(&body);
    }

    /// Publishes a chat preset frame to the other nodes.
    pub fn chat(&self, body: wire::ChatBody) {
        self.publish(&Body::Chat(body));
    }

    fn publish(&self, body: &Body) {
        let first_drop = {
            let mut outbox = self.outbox.lock().unwrap();
            let before = outbox.dropped;
            outbox.push(body);
            before == 0 && outbox.dropped > 0
        };
        if first_drop {
            log::error!(
                "broker: Redis is away and {} messages wait for it: the oldest are being dropped (raise broker_buffer to keep more)",
                self.config.buffer
            );
        }
        self.wake.notify_one();
    }

    /// This node's membership of `room` changed: other nodes learn its new count.
    pub fn touched(&self, room: &str) {
        self.dirty.lock().unwrap().insert(room.to_owned());
        self.wake.notify_one();
    }

    /// Members of `room` on the other nodes (within their leases).
    pub fn remote_count(&self, room: &str) -> u64 {
        self.presence.lock().unwrap().count(room)
    }

    /// Rooms with members on other nodes.
    pub fn remote_rooms(&self) -> Vec<String> {
        self.presence.lock().unwrap().rooms()
    }

    pub fn stats(&self) -> BrokerStats {
        let inbox = self.inbox.lock().unwrap().counts;
        let (unsent, dropped) = {
            let outbox = self.outbox.lock().unwrap();
            (outbox.unsent(), outbox.dropped)
        };
        BrokerStats {
            published: self.published.load(Ordering::Relaxed),
            received: inbox.delivered,
            duplicates: inbox.duplicates,
            gaps: inbox.gaps,
            lost: inbox.lost,
            unsent,
            dropped,
            malformed: self.malformed.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            nodes: self.presence.lock().unwrap().nodes() as u64,
            connected: self.publishing.load(Ordering::Relaxed)
                && self.subscribed.load(Ordering::Relaxed),
        }
    }

    /// Starts the publishing and subscribing tasks on the server's runtime.
    pub fn start(self: &Arc<Self>, runtime: &tokio::runtime::Handle, local: Arc<dyn Local>) {
        let mut tasks = self.tasks.lock().unwrap();
        tasks.push(runtime.spawn(link::publish(self.clone(), local.clone())));
        tasks.push(runtime.spawn(link::subscribe(self.clone(), local)));
    }

    /// Says goodbye on the bus (other nodes drop this one's members at once), sends what is
    /// still queued for up to `timeout`, and stops the tasks.
    pub async fn finish(&self, timeout: std::time::Duration) {
        self.outbox.lock().unwrap().push_control(&Body::Bye);
        let _ = self.stop.send(true);
        self.wake.notify_one();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(timeout, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// A node id that another node started at the same moment will not share.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish().max(1)
}

impl Broker {
    /// Another node asked for everyone's rooms: the next batch carries a snapshot.
    fn touch_all(&self) {
        self.snapshot_wanted.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}
