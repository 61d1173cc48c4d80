//! The `handshake` scenario: `concurrency` loops that each connect, upgrade to WebSocket on
//! /echo and reset the socket (SO_LINGER 0, so no TIME_WAIT piles up), over and over.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Map, json};
use tokio::time::{sleep, sleep_until, timeout_at};

use crate::conn::{self, ConnectOpts, Target};
use crate::stats::{Clock, CpuMark, Recorder, Window};
use crate::{Outcome, Timing};

/// Pause after a failed attempt, so that a refusing server is not hammered in a hot loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

struct Shared {
    clock: Clock,
    window: Window,
    target: Target,
    rec: Recorder,
    ok_all: Cell<u64>,
    ok_win: Cell<u64>,
    err_win: Cell<u64>,
}

pub async fn run(concurrency: usize, target: Target, timing: Timing, server_pid: Option<u32>, clock: Clock) -> Outcome {
    let window = Window::after_warmup(clock.now_ns(), timing.warmup, timing.duration);
    let sh = Rc::new(Shared {
        clock,
        window,
        target,
        rec: Recorder::new(),
        ok_all: Cell::new(0),
        ok_win: Cell::new(0),
        err_win: Cell::new(0),
    });
    let tasks: Vec<_> = (0..concurrency.max(1)).map(|_| tokio::task::spawn_local(worker(sh.clone()))).collect();
    eprintln!("loadgen: {concurrency} handshake loops, warmup {}s, measuring {}s", timing.warmup, timing.duration);

    let mut out = Map::new();
    out.insert("concurrency".into(), json!(concurrency));
    sleep_until(clock.at(window.start_ns)).await;
    let mark = CpuMark::take(server_pid);
    sleep_until(clock.at(window.end_ns)).await;
    mark.fill_since(server_pid, &mut out);
    // An attempt started inside the window may still be running: it has CONNECT_TIMEOUT.
    let end = clock.at(window.end_ns) + conn::CONNECT_TIMEOUT + Duration::from_secs(1);
    for t in tasks {
        let _ = timeout_at(end, t).await;
    }
    let ok = sh.ok_win.get();
    out.insert("handshakes_per_s".into(), json!(window.rate(ok)));
    out.insert("handshakes".into(), json!(ok));
    out.insert("failed".into(), json!(sh.err_win.get()));
    out.insert("measured_s".into(), json!(window.secs()));
    sh.rec.fill(&mut out);
    Outcome { out, connected: sh.ok_all.get() > 0 }
}

async fn worker(sh: Rc<Shared>) {
    let opts = ConnectOpts { source: None, linger0: true };
    let cfg = conn::idle_config();
    loop {
        let start = sh.clock.now_ns();
        if start >= sh.window.end_ns {
            return;
        }
        let counted = sh.window.contains(start);
        match conn::connect(&sh.target, "/echo", cfg, opts).await {
            Ok(ws) => {
                let end = sh.clock.now_ns();
                sh.ok_all.set(sh.ok_all.get() + 1);
                if counted {
                    sh.ok_win.set(sh.ok_win.get() + 1);
                    sh.rec.latency_ns(end - start);
                }
                // SO_LINGER 0 was set before connecting: dropping sends RST, leaves no TIME_WAIT.
                drop(ws);
            }
            Err(e) => {
                if counted {
                    sh.err_win.set(sh.err_win.get() + 1);
                }
                sh.rec.error("handshake", e);
                sleep(ERROR_BACKOFF).await;
            }
        }
    }
}
