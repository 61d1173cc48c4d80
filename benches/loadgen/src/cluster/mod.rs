//! The `cluster` scenario: subscribers spread round-robin over the nodes of a cluster, senders
//! on the first node or on every node, each sender keeping `window` messages in flight (one is
//! complete once every subscriber has it). Every subscriber checks every delivery against its
//! sender's sequence numbers (`sequence.rs`): nothing lost, nothing twice, order kept per sender.
//!
//! Deliveries are counted, and their latency recorded, when they arrive within the window
//! (the other scenarios go by send time): the slowest peers take longer than a window to
//! deliver what is in flight, and what they deliver in it is still their rate.
//!
//! Before anything is counted, each sender sends probes until every subscriber has had one
//! from every sender: every path (node to node, through the broker) is then known to be up,
//! so a message the run reports lost was lost, not sent before a node had subscribed. The
//! senders then start their messages; the warm-up starts once every subscriber has had every
//! sender's last probe, so a slow cluster's backlog of probes is not in the window.
//!
//! Here: the run (connecting, the barrier, the window, the report); `sender.rs` and
//! `subscriber.rs` are the two kinds of connection, sharing one `Flow` (`../flow.rs`) per sender.

mod sender;
mod subscriber;

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Map, json};
use tokio::sync::Notify;
use tokio::time::{Sleep, sleep, sleep_until, timeout};

use crate::conn::{self, ConnectOpts, Target, Ws};
use crate::flow::Flow;
use crate::payload::PayloadWriter;
use crate::peer::CLOSE_GRACE;
use crate::reading::{self, Done};
use crate::sequence::Faults;
use crate::socketio;
use crate::stats::{Clock, ProcsMark, Recorder, Window, secs_to_ns};
use crate::{Outcome, Timing};

/// What the nodes speak.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Wire {
    /// benches/PROTOCOL.md: subscribers on /sub, senders on /pub, the payload is the frame.
    Raw,
    /// Socket.IO v5 on Engine.IO v4's websocket transport (`socketio.rs`), for python-socketio.
    Socketio,
}

/// Where the senders connect.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum SenderNodes {
    /// All on the first node.
    First,
    /// Round-robin over the nodes, like the subscribers.
    All,
}

pub struct ClusterArgs {
    pub wire: Wire,
    pub nodes: Vec<Target>,
    pub subs: usize,
    pub senders: usize,
    pub sender_nodes: SenderNodes,
    pub window: u32,
    pub size: usize,
    /// Seconds after the senders stop that deliveries may still arrive.
    pub drain: f64,
}

/// Probes carry the sender's id with this bit set; they are not checked or counted.
const PROBE: u32 = 0x8000_0000;
/// Probes go out at this interval, doubling up to PROBE_MAX: a slow cluster (a probe is a
/// broadcast to every member) is not buried under probes while its paths come up.
const PROBE_FIRST: Duration = Duration::from_millis(20);
const PROBE_MAX: Duration = Duration::from_millis(640);
/// A message not complete this long after it was sent stops holding its sender's window slot
/// (it is still checked). Longer than the other scenarios' second: the slowest peers' queueing
/// latency at this scenario's load is seconds, and giving up on slots sooner would let the
/// senders outrun them.
const STALL_NS: u64 = 5_000_000_000;
/// How long every subscriber may take to hear from every sender before the run starts anyway.
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the probes sent may take to reach every subscriber before the warm-up starts anyway.
pub const PROBE_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

impl Wire {
    fn name(self) -> &'static str {
        match self {
            Wire::Raw => "raw",
            Wire::Socketio => "socketio",
        }
    }

    fn path(self, sender: bool) -> String {
        match (self, sender) {
            (Wire::Raw, false) => "/sub".into(),
            (Wire::Raw, true) => "/pub".into(),
            (Wire::Socketio, false) => format!("{}&role=sub", socketio::PATH),
            (Wire::Socketio, true) => format!("{}&role=pub", socketio::PATH),
        }
    }

    fn writer(self, size: usize) -> PayloadWriter {
        match self {
            Wire::Raw => PayloadWriter::new(size),
            Wire::Socketio => PayloadWriter::framed(size, socketio::PUB_PREFIX, socketio::PUB_SUFFIX),
        }
    }
}

struct Shared {
    wire: Wire,
    clock: Clock,
    timing: Timing,
    drain_ns: u64,
    /// Set once the probes are drained; until then it contains nothing and ends never.
    window: Cell<Window>,
    rec: Recorder,
    flows: Vec<Flow>,
    subs: usize,
    subs_alive: Cell<u32>,
    /// (subscriber, sender) pairs that have seen a probe, of `pairs`.
    probed_pairs: Cell<usize>,
    pairs: usize,
    /// The barrier: every pair has seen a probe, the senders switch to their messages.
    open: Cell<bool>,
    open_notify: Notify,
    /// Probes each sender sent, set when it stops probing (None: still probing).
    probes_sent: Vec<Cell<Option<u64>>>,
    /// Per (subscriber, sender), at subscriber * senders + sender: 1 + the highest probe
    /// sequence number it has seen (0: none yet).
    probes_seen: Vec<Cell<u64>>,
    /// Subscribers still connected, by index.
    sub_alive: Vec<Cell<bool>>,
    senders_running: Cell<usize>,
    sent_win: Cell<u64>,
    deliveries_win: Cell<u64>,
    checked: Cell<u64>,
    abandoned: Cell<u64>,
    skipped: Cell<u64>,
    /// Summed by each subscriber still connected when it stops.
    faults: Cell<Faults>,
    done: Done,
}

impl Shared {
    /// Opens the barrier: the senders stop probing and start their messages.
    fn open(&self) {
        if !self.open.get() {
            self.open.set(true);
            self.open_notify.notify_waiters();
        }
    }

    /// Every connected subscriber has had every sender's last probe.
    fn probes_drained(&self) -> bool {
        let senders = self.flows.len();
        let Some(sent) = self.probes_sent.iter().map(Cell::get).collect::<Option<Vec<u64>>>() else {
            return false;
        };
        self.sub_alive
            .iter()
            .enumerate()
            .filter(|(_, alive)| alive.get())
            .all(|(i, _)| sent.iter().enumerate().all(|(s, &n)| self.probes_seen[i * senders + s].get() >= n))
    }

    /// The measurement window starts `warmup` from now.
    fn start_window(&self) {
        self.window.set(Window::after_warmup(self.clock.now_ns(), self.timing.warmup, self.timing.duration));
    }

    fn drain_end(&self) -> tokio::time::Instant {
        let end = self.window.get().end_ns;
        self.clock.at(if end == u64::MAX { end / 2 } else { end + self.drain_ns })
    }

    /// Keeps a reader's drain timer at `drain_end()`, which moves once: when the barrier opened
    /// and the window was set (until then the drain ends never).
    fn follow_drain(&self, drain: Pin<&mut Sleep>) {
        let end = self.drain_end();
        if drain.deadline() != end {
            drain.reset(end);
        }
    }

    fn check_done(&self) {
        if self.senders_running.get() == 0 && self.flows.iter().all(Flow::is_idle) {
            self.done.set();
        }
    }
}

pub async fn run(a: ClusterArgs, timing: Timing, pids: &[u32], core: Option<u32>, clock: Clock) -> Outcome {
    let rec = Recorder::new();
    let mut out = Map::new();
    let n = a.nodes.len();
    out.insert("protocol".into(), json!(a.wire.name()));
    out.insert("nodes".into(), json!(a.nodes.iter().map(|t| t.authority.clone()).collect::<Vec<_>>()));
    out.insert("subs".into(), json!(a.subs));
    out.insert("senders".into(), json!(a.senders));
    out.insert("sender_nodes".into(), json!(format!("{:?}", a.sender_nodes).to_lowercase()));
    out.insert("window".into(), json!(a.window));
    out.insert("size".into(), json!(a.size));

    let mut subs = Vec::with_capacity(a.subs);
    let mut subs_per_node = Vec::with_capacity(n);
    let mut connect_errors = 0;
    for (k, node) in a.nodes.iter().enumerate() {
        let want = a.subs / n + usize::from(k < a.subs % n);
        let (wss, failed) =
            conn::open_traffic(node, &a.wire.path(false), want, a.size, &rec, "connect subscriber").await;
        connect_errors += failed;
        let wss = match a.wire {
            Wire::Raw => wss,
            Wire::Socketio => {
                let (ok, failed) = socketio_connect_all(wss, &rec).await;
                connect_errors += failed;
                ok
            }
        };
        subs_per_node.push(wss.len());
        subs.extend(wss);
    }
    eprintln!("loadgen: {} of {} subscribers connected, per node {subs_per_node:?}", subs.len(), a.subs);
    out.insert("subs_per_node".into(), json!(subs_per_node));
    out.insert("subs_ok".into(), json!(subs.len()));
    let mut senders = Vec::with_capacity(a.senders);
    if !subs.is_empty() {
        if a.wire == Wire::Raw {
            // Let the servers register every subscriber in the room (the probes check it too).
            sleep(Duration::from_millis(200)).await;
        }
        for s in 0..a.senders {
            let node = &a.nodes[if a.sender_nodes == SenderNodes::All { s % n } else { 0 }];
            let cfg = conn::traffic_config(a.size);
            let mut r = conn::connect(node, &a.wire.path(true), cfg, ConnectOpts::default()).await;
            if let (Ok(ws), Wire::Socketio) = (&mut r, a.wire) {
                r = socketio::handshake(ws).await.and(r);
            }
            match r {
                Ok(ws) => senders.push(ws),
                Err(e) => {
                    connect_errors += 1;
                    rec.error("sender", e);
                }
            }
        }
    }
    out.insert("senders_ok".into(), json!(senders.len()));
    out.insert("connect_errors".into(), json!(connect_errors));
    if subs.is_empty() || senders.is_empty() {
        rec.fill(&mut out);
        return Outcome { out, connected: false };
    }

    let never = Window { start_ns: u64::MAX, end_ns: u64::MAX };
    let sh = Rc::new(Shared {
        wire: a.wire,
        clock,
        timing,
        drain_ns: secs_to_ns(a.drain),
        window: Cell::new(never),
        rec,
        flows: (0..senders.len()).map(|_| Flow::new(STALL_NS)).collect(),
        subs: subs.len(),
        subs_alive: Cell::new(subs.len() as u32),
        probed_pairs: Cell::new(0),
        pairs: subs.len() * senders.len(),
        open: Cell::new(false),
        open_notify: Notify::new(),
        probes_sent: (0..senders.len()).map(|_| Cell::new(None)).collect(),
        probes_seen: (0..subs.len() * senders.len()).map(|_| Cell::new(0)).collect(),
        sub_alive: (0..subs.len()).map(|_| Cell::new(true)).collect(),
        senders_running: Cell::new(senders.len()),
        sent_win: Cell::new(0),
        deliveries_win: Cell::new(0),
        checked: Cell::new(0),
        abandoned: Cell::new(0),
        skipped: Cell::new(0),
        faults: Cell::new(Faults::default()),
        done: Done::default(),
    });
    let mut tasks: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::task::spawn_local(subscriber::run(sh.clone(), ws, i)))
        .collect();
    for (id, ws) in senders.into_iter().enumerate() {
        tasks.push(tokio::task::spawn_local(sender::run(sh.clone(), ws, id as u32, a.window, a.size)));
    }

    let barrier_start = clock.now_ns();
    if !sh.open.get() && timeout(BARRIER_TIMEOUT, sh.open_notify.notified()).await.is_err() {
        sh.rec.error(
            "barrier",
            format!(
                "{} of {} (subscriber, sender) paths carried a probe within {}s",
                sh.probed_pairs.get(),
                sh.pairs,
                BARRIER_TIMEOUT.as_secs()
            ),
        );
        sh.open();
    }
    out.insert("barrier_s".into(), json!(clock.now_ns().saturating_sub(barrier_start) as f64 / 1e9));
    let drain_start = clock.now_ns();
    let give_up = tokio::time::Instant::now() + PROBE_DRAIN_TIMEOUT;
    while !sh.probes_drained() && tokio::time::Instant::now() < give_up {
        sleep(Duration::from_millis(10)).await;
    }
    out.insert("probes_drained".into(), json!(sh.probes_drained()));
    out.insert("probes_drain_s".into(), json!(clock.now_ns().saturating_sub(drain_start) as f64 / 1e9));
    sh.start_window();
    let window = sh.window.get();
    eprintln!("loadgen: every path is up; warmup {}s, measuring {}s", timing.warmup, timing.duration);

    sleep_until(clock.at(window.start_ns)).await;
    let mark = ProcsMark::take(pids, core);
    sleep_until(clock.at(window.end_ns)).await;
    mark.fill_since(pids, core, &mut out);

    let drain = sh.drain_end();
    sh.done.wait_until(drain).await;
    // Subscribers stop at once (done, or the drain is over) and add up their faults first.
    reading::join_until(tasks, drain + CLOSE_GRACE).await;

    let (sent, delivered) = (sh.sent_win.get(), sh.deliveries_win.get());
    let faults = sh.faults.get();
    let subs_failed = sh.subs - sh.subs_alive.get() as usize;
    let sent_all: u64 = sh.flows.iter().map(Flow::sent).sum();
    out.insert("msgs_per_s".into(), json!(window.rate(sent)));
    out.insert("deliveries_per_s".into(), json!(window.rate(delivered)));
    out.insert("msgs".into(), json!(sent));
    out.insert("deliveries".into(), json!(delivered));
    out.insert("sent_total".into(), json!(sent_all));
    out.insert("checked".into(), json!(sh.checked.get()));
    out.insert("lost".into(), json!(faults.lost));
    out.insert("duplicated".into(), json!(faults.duplicated));
    out.insert("reordered".into(), json!(faults.reordered));
    out.insert("subs_failed".into(), json!(subs_failed));
    out.insert("abandoned".into(), json!(sh.abandoned.get()));
    out.insert("skipped_frames".into(), json!(sh.skipped.get()));
    out.insert("drain_s".into(), json!(a.drain));
    out.insert("measured_s".into(), json!(window.secs()));
    let exact = faults.is_clean() && subs_failed == 0 && sh.rec.errors() == 0;
    let verdict = if exact {
        format!("exactly once, in order: {} deliveries checked", sh.checked.get())
    } else {
        format!(
            "FAILED: {} lost, {} duplicated, {} reordered, {} subscribers failed, {} errors",
            faults.lost,
            faults.duplicated,
            faults.reordered,
            subs_failed,
            sh.rec.errors()
        )
    };
    eprintln!("loadgen: {verdict}");
    out.insert("exactly_once".into(), json!(exact));
    out.insert("verdict".into(), json!(verdict));
    sh.rec.fill(&mut out);
    Outcome { out, connected: true }
}

/// Socket.IO connect on every connection at once; returns those connected and how many failed.
async fn socketio_connect_all(wss: Vec<Ws>, rec: &Recorder) -> (Vec<Ws>, u64) {
    let all = wss.into_iter().map(|mut ws| async move { socketio::handshake(&mut ws).await.map(|()| ws) });
    let mut ok = Vec::new();
    let mut failed = 0;
    for r in futures_util::future::join_all(all).await {
        match r {
            Ok(ws) => ok.push(ws),
            Err(e) => {
                failed += 1;
                rec.error("connect subscriber", e);
            }
        }
    }
    (ok, failed)
}
