//! The hook duration histogram's buckets, and the tally a thread keeps of its hook runs before
//! it hands them to the shared counters (`Metrics::hooks`) in one go.

/// Upper bounds of the hook duration histogram, in nanoseconds, with their `le` labels
/// (seconds). A last, unbounded bucket (`+Inf`) follows.
pub const HOOK_BUCKETS: [(u64, &str); 20] = [
    (5_000, "5e-06"),
    (10_000, "1e-05"),
    (25_000, "2.5e-05"),
    (50_000, "5e-05"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1.0"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5.0"),
    (10_000_000_000, "10.0"),
];

/// One bucket per bound, and the unbounded one.
pub type HookBuckets = [u64; HOOK_BUCKETS.len() + 1];

/// One hook run, timed around its call (`call_hook`, or the dispatcher for async hooks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookTime {
    pub nanos: u64,
    /// The hook raised (a `Reject` from `on_connect` is a decision, not a failure).
    pub failed: bool,
}

/// Hook times summed locally before they touch the shared counters (`Metrics::hooks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookTally {
    pub(super) buckets: HookBuckets,
    pub(super) nanos: u64,
    pub(super) errors: u64,
}

impl HookTally {
    pub const fn new() -> Self {
        Self {
            buckets: [0; HOOK_BUCKETS.len() + 1],
            nanos: 0,
            errors: 0,
        }
    }

    /// Hook runs in the tally.
    pub fn calls(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn add(&mut self, t: HookTime) {
        self.buckets[HOOK_BUCKETS.partition_point(|(le, _)| *le < t.nanos)] += 1;
        self.nanos = self.nanos.saturating_add(t.nanos);
        self.errors += u64::from(t.failed);
    }
}

impl Default for HookTally {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_labels_match_their_bounds() {
        for (nanos, le) in HOOK_BUCKETS {
            let secs: f64 = le.parse().unwrap();
            assert_eq!((secs * 1e9).round() as u64, nanos, "{le}");
        }
        assert!(HOOK_BUCKETS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn a_tally_counts_runs_errors_and_time() {
        let mut t = HookTally::new();
        assert_eq!(t.calls(), 0);
        t.add(HookTime {
            nanos: 10,
            failed: false,
        });
        t.add(HookTime {
            nanos: 20_000,
            failed: true,
        });
        assert_eq!(t.calls(), 2);
        assert_eq!((t.nanos, t.errors), (20_010, 1));
        assert_eq!(t, {
            let mut again = HookTally::default();
            again.add(HookTime {
                nanos: 10,
                failed: false,
            });
            again.add(HookTime {
                nanos: 20_000,
                failed: true,
            });
            again
        });
    }
}
