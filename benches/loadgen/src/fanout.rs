//! The `fanout` scenario: many /sub connections, one /pub connection that keeps `window`
//! messages in flight, a message being complete once every subscriber has received it.
//!
//! With `--protocol chat` every connection (on `/`) enters room `bench`, the publisher last:
//! the publisher is a member too, so the server delivers each message to subs + 1 connections
//! (the publisher's own copy is read and not counted); `deliveries` are the subscribers'.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, json};
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::chatproto::{self, Proto, Received};
use crate::conn::{self, ConnectOpts, Target, Ws};
use crate::payload::{self, Header, PayloadWriter};
use crate::peer::{CLOSE_GRACE, DRAIN_NS, STALL_NS};
use crate::stats::{Clock, CpuMark, Recorder, Window};
use crate::{Outcome, Timing};

pub struct FanoutArgs {
    pub proto: Proto,
    pub subs: usize,
    pub window: u32,
    pub size: usize,
}

/// A published message still missing some deliveries (or complete, behind one that is).
struct Entry {
    sent_ns: u64,
    remaining: u32,
    in_window: bool,
    abandoned: bool,
}

struct Shared {
    proto: Proto,
    clock: Clock,
    window: Window,
    drain_end_ns: u64,
    rec: Recorder,
    /// Messages from sequence number `base` on; complete ones are popped from the front.
    ring: RefCell<VecDeque<Entry>>,
    base: Cell<u64>,
    /// Entries neither complete nor abandoned: what counts against the publisher's window.
    incomplete: Cell<u32>,
    /// Entries before this sequence number are complete or abandoned.
    live_from: Cell<u64>,
    subs_alive: Cell<u32>,
    published_win: Cell<u64>,
    deliveries_win: Cell<u64>,
    abandoned: Cell<u64>,
    /// Protocol frames that carry no payload (chat: `enter`, `heartbeat`, `out`).
    skipped: Cell<u64>,
    progress: Notify,
    stopped: Cell<bool>,
    done: Cell<bool>,
    done_notify: Notify,
}

impl Shared {
    fn delivered(&self, seq: u64) {
        let mut ring = self.ring.borrow_mut();
        let Some(idx) = seq.checked_sub(self.base.get()) else {
            return;
        };
        let Some(e) = ring.get_mut(idx as usize) else {
            return;
        };
        if e.remaining == 0 {
            return;
        }
        e.remaining -= 1;
        if e.remaining > 0 {
            return;
        }
        if !e.abandoned {
            self.incomplete.set(self.incomplete.get() - 1);
            self.progress.notify_one();
        }
        while ring.front().is_some_and(|e| e.remaining == 0) {
            ring.pop_front();
            self.base.set(self.base.get() + 1);
        }
        let empty = ring.is_empty();
        drop(ring);
        if empty {
            self.check_done();
        }
    }

    /// Gives up on entries incomplete for STALL_NS (they stop counting against the window but
    /// may still complete); returns the send time of the oldest entry still awaited.
    fn abandon_old(&self, now: u64) -> Option<u64> {
        let mut ring = self.ring.borrow_mut();
        let base = self.base.get();
        let mut seq = self.live_from.get().max(base);
        let mut oldest = None;
        while let Some(e) = ring.get_mut((seq - base) as usize) {
            if e.remaining > 0 && !e.abandoned {
                if e.sent_ns + STALL_NS > now {
                    oldest = Some(e.sent_ns);
                    break;
                }
                e.abandoned = true;
                self.incomplete.set(self.incomplete.get() - 1);
                self.abandoned.set(self.abandoned.get() + 1);
            }
            seq += 1;
        }
        self.live_from.set(seq);
        oldest
    }

    fn check_done(&self) {
        if !self.done.get() && self.stopped.get() && self.ring.borrow().is_empty() {
            self.done.set(true);
            self.done_notify.notify_waiters();
        }
    }
}

pub async fn run(a: FanoutArgs, target: Target, timing: Timing, server_pid: Option<u32>, clock: Clock) -> Outcome {
    let (sub_path, pub_path) = match a.proto {
        Proto::Raw => ("/sub", "/pub"),
        Proto::Chat => ("/", "/"),
    };
    let rec = Recorder::new();
    let (mut subs, mut connect_errors) =
        conn::open_traffic(&target, sub_path, a.subs, a.size, &rec, "connect subscriber").await;
    eprintln!("loadgen: {} of {} subscribers connected", subs.len(), a.subs);
    if a.proto == Proto::Chat && !subs.is_empty() {
        let (entered, failed) = chatproto::enter_all(subs, "s", "bench", &rec).await;
        eprintln!("loadgen: {} subscribers entered room bench", entered.len());
        subs = entered;
        connect_errors += failed;
    }
    let mut out = Map::new();
    out.insert("protocol".into(), json!(a.proto.name()));
    out.insert("subs".into(), json!(a.subs));
    out.insert("subs_ok".into(), json!(subs.len()));
    out.insert("window".into(), json!(a.window));
    out.insert("size".into(), json!(a.size));
    let publisher = if subs.is_empty() {
        None
    } else {
        if a.proto == Proto::Raw {
            // Let the server register every subscriber in the room before publishing.
            sleep(Duration::from_millis(500)).await;
        }
        let connected = conn::connect(&target, pub_path, conn::traffic_config(a.size), ConnectOpts::default()).await;
        let entered = match (connected, a.proto) {
            (Ok(mut ws), Proto::Chat) => chatproto::enter(&mut ws, "pub", "bench").await.map(|()| ws),
            (r, _) => r,
        };
        match entered {
            Ok(ws) => Some(ws),
            Err(e) => {
                connect_errors += 1;
                rec.error("publisher", e);
                None
            }
        }
    };
    out.insert("connect_errors".into(), json!(connect_errors));
    let Some(publisher) = publisher else {
        rec.fill(&mut out);
        return Outcome { out, connected: false };
    };

    let window = Window::after_warmup(clock.now_ns(), timing.warmup, timing.duration);
    let sh = Rc::new(Shared {
        proto: a.proto,
        clock,
        window,
        drain_end_ns: window.end_ns + DRAIN_NS,
        rec,
        ring: RefCell::new(VecDeque::with_capacity(1024)),
        base: Cell::new(0),
        incomplete: Cell::new(0),
        live_from: Cell::new(0),
        subs_alive: Cell::new(subs.len() as u32),
        published_win: Cell::new(0),
        deliveries_win: Cell::new(0),
        abandoned: Cell::new(0),
        skipped: Cell::new(0),
        progress: Notify::new(),
        stopped: Cell::new(false),
        done: Cell::new(false),
        done_notify: Notify::new(),
    });
    let mut tasks: Vec<_> = subs.into_iter().map(|ws| tokio::task::spawn_local(subscriber(sh.clone(), ws))).collect();
    tasks.push(tokio::task::spawn_local(publish(sh.clone(), publisher, a.window, a.size)));
    eprintln!("loadgen: warmup {}s, measuring {}s", timing.warmup, timing.duration);

    sleep_until(clock.at(window.start_ns)).await;
    let mark = CpuMark::take(server_pid);
    sleep_until(clock.at(window.end_ns)).await;
    mark.fill_since(server_pid, &mut out);

    let drain = clock.at(sh.drain_end_ns);
    while !sh.done.get() {
        let notified = sh.done_notify.notified();
        if timeout_at(drain, notified).await.is_err() {
            break;
        }
    }
    let lost = sh.ring.borrow().iter().filter(|e| e.in_window && e.remaining > 0).count();
    for t in tasks {
        let _ = timeout_at(drain + CLOSE_GRACE, t).await;
    }
    let (published, delivered) = (sh.published_win.get(), sh.deliveries_win.get());
    out.insert("msgs_per_s".into(), json!(window.rate(published)));
    out.insert("deliveries_per_s".into(), json!(window.rate(delivered)));
    out.insert("msgs".into(), json!(published));
    out.insert("deliveries".into(), json!(delivered));
    out.insert("lost".into(), json!(lost));
    out.insert("abandoned".into(), json!(sh.abandoned.get()));
    if a.proto == Proto::Chat {
        out.insert("skipped_frames".into(), json!(sh.skipped.get()));
    }
    out.insert("measured_s".into(), json!(window.secs()));
    sh.rec.fill(&mut out);
    Outcome { out, connected: true }
}

async fn subscriber(sh: Rc<Shared>, mut ws: Ws) {
    let clock = sh.clock;
    let drain = sleep_until(clock.at(sh.drain_end_ns));
    tokio::pin!(drain);
    let failure = loop {
        if sh.done.get() {
            break None;
        }
        let notified = sh.done_notify.notified();
        let msg = tokio::select! {
            biased;
            m = ws.next() => m,
            _ = notified => continue,
            _ = &mut drain => break None,
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => break Some(e.to_string()),
            None => break Some("connection closed by server".to_string()),
        };
        let Some(data) = payload::data_of(&msg) else {
            if let Message::Close(f) = msg {
                break Some(format!("server sent close {f:?}"));
            }
            continue;
        };
        let now = clock.now_ns();
        let h = match chatproto::decode(sh.proto, data) {
            Received::Payload(h) => h,
            Received::Skip => {
                sh.skipped.set(sh.skipped.get() + 1);
                continue;
            }
            Received::Bad(e) => {
                sh.rec.error("subscriber", e);
                continue;
            }
        };
        if sh.window.contains(h.sent_ns) {
            sh.deliveries_win.set(sh.deliveries_win.get() + 1);
            sh.rec.latency_ns(now.saturating_sub(h.sent_ns));
        }
        sh.delivered(h.seq);
    };
    if let Some(e) = failure {
        sh.subs_alive.set(sh.subs_alive.get().saturating_sub(1));
        sh.rec.error("subscriber", e);
        return;
    }
    let _ = timeout(CLOSE_GRACE, async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

async fn publish(sh: Rc<Shared>, ws: Ws, win: u32, size: usize) {
    let (mut sink, mut stream) = ws.split();
    let writer = async {
        if let Err(e) = publish_loop(&sh, &mut sink, win, size).await {
            sh.rec.error("publisher", e);
        }
        sh.stopped.set(true);
        sh.check_done();
    };
    let ok = tokio::join!(writer, drain_publisher(&sh, &mut stream)).1;
    if ok {
        let _ = timeout(CLOSE_GRACE, async {
            let _ = sink.close().await;
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }
}

async fn publish_loop(sh: &Shared, sink: &mut SplitSink<Ws, Message>, win: u32, size: usize) -> Result<(), String> {
    let clock = sh.clock;
    let mut pw = match sh.proto {
        Proto::Raw => PayloadWriter::new(size),
        Proto::Chat => PayloadWriter::framed(size, chatproto::MESSAGE_PREFIX, chatproto::MESSAGE_SUFFIX),
    };
    loop {
        let now = clock.now_ns();
        if now >= sh.window.end_ns {
            return Ok(());
        }
        let oldest = sh.abandon_old(now);
        let n = win.saturating_sub(sh.incomplete.get());
        if n == 0 {
            let give_up = oldest.map_or(u64::MAX, |sent| sent + STALL_NS);
            let _ = timeout_at(clock.at(give_up.min(sh.window.end_ns)), sh.progress.notified()).await;
            continue;
        }
        for _ in 0..n {
            let alive = sh.subs_alive.get();
            if alive == 0 {
                return Err("no subscriber left".into());
            }
            let ts = clock.now_ns();
            let in_window = sh.window.contains(ts);
            let seq = {
                let mut ring = sh.ring.borrow_mut();
                ring.push_back(Entry { sent_ns: ts, remaining: alive, in_window, abandoned: false });
                sh.base.get() + ring.len() as u64 - 1
            };
            sh.incomplete.set(sh.incomplete.get() + 1);
            if in_window {
                sh.published_win.set(sh.published_win.get() + 1);
            }
            let msg = pw.message(Header { sender: 0, seq, sent_ns: ts });
            sink.feed(msg).await.map_err(|e| e.to_string())?;
        }
        sink.flush().await.map_err(|e| e.to_string())?;
    }
}

/// Keeps reading the publisher's connection: the server sends it pings, and with the chat
/// protocol its own copy of every message (read and dropped, not counted).
async fn drain_publisher(sh: &Shared, stream: &mut SplitStream<Ws>) -> bool {
    let drain = sleep_until(sh.clock.at(sh.drain_end_ns));
    tokio::pin!(drain);
    loop {
        if sh.done.get() {
            return true;
        }
        let notified = sh.done_notify.notified();
        let msg = tokio::select! {
            biased;
            m = stream.next() => m,
            _ = notified => continue,
            _ = &mut drain => return true,
        };
        match msg {
            Some(Ok(Message::Close(f))) => {
                sh.rec.error("publisher", format!("server sent close {f:?}"));
                return false;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                sh.rec.error("publisher", e);
                return false;
            }
            None => {
                sh.rec.error("publisher", "connection closed by server");
                return false;
            }
        }
    }
}
