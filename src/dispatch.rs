//! Hands connection events to a pool of (Python) worker threads: one connection's events in
//! order, different connections concurrently, in batches.
//!
//! Each connection has a mailbox. A mailbox with events is "scheduled": it sits once in the ready
//! queue, or is held by exactly one worker. A worker takes every waiting event of one connection
//! at a time (one GIL round-trip per batch, not per frame) and calls `finish` when done; a worker
//! that must wait for something (an async hook) keeps the mailbox and calls `wake` later. So a
//! hook that blocks holds up its own connection only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::ConnId;

/// Most events handed over in one batch, so one chatty connection cannot starve the others.
const MAX_BATCH: usize = 256;

struct Mailbox<E> {
    events: VecDeque<E>,
    /// Present while the producer is paused because the mailbox reached its limit.
    paused: Option<Arc<Notify>>,
}

struct State<E> {
    mailboxes: HashMap<ConnId, Mailbox<E>>,
    ready: VecDeque<ConnId>,
    closed: bool,
}

pub struct Dispatcher<E> {
    // A std Mutex, not tokio's: it is taken both by tokio tasks (push, never across an .await)
    // and by worker threads blocked in `next_batch`, and every critical section is a few
    // pointer moves.
    state: Mutex<State<E>>,
    ready: Condvar,
    limit: usize,
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
        Self {
            state: Mutex::new(State {
                mailboxes: HashMap::new(),
                ready: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            limit,
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
            drop(st);
            self.ready.notify_one();
        }
        result
    }

    /// Blocks until a connection has events, and takes them (up to a batch). `None` once the
    /// dispatcher is closed and no connection is left (queued or held by a worker, whose async
    /// hook may still `wake` it), or after `timeout` with nothing to do.
    pub fn next_batch(&self, timeout: Option<Duration>) -> Option<(ConnId, Vec<E>)> {
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(id) = st.ready.pop_front() {
                let mailbox = st.mailboxes.get_mut(&id).expect("ready implies a mailbox");
                let n = mailbox.events.len().min(MAX_BATCH);
                let batch: Vec<E> = mailbox.events.drain(..n).collect();
                if let Some(notify) = mailbox.paused.take() {
                    notify.notify_one();
                }
                return Some((id, batch));
            }
            if st.closed && st.mailboxes.is_empty() {
                return None;
            }
            st = match timeout {
                None => self.ready.wait(st).unwrap(),
                Some(t) => {
                    let (guard, res) = self.ready.wait_timeout(st, t).unwrap();
                    if res.timed_out() && guard.ready.is_empty() {
                        return None;
                    }
                    guard
                }
            };
        }
    }

    /// The worker is done with this connection's batch: requeue it if more arrived meanwhile.
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
            drop(st);
            self.ready.notify_one();
        } else if st.closed && st.mailboxes.is_empty() {
            // The last held connection is done: let every waiting worker see the end.
            drop(st);
            self.ready.notify_all();
        }
    }

    /// A worker that kept a connection (waiting on an async hook) hands it back: the next
    /// `next_batch` returns it, possibly with no new events.
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

    #[test]
    fn one_connection_is_held_by_one_worker_at_a_time() {
        let d = Dispatcher::new(100);
        assert!(accepted(d.push(1, "a")));
        assert!(accepted(d.push(2, "x")));
        assert_eq!(d.next_batch(None), Some((1, vec!["a"])));
        // Connection 1 is held: its new event waits, connection 2 goes first.
        d.push(1, "b");
        assert_eq!(d.next_batch(None), Some((2, vec!["x"])));
        assert_eq!(d.next_batch(Some(Duration::from_millis(10))), None);
        d.finish(1);
        assert_eq!(d.next_batch(None), Some((1, vec!["b"])));
        d.finish(1);
        d.finish(2);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn events_arrive_in_batches_in_order() {
        let d = Dispatcher::new(1000);
        for i in 0..10 {
            d.push(7, i);
        }
        assert_eq!(d.next_batch(None), Some((7, (0..10).collect())));
    }

    #[test]
    fn batches_are_capped() {
        let d = Dispatcher::new(10_000);
        for i in 0..MAX_BATCH + 5 {
            d.push(7, i);
        }
        assert_eq!(d.next_batch(None).unwrap().1.len(), MAX_BATCH);
        d.finish(7);
        assert_eq!(d.next_batch(None).unwrap().1.len(), 5);
    }

    #[test]
    fn wake_returns_a_held_connection_with_nothing_new() {
        let d = Dispatcher::<u8>::new(10);
        d.push(3, 1);
        d.next_batch(None);
        d.wake(3);
        assert_eq!(d.next_batch(None), Some((3, vec![])));
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
        d.next_batch(None);
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
        d.next_batch(None);
        d.close();
        // Held by a worker (an async hook in flight): not the end yet.
        assert_eq!(d.next_batch(Some(Duration::from_millis(10))), None);
        d.wake(1);
        assert_eq!(d.next_batch(None), Some((1, vec![])));
        d.finish(1);
        assert_eq!(d.next_batch(None), None);
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
                    while let Some((id, batch)) = d.next_batch(None) {
                        got += batch.len();
                        d.finish(id);
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
