//! The `fanout` scenario: many /sub connections, one /pub connection that keeps `window`
//! messages in flight, a message being complete once every subscriber has received it.
//!
//! With `--protocol chat` every connection (on `/`) enters room `bench`, the publisher last:
//! the publisher is a member too, so the server delivers each message to subs + 1 connections
//! (the publisher's own copy is read and not counted); `deliveries` are the subscribers'.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, json};
use tokio::time::{sleep, sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::chatproto::{self, Proto, Received};
use crate::conn::{self, ConnectOpts, Target, Ws};
use crate::flow::Flow;
use crate::payload::{Header, PayloadWriter};
use crate::peer::{CLOSE_GRACE, DRAIN_NS, STALL_NS};
use crate::rawws;
use crate::reading::{self, Done, Next, NextRaw};
use crate::stats::{self, Clock, Recorder, Window, add};
use crate::{Outcome, Timing};

pub struct FanoutArgs {
    pub proto: Proto,
    pub subs: usize,
    pub window: u32,
    pub size: usize,
}

struct Shared {
    proto: Proto,
    clock: Clock,
    window: Window,
    drain_end_ns: u64,
    rec: Recorder,
    /// The publisher's messages in flight.
    flow: Flow,
    subs_alive: Cell<u32>,
    published_win: Cell<u64>,
    deliveries_win: Cell<u64>,
    abandoned: Cell<u64>,
    /// Protocol frames that carry no payload (chat: `enter`, `heartbeat`, `out`).
    skipped: Cell<u64>,
    stopped: Cell<bool>,
    done: Done,
}

impl Shared {
    fn check_done(&self) {
        if self.stopped.get() && self.flow.is_idle() {
            self.done.set();
        }
    }
}

pub async fn run(a: FanoutArgs, target: Target, timing: Timing, server_pid: Option<u32>, clock: Clock) -> Outcome {
    let (sub_path, pub_path) = match a.proto {
        Proto::Raw => ("/sub", "/pub"),
        Proto::Chat => ("/", "/"),
    };
    let rec = Recorder::new();
    let (mut subs, mut connect_errors) = conn::open_raw(&target, sub_path, a.subs, &rec, "connect subscriber").await;
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
        flow: Flow::new(STALL_NS),
        subs_alive: Cell::new(subs.len() as u32),
        published_win: Cell::new(0),
        deliveries_win: Cell::new(0),
        abandoned: Cell::new(0),
        skipped: Cell::new(0),
        stopped: Cell::new(false),
        done: Done::default(),
    });
    let mut tasks: Vec<_> = subs.into_iter().map(|ws| tokio::task::spawn_local(subscriber(sh.clone(), ws))).collect();
    tasks.push(tokio::task::spawn_local(publish(sh.clone(), publisher, a.window, a.size)));
    eprintln!("loadgen: warmup {}s, measuring {}s", timing.warmup, timing.duration);

    stats::sample_window(clock, &window, server_pid, &mut out).await;

    let drain = clock.at(sh.drain_end_ns);
    sh.done.wait_until(drain).await;
    let lost = sh.flow.undelivered_sent_in(&window);
    reading::join_until(tasks, drain + CLOSE_GRACE).await;
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

/// A subscriber reads with the bare client: the load generator reads every delivery, so its
/// cost per frame bounds what the fan-out can measure (with a WebSocket library's message
/// objects it was the limit at socketify's rate).
async fn subscriber(sh: Rc<Shared>, mut ws: rawws::Ws) {
    let clock = sh.clock;
    let drain = sleep_until(clock.at(sh.drain_end_ns));
    tokio::pin!(drain);
    // Frames that came in one read arrived together: the clock is read once per read.
    let (mut reads, mut now) = (u64::MAX, 0);
    let failure = loop {
        let f = match reading::next_raw(&mut ws, &sh.done, drain.as_mut()).await {
            NextRaw::Frame(f) => f,
            NextRaw::Over => break None,
            NextRaw::Lost(e) => break Some(e),
        };
        if ws.reads() != reads {
            reads = ws.reads();
            now = clock.now_ns();
        }
        if !f.fin {
            sh.rec.error("subscriber", "a fragmented message (not expected from a server at these sizes)".to_string());
            continue;
        }
        let h = match chatproto::decode(sh.proto, ws.payload(&f)) {
            Received::Payload(h) => h,
            Received::Skip => {
                add(&sh.skipped, 1);
                continue;
            }
            Received::Bad(e) => {
                sh.rec.error("subscriber", e);
                continue;
            }
        };
        if sh.window.contains(h.sent_ns) {
            add(&sh.deliveries_win, 1);
            sh.rec.latency_ns(now.saturating_sub(h.sent_ns));
        }
        if sh.flow.delivered(h.seq) {
            sh.check_done();
        }
    };
    if let Some(e) = failure {
        sh.subs_alive.set(sh.subs_alive.get().saturating_sub(1));
        sh.rec.error("subscriber", e);
        return;
    }
    let _ = timeout(CLOSE_GRACE, ws.close()).await;
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
        let (given_up, next_stall) = sh.flow.abandon_old(now);
        add(&sh.abandoned, given_up);
        let n = win.saturating_sub(sh.flow.incomplete());
        if n == 0 {
            let give_up = next_stall.unwrap_or(u64::MAX);
            let _ = timeout_at(clock.at(give_up.min(sh.window.end_ns)), sh.flow.progress.notified()).await;
            continue;
        }
        for _ in 0..n {
            let alive = sh.subs_alive.get();
            if alive == 0 {
                return Err("no subscriber left".into());
            }
            let ts = clock.now_ns();
            let seq = sh.flow.push(ts, alive);
            if sh.window.contains(ts) {
                add(&sh.published_win, 1);
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
        match reading::next_frame(stream, &sh.done, drain.as_mut()).await {
            Next::Frame(_) => {}
            Next::Over => return true,
            Next::Lost(e) => {
                sh.rec.error("publisher", e);
                return false;
            }
        }
    }
}
