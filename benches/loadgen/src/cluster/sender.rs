//! A sender of the `cluster` scenario: probes until the barrier opens, then keeps its window
//! of messages in flight until the measurement window ends.

use std::cell::Cell;
use std::rc::Rc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::{sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::{PROBE, PROBE_FIRST, PROBE_MAX, Shared, Wire};
use crate::conn::Ws;
use crate::flow::Flow;
use crate::payload::{self, Header};
use crate::peer::CLOSE_GRACE;
use crate::reading::{self, Next};
use crate::socketio;
use crate::stats::add;

/// One sender: probes until the barrier opens, then its messages until the window ends; its
/// connection is read all along (Socket.IO pings, which the writer answers).
pub(super) async fn run(sh: Rc<Shared>, ws: Ws, id: u32, win: u32, size: usize) {
    let (mut sink, mut stream) = ws.split();
    let pong_due = Cell::new(false);
    let wake = Notify::new();
    let writer = async {
        let flow = &sh.flows[id as usize];
        if let Err(e) = send_loop(&sh, flow, &mut sink, id, win, size, (&pong_due, &wake)).await {
            sh.rec.error("sender", e);
        }
        sh.senders_running.set(sh.senders_running.get() - 1);
        sh.check_done();
    };
    let ok = tokio::join!(writer, read_sender(&sh, &mut stream, &pong_due, &wake)).1;
    if ok {
        let _ = timeout(CLOSE_GRACE, async {
            let _ = sink.close().await;
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }
}

async fn send_loop(
    sh: &Shared,
    flow: &Flow,
    sink: &mut SplitSink<Ws, Message>,
    id: u32,
    win: u32,
    size: usize,
    (pong_due, wake): (&Cell<bool>, &Notify),
) -> Result<(), String> {
    let clock = sh.clock;
    let mut pw = sh.wire.writer(size);
    let (mut probes, mut every) = (0, PROBE_FIRST);
    while !sh.open.get() {
        let opened = sh.open_notify.notified();
        sink.send(pw.message(Header { sender: PROBE | id, seq: probes, sent_ns: clock.now_ns() }))
            .await
            .map_err(|e| e.to_string())?;
        probes += 1;
        let _ = timeout(every, opened).await;
        every = (every * 2).min(PROBE_MAX);
    }
    sh.probes_sent[id as usize].set(Some(probes));
    loop {
        if pong_due.replace(false) {
            sink.feed(Message::text(socketio::PONG)).await.map_err(|e| e.to_string())?;
        }
        let now = clock.now_ns();
        if now >= sh.window.get().end_ns {
            return sink.flush().await.map_err(|e| e.to_string());
        }
        let (given_up, next_stall) = flow.abandon_old(now);
        add(&sh.abandoned, given_up);
        let n = win.saturating_sub(flow.incomplete());
        if n == 0 {
            let give_up = next_stall.unwrap_or(u64::MAX).min(sh.window.get().end_ns);
            let progress = flow.progress.notified();
            tokio::select! {
                _ = progress => {}
                _ = wake.notified() => {}
                _ = sleep_until(clock.at(give_up)) => {}
            }
            continue;
        }
        for _ in 0..n {
            let alive = sh.subs_alive.get();
            if alive == 0 {
                return Err("no subscriber left".into());
            }
            let ts = clock.now_ns();
            let seq = flow.push(ts, alive);
            if sh.window.get().contains(ts) {
                add(&sh.sent_win, 1);
            }
            sink.feed(pw.message(Header { sender: id, seq, sent_ns: ts })).await.map_err(|e| e.to_string())?;
        }
        sink.flush().await.map_err(|e| e.to_string())?;
    }
}

/// Reads a sender's connection until the run is over; false if the server closed it.
async fn read_sender(sh: &Shared, stream: &mut SplitStream<Ws>, pong_due: &Cell<bool>, wake: &Notify) -> bool {
    let drain = sleep_until(sh.drain_end());
    tokio::pin!(drain);
    loop {
        sh.follow_drain(drain.as_mut());
        match reading::next_frame(stream, &sh.done, drain.as_mut()).await {
            Next::Frame(m) => {
                if sh.wire == Wire::Socketio && payload::data_of(&m).is_some_and(|d| d == b"2") {
                    pong_due.set(true);
                    wake.notify_one();
                }
            }
            Next::Over => return true,
            Next::Lost(e) => {
                sh.rec.error("sender", e);
                return false;
            }
        }
    }
}
