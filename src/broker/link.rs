//! The two Redis connections of a node: one publishes (pipelined batches from the outbox), one
//! subscribes (the bus, read in order). Each reconnects with backoff on its own; a connection
//! that cannot reach Redis leaves messages waiting in the outbox, bounded.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::inbox::Action;
use super::wire::{self, Body};
use super::{Broker, Local};

/// Messages per pipeline: large enough to amortise a round trip, small enough to bound the
/// work a failed pipeline repeats.
const BATCH: usize = 512;
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A pipeline, a connect or a subscribe that takes longer than this counts as a failure.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the subscriber checks gaps and leases.
const TICK: Duration = Duration::from_millis(100);

fn beat_every(broker: &Broker) -> Duration {
    (broker.config.lease / 3).max(Duration::from_millis(50))
}

/// Logs a failure to reach Redis once per outage, not once per retry.
struct Outage {
    since: Option<Instant>,
    what: &'static str,
}

impl Outage {
    fn failed(&mut self, url: &str, err: &dyn std::fmt::Display) {
        if self.since.is_none() {
            log::warn!(
                "broker: {} connection to Redis at {url} failed: {err}; retrying with backoff (local rooms keep working, messages for other nodes wait)",
                self.what
            );
            self.since = Some(Instant::now());
        }
    }

    fn recovered(&mut self, broker: &Broker) {
        match self.since.take() {
            Some(since) => {
                broker.reconnects.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "broker: {} connection to Redis is back after {:.1} s",
                    self.what,
                    since.elapsed().as_secs_f64()
                );
            }
            None => log::info!(
                "broker: {} connection to Redis at {} is up",
                self.what,
                broker.config.url
            ),
        }
    }
}

async fn pause(backoff: &mut Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = stop.wait_for(|s| *s) => return false,
    }
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    true
}

/// The publishing task.
pub async fn publish(broker: Arc<Broker>, local: Arc<dyn Local>) {
    let mut stop = broker.stop.subscribe();
    let mut outage = Outage {
        since: None,
        what: "publishing",
    };
    let mut backoff = BACKOFF_FIRST;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    loop {
        let conn = tokio::select! {
            c = broker.client.get_multiplexed_async_connection_with_config(&config) => c,
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                outage.failed(&broker.config.url, &e);
                if !pause(&mut backoff, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        outage.recovered(&broker);
        backoff = BACKOFF_FIRST;
        // Whoever listens learns this node's rooms afresh (it may have been dropped meanwhile).
        broker.publish(&Body::Snapshot {
            counts: local.counts(None),
        });
        broker.publishing.store(true, Ordering::Relaxed);
        *broker.conn.lock().unwrap() = Some(conn.clone());
        let result = pump(&broker, &*local, &mut conn, &mut stop).await;
        *broker.conn.lock().unwrap() = None;
        broker.publishing.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => return,
            Err(e) => outage.failed(&broker.config.url, &e),
        }
    }
}

/// Publishes until the connection fails (an error) or the broker stops (`Ok`).
async fn pump(
    broker: &Broker,
    local: &dyn Local,
    conn: &mut MultiplexedConnection,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> redis::RedisResult<()> {
    let every = beat_every(broker);
    let mut last_beat = Instant::now() - every;
    loop {
        let stopping = *stop.borrow();
        if last_beat.elapsed() >= every {
            let last = broker.outbox.lock().unwrap().sent_upto();
            broker
                .outbox
                .lock()
                .unwrap()
                .push_control(&Body::Beat { last });
            last_beat = Instant::now();
        }
        let dirty: Vec<String> = broker.dirty.lock().unwrap().drain().collect();
        if broker.snapshot_wanted.swap(false, Ordering::Relaxed) {
            broker.publish(&Body::Snapshot {
                counts: local.counts(None),
            });
        } else if !dirty.is_empty() {
            broker.publish(&Body::Presence {
                counts: local.counts(Some(dirty)),
            });
        }
        let batch = broker.outbox.lock().unwrap().batch(BATCH);
        let Some(batch) = batch else {
            if stopping {
                return Ok(());
            }
            tokio::select! {
                _ = broker.wake.notified() => {}
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            continue;
        };
        let mut pipe = redis::pipe();
        for message in &batch.messages {
            pipe.cmd("PUBLISH")
                .arg(&broker.channel)
                .arg(message.as_ref())
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
        broker.outbox.lock().unwrap().sent(batch.upto);
        broker
            .published
            .fetch_add(batch.messages.len() as u64, Ordering::Relaxed);
    }
}

/// The subscribing task.
pub async fn subscribe(broker: Arc<Broker>, local: Arc<dyn Local>) {
    let mut stop = broker.stop.subscribe();
    let mut outage = Outage {
        since: None,
        what: "subscribing",
    };
    let mut backoff = BACKOFF_FIRST;
    loop {
        let connected = tokio::select! {
            c = tokio::time::timeout(REDIS_TIMEOUT, async {
                let mut pubsub = broker.client.get_async_pubsub().await?;
                pubsub.subscribe(&broker.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            }) => c,
            _ = stop.wait_for(|s| *s) => return,
        };
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                outage.failed(&broker.config.url, &e);
                if !pause(&mut backoff, &mut stop).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                outage.failed(&broker.config.url, &"timed out");
                if !pause(&mut backoff, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        outage.recovered(&broker);
        backoff = BACKOFF_FIRST;
        // Silence while this node was cut off proves nothing about the others.
        broker.presence.lock().unwrap().renew_all(Instant::now());
        broker.subscribed.store(true, Ordering::Relaxed);
        // Everyone answers with a snapshot: presence is rebuilt from scratch.
        broker.outbox.lock().unwrap().push_control(&Body::Hello);
        broker.wake.notify_one();
        let ended = listen(&broker, &*local, pubsub, &mut stop).await;
        broker.subscribed.store(false, Ordering::Relaxed);
        match ended {
            None => return,
            Some(why) => outage.failed(&broker.config.url, &why),
        }
    }
}

/// Reads the bus until the connection ends (returns why) or the broker stops (`None`).
async fn listen(
    broker: &Broker,
    local: &dyn Local,
    pubsub: redis::aio::PubSub,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<String> {
    let mut stream = pubsub.into_on_message();
    let mut tick = tokio::time::interval(TICK);
    let lease = broker.config.lease;
    let mut own_echo = Instant::now();
    let mut actions = Vec::new();
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => {
                    let data = Bytes::copy_from_slice(msg.get_payload_bytes());
                    if receive(broker, data, &mut actions) {
                        own_echo = Instant::now();
                    }
                }
                None => return Some("the subscription ended".into()),
            },
            _ = tick.tick() => {
                let now = Instant::now();
                broker.inbox.lock().unwrap().tick(now, &mut actions);
                for node in broker.presence.lock().unwrap().expire(now, lease) {
                    log::warn!(
                        "broker: node {node:016x} not heard from for {:.1} s (its lease); its members no longer count",
                        lease.as_secs_f64()
                    );
                }
                // Our own beats come back through Redis: when they stop while we can publish,
                // this subscription is dead even if the socket looks open.
                if broker.publishing.load(Ordering::Relaxed) && own_echo.elapsed() > lease {
                    return Some(format!("no message through Redis for {:.1} s", lease.as_secs_f64()));
                }
            }
            _ = stop.wait_for(|s| *s) => return None,
        }
        apply(broker, local, &mut actions);
    }
}

/// Reads one bus message; true if it is this node's own echo.
fn receive(broker: &Broker, data: Bytes, actions: &mut Vec<Action>) -> bool {
    let msg = match wire::decode(data) {
        Ok(msg) => msg,
        Err(why) => {
            if broker.malformed.fetch_add(1, Ordering::Relaxed) == 0 {
                log::warn!("broker: ignoring a message on {} that is not a roomcast message ({why}); is another program publishing there?", broker.channel);
            }
            return false;
        }
    };
    if msg.origin == broker.node {
        return true;
    }
    let now = Instant::now();
    broker.presence.lock().unwrap().heard(msg.origin, now);
    match msg.body {
        body if body.is_sequenced() => {
            broker
                .inbox
                .lock()
                .unwrap()
                .accept(now, msg.origin, msg.seq, body, actions);
        }
        Body::Beat { last } => broker
            .inbox
            .lock()
            .unwrap()
            .beat(now, msg.origin, last, actions),
        Body::Nack { target, from, to } if target == broker.node => {
            broker.outbox.lock().unwrap().replay(from, to);
            broker.wake.notify_one();
        }
        Body::Gone { upto } => broker.inbox.lock().unwrap().gone(msg.origin, upto, actions),
        Body::Hello => broker.touch_all(),
        Body::Bye if broker.presence.lock().unwrap().remove(msg.origin) => {
            log::info!("broker: node {:016x} left", msg.origin);
        }
        _ => {}
    }
    false
}

fn apply(broker: &Broker, local: &dyn Local, actions: &mut Vec<Action>) {
    let now = Instant::now();
    for action in actions.drain(..) {
        match action {
            Action::Deliver { origin, body } => match body {
                Body::Room { room, frame } => {
                    local.deliver(Some(&room), frame.into_outgoing());
                }
                Body::All { frame } => {
                    local.deliver(None, frame.into_outgoing());
                }
                Body::Chat(chat) => local.deliver_chat(chat),
                Body::Presence { counts } => broker
                    .presence
                    .lock()
                    .unwrap()
                    .apply(origin, counts, false, now),
                Body::Snapshot { counts } => broker
                    .presence
                    .lock()
                    .unwrap()
                    .apply(origin, counts, true, now),
                _ => {}
            },
            Action::Nack { target, from, to } => {
                broker
                    .outbox
                    .lock()
                    .unwrap()
                    .push_control(&Body::Nack { target, from, to });
                broker.wake.notify_one();
            }
        }
    }
}
