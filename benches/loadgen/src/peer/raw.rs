//! The echo scenario's connections, with the bare client (`rawws`): one task per connection
//! sends its window and reads it back, with no split halves, no hand-off between a reader and a
//! writer task, and no message objects. With the WebSocket library the load generator spent
//! about 13 µs per echoed message and was at 85–92 % of its core against picows and the Rust
//! reference: those rows measured the load generator.

use std::rc::Rc;
use std::time::Duration;

use tokio::time::{sleep, sleep_until};

use super::{Flow, Shared};
use crate::chatproto::{self, Received};
use crate::payload::{Header, PayloadWriter};
use crate::rawws::{self, OP_TEXT};
use crate::reading::{self, NextRaw};
use crate::stats::add;

/// How often a connection looks for stalled messages and the window's end while it waits.
const TICK: Duration = Duration::from_millis(100);

/// One echo connection: tops its window up (the whole window at once in the burst shape, a
/// message per message back in the spread shape), all of it in one write, then reads.
pub(super) async fn peer(sh: Rc<Shared>, mut ws: rawws::Ws, id: u32) {
    let clock = sh.clock;
    let drain = sleep_until(clock.at(sh.drain_end_ns));
    tokio::pin!(drain);
    let tick = sleep(TICK);
    tokio::pin!(tick);
    let mut pw = PayloadWriter::new(sh.size);
    let mut out = Vec::new();
    let flow = Flow::new(id, sh.win);
    let (mut seq, mut sending) = (0u64, true);
    let failure = loop {
        if sending {
            let now = clock.now_ns();
            if now >= sh.window.end_ns {
                sending = false;
                sh.writers.set(sh.writers.get() - 1);
                sh.check_done();
            } else {
                add(&sh.abandoned, flow.abandon_old(now));
                // What came back in one read is answered in one write, as a client that
                // reads everything ready before writing does.
                let n = sh.win - flow.in_flight.borrow().len() as u32;
                if n > 0 && !(sh.burst && n < sh.win) && !ws.has_frame() {
                    out.clear();
                    for _ in 0..n {
                        let ts = clock.now_ns();
                        sh.count_sent(ts);
                        flow.in_flight.borrow_mut().push_back((seq, ts));
                        ws.put(&mut out, OP_TEXT, &pw.bytes(Header { sender: id, seq, sent_ns: ts }));
                        seq += 1;
                    }
                    if let Err(e) = ws.send_raw(&out).await {
                        break Some(e.detail);
                    }
                }
            }
        }
        // A message that never comes back frees its slot after STALL_NS instead of holding
        // the window for good, and the end of the window is seen with nothing coming in: both
        // are looked at on a tick, so no timer is set per message.
        let f = tokio::select! {
            biased;
            next = reading::next_raw(&mut ws, &sh.done, drain.as_mut()) => next,
            _ = &mut tick, if sending => {
                tick.as_mut().reset(tokio::time::Instant::now() + TICK);
                continue;
            }
        };
        let f = match f {
            NextRaw::Frame(f) => f,
            NextRaw::Over => break None,
            NextRaw::Lost(e) => break Some(e),
        };
        let now = clock.now_ns();
        let h = match chatproto::decode(sh.proto, ws.payload(&f)) {
            Received::Payload(h) => h,
            Received::Skip => continue,
            Received::Bad(e) => {
                sh.rec.error("receive", e);
                continue;
            }
        };
        // Every message on an echo connection is its own.
        sh.count_received(&h, true, now);
        flow.returned(h.seq);
        sh.check_done();
    };
    if let Some(e) = failure {
        if sending {
            sh.writers.set(sh.writers.get() - 1);
        }
        sh.rec.error("receive", e);
        sh.check_done();
        return;
    }
    let _ = tokio::time::timeout(super::CLOSE_GRACE, ws.close()).await;
}
