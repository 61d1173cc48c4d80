//! Connection limits: how many sockets the server serves at once, in total and per client
//! address. Past either, a client gets HTTP 503 with `Retry-After` instead of the server
//! running out of file descriptors or memory for one greedy client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub struct ConnLimits {
    max_total: Option<usize>,
    max_per_ip: Option<usize>,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
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
    pub fn new(max_total: Option<usize>, max_per_ip: Option<usize>) -> Self {
        Self {
            max_total,
            max_per_ip,
            ..Self::default()
        }
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
    pub fn log_refusal(&self, client: &SocketAddr, why: &str) {
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
        log::warn!("{client}: refused with 503: {why}{more}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_given_back() {
        let limits = Arc::new(ConnLimits::new(Some(2), Some(1)));
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
