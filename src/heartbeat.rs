//! The heartbeat sweeper: one task for the whole server. It ticks several times per interval
//! and each tick sweeps one slice of the connections (by id), so every connection is swept once
//! per interval and no tick touches them all. A sweep leaves alone a connection heard from since
//! its previous sweep, pings a silent one, and closes one still silent a whole interval after
//! its Ping.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crate::ConnId;

/// The hub keeps its connections in this many shards (by `id % SHARDS`), so that a tick lists
/// only its slice. A power of two: a slice is every `of`-th shard, `of` a power of two too.
pub const SHARDS: usize = 64;

/// The shortest time between two ticks: a short interval (tests) gets fewer slices.
pub const MIN_TICK: Duration = Duration::from_millis(50);

pub fn shard(id: ConnId) -> usize {
    (id % SHARDS as u64) as usize
}

/// The connections one tick sweeps: those whose shard is `index` modulo `of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    pub index: usize,
    pub of: usize,
}

impl Slice {
    /// Every connection (a sweep run by hand).
    pub const ALL: Slice = Slice { index: 0, of: 1 };

    pub fn shards(self) -> impl Iterator<Item = usize> {
        (self.index..SHARDS).step_by(self.of)
    }

    pub fn contains(self, id: ConnId) -> bool {
        shard(id) % self.of == self.index
    }
}

/// Ticks per interval: a power of two up to `SHARDS`, a tick at most every `MIN_TICK`.
pub fn slices_for(interval: Duration) -> usize {
    let fit = (interval.as_nanos() / MIN_TICK.as_nanos()).clamp(1, SHARDS as u128) as usize;
    1 << fit.ilog2()
}

/// One connection's heartbeat state. Two flags, so that each has one writer on the hot path:
/// the reader sets `heard` (once per sweep at most: an already set flag is only read), the
/// sweeper clears it and alone writes `pinged`.
#[derive(Debug, Default)]
pub struct Liveness {
    /// A frame (data, Pong, anything) arrived since this connection's previous sweep. A new
    /// connection has not been heard from: its handshake is not a frame.
    heard: AtomicBool,
    /// The previous sweep found it silent and sent a Ping.
    pinged: AtomicBool,
}

/// What a sweep does with one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Heard from since the previous sweep: nothing to do.
    Heard,
    /// Silent for an interval: send a Ping.
    Ping,
    /// Silent, and its Ping went unanswered for an interval: close it.
    Expire,
}

impl Liveness {
    /// Called by the reader on every frame. Relaxed: the sweeper only needs to see it by its
    /// next pass, and a frame seen one sweep late costs at most a Ping.
    #[inline]
    pub fn heard(&self) {
        if !self.heard.load(Relaxed) {
            self.heard.store(true, Relaxed);
        }
    }

    /// One sweep of this connection; `excused` counts as heard (the server stopped reading it).
    pub fn judge(&self, excused: bool) -> Verdict {
        // Swapped only when set: a silent connection's flag is not written at all.
        let heard = self.heard.load(Relaxed) && self.heard.swap(false, Relaxed);
        if heard || excused {
            if self.pinged.load(Relaxed) {
                self.pinged.store(false, Relaxed);
            }
            Verdict::Heard
        } else if self.pinged.load(Relaxed) {
            Verdict::Expire
        } else {
            self.pinged.store(true, Relaxed);
            Verdict::Ping
        }
    }
}

/// What the sweeper needs of a connection.
pub trait Beat {
    fn liveness(&self) -> &Liveness;
    /// Not silent whatever arrived: the server itself stopped reading it.
    fn excused(&self) -> bool {
        false
    }
    /// The protocol Ping.
    fn ping(&self);
    /// What every connection that stays gets at each sweep, heard from or not (the JSON
    /// heartbeat of `app_heartbeat` and the chat preset).
    fn every_sweep(&self) {}
    /// Closes it: 1011, "heartbeat timeout".
    fn expire(&self, interval: Duration);
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub heard: usize,
    pub pinged: usize,
    pub expired: usize,
}

pub fn sweep<B: Beat>(conns: &[B], interval: Duration) -> SweepStats {
    let mut stats = SweepStats::default();
    for conn in conns {
        match conn.liveness().judge(conn.excused()) {
            Verdict::Heard => stats.heard += 1,
            Verdict::Ping => {
                conn.ping();
                stats.pinged += 1;
            }
            Verdict::Expire => {
                conn.expire(interval);
                stats.expired += 1;
                continue;
            }
        }
        conn.every_sweep();
    }
    stats
}

/// Runs sweeps until `stop` resolves: `slices_for(interval)` ticks per interval, each sweeping
/// the connections `snapshot` lists for its slice (taken under the hub's lock, used after it is
/// released), the slices in turn.
pub async fn run<B, F>(interval: Duration, snapshot: impl Fn(Slice) -> Vec<B>, stop: F)
where
    B: Beat,
    F: Future<Output = ()>,
{
    let of = slices_for(interval);
    let period = interval / of as u32;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // A late tick (busy machine) must not be made up for by ticks in a burst: a slice swept
    // twice in less than an interval would reap clients whose Pong is on its way. Delayed
    // ticks only ever stretch the time between two sweeps of a slice.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut index = 0;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {
                let conns = snapshot(Slice { index, of });
                index = (index + 1) % of;
                let stats = sweep(&conns, interval);
                if stats.expired > 0 {
                    log::info!(
                        "heartbeat: closed {} connection(s) silent for {:.1} s; {} alive",
                        stats.expired, interval.as_secs_f64(), stats.heard + stats.pinged
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    #[derive(Default)]
    struct Fake {
        id: ConnId,
        /// Answers each Ping before its next sweep.
        answers: bool,
        liveness: Liveness,
        pings: AtomicUsize,
        app_pings: AtomicUsize,
        expired: AtomicBool,
        /// When each sweep reached it.
        swept: Mutex<Vec<Instant>>,
    }

    impl Beat for Arc<Fake> {
        fn liveness(&self) -> &Liveness {
            self.swept.lock().unwrap().push(Instant::now());
            &self.liveness
        }
        fn ping(&self) {
            self.pings.fetch_add(1, Relaxed);
            if self.answers {
                self.liveness.heard(); // its Pong
            }
        }
        fn every_sweep(&self) {
            self.app_pings.fetch_add(1, Relaxed);
        }
        fn expire(&self, _: Duration) {
            self.expired.store(true, Relaxed);
        }
    }

    impl Fake {
        fn pings(&self) -> usize {
            self.pings.load(Relaxed)
        }
        fn expired(&self) -> bool {
            self.expired.load(Relaxed)
        }
        fn sweeps(&self) -> usize {
            self.swept.lock().unwrap().len()
        }
    }

    fn fakes(ids: std::ops::Range<ConnId>, answers: bool) -> Vec<Arc<Fake>> {
        ids.map(|id| {
            Arc::new(Fake {
                id,
                answers,
                ..Fake::default()
            })
        })
        .collect()
    }

    type Stop = tokio::sync::oneshot::Sender<()>;

    /// The sweeper over `conns` (a tick's slice of them at each tick).
    fn spawn(interval: Duration, conns: &[Arc<Fake>]) -> (Stop, tokio::task::JoinHandle<()>) {
        let conns = conns.to_vec();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let snapshot = move |slice: Slice| {
            conns
                .iter()
                .filter(|c| slice.contains(c.id) && !c.expired()) // the hub forgets closed ones
                .cloned()
                .collect()
        };
        let task = tokio::spawn(run(interval, snapshot, async {
            let _ = stop_rx.await;
        }));
        (stop_tx, task)
    }

    /// An interval whose tick is a whole number of milliseconds, the timer's resolution: the
    /// tests' sleeps then stay in step with the sweeper's ticks.
    const INTERVAL: Duration = Duration::from_secs(32);

    /// Sleeps one tick (paused clock) and lets the sweeper run what is due.
    async fn tick(interval: Duration) {
        tokio::time::sleep(interval / slices_for(interval) as u32).await;
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn heard_is_left_alone_silent_is_pinged_then_expired() {
        let conns = fakes(0..3, false);
        let interval = Duration::from_secs(1);
        conns[0].liveness.heard();
        let stats = sweep(&conns, interval);
        assert_eq!(
            stats,
            SweepStats {
                heard: 1,
                pinged: 2,
                expired: 0
            }
        );
        assert_eq!(conns[0].pings(), 0, "no Ping to a connection heard from");
        let app_pings = |c: &Arc<Fake>| c.app_pings.load(Relaxed);
        assert!(conns.iter().all(|c| app_pings(c) == 1));
        // The first keeps talking, the second answers its Ping, the third never does.
        conns[0].liveness.heard();
        conns[1].liveness.heard();
        let stats = sweep(&conns, interval);
        assert_eq!((stats.heard, stats.pinged, stats.expired), (2, 0, 1));
        assert!(conns[2].expired() && conns[2].pings() == 1);
        assert!(!conns[0].expired() && !conns[1].expired());
        assert_eq!(app_pings(&conns[2]), 1, "nothing more once expired");
        assert_eq!(
            app_pings(&conns[1]),
            2,
            "the JSON heartbeat goes every sweep"
        );
        // The second went quiet again: pinged again, not expired.
        let stats = sweep(&conns[..2], interval);
        assert_eq!((stats.pinged, stats.expired), (2, 0));
        assert_eq!(conns[1].pings(), 2);
    }

    #[test]
    fn an_excused_connection_is_never_expired() {
        let l = Liveness::default();
        assert_eq!(l.judge(false), Verdict::Ping);
        for _ in 0..5 {
            assert_eq!(l.judge(true), Verdict::Heard);
        }
        assert_eq!(l.judge(false), Verdict::Ping);
        assert_eq!(l.judge(false), Verdict::Expire);
    }

    #[test]
    fn slices_cover_every_shard_once() {
        assert_eq!(slices_for(Duration::from_secs(30)), SHARDS);
        assert_eq!(slices_for(Duration::from_millis(200)), 4);
        assert_eq!(slices_for(Duration::from_millis(350)), 4);
        assert_eq!(slices_for(Duration::from_millis(10)), 1);
        for of in [1, 2, 4, 64] {
            let mut seen = [0; SHARDS];
            for index in 0..of {
                let slice = Slice { index, of };
                for s in slice.shards() {
                    seen[s] += 1;
                    assert!(slice.contains(s as ConnId + 7 * SHARDS as ConnId));
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{of}: {seen:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn active_ones_get_no_ping_answering_ones_stay_silent_ones_go() {
        let interval = INTERVAL;
        let talking = fakes(0..100, false);
        let answering = fakes(100..150, true);
        let silent = fakes(150..200, false);
        let all: Vec<_> = [&talking[..], &answering, &silent].concat();
        let (stop, task) = spawn(interval, &all);
        let start = Instant::now();
        let mut all_expired_at = None;
        while start.elapsed() < interval * 10 {
            for c in &talking {
                c.liveness.heard();
            }
            tick(interval).await;
            if all_expired_at.is_none() && silent.iter().all(|c| c.expired()) {
                all_expired_at = Some(start.elapsed());
            }
        }
        assert!([&talking, &answering]
            .iter()
            .all(|g| g.iter().all(|c| c.sweeps() == 10)));
        assert!(talking.iter().all(|c| c.pings() == 0 && !c.expired()));
        // Pinged at every other sweep: the Pong makes it heard from at the next.
        assert!(answering.iter().all(|c| c.pings() == 5 && !c.expired()));
        // A new connection is pinged at its first sweep (within an interval), closed at its
        // second.
        assert!(silent.iter().all(|c| c.pings() == 1 && c.sweeps() == 2));
        let at = all_expired_at.unwrap();
        assert!(at > interval && at <= interval * 2, "{at:?}");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_goes_silent_goes_after_two_to_three_intervals() {
        let interval = INTERVAL;
        let conns = fakes(0..256, false);
        let (stop, task) = spawn(interval, &conns);
        let start = Instant::now();
        while start.elapsed() < interval * 3 {
            for c in &conns {
                c.liveness.heard();
            }
            tick(interval).await;
        }
        // The last frame came one tick ago.
        let last = Instant::now() - interval / slices_for(interval) as u32;
        let mut gone = vec![None; conns.len()];
        while gone.iter().any(Option::is_none) && start.elapsed() < interval * 10 {
            tick(interval).await;
            for (g, c) in gone.iter_mut().zip(&conns) {
                if g.is_none() && c.expired() {
                    *g = Some(last.elapsed());
                }
            }
        }
        for (g, c) in gone.into_iter().zip(&conns) {
            let g = g.expect("reaped");
            assert!(g > interval * 2 && g <= interval * 3, "{g:?}");
            assert_eq!(c.pings(), 1);
        }
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn each_connection_is_swept_once_per_interval_even_when_ticks_are_late() {
        let interval = INTERVAL;
        let conns = fakes(0..1000, false);
        let (stop, task) = spawn(interval, &conns);
        let talk = || conns.iter().for_each(|c| c.liveness.heard());
        for _ in 0..3 * slices_for(interval) {
            talk();
            tick(interval).await;
        }
        assert!(conns.iter().all(|c| c.sweeps() == 3), "once per interval");
        // The runtime stalls for longer than an interval: the late tick sweeps one slice and
        // the others follow at the usual pace; none is swept twice within an interval.
        talk();
        tokio::time::advance(interval + interval / 3).await;
        for _ in 0..3 * slices_for(interval) {
            talk();
            tick(interval).await;
        }
        for c in &conns {
            let swept = c.swept.lock().unwrap();
            assert!(swept.len() >= 5, "{}: {}", c.id, swept.len());
            for pair in swept.windows(2) {
                assert!(pair[1] - pair[0] >= interval, "{}: {:?}", c.id, pair);
            }
            assert!(c.pings() == 0 && !c.expired());
        }
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_sweeps_its_slice_only() {
        let interval = INTERVAL;
        let conns = fakes(0..2 * SHARDS as ConnId, false);
        let (stop, task) = spawn(interval, &conns);
        for t in 0..SHARDS {
            tick(interval).await;
            let swept: Vec<_> = conns
                .iter()
                .filter(|c| c.sweeps() > 0)
                .map(|c| shard(c.id))
                .collect();
            // Shards 0..=t, two connections each, once.
            assert_eq!(swept.len(), 2 * (t + 1));
            assert!(swept.iter().all(|&s| s <= t));
            assert!(conns.iter().all(|c| c.sweeps() <= 1));
        }
        stop.send(()).unwrap();
        task.await.unwrap();
    }
}
