//! The heartbeat sweeper: one task for the whole server. Each interval it closes the connections
//! that sent nothing since the previous sweep and pings the rest.

use std::future::Future;
use std::time::Duration;

/// What the sweeper needs of a connection.
pub trait Beat {
    /// Whether anything (a frame, a Pong) arrived since the last call; resets the flag.
    fn take_alive(&self) -> bool;
    fn ping(&self);
    fn expire(&self, interval: Duration);
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub pinged: usize,
    pub expired: usize,
}

pub fn sweep<B: Beat>(conns: &[B], interval: Duration) -> SweepStats {
    let mut stats = SweepStats::default();
    for conn in conns {
        if conn.take_alive() {
            conn.ping();
            stats.pinged += 1;
        } else {
            conn.expire(interval);
            stats.expired += 1;
        }
    }
    stats
}

/// Runs sweeps until `stop` resolves. `snapshot` lists the open connections at each tick (taken
/// under the hub's lock, used after it is released).
pub async fn run<B, F>(interval: Duration, snapshot: impl Fn() -> Vec<B>, stop: F)
where
    B: Beat,
    F: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    // A late tick (busy machine) must not fire twice in a row: that would reap live clients.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {
                let conns = snapshot();
                let stats = sweep(&conns, interval);
                if stats.expired > 0 {
                    log::info!(
                        "heartbeat: closed {} connection(s) silent for {:.1} s; {} alive",
                        stats.expired, interval.as_secs_f64(), stats.pinged
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Default)]
    struct Fake {
        alive: AtomicBool,
        pings: AtomicUsize,
        expired: AtomicBool,
    }

    impl Beat for Arc<Fake> {
        fn take_alive(&self) -> bool {
            self.alive.swap(false, Ordering::Relaxed)
        }
        fn ping(&self) {
            self.pings.fetch_add(1, Ordering::Relaxed);
        }
        fn expire(&self, _: Duration) {
            self.expired.store(true, Ordering::Relaxed);
        }
    }

    fn fake(alive: bool) -> Arc<Fake> {
        let f = Arc::new(Fake::default());
        f.alive.store(alive, Ordering::Relaxed);
        f
    }

    #[test]
    fn silent_connections_expire_and_live_ones_are_pinged() {
        let conns = vec![fake(true), fake(false)];
        let stats = sweep(&conns, Duration::from_secs(1));
        assert_eq!(
            stats,
            SweepStats {
                pinged: 1,
                expired: 1
            }
        );
        assert!(!conns[0].expired.load(Ordering::Relaxed));
        assert!(conns[1].expired.load(Ordering::Relaxed));
        // Nothing arrived since: the next sweep expires the first one too.
        assert_eq!(sweep(&conns[..1], Duration::from_secs(1)).expired, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_stays_and_a_silent_one_goes() {
        let answering = fake(true);
        let silent = fake(true);
        let conns = vec![answering.clone(), silent.clone()];
        let interval = Duration::from_secs(30);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(interval, move || conns.clone(), async {
            let _ = stop_rx.await;
        }));
        for _ in 0..4 {
            tokio::time::sleep(interval).await;
            tokio::task::yield_now().await;
            // Only one of them answers each ping.
            answering.alive.store(true, Ordering::Relaxed);
        }
        assert!(!answering.expired.load(Ordering::Relaxed));
        assert!(answering.pings.load(Ordering::Relaxed) >= 3);
        assert!(silent.expired.load(Ordering::Relaxed));
        assert_eq!(silent.pings.load(Ordering::Relaxed), 1);
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_swept_before_the_first_interval() {
        let silent = fake(false);
        let conns = vec![silent.clone()];
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(Duration::from_secs(30), move || conns.clone(), async {
            let _ = stop_rx.await;
        }));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!silent.expired.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert!(silent.expired.load(Ordering::Relaxed));
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }
}
