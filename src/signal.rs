//! A one-shot flag that one task awaits and any thread raises. Polling it is a compare-and-swap,
//! not a lock: the reader and writer poll theirs once per frame.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;

#[derive(Default)]
pub struct Signal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolves once raised (at once if it already was). One task awaits a given signal.
    pub async fn raised(&self) {
        poll_fn(|cx| {
            if self.is_raised() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Raised between the check and the registration: the wake may have been missed.
            if self.is_raised() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_a_waiting_task_from_another_thread() {
        let signal = Arc::new(Signal::default());
        let raiser = signal.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            raiser.raise();
        });
        tokio::time::timeout(Duration::from_secs(5), signal.raised())
            .await
            .unwrap();
        // Once raised, it stays raised.
        signal.raised().await;
    }

    #[tokio::test]
    async fn pending_until_raised() {
        let signal = Signal::default();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), signal.raised())
                .await
                .is_err()
        );
        signal.raise();
        assert!(signal.is_raised());
    }
}
