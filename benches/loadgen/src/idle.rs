//! The `idle` scenario: open many quiet /echo connections (bound round-robin to several
//! source IPs), keep reading them so pings get answered, and measure the server's memory
//! per connection and its CPU while it holds them.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Map, json};
use tokio::time::sleep;
use tokio_tungstenite::tungstenite::Message;

use crate::Outcome;
use crate::conn::{self, Target, Ws};
use crate::stats::{CpuMark, Recorder, rss_kib};

/// Pause between the last connection opening and the start of the hold.
const SETTLE: Duration = Duration::from_secs(2);

pub struct IdleArgs {
    pub conns: usize,
    pub hold: f64,
    pub concurrency: usize,
    pub open_timeout: f64,
    pub source_ips: Vec<IpAddr>,
}

#[derive(Default)]
struct Shared {
    closed: Cell<u64>,
    pings: Cell<u64>,
    first_close: RefCell<Option<String>>,
}

pub async fn run(a: IdleArgs, target: Target, server_pid: Option<u32>) -> Outcome {
    let rss_baseline = server_pid.and_then(|p| rss_kib(Some(p)));
    if server_pid.is_some() && rss_baseline.is_none() {
        eprintln!("loadgen: cannot read the server's /proc status; RSS fields will be null");
    }
    let rec = Recorder::new();
    let sh = Rc::new(Shared::default());
    let mut open = 0usize;
    let mut errors = 0usize;
    let started = Instant::now();
    let step = (a.conns / 10).max(1);
    let batch = conn::Batch {
        path: "/echo",
        n: a.conns,
        concurrency: a.concurrency,
        cfg: conn::idle_config(),
        source_ips: &a.source_ips,
        deadline: tokio::time::Instant::now() + Duration::from_secs_f64(a.open_timeout),
    };
    let missing = conn::open_many(&target, batch, |_, r| {
        match r {
            Ok(ws) => {
                open += 1;
                tokio::task::spawn_local(hold_conn(sh.clone(), ws));
            }
            Err(e) => {
                errors += 1;
                rec.error("connect", e);
            }
        }
        if (open + errors).is_multiple_of(step) {
            eprintln!("loadgen: {} connections open, {} failed", open, errors);
        }
    })
    .await;
    let open_seconds = started.elapsed().as_secs_f64();
    if missing > 0 {
        errors += missing;
        rec.error("open", format!("{missing} connections not opened within --open-timeout {}s", a.open_timeout));
    }
    eprintln!("loadgen: {open} of {} connections open in {open_seconds:.2}s; holding {}s", a.conns, a.hold);

    let mut out = Map::new();
    out.insert("conns".into(), json!(a.conns));
    out.insert("conns_open".into(), json!(open));
    out.insert("connect_errors".into(), json!(errors));
    out.insert("open_seconds".into(), json!(crate::stats::round2(open_seconds)));
    out.insert("source_ips".into(), json!(a.source_ips.len()));
    out.insert("hold_s".into(), json!(a.hold));
    out.insert("rss_baseline_kib".into(), json!(rss_baseline));
    if open == 0 {
        rec.fill_errors(&mut out);
        return Outcome { out, connected: false };
    }

    sleep(SETTLE).await;
    let closed_before = sh.closed.get();
    let mark = CpuMark::take(server_pid);
    sleep(Duration::from_secs_f64(a.hold.max(0.0))).await;
    mark.fill_since(server_pid, &mut out);
    let closed_by_server = sh.closed.get() - closed_before;

    let rss = out.get("server_rss_kib").and_then(|v| v.as_u64());
    out.insert("rss_kib".into(), json!(rss));
    let per_conn = match (rss, rss_baseline) {
        (Some(r), Some(b)) => json!(crate::stats::round2((r as f64 - b as f64) / open as f64)),
        _ => serde_json::Value::Null,
    };
    out.insert("rss_per_conn_kib".into(), per_conn);
    out.insert("closed_before_hold".into(), json!(closed_before));
    out.insert("closed_by_server".into(), json!(closed_by_server));
    out.insert("first_close".into(), json!(sh.first_close.borrow().clone()));
    out.insert("pings_answered".into(), json!(sh.pings.get()));
    rec.fill_errors(&mut out);
    Outcome { out, connected: true }
}

/// Reads until the connection ends; tungstenite queues a Pong for each Ping and sends it on
/// the next read.
async fn hold_conn(sh: Rc<Shared>, mut ws: Ws) {
    let reason = loop {
        match ws.next().await {
            Some(Ok(Message::Ping(_))) => sh.pings.set(sh.pings.get() + 1),
            Some(Ok(Message::Close(f))) => break format!("server sent close {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => break e.to_string(),
            None => break "connection closed by server".to_string(),
        }
    };
    sh.closed.set(sh.closed.get() + 1);
    let mut first = sh.first_close.borrow_mut();
    if first.is_none() {
        *first = Some(reason);
    }
}
