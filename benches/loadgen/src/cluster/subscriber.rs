//! A subscriber of the `cluster` scenario: reads its deliveries, answers Socket.IO pings,
//! marks the probes it sees for the barrier, and checks every message against its sender's
//! sequence numbers; at the end it adds its faults to the run's.

use std::rc::Rc;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::{PROBE, Shared, Wire};
use crate::conn::Ws;
use crate::flow::Flow;
use crate::payload;
use crate::peer::CLOSE_GRACE;
use crate::reading::{self, Next};
use crate::sequence::{Checker, Seen};
use crate::socketio::{self, Packet};
use crate::stats::add;

pub(super) async fn run(sh: Rc<Shared>, mut ws: Ws, index: usize) {
    let clock = sh.clock;
    let mut checker = Checker::new(sh.flows.len());
    let mut probed = vec![false; sh.flows.len()];
    let drain = sleep_until(sh.drain_end());
    tokio::pin!(drain);
    let failure = loop {
        sh.follow_drain(drain.as_mut());
        let msg = match reading::next_frame(&mut ws, &sh.done, drain.as_mut()).await {
            Next::Frame(m) => m,
            Next::Over => break None,
            Next::Lost(e) => break Some(e),
        };
        let Some(data) = payload::data_of(&msg) else {
            continue; // protocol ping/pong: tungstenite answers pings itself
        };
        let now = clock.now_ns();
        let text = match sh.wire {
            Wire::Raw => data,
            Wire::Socketio => match socketio::classify(data) {
                Packet::Delivery(text) => text,
                Packet::Ping => {
                    if let Err(e) = ws.send(Message::text(socketio::PONG)).await {
                        break Some(e.to_string());
                    }
                    continue;
                }
                Packet::Other => {
                    add(&sh.skipped, 1);
                    continue;
                }
            },
        };
        let Some(h) = payload::parse(text) else {
            sh.rec.error("subscriber", "payload without loadgen header");
            continue;
        };
        if h.sender & PROBE != 0 {
            let s = (h.sender & !PROBE) as usize;
            if s < probed.len() {
                let seen = &sh.probes_seen[index * probed.len() + s];
                seen.set(seen.get().max(h.seq + 1));
                if !probed[s] {
                    probed[s] = true;
                    sh.probed_pairs.set(sh.probed_pairs.get() + 1);
                    if sh.probed_pairs.get() == sh.pairs {
                        sh.open();
                    }
                }
            }
            continue;
        }
        add(&sh.checked, 1);
        match checker.see(h.sender, h.seq) {
            None => sh.rec.error("subscriber", format!("message from unknown sender {}", h.sender)),
            Some(Seen::Duplicate) => {}
            Some(_) => {
                // Counted by arrival: a slow cluster's latency may be longer than the window.
                if sh.window.get().contains(now) {
                    add(&sh.deliveries_win, 1);
                    sh.rec.latency_ns(now.saturating_sub(h.sent_ns));
                }
                if sh.flows[h.sender as usize].delivered(h.seq) {
                    sh.check_done();
                }
            }
        }
    };
    if let Some(e) = failure {
        sh.sub_alive[index].set(false);
        sh.subs_alive.set(sh.subs_alive.get().saturating_sub(1));
        sh.rec.error("subscriber", e);
        return;
    }
    let sent: Vec<u64> = sh.flows.iter().map(Flow::sent).collect();
    let mut total = sh.faults.get();
    total.add(checker.faults(&sent));
    sh.faults.set(total);
    let _ = timeout(CLOSE_GRACE, async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
