//! Reading a scenario's connections until its run is over: `Done`, set once nothing more is
//! expected, and `next_frame`, a connection's next frame or why there is none. Every traffic
//! scenario's readers (echo, chat, fanout, cluster) stop the same ways.

use std::cell::Cell;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep, timeout_at};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::rawws;

/// Set once, when nothing more is expected (no one sends any more and what was sent has
/// arrived): the readers stop and the run reports.
#[derive(Default)]
pub struct Done {
    set: Cell<bool>,
    /// Woken (every waiter) when `set` becomes true, and only then.
    notify: Notify,
}

impl Done {
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Sets it and wakes every waiter; later calls do nothing.
    pub fn set(&self) {
        if !self.set.get() {
            self.set.set(true);
            self.notify.notify_waiters();
        }
    }

    /// Waits until it is set or `deadline` passes, whichever comes first.
    pub async fn wait_until(&self, deadline: Instant) {
        while !self.set.get() {
            if timeout_at(deadline, self.notify.notified()).await.is_err() {
                break;
            }
        }
    }
}

/// What a reader gets from `next_frame`.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// A frame other than a close: data, or a ping or pong (tungstenite answers pings itself).
    Frame(Message),
    /// The run is over (`done` is set, or the drain deadline passed); the connection is fine.
    Over,
    /// The connection failed, the server closed it or sent a close: the error to record.
    Lost(String),
}

/// The next frame of `stream`, unless the run is over first. Polls the stream before anything
/// else, so a frame already there is never left for the deadline.
pub async fn next_frame<S>(stream: &mut S, done: &Done, mut drain: Pin<&mut Sleep>) -> Next
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        if done.is_set() {
            return Next::Over;
        }
        let notified = done.notify.notified();
        let msg = tokio::select! {
            biased;
            m = stream.next() => m,
            _ = notified => continue,
            _ = &mut drain => return Next::Over,
        };
        return match msg {
            Some(Ok(Message::Close(f))) => Next::Lost(format!("server sent close {f:?}")),
            Some(Ok(m)) => Next::Frame(m),
            Some(Err(e)) => Next::Lost(e.to_string()),
            None => Next::Lost("connection closed by server".to_string()),
        };
    }
}

/// What a bare client's reader (`rawws::Ws`) gets from `next_raw`.
pub enum NextRaw {
    /// A data frame (pings are answered on the way, pongs skipped).
    Frame(rawws::Frame),
    Over,
    Lost(String),
}

/// `next_frame` for the bare client: its next data frame, unless the run is over first.
pub async fn next_raw(ws: &mut rawws::Ws, done: &Done, mut drain: Pin<&mut Sleep>) -> NextRaw {
    loop {
        if done.is_set() {
            return NextRaw::Over;
        }
        let notified = done.notify.notified();
        let frame = tokio::select! {
            biased;
            f = ws.next() => f,
            _ = notified => continue,
            _ = &mut drain => return NextRaw::Over,
        };
        return match frame {
            Ok(f) if f.op == rawws::OP_CLOSE => NextRaw::Lost(format!("server sent close {}", ws.close_code(&f))),
            Ok(f) if f.op == rawws::OP_TEXT || f.op == rawws::OP_BINARY => NextRaw::Frame(f),
            Ok(_) => continue,
            Err(e) => NextRaw::Lost(e.detail),
        };
    }
}

/// Waits for each task to end, none past `deadline` (a task still running then is left).
pub async fn join_until<T>(tasks: Vec<tokio::task::JoinHandle<T>>, deadline: Instant) {
    for t in tasks {
        let _ = timeout_at(deadline, t).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::stream;
    use tokio::time::sleep_until;

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn frames_until_a_close_or_the_end_of_the_stream() {
        let done = Done::default();
        let drain = sleep_until(far());
        tokio::pin!(drain);
        let mut s =
            stream::iter([Ok(Message::text("a")), Ok(Message::Ping(Default::default())), Ok(Message::Close(None))]);
        assert_eq!(next_frame(&mut s, &done, drain.as_mut()).await, Next::Frame(Message::text("a")));
        assert_eq!(next_frame(&mut s, &done, drain.as_mut()).await, Next::Frame(Message::Ping(Default::default())));
        assert_eq!(next_frame(&mut s, &done, drain.as_mut()).await, Next::Lost("server sent close None".into()));
        assert_eq!(next_frame(&mut s, &done, drain.as_mut()).await, Next::Lost("connection closed by server".into()));
        let mut failed = stream::iter([Err(tungstenite::Error::ConnectionClosed)]);
        let want = tungstenite::Error::ConnectionClosed.to_string();
        assert_eq!(next_frame(&mut failed, &done, drain.as_mut()).await, Next::Lost(want));
    }

    #[tokio::test]
    async fn over_once_done_or_drained() {
        let done = Done::default();
        let drain = sleep_until(far());
        tokio::pin!(drain);
        done.set();
        done.set();
        let mut s = stream::iter([Ok(Message::text("a"))]);
        assert_eq!(next_frame(&mut s, &done, drain.as_mut()).await, Next::Over, "done beats a waiting frame");
        done.wait_until(far()).await;

        let not_done = Done::default();
        let drained = sleep_until(Instant::now());
        tokio::pin!(drained);
        assert_eq!(next_frame(&mut stream::pending(), &not_done, drained.as_mut()).await, Next::Over);
        not_done.wait_until(Instant::now()).await;
        assert!(!not_done.is_set());

        let later = Done::default();
        let drain = sleep_until(far());
        tokio::pin!(drain);
        let set_later = async {
            tokio::task::yield_now().await;
            later.set();
        };
        let mut quiet = stream::pending();
        let (got, ()) = tokio::join!(next_frame(&mut quiet, &later, drain.as_mut()), set_later);
        assert_eq!(got, Next::Over, "a reader waiting is woken when done is set");
    }
}
