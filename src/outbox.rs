//! A connection's outgoing queue: many senders (hooks, broadcasts, the heartbeat), one
//! receiver (the connection's writer), bounded in frames (the byte bound is the handle's).
//!
//! Why not tokio's mpsc: a bounded tokio channel allocates a 32-slot block and two
//! cache-padded halves when it is made, about 1.8 KB per connection before anything is sent,
//! and keeps them while the connection idles. This queue holds nothing until a frame is
//! queued, and lets a grown buffer go once it has emptied.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use event_listener::Event;

use crate::frames::Outgoing;

/// Slots an emptied queue keeps: a connection that gets one message at a time reuses them
/// instead of allocating for each; a burst's larger buffer is let go.
const KEEP_SLOTS: usize = 8;

struct Shared {
    state: Mutex<State>,
    limit: usize,
    /// The receiver is gone (the writer ended): nothing queued will be sent.
    closed: AtomicBool,
    /// Wakes `Sender::closed` waiters; allocates nothing until someone waits.
    on_close: Event,
}

#[derive(Default)]
struct State {
    items: VecDeque<Outgoing>,
    /// The writer, parked on an empty queue.
    waker: Option<Waker>,
}

/// Why a frame was not queued; it comes back with the error.
#[derive(Debug)]
pub enum TrySendError {
    Full(Outgoing),
    Closed(Outgoing),
}

pub struct Sender(Arc<Shared>);

pub struct Receiver(Arc<Shared>);

/// A queue of at most `limit` frames.
pub fn channel(limit: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::default(),
        limit: limit.max(1),
        closed: AtomicBool::new(false),
        on_close: Event::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves a queue that is still consistent (every
        // operation is a single VecDeque call), so a poisoned lock is used as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sender {
    /// Queues `out` unless the queue is full or its receiver is gone.
    pub fn try_send(&self, out: Outgoing) -> Result<(), TrySendError> {
        if self.is_closed() {
            return Err(TrySendError::Closed(out));
        }
        let mut state = self.0.lock();
        if state.items.len() >= self.0.limit {
            return Err(TrySendError::Full(out));
        }
        state.items.push_back(out);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Frames queued and not yet taken by the writer.
    pub fn len(&self) -> usize {
        self.0.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The receiver is gone: nothing more will be sent.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
    }

    /// Resolves once the receiver is gone.
    pub async fn closed(&self) {
        loop {
            if self.is_closed() {
                return;
            }
            let listener = self.0.on_close.listen();
            if self.is_closed() {
                return;
            }
            listener.await;
        }
    }
}

impl Receiver {
    /// The next frame, waiting for one.
    pub async fn recv(&mut self) -> Outgoing {
        poll_fn(|cx| {
            let mut state = self.0.lock();
            match take(&mut state) {
                Some(out) => Poll::Ready(out),
                None => {
                    if !state
                        .waker
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker()))
                    {
                        state.waker = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        take(&mut self.0.lock())
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().items.is_empty()
    }
}

fn take(state: &mut State) -> Option<Outgoing> {
    let out = state.items.pop_front()?;
    if state.items.is_empty() && state.items.capacity() > KEEP_SLOTS {
        state.items = VecDeque::new();
    }
    Some(out)
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        // What was queued will never be written: let it go now, not with the last sender.
        let items = std::mem::take(&mut self.0.lock().items);
        drop(items);
        self.0.on_close.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::Text;
    use std::time::Duration;

    fn text(s: &'static str) -> Outgoing {
        Outgoing::Text(Text::from_static(s))
    }

    #[tokio::test]
    async fn frames_come_out_in_order_up_to_the_limit() {
        let (tx, mut rx) = channel(2);
        assert!(tx.try_send(text("a")).is_ok());
        assert!(tx.try_send(text("b")).is_ok());
        assert!(matches!(tx.try_send(text("c")), Err(TrySendError::Full(_))));
        assert_eq!(tx.len(), 2);
        assert!(matches!(rx.recv().await, Outgoing::Text(t) if t.as_str() == "a"));
        assert!(matches!(rx.try_recv(), Some(Outgoing::Text(t)) if t.as_str() == "b"));
        assert!(rx.try_recv().is_none());
        assert!(rx.is_empty() && tx.is_empty());
    }

    #[tokio::test]
    async fn a_parked_receiver_is_woken_by_a_send_from_another_thread() {
        let (tx, mut rx) = channel(4);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.try_send(text("late")).unwrap();
            tx
        });
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(matches!(got, Ok(Outgoing::Text(t)) if t.as_str() == "late"));
        drop(sender.join());
    }

    #[tokio::test]
    async fn a_gone_receiver_refuses_frames_and_wakes_closed_waiters() {
        let (tx, rx) = channel(4);
        tx.try_send(text("never written")).unwrap();
        let tx = Arc::new(tx);
        let waiter = tokio::spawn({
            let tx = tx.clone();
            async move { tx.closed().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("closed() resolved")
            .unwrap();
        assert!(tx.is_closed() && tx.is_empty());
        assert!(matches!(
            tx.try_send(text("x")),
            Err(TrySendError::Closed(_))
        ));
    }

    #[test]
    fn an_emptied_queue_lets_a_burst_buffer_go() {
        let (tx, mut rx) = channel(1000);
        for _ in 0..100 {
            tx.try_send(text("x")).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.0.lock().items.capacity(), 0);
        tx.try_send(text("y")).unwrap();
        rx.try_recv().unwrap();
        assert!(
            rx.0.lock().items.capacity() <= KEEP_SLOTS,
            "small buffers are kept"
        );
    }
}
