//! Connection limits: how many sockets the server serves at once, in total and per client
//! address (past either, HTTP 503 with `Retry-After`), and how fast one address may open
//! WebSockets (past it, HTTP 429), instead of the server running out of file descriptors,
//! memory or handshake work for one greedy client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A handshake bucket holds this many seconds of handshakes at the rate.
const HANDSHAKE_BURST_SECS: f64 = 2.0;

#[derive(Default)]
pub struct ConnLimits {
    max_total: Option<usize>,
    max_per_ip: Option<usize>,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// WebSocket handshakes per second per address, and each address's bucket (tokens, when
    /// last refilled). Full buckets are forgotten, so the map holds only recent addresses.
    handshake_rate: Option<f64>,
    handshakes: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    /// Second of the last refusal logged, and refusals since: a flood logs once a second.
    logged_at: AtomicU64,
    unlogged: AtomicU64,
}

/// A served socket's place under the limits, given back when it is dropped.
pub struct Slot {
    limits: Arc<ConnLimits>,
    /// The client address it counts for, once known (behind a proxy: after the request head).
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut per_ip = self.limits.per_ip.lock().unwrap();
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

impl Slot {
    /// Counts the socket for client address `ip`, or says it is over that address's limit.
    pub fn claim(&mut self, ip: IpAddr) -> Result<(), String> {
        let Some(max) = self.limits.max_per_ip else {
            return Ok(());
        };
        let mut per_ip = self.limits.per_ip.lock().unwrap();
        let n = per_ip.entry(ip).or_default();
        *n += 1;
        self.ip = Some(ip);
        if *n > max {
            return Err(format!(
                "{max} connections open from {ip} (max_connections_per_ip)"
            ));
        }
        Ok(())
    }
}

impl ConnLimits {
    pub fn new(
        max_total: Option<usize>,
        max_per_ip: Option<usize>,
        handshake_rate: Option<f64>,
    ) -> Self {
        Self {
            max_total,
            max_per_ip,
            handshake_rate,
            ..Self::default()
        }
    }

    /// Whether `ip` may open another WebSocket now (`handshake_rate_per_ip`).
    pub fn handshake(&self, ip: IpAddr, now: Instant) -> Result<(), String> {
        let Some(rate) = self.handshake_rate else {
            return Ok(());
        };
        let capacity = (rate * HANDSHAKE_BURST_SECS).max(1.0);
        let mut buckets = self.handshakes.lock().unwrap();
        if buckets.len() >= 4096 {
            // Addresses quiet long enough to have refilled need no memory.
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < capacity
            });
        }
        let (tokens, at) = buckets.entry(ip).or_insert((capacity, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(capacity);
        *at = now;
        if *tokens < 1.0 {
            return Err(format!(
                "{ip} opens WebSockets faster than {rate}/s (handshake_rate_per_ip)"
            ));
        }
        *tokens -= 1.0;
        Ok(())
    }

    /// Takes a slot for a new socket and says whether the server is over `max_connections`.
    /// The slot counts either way until it is dropped; `Slot::claim` then counts it for its
    /// client's address.
    pub fn admit(self: &Arc<Self>) -> (Slot, Result<(), String>) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = Slot {
            limits: self.clone(),
            ip: None,
        };
        let verdict = match self.max_total {
            Some(max) if total > max => Err(format!("{max} connections open (max_connections)")),
            _ => Ok(()),
        };
        (slot, verdict)
    }

    /// Logs a refusal, at most once a second, with how many went unlogged since.
    pub fn log_refusal(&self, client: &SocketAddr, status: u16, why: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.logged_at.swap(now, Ordering::Relaxed) == now {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let more = match self.unlogged.swap(0, Ordering::Relaxed) {
            0 => String::new(),
            n => format!(" ({n} more refused in the last second)"),
        };
        log::warn!("{client}: refused with {status}: {why}{more}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_given_back() {
        let limits = Arc::new(ConnLimits::new(Some(2), Some(1), None));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let take = |ip: IpAddr| {
            let (mut slot, total) = limits.admit();
            let result = total.and_then(|()| slot.claim(ip));
            (slot, result)
        };
        let (first, ok) = take(a);
        assert!(ok.is_ok());
        let (refused, over) = take(a);
        assert!(over.unwrap_err().contains("max_connections_per_ip"));
        drop(refused);
        let (second, ok) = take(b);
        assert!(ok.is_ok());
        let (refused, over) = take(b);
        assert!(over.unwrap_err().contains("(max_connections)"));
        drop((refused, first));
        let (again, ok) = take(a);
        assert!(ok.is_ok());
        drop((second, again));
        assert_eq!(limits.total.load(Ordering::Relaxed), 0);
        assert!(limits.per_ip.lock().unwrap().is_empty());
    }

    #[test]
    fn handshakes_per_address_are_rate_limited_with_a_burst() {
        let limits = ConnLimits::new(None, None, Some(5.0));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        let passed = (0..50).filter(|_| limits.handshake(a, t0).is_ok()).count();
        assert_eq!(passed, 10); // two seconds at 5/s
        assert!(limits
            .handshake(a, t0)
            .unwrap_err()
            .contains("handshake_rate_per_ip"));
        assert!(limits.handshake(b, t0).is_ok()); // another address has its own
        assert!(limits
            .handshake(a, t0 + std::time::Duration::from_millis(200))
            .is_ok());
    }

    #[test]
    fn no_limits_admit_everyone() {
        let limits = Arc::new(ConnLimits::default());
        let slots: Vec<_> = (0..100)
            .map(|_| {
                let (mut slot, total) = limits.admit();
                assert!(total.is_ok() && slot.claim("::1".parse().unwrap()).is_ok());
                slot
            })
            .collect();
        assert_eq!(slots.len(), 100);
    }
}
