//! The `echo` and `chat` scenarios: every connection keeps `window` of its own messages in
//! flight (a message completes when its sender gets it back) and counts what it receives.
//! With `--protocol chat` the chat members first `enter` the room and speak JSON frames.
//! Echo connections read and write with the bare client (`raw`), chat members with the
//! WebSocket library.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, json};
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::chatproto::{self, Proto, Received};
use crate::conn::{self, Target, Ws};
use crate::payload::{self, Header, PayloadWriter};
use crate::reading::{self, Done, Next};
use crate::stats::{self, Clock, Recorder, Window, add};
use crate::{Outcome, Timing};

mod raw;

/// A message not complete this long after it was sent stops counting against the window
/// (it may still arrive and be counted); so a lost message does not shrink the window for good.
pub const STALL_NS: u64 = 1_000_000_000;
/// How long after the window messages sent in it may still arrive.
pub const DRAIN_NS: u64 = 2_000_000_000;
/// Time allowed for the closing handshake of each connection at the end.
pub const CLOSE_GRACE: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Echo,
    Chat,
}

pub struct PeerArgs {
    pub kind: Kind,
    pub proto: Proto,
    pub conns: usize,
    pub window: u32,
    pub size: usize,
    /// Send a connection's whole window together, once all of it has come back (the burst
    /// shape), instead of a message as soon as one comes back (the spread shape).
    pub burst: bool,
}

struct Shared {
    kind: Kind,
    proto: Proto,
    clock: Clock,
    window: Window,
    drain_end_ns: u64,
    rec: Recorder,
    size: usize,
    win: u32,
    burst: bool,
    /// Live connections: how many receive each chat message.
    members: Cell<u64>,
    sent_all: Cell<u64>,
    expected_all: Cell<u64>,
    recv_all: Cell<u64>,
    sent_win: Cell<u64>,
    expected_win: Cell<u64>,
    recv_win: Cell<u64>,
    own_win: Cell<u64>,
    abandoned: Cell<u64>,
    /// Protocol frames that carry no payload (chat: `enter`, `heartbeat`, `out`).
    skipped: Cell<u64>,
    writers: Cell<usize>,
    done: Done,
}

impl Shared {
    /// Receivers of one message sent now.
    fn fan(&self) -> u64 {
        match self.kind {
            Kind::Echo => 1,
            Kind::Chat => self.members.get(),
        }
    }

    /// A message sent at `ts`: counted, with the copies of it expected back.
    fn count_sent(&self, ts: u64) {
        let fan = self.fan();
        add(&self.sent_all, 1);
        add(&self.expected_all, fan);
        if self.window.contains(ts) {
            add(&self.sent_win, 1);
            add(&self.expected_win, fan);
        }
    }

    /// A message `h` received at `now`; `own`: the receiving connection sent it.
    fn count_received(&self, h: &Header, own: bool, now: u64) {
        add(&self.recv_all, 1);
        if self.window.contains(h.sent_ns) {
            add(&self.recv_win, 1);
            if own {
                add(&self.own_win, 1);
            }
            self.rec.latency_ns(now.saturating_sub(h.sent_ns));
        }
    }

    /// Everything is over once no one sends any more and every expected copy arrived.
    fn check_done(&self) {
        if self.writers.get() == 0 && self.recv_all.get() >= self.expected_all.get() {
            self.done.set();
        }
    }
}

/// Per-connection send window, shared by its reader and writer halves.
struct Flow {
    id: u32,
    /// (sequence number, send time) of own messages in flight, oldest first.
    in_flight: RefCell<VecDeque<(u64, u64)>>,
    wake: Notify,
}

impl Flow {
    fn new(id: u32, window: u32) -> Self {
        Flow { id, in_flight: RefCell::new(VecDeque::with_capacity(window as usize)), wake: Notify::new() }
    }

    /// An own message came back: it leaves the window (unless it was already given up on).
    fn returned(&self, seq: u64) {
        let mut q = self.in_flight.borrow_mut();
        // Almost always the front; a search copes with reordering servers.
        if let Some(pos) = q.iter().position(|&(s, _)| s == seq) {
            q.remove(pos);
            self.wake.notify_one();
        }
    }

    /// Gives up on messages in flight for STALL_NS; returns how many.
    fn abandon_old(&self, now: u64) -> u64 {
        let mut q = self.in_flight.borrow_mut();
        let mut n = 0;
        while q.front().is_some_and(|&(_, sent)| sent + STALL_NS <= now) {
            q.pop_front();
            n += 1;
        }
        n
    }
}

pub async fn run(a: PeerArgs, target: Target, timing: Timing, server_pid: Option<u32>, clock: Clock) -> Outcome {
    // The chat protocol is not routed by path: the preset accepts it on every path.
    let proto = if a.kind == Kind::Echo { Proto::Raw } else { a.proto };
    let path = match (a.kind, proto) {
        (Kind::Echo, _) => "/echo",
        (Kind::Chat, Proto::Raw) => "/chat",
        (Kind::Chat, Proto::Chat) => "/",
    };
    let rec = Recorder::new();
    // Echo connections use the bare client; chat members the WebSocket library.
    let (mut wss, raws, mut connect_errors) = if a.kind == Kind::Echo {
        let (raws, failed) = conn::open_raw(&target, path, a.conns, &rec, "connect").await;
        (Vec::new(), raws, failed)
    } else {
        let (wss, failed) = conn::open_traffic(&target, path, a.conns, a.size, &rec, "connect").await;
        (wss, Vec::new(), failed)
    };
    eprintln!("loadgen: {} of {} connections to {path} open", wss.len() + raws.len(), a.conns);
    let mut out = Map::new();
    out.insert("protocol".into(), json!(proto.name()));
    out.insert("conns".into(), json!(a.conns));
    out.insert("window".into(), json!(a.window));
    out.insert("size".into(), json!(a.size));
    if proto == Proto::Chat && !wss.is_empty() {
        // Each member is in the room once its own `enter` comes back.
        let (entered, failed) = chatproto::enter_all(wss, "c", "chat", &rec).await;
        eprintln!("loadgen: {} members entered room chat", entered.len());
        wss = entered;
        connect_errors += failed;
    } else if a.kind == Kind::Chat && !wss.is_empty() {
        // Give the server time to register every member of the room.
        sleep(Duration::from_millis(500)).await;
    }
    let open = wss.len() + raws.len();
    out.insert("conns_ok".into(), json!(open));
    out.insert("connect_errors".into(), json!(connect_errors));
    if open == 0 {
        rec.fill(&mut out);
        return Outcome { out, connected: false };
    }
    let window = Window::after_warmup(clock.now_ns(), timing.warmup, timing.duration);
    let sh = Rc::new(Shared {
        kind: a.kind,
        proto,
        clock,
        window,
        drain_end_ns: window.end_ns + DRAIN_NS,
        rec,
        size: a.size,
        win: a.window,
        burst: a.burst,
        members: Cell::new(open as u64),
        sent_all: Cell::new(0),
        expected_all: Cell::new(0),
        recv_all: Cell::new(0),
        sent_win: Cell::new(0),
        expected_win: Cell::new(0),
        recv_win: Cell::new(0),
        own_win: Cell::new(0),
        abandoned: Cell::new(0),
        skipped: Cell::new(0),
        writers: Cell::new(open),
        done: Done::default(),
    });
    let mut tasks: Vec<_> =
        wss.into_iter().enumerate().map(|(i, ws)| tokio::task::spawn_local(peer(sh.clone(), ws, i as u32))).collect();
    tasks.extend(
        raws.into_iter().enumerate().map(|(i, ws)| tokio::task::spawn_local(raw::peer(sh.clone(), ws, i as u32))),
    );
    eprintln!("loadgen: warmup {}s, measuring {}s", timing.warmup, timing.duration);

    stats::sample_window(clock, &window, server_pid, &mut out).await;

    let drain = clock.at(sh.drain_end_ns);
    sh.done.wait_until(drain).await;
    reading::join_until(tasks, drain + CLOSE_GRACE).await;

    let (sent, recv) = (sh.sent_win.get(), sh.recv_win.get());
    match a.kind {
        Kind::Echo => {
            out.insert("msgs_per_s".into(), json!(window.rate(recv)));
            out.insert("msgs".into(), json!(recv));
            out.insert("sent".into(), json!(sent));
            out.insert("lost".into(), json!(sent.saturating_sub(recv)));
        }
        Kind::Chat => {
            out.insert("msgs_per_s".into(), json!(window.rate(sent)));
            out.insert("deliveries_per_s".into(), json!(window.rate(recv)));
            out.insert("msgs".into(), json!(sent));
            out.insert("deliveries".into(), json!(recv));
            out.insert("own_returned".into(), json!(sh.own_win.get()));
            out.insert("lost".into(), json!(sh.expected_win.get().saturating_sub(recv)));
        }
    }
    out.insert("abandoned".into(), json!(sh.abandoned.get()));
    if proto == Proto::Chat {
        out.insert("skipped_frames".into(), json!(sh.skipped.get()));
    }
    out.insert("measured_s".into(), json!(window.secs()));
    sh.rec.fill(&mut out);
    Outcome { out, connected: true }
}

/// One connection: a writer and a reader half running side by side in one task.
async fn peer(sh: Rc<Shared>, ws: Ws, id: u32) {
    let (mut sink, mut stream) = ws.split();
    let flow = Flow::new(id, sh.win);
    let writer = async {
        if let Err(e) = write_loop(&sh, &flow, &mut sink).await {
            sh.rec.error("send", e);
        }
        sh.writers.set(sh.writers.get() - 1);
        sh.check_done();
    };
    let reader = async {
        let alive = read_loop(&sh, &flow, &mut stream).await;
        if !alive {
            // Later chat messages are no longer expected here.
            sh.members.set(sh.members.get().saturating_sub(1));
        }
        alive
    };
    let ((), alive) = tokio::join!(writer, reader);
    if !alive {
        return;
    }
    let _ = timeout(CLOSE_GRACE, async {
        let _ = sink.close().await;
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

async fn write_loop(sh: &Shared, flow: &Flow, sink: &mut SplitSink<Ws, Message>) -> Result<(), tungstenite::Error> {
    let clock = sh.clock;
    let mut pw = match sh.proto {
        Proto::Raw => PayloadWriter::new(sh.size),
        Proto::Chat => PayloadWriter::framed(sh.size, chatproto::MESSAGE_PREFIX, chatproto::MESSAGE_SUFFIX),
    };
    let mut seq = 0u64;
    loop {
        let now = clock.now_ns();
        if now >= sh.window.end_ns {
            return Ok(());
        }
        add(&sh.abandoned, flow.abandon_old(now));
        let (n, oldest) = {
            let q = flow.in_flight.borrow();
            (sh.win.saturating_sub(q.len() as u32), q.front().map(|&(_, sent)| sent))
        };
        if n == 0 || (sh.burst && n < sh.win) {
            let give_up = oldest.map_or(u64::MAX, |sent| sent + STALL_NS);
            let _ = timeout_at(clock.at(give_up.min(sh.window.end_ns)), flow.wake.notified()).await;
            continue;
        }
        for _ in 0..n {
            let ts = clock.now_ns();
            sh.count_sent(ts);
            flow.in_flight.borrow_mut().push_back((seq, ts));
            sink.feed(pw.message(Header { sender: flow.id, seq, sent_ns: ts })).await?;
            seq += 1;
        }
        sink.flush().await?;
    }
}

/// Reads until the run is done or the drain deadline passes; false if the connection failed.
async fn read_loop(sh: &Shared, flow: &Flow, stream: &mut SplitStream<Ws>) -> bool {
    let clock = sh.clock;
    let drain = sleep_until(clock.at(sh.drain_end_ns));
    tokio::pin!(drain);
    loop {
        let msg = match reading::next_frame(stream, &sh.done, drain.as_mut()).await {
            Next::Frame(m) => m,
            Next::Over => return true,
            Next::Lost(e) => {
                sh.rec.error("receive", e);
                return false;
            }
        };
        let Some(data) = payload::data_of(&msg) else {
            continue; // ping/pong: tungstenite answers pings itself
        };
        let now = clock.now_ns();
        let h = match chatproto::decode(sh.proto, data) {
            Received::Payload(h) => h,
            Received::Skip => {
                add(&sh.skipped, 1);
                continue;
            }
            Received::Bad(e) => {
                sh.rec.error("receive", e);
                continue;
            }
        };
        let own = h.sender == flow.id;
        sh.count_received(&h, own, now);
        if own {
            flow.returned(h.seq);
        }
        sh.check_done();
    }
}
