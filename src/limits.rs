//! Connection limits: how many sockets the server serves at once, in total and per client
//! address. Past either, a client gets HTTP 503 with `Retry-After` instead of the server
//! running out of file descriptors or memory for one greedy client.

use std::collections::HashMap;
use std::net::IpAddr;
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
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
        if self.limits.max_per_ip.is_some() {
            let mut per_ip = self.limits.per_ip.lock().unwrap();
            if let Some(n) = per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
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

    /// Takes a slot for a socket from `ip`, or says which limit it is over.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, String> {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = Slot {
            limits: self.clone(),
            ip,
        };
        if self.max_per_ip.is_some() {
            *self.per_ip.lock().unwrap().entry(ip).or_default() += 1;
        }
        if let Some(max) = self.max_total {
            if total > max {
                return Err(format!("{max} connections open (max_connections)"));
            }
        }
        if let Some(max) = self.max_per_ip {
            let n = self.per_ip.lock().unwrap().get(&ip).copied().unwrap_or(0);
            if n > max {
                return Err(format!(
                    "{max} connections open from {ip} (max_connections_per_ip)"
                ));
            }
        }
        Ok(slot)
    }

    /// Logs a refusal, at most once a second, with how many went unlogged since.
    pub fn log_refusal(&self, peer: &std::net::SocketAddr, why: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.logged_at.swap(now, Ordering::Relaxed) == now {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let more = self.unlogged.swap(0, Ordering::Relaxed);
        let more = if more > 0 {
            format!(" ({more} more refused in the last second)")
        } else {
            String::new()
        };
        log::warn!("{peer}: refused with 503: {why}{more}");
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
        let refused = |r: Result<Slot, String>| r.err().expect("refused");
        let first = limits.admit(a).ok().unwrap();
        assert!(refused(limits.admit(a)).contains("max_connections_per_ip"));
        let second = limits.admit(b).ok().unwrap();
        assert!(refused(limits.admit(b)).contains("(max_connections)"));
        drop(first);
        let again = limits.admit(a).ok().unwrap();
        drop((second, again));
        assert_eq!(limits.total.load(Ordering::Relaxed), 0);
        assert!(limits.per_ip.lock().unwrap().is_empty());
    }

    #[test]
    fn no_limits_admit_everyone() {
        let limits = Arc::new(ConnLimits::default());
        let slots: Vec<_> = (0..100)
            .map(|_| limits.admit("::1".parse().unwrap()).ok().unwrap())
            .collect();
        assert_eq!(slots.len(), 100);
    }
}
