//! Hands connection events to a pool of (Python) worker threads: one connection's events in
//! order, different connections concurrently, in batches.
//!
//! Each connection has a mailbox. A mailbox with events is "scheduled": it sits once in the ready
//! queue, or is held by exactly one worker. A worker takes the waiting events of many ready
//! connections at once (one GIL round-trip for all of them, not one per frame), claims them one
//! connection at a time, and calls `finish` for each; a worker that must wait for something (an
//! async hook) keeps the connection and calls `wake` later.
//!
//! A hook that blocks holds up its own connection only: when a worker has not claimed its next
//! connection for `STEAL_AFTER`, an idle worker takes the unclaimed rest of its batch.
//!
//! With `defer_wakeups`, a push does not wake a sleeping worker at once: the I/O thread calls
//! `wake_deferred` when it runs out of work (tokio's park hook), so one wake-up carries every
//! frame read in that pass instead of one context switch per frame. A backlog of
//! `WAKE_AFTER_READY` connections or `WAKE_AFTER` of delay wakes a worker anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::ConnId;

/// Most events handed over in one batch, so one chatty connection cannot starve the others.
const MAX_BATCH: usize = 256;
/// Most connections in one batch.
const MAX_CONNS: usize = 64;
/// A batch whose worker claimed nothing for this long is stuck in a hook; idle workers steal.
pub const STEAL_AFTER: Duration = Duration::from_millis(2);
/// With deferred wake-ups: ready connections that wake a worker without waiting for the park.
const WAKE_AFTER_READY: usize = 32;
/// With deferred wake-ups: the longest a ready connection waits for the park before waking one.
const WAKE_AFTER: Duration = Duration::from_micros(500);

struct Mailbox<E> {
    events: VecDeque<E>,
    /// Present while the producer is paused because the mailbox reached its limit.
    paused: Option<Arc<Notify>>,
}

struct Claims<E> {
    items: VecDeque<(ConnId, Vec<E>)>,
    last_claim: Instant,
}

/// Several connections' events handed to one worker.
pub struct Batch<E> {
    // A std Mutex: claimed by its worker and, when that worker is stuck, stolen by another;
    // held only to pop.
    claims: Mutex<Claims<E>>,
}

impl<E> Batch<E> {
    fn new(items: VecDeque<(ConnId, Vec<E>)>) -> Arc<Self> {
        Arc::new(Self {
            claims: Mutex::new(Claims {
                items,
                last_claim: Instant::now(),
            }),
        })
    }

    /// The next connection's events, in the order the connections became ready.
    pub fn claim(&self) -> Option<(ConnId, Vec<E>)> {
        let mut c = self.claims.lock().unwrap();
        c.last_claim = Instant::now();
        c.items.pop_front()
    }

    fn is_exhausted(&self) -> bool {
        self.claims.lock().unwrap().items.is_empty()
    }
}

struct State<E> {
    mailboxes: HashMap<ConnId, Mailbox<E>>,
    ready: VecDeque<ConnId>,
    /// Batches handed out whose connections may not all be claimed yet.
    outstanding: Vec<Arc<Batch<E>>>,
    closed: bool,
    /// Workers blocked in `next_batch`: a notify with none waiting would be a wasted syscall.
    waiting: usize,
    /// Since when a ready connection waits for a deferred wake-up.
    unwoken_since: Option<Instant>,
}

pub struct Dispatcher<E> {
    // A std Mutex, not tokio's: it is taken both by tokio tasks (push, never across an .await)
    // and by worker threads blocked in `next_batch`, and every critical section is a few
    // pointer moves.
    state: Mutex<State<E>>,
    ready: Condvar,
    limit: usize,
    defer_wakeups: bool,
    wake_pending: std::sync::atomic::AtomicBool,
}

/// Returned by `push`: whether the producer may continue or should wait for a drain.
pub enum Pushed {
    Accepted,
    /// The mailbox is at its limit; await this before pushing more (TCP backpressure).
    Full(Arc<Notify>),
    /// The dispatcher is closed; the event was dropped.
    Closed,
}

impl<E> Dispatcher<E> {
    pub fn new(limit: usize) -> Self {
        Self::with_deferred_wakeups(limit, false)
    }

    pub fn with_deferred_wakeups(limit: usize, defer_wakeups: bool) -> Self {
        Self {
            state: Mutex::new(State {
                mailboxes: HashMap::new(),
                ready: VecDeque::new(),
                outstanding: Vec::new(),
                closed: false,
                waiting: 0,
                unwoken_since: None,
            }),
            ready: Condvar::new(),
            limit,
            defer_wakeups,
            wake_pending: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Wakes a worker for the connections that became ready since the last wake-up. Called by
    /// the I/O thread when it parks; cheap when there is nothing to do.
    pub fn wake_deferred(&self) {
        use std::sync::atomic::Ordering;
        if self.wake_pending.load(Ordering::Relaxed)
            && self.wake_pending.swap(false, Ordering::AcqRel)
        {
            let mut st = self.state.lock().unwrap();
            st.unwoken_since = None;
            let waiting = st.waiting > 0;
            drop(st);
            if waiting {
                self.ready.notify_one();
            }
        }
    }

    pub fn push(&self, id: ConnId, event: E) -> Pushed {
        let mut st = self.state.lock().unwrap();
        if st.closed {
            return Pushed::Closed;
        }
        let is_new = !st.mailboxes.contains_key(&id);
        let mailbox = st.mailboxes.entry(id).or_insert_with(|| Mailbox {
            events: VecDeque::new(),
            paused: None,
        });
        mailbox.events.push_back(event);
        let result = if mailbox.events.len() >= self.limit {
            let notify = mailbox
                .paused
                .get_or_insert_with(|| Arc::new(Notify::new()))
                .clone();
            Pushed::Full(notify)
        } else {
            Pushed::Accepted
        };
        // A mailbox that existed is already scheduled (queued or held by a worker).
        if is_new {
            st.ready.push_back(id);
            if st.waiting == 0 {
                // Every worker is busy: they take it when they come back.
            } else if !self.defer_wakeups {
                drop(st);
                self.ready.notify_one();
            } else {
                let now = Instant::now();
                let since = *st.unwoken_since.get_or_insert(now);
                if st.ready.len() >= WAKE_AFTER_READY || now - since >= WAKE_AFTER {
                    st.unwoken_since = None;
                    drop(st);
                    self.ready.notify_one();
                } else {
                    self.wake_pending
                        .store(true, std::sync::atomic::Ordering::Release);
                }
            }
        }
        result
    }

    /// Blocks until connections have events and takes them (up to a batch), or steals the
    /// unclaimed rest of a stuck batch. `None` once the dispatcher is closed and no connection
    /// is left (queued or held by a worker, whose async hook may still `wake` it), or after
    /// `timeout` with nothing to do.
    pub fn next_batch(&self, timeout: Option<Duration>) -> Option<Arc<Batch<E>>> {
        let give_up = timeout.map(|t| Instant::now() + t);
        let mut st = self.state.lock().unwrap();
        loop {
            st.outstanding.retain(|b| !b.is_exhausted());
            if !st.ready.is_empty() {
                let batch = Batch::new(Self::take_ready(&mut st));
                st.outstanding.push(batch.clone());
                // More than one batch's worth is ready: pass the word to another worker.
                let more = !st.ready.is_empty() && st.waiting > 0;
                drop(st);
                if more {
                    self.ready.notify_one();
                }
                return Some(batch);
            }
            let now = Instant::now();
            let mut next_check: Option<Instant> = None;
            for stuck in &st.outstanding {
                let mut claims = stuck.claims.lock().unwrap();
                let due = claims.last_claim + STEAL_AFTER;
                if now >= due {
                    let items = std::mem::take(&mut claims.items);
                    drop(claims);
                    let batch = Batch::new(items);
                    st.outstanding.push(batch.clone());
                    return Some(batch);
                }
                next_check = Some(next_check.map_or(due, |t: Instant| t.min(due)));
            }
            if st.closed && st.mailboxes.is_empty() {
                return None;
            }
            let wake_at = match (next_check, give_up) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if give_up.is_some_and(|g| Instant::now() >= g) {
                return None;
            }
            st.waiting += 1;
            st = match wake_at {
                None => self.ready.wait(st).unwrap(),
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    self.ready.wait_timeout(st, wait).unwrap().0
                }
            };
            st.waiting -= 1;
        }
    }

    fn take_ready(st: &mut State<E>) -> VecDeque<(ConnId, Vec<E>)> {
        let mut items = VecDeque::new();
        let mut total = 0;
        while total < MAX_BATCH && items.len() < MAX_CONNS {
            let Some(id) = st.ready.pop_front() else {
                break;
            };
            let mailbox = st.mailboxes.get_mut(&id).expect("ready implies a mailbox");
            // At least one event each; what does not fit stays, and `finish` requeues it.
            let n = mailbox.events.len().min((MAX_BATCH - total).max(1));
            total += n;
            items.push_back((id, mailbox.events.drain(..n).collect()));
            if let Some(notify) = mailbox.paused.take() {
                notify.notify_one();
            }
        }
        items
    }

    /// The worker is done with this connection's events: requeue it if more arrived meanwhile.
    pub fn finish(&self, id: ConnId) {
        let mut st = self.state.lock().unwrap();
        let more = match st.mailboxes.get(&id) {
            Some(m) if m.events.is_empty() => {
                st.mailboxes.remove(&id);
                false
            }
            Some(_) => true,
            None => false,
        };
        if more {
            st.ready.push_back(id);
            let waiting = st.waiting > 0;
            drop(st);
            if waiting {
                self.ready.notify_one();
            }
        } else if st.closed && st.mailboxes.is_empty() {
            // The last held connection is done: let every waiting worker see the end.
            drop(st);
            self.ready.notify_all();
        }
    }

    /// A worker that kept a connection (waiting on an async hook) hands it back: a later
    /// batch returns it, possibly with no new events.
    pub fn wake(&self, id: ConnId) {
        let mut st = self.state.lock().unwrap();
        st.mailboxes.entry(id).or_insert_with(|| Mailbox {
            events: VecDeque::new(),
            paused: None,
        });
        st.ready.push_back(id);
        drop(st);
        self.ready.notify_one();
    }

    /// No more events will be accepted; workers drain what is left, then get `None`.
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.ready.notify_all();
    }

    /// Whether the connection has events in the application's hands (queued, or held by a
    /// worker): a later frame that must keep its place behind them goes the same way.
    pub fn is_scheduled(&self, id: ConnId) -> bool {
        self.state.lock().unwrap().mailboxes.contains_key(&id)
    }

    /// Events waiting (not yet taken by a worker).
    pub fn pending(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .mailboxes
            .values()
            .map(|m| m.events.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn accepted(p: Pushed) -> bool {
        matches!(p, Pushed::Accepted)
    }

    /// Every connection of the next batch, claimed at once.
    fn all<E>(d: &Dispatcher<E>, timeout: Option<Duration>) -> Option<Vec<(ConnId, Vec<E>)>> {
        let batch = d.next_batch(timeout)?;
        Some(std::iter::from_fn(|| batch.claim()).collect())
    }

    #[test]
    fn one_batch_carries_every_ready_connection_in_order() {
        let d = Dispatcher::new(100);
        d.push(1, "a");
        d.push(2, "x");
        d.push(1, "b");
        assert_eq!(
            all(&d, None),
            Some(vec![(1, vec!["a", "b"]), (2, vec!["x"])])
        );
    }

    #[test]
    fn a_held_connection_is_not_handed_out_again_until_finished() {
        let d = Dispatcher::new(100);
        d.push(1, "a");
        assert_eq!(all(&d, None), Some(vec![(1, vec!["a"])]));
        d.push(1, "b");
        d.push(2, "x");
        // Connection 1 is held: its new event waits, connection 2 goes alone.
        assert_eq!(all(&d, None), Some(vec![(2, vec!["x"])]));
        assert_eq!(all(&d, Some(Duration::from_millis(10))), None);
        d.finish(1);
        assert_eq!(all(&d, None), Some(vec![(1, vec!["b"])]));
        d.finish(1);
        d.finish(2);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn batches_are_capped_and_the_rest_follows_on_finish() {
        let d = Dispatcher::new(10_000);
        for i in 0..MAX_BATCH + 5 {
            d.push(7, i);
        }
        assert_eq!(all(&d, None).unwrap()[0].1.len(), MAX_BATCH);
        d.finish(7);
        assert_eq!(all(&d, None).unwrap()[0].1.len(), 5);
        for id in 0..(MAX_CONNS as u64 + 3) {
            d.push(100 + id, 0);
        }
        assert_eq!(all(&d, None).unwrap().len(), MAX_CONNS);
        assert_eq!(all(&d, None).unwrap().len(), 3);
    }

    #[test]
    fn an_idle_worker_steals_the_rest_of_a_stuck_batch() {
        let d = Dispatcher::new(100);
        d.push(1, "slow");
        d.push(2, "waiting");
        let stuck = d.next_batch(None).unwrap();
        assert_eq!(stuck.claim(), Some((1, vec!["slow"])));
        // The first worker is now inside a hook that blocks; another worker is idle.
        let started = Instant::now();
        let stolen = d.next_batch(Some(Duration::from_secs(5))).unwrap();
        assert!(started.elapsed() >= STEAL_AFTER / 2);
        assert_eq!(stolen.claim(), Some((2, vec!["waiting"])));
        // When the slow hook returns, its worker finds nothing left to claim.
        assert_eq!(stuck.claim(), None);
    }

    #[test]
    fn deferred_wakeups_wait_for_the_park_or_a_backlog() {
        let d = Arc::new(Dispatcher::with_deferred_wakeups(100, true));
        let worker = {
            let d = d.clone();
            thread::spawn(move || {
                d.next_batch(Some(Duration::from_secs(5)))
                    .map(|b| b.claim())
            })
        };
        while d.state.lock().unwrap().waiting == 0 {
            thread::yield_now();
        }
        d.push(1, "a");
        // Not woken yet: the worker is still waiting...
        thread::sleep(Duration::from_millis(20));
        assert_eq!(d.state.lock().unwrap().waiting, 1);
        // ...until the I/O thread parks.
        d.wake_deferred();
        assert_eq!(worker.join().unwrap(), Some(Some((1, vec!["a"]))));
    }

    #[test]
    fn wake_returns_a_held_connection_with_nothing_new() {
        let d = Dispatcher::<u8>::new(10);
        d.push(3, 1);
        all(&d, None);
        d.wake(3);
        assert_eq!(all(&d, None), Some(vec![(3, vec![])]));
    }

    #[test]
    fn a_full_mailbox_pauses_the_producer_until_taken() {
        let d = Dispatcher::new(2);
        assert!(accepted(d.push(1, 0)));
        let Pushed::Full(notify) = d.push(1, 1) else {
            panic!("expected Full")
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        all(&d, None);
        // The permit stored by notify_one lets the waiter through at once.
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), notify.notified()).await
        })
        .expect("drain must wake the producer");
    }

    #[test]
    fn close_waits_for_a_held_connection() {
        let d = Dispatcher::new(10);
        d.push(1, 1);
        all(&d, None);
        d.close();
        // Held by a worker (an async hook in flight): not the end yet.
        assert_eq!(all(&d, Some(Duration::from_millis(10))), None);
        d.wake(1);
        assert_eq!(all(&d, None), Some(vec![(1, vec![])]));
        d.finish(1);
        assert_eq!(all(&d, None), None);
    }

    #[test]
    fn close_drains_then_ends_every_worker() {
        let d = Arc::new(Dispatcher::new(10));
        d.push(1, 1);
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let d = d.clone();
                thread::spawn(move || {
                    let mut got = 0;
                    while let Some(batch) = d.next_batch(None) {
                        while let Some((id, events)) = batch.claim() {
                            got += events.len();
                            d.finish(id);
                        }
                    }
                    got
                })
            })
            .collect();
        d.close();
        // Workers exit only after the connection they may hold is finished.
        let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(total, 1);
        assert!(matches!(d.push(1, 2), Pushed::Closed));
    }
}
