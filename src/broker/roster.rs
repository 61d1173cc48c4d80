//! The chat roster in Redis (`chat/roster.rs`): membership, who is online on which node, and
//! kept messages, shared by every node and kept across restarts of all of them. Each call is
//! one Lua script (`lua/`), so Redis applies it atomically: a message kept for a user and that
//! user entering on another node can never interleave. Runs on the publishing connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use redis::{FromRedisValue, Script};

use super::Broker;
use crate::chat::offline::{Bounds, OfflineCounts};
use crate::chat::roster::{Arrival, Departure, Num, Roster, Vanished};
use crate::frames::Text;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(include_str!("lua/common.lua"), include_str!($file)))
    };
}

/// How long a roster call waits for Redis (to connect again, or to answer).
const WAIT: Duration = Duration::from_secs(3);

pub struct RedisRoster {
    broker: Arc<Broker>,
    bounds: Bounds,
    arrive: Script,
    depart: Script,
    leave: Script,
    keep: Script,
    tick: Script,
    /// The cluster's counters, as of the last tick.
    counts: Mutex<OfflineCounts>,
    failures: AtomicU64,
    /// A call failed since the last successful one (logged once).
    outage: AtomicBool,
    /// A call failed, or Redis lost this node's entries: the next tick re-registers them.
    resync: AtomicBool,
    /// The users connected through this node, (room, uid) -> name, as this node knows them
    /// whatever Redis answered: what a re-registration sends.
    local: Mutex<HashMap<(String, String), String>>,
    /// Arrivals and departures share it; a re-registration takes it alone, so the list it
    /// sends cannot be overtaken by a departure it does not contain.
    gate: tokio::sync::RwLock<()>,
}

type Version = (u64, u64);

fn num(count: usize, (generation, counter): Version) -> Num {
    Num {
        count,
        version: (generation << 32) | (counter & 0xffff_ffff),
    }
}

fn now() -> (String, u64, String) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ms = t.as_millis() as u64;
    (ms.to_string(), ms, t.as_secs().to_string())
}

impl RedisRoster {
    pub fn new(broker: Arc<Broker>, bounds: Bounds) -> Self {
        Self {
            broker,
            bounds,
            arrive: script!("lua/arrive.lua"),
            depart: script!("lua/depart.lua"),
            leave: script!("lua/leave.lua"),
            keep: script!("lua/keep.lua"),
            tick: script!("lua/tick.lua"),
            counts: Mutex::new(OfflineCounts::default()),
            failures: AtomicU64::new(0),
            outage: AtomicBool::new(false),
            resync: AtomicBool::new(false),
            local: Mutex::new(HashMap::new()),
            gate: tokio::sync::RwLock::new(()),
        }
    }

    fn node(&self) -> String {
        format!("{:016x}", self.broker.node)
    }

    fn ns(&self) -> &str {
        &self.broker.config.namespace
    }

    /// Runs a script on the publishing connection. Fails at once while Redis is away: the
    /// room's lock is held meanwhile, and local chat must keep going. A failure is counted,
    /// logged once per outage, and makes the next tick re-register this node's users.
    async fn call<T: FromRedisValue>(
        &self,
        script: &Script,
        args: &[&str],
        what: &str,
    ) -> Option<T> {
        let conn = self.broker.conn.lock().unwrap().clone();
        let error = match conn {
            None => "Redis is not connected".to_owned(),
            Some(mut conn) => {
                let mut call = script.prepare_invoke();
                for arg in args {
                    call.arg(*arg);
                }
                match tokio::time::timeout(WAIT, call.invoke_async::<T>(&mut conn)).await {
                    Ok(Ok(value)) => {
                        if self.outage.swap(false, Ordering::Relaxed) {
                            log::warn!("chat: the roster in Redis answers again");
                        }
                        return Some(value);
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {} s", WAIT.as_secs()),
                }
            }
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.resync.store(true, Ordering::Relaxed);
        if !self.outage.swap(true, Ordering::Relaxed) {
            log::error!(
                "chat: could not {what} in Redis ({error}); local chat goes on, but messages sent while Redis is away are not kept for members away (counted in store_failures)"
            );
        }
        None
    }
}

impl Roster for RedisRoster {
    fn arrive<'a>(&'a self, room: &'a str, uid: &'a str, name: &'a str) -> BoxFuture<'a, Arrival> {
        Box::pin(async move {
            let _gate = self.gate.read().await;
            self.local
                .lock()
                .unwrap()
                .insert((room.to_owned(), uid.to_owned()), name.to_owned());
            let (now_ms, ms, now_s) = now();
            let cutoff = ms
                .saturating_sub(self.bounds.ttl.as_millis() as u64)
                .to_string();
            let node = self.node();
            let lease = (self.broker.config.lease.as_millis() as u64).to_string();
            let args = [
                self.ns(),
                room,
                uid,
                name,
                &node,
                &now_ms,
                &cutoff,
                &now_s,
                &lease,
            ];
            let what = "take the messages kept for a user entering (they stay kept)";
            match self
                .call::<(usize, Version, Vec<String>)>(&self.arrive, &args, what)
                .await
            {
                Some((count, version, kept)) => Arrival {
                    kept: kept.into_iter().map(Text::from).collect(),
                    num: num(count, version),
                },
                None => Arrival {
                    kept: Vec::new(),
                    // Version 0 never replaces the count the room has.
                    num: Num::default(),
                },
            }
        })
    }

    fn depart<'a>(&'a self, room: &'a str, uid: &'a str) -> BoxFuture<'a, Departure> {
        Box::pin(async move {
            let _gate = self.gate.read().await;
            self.forget_local(room, uid);
            let (now_ms, _, now_s) = now();
            let node = self.node();
            let args = [self.ns(), room, uid, &node, &now_ms, &now_s];
            let what = "record a user leaving (their node's lease will)";
            match self
                .call::<(usize, Version, u8)>(&self.depart, &args, what)
                .await
            {
                Some((count, version, gone)) => Departure {
                    gone: gone == 1,
                    num: num(count, version),
                },
                None => Departure {
                    gone: false,
                    // Version 0 never replaces the count the room has.
                    num: Num::default(),
                },
            }
        })
    }

    fn leave<'a>(&'a self, room: &'a str, uid: &'a str) -> BoxFuture<'a, Departure> {
        Box::pin(async move {
            let _gate = self.gate.read().await;
            self.forget_local(room, uid);
            let (_, _, now_s) = now();
            let args = [self.ns(), room, uid, &now_s];
            let what = "end a membership";
            match self
                .call::<(usize, Version)>(&self.leave, &args, what)
                .await
            {
                Some((count, version)) => Departure {
                    gone: true,
                    num: num(count, version),
                },
                None => Departure {
                    gone: true,
                    // Version 0 never replaces the count the room has.
                    num: Num::default(),
                },
            }
        })
    }

    fn keep<'a>(&'a self, room: &'a str, frame: Text) -> BoxFuture<'a, Vec<Arc<str>>> {
        Box::pin(async move {
            let (now_ms, ms, _) = now();
            let ttl = self.bounds.ttl.as_millis() as u64;
            let cutoff = ms.saturating_sub(ttl).to_string();
            // Lists are cleaned when their membership ends (counted there); the expiry is only a
            // backstop for rooms that fall silent, so it must come well after that.
            let backstop = ttl.saturating_mul(2).saturating_add(60_000);
            let (ttl, limit) = (backstop.to_string(), self.bounds.limit.to_string());
            let args = [
                self.ns(),
                room,
                &now_ms,
                &cutoff,
                &ttl,
                &limit,
                frame.as_str(),
            ];
            let what = "keep a message for the members away (it is not kept)";
            let Some((away, dropped)) = self
                .call::<(Vec<String>, u64)>(&self.keep, &args, what)
                .await
            else {
                return Vec::new();
            };
            if dropped > 0 {
                log::info!(
                    "chat: {dropped} offline queue(s) in room {room:?} were full ({} messages, offline_limit); dropped the oldest",
                    self.bounds.limit
                );
            }
            away.into_iter().map(Arc::from).collect()
        })
    }

    fn counts(&self) -> OfflineCounts {
        OfflineCounts {
            store_failures: self.failures.load(Ordering::Relaxed),
            ..*self.counts.lock().unwrap()
        }
    }

    fn remembers(&self, _room: &str) -> bool {
        false // Redis does; this node's room can go with its last connection
    }

    fn forget_local(&self, room: &str, uid: &str) {
        self.local
            .lock()
            .unwrap()
            .remove(&(room.to_owned(), uid.to_owned()));
    }

    fn tick(&self) -> BoxFuture<'_, Vec<Vanished>> {
        Box::pin(async move {
            if self.broker.conn.lock().unwrap().is_none() {
                // Not connected (yet, or any more): the broker logs that; ticks resume after.
                return Vec::new();
            }
            let resync = self.resync.swap(false, Ordering::Relaxed);
            // Re-registering: nothing arrives or departs here until Redis has the list.
            let _gate = if resync {
                Some(self.gate.write().await)
            } else {
                None
            };
            let local: Vec<((String, String), String)> = if resync {
                let local = self.local.lock().unwrap();
                local.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            } else {
                Vec::new()
            };
            let (now_ms, _, now_s) = now();
            let node = self.node();
            let lease = (self.broker.config.lease.as_millis() as u64).to_string();
            let mut args: Vec<&str> = vec![self.ns(), &node, &now_ms, &lease, &now_s];
            args.push(if resync { "1" } else { "0" });
            for ((room, uid), name) in &local {
                args.extend([room.as_str(), uid.as_str(), name.as_str()]);
            }
            type Gone = (String, String, String, usize, Version);
            let what = "renew this node's lease";
            let Some((lost, vanished, stats)) = self
                .call::<(u8, Vec<Gone>, HashMap<String, i64>)>(&self.tick, &args, what)
                .await
            else {
                return Vec::new();
            };
            if lost == 1 {
                self.resync.store(true, Ordering::Relaxed);
            }
            let get = |k: &str| stats.get(k).copied().unwrap_or(0).max(0) as u64;
            *self.counts.lock().unwrap() = OfflineCounts {
                kept: get("kept"),
                delivered: get("delivered"),
                dropped_full: get("dropped_full"),
                dropped_expired: get("dropped_expired"),
                waiting: get("waiting"),
                store_failures: self.failures.load(Ordering::Relaxed),
            };
            vanished
                .into_iter()
                .map(|(room, uid, name, count, version)| Vanished {
                    room,
                    uid,
                    name,
                    num: num(count, version),
                })
                .collect()
        })
    }
}
