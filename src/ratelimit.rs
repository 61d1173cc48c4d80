//! Per-connection rate limits on what a client sends: messages per second and bytes per
//! second, each a token bucket that allows a burst. A message costs one token of the first; in
//! the second it is let through while anything is left and then paid for in full (a large
//! message puts the bucket in debt), so a message of any allowed size can pass and the average
//! stays at the rate.

use std::time::{Duration, Instant};

use crate::config::OverflowPolicy;
use crate::connection::ConnHandle;

#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    pub messages_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
    /// Seconds of traffic at the rate a client may send at once.
    pub burst: Duration,
    /// `Close`: close with 1008; `Drop`: drop the message, count it, keep the connection.
    pub policy: OverflowPolicy,
}

struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
}

impl Bucket {
    fn new(rate: f64, burst: Duration) -> Self {
        let capacity = (rate * burst.as_secs_f64()).max(1.0);
        Self {
            rate,
            capacity,
            tokens: capacity,
        }
    }

    fn refill(&mut self, elapsed: f64) {
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
    }
}

/// One connection's buckets.
pub struct Limiter {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    last: Instant,
}

impl Limiter {
    pub fn new(limit: &RateLimit, now: Instant) -> Self {
        Self {
            messages: limit.messages_per_s.map(|r| Bucket::new(r, limit.burst)),
            bytes: limit.bytes_per_s.map(|r| Bucket::new(r, limit.burst)),
            last: now,
        }
    }

    /// Whether a message of `len` bytes arriving `now` is within the limits (then it is paid).
    pub fn admit(&mut self, len: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let mut ok = true;
        // A message costs one whole token; bytes may run into debt (see the module's comment).
        if let Some(b) = &mut self.messages {
            b.refill(elapsed);
            ok &= b.tokens >= 1.0;
        }
        if let Some(b) = &mut self.bytes {
            b.refill(elapsed);
            ok &= b.tokens > 0.0;
        }
        if ok {
            if let Some(b) = &mut self.messages {
                b.tokens -= 1.0;
            }
            if let Some(b) = &mut self.bytes {
                b.tokens -= len as f64;
            }
        }
        ok
    }
}

/// A message over the client's rate limit: the connection closes (1008), or the message is
/// dropped (counted; logged once per connection).
pub fn over(handle: &ConnHandle, limit: &RateLimit, logged: &mut bool) {
    let what = match (limit.messages_per_s, limit.bytes_per_s) {
        (Some(m), Some(b)) => format!("{m} messages/s, {b} bytes/s"),
        (Some(m), None) => format!("{m} messages/s"),
        (None, Some(b)) => format!("{b} bytes/s"),
        (None, None) => String::new(),
    };
    let id = handle.id;
    match limit.policy {
        OverflowPolicy::Close => {
            if handle.is_open() {
                log::warn!("connection {id}: over its rate limit ({what}, burst {:.1} s); closing with 1008 (rate_limit_policy='close')", limit.burst.as_secs_f64());
                handle.close(1008, "rate limit exceeded: send more slowly".into());
            }
        }
        OverflowPolicy::Drop => {
            if !std::mem::replace(logged, true) {
                log::warn!("connection {id}: over its rate limit ({what}, burst {:.1} s); dropping what it sends too fast (rate_limit_policy='drop')", limit.burst.as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(messages: Option<f64>, bytes: Option<f64>) -> RateLimit {
        RateLimit {
            messages_per_s: messages,
            bytes_per_s: bytes,
            burst: Duration::from_secs(2),
            policy: OverflowPolicy::Close,
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut l = Limiter::new(&limit(Some(10.0), None), t0);
        let passed = (0..100).filter(|_| l.admit(1, t0)).count();
        assert_eq!(passed, 20); // two seconds' worth
        assert!(!l.admit(1, t0 + Duration::from_millis(50)));
        assert!(l.admit(1, t0 + Duration::from_millis(150)));
        // Ten seconds later it has its burst back, no more.
        let later = t0 + Duration::from_secs(10);
        assert_eq!((0..100).filter(|_| l.admit(1, later)).count(), 20);
    }

    #[test]
    fn a_large_message_passes_and_is_paid_for() {
        let t0 = Instant::now();
        let mut l = Limiter::new(&limit(None, Some(1000.0)), t0);
        assert!(l.admit(1_000_000, t0));
        // In debt: nothing more until the million bytes are paid at 1000/s.
        assert!(!l.admit(1, t0 + Duration::from_secs(500)));
        assert!(l.admit(1, t0 + Duration::from_secs(1001)));
    }
}
