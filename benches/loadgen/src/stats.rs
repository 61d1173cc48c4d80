//! Measurement plumbing: the run clock and measurement window, counters, the latency
//! histogram with error counting, and CPU/RSS sampling of processes through /proc.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// Nanoseconds since the loadgen started; the timestamps carried in payloads.
#[derive(Clone, Copy)]
pub struct Clock {
    t0: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock { t0: Instant::now() }
    }

    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// The tokio instant corresponding to `ns` on this clock.
    pub fn at(&self, ns: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.t0 + Duration::from_nanos(ns))
    }
}

/// The half-open measurement window [start_ns, end_ns) on the run clock.
#[derive(Clone, Copy)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    /// The window that starts `warmup` after `now_ns` and lasts `duration`.
    pub fn after_warmup(now_ns: u64, warmup: f64, duration: f64) -> Self {
        let start_ns = now_ns + secs_to_ns(warmup);
        Window { start_ns, end_ns: start_ns + secs_to_ns(duration) }
    }

    pub fn contains(&self, ns: u64) -> bool {
        ns >= self.start_ns && ns < self.end_ns
    }

    pub fn secs(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }

    /// `count` per second of the window.
    pub fn rate(&self, count: u64) -> f64 {
        round2(count as f64 / self.secs())
    }
}

pub fn secs_to_ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}

/// Adds `n` to a counter.
pub fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Latencies (microseconds) of counted messages plus the run's errors.
pub struct Recorder {
    hist: RefCell<Histogram<u64>>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
}

impl Recorder {
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds");
        Recorder { hist: RefCell::new(hist), errors: Cell::new(0), first_error: RefCell::new(None) }
    }

    /// Records one latency given in nanoseconds.
    pub fn latency_ns(&self, ns: u64) {
        self.hist.borrow_mut().saturating_record(ns / 1000);
    }

    /// Counts an error; the first one is kept (and shown on stderr) as an example.
    pub fn error(&self, what: &str, e: impl Display) {
        self.errors.set(self.errors.get() + 1);
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            let msg = format!("{what}: {e}");
            eprintln!("loadgen: first error: {msg}");
            *first = Some(msg);
        }
    }

    pub fn errors(&self) -> u64 {
        self.errors.get()
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.borrow().clone()
    }

    /// Adds `errors`, `first_error` and the latency summary fields to `out`.
    pub fn fill(&self, out: &mut Map<String, Value>) {
        self.fill_latency(out);
        self.fill_errors(out);
    }

    /// Adds `errors` and `first_error` to `out`.
    pub fn fill_errors(&self, out: &mut Map<String, Value>) {
        out.insert("errors".into(), json!(self.errors()));
        out.insert("first_error".into(), json!(self.first_error()));
    }

    /// Adds samples, p50_us, p99_us, p999_us, max_us and mean_us to `out`.
    pub fn fill_latency(&self, out: &mut Map<String, Value>) {
        let h = self.hist.borrow();
        out.insert("samples".into(), json!(h.len()));
        let q = |x: f64| {
            if h.is_empty() { Value::Null } else { json!(h.value_at_quantile(x)) }
        };
        out.insert("p50_us".into(), q(0.5));
        out.insert("p99_us".into(), q(0.99));
        out.insert("p999_us".into(), q(0.999));
        out.insert("max_us".into(), if h.is_empty() { Value::Null } else { json!(h.max()) });
        out.insert("mean_us".into(), if h.is_empty() { Value::Null } else { json!(round2(h.mean())) });
    }
}

fn proc_path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(p) => format!("/proc/{p}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

/// utime + stime of a process (None = this one), in clock ticks.
pub fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_path(pid, "stat")).ok()?;
    // The command name may contain spaces; fields resume after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of a process (None = this one) in KiB, from VmRSS.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(proc_path(pid, "status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// A CPU-time reading of the loadgen and (optionally) the server.
pub struct CpuMark {
    at: Instant,
    own: Option<u64>,
    server: Option<u64>,
}

/// Waits through the measurement `window` and adds the CPU and RSS figures over it to `out`
/// (`CpuMark::fill_since`).
pub async fn sample_window(clock: Clock, window: &Window, server_pid: Option<u32>, out: &mut Map<String, Value>) {
    tokio::time::sleep_until(clock.at(window.start_ns)).await;
    let mark = CpuMark::take(server_pid);
    tokio::time::sleep_until(clock.at(window.end_ns)).await;
    mark.fill_since(server_pid, out);
}

impl CpuMark {
    pub fn take(server_pid: Option<u32>) -> Self {
        CpuMark { at: Instant::now(), own: cpu_ticks(None), server: server_pid.and_then(|p| cpu_ticks(Some(p))) }
    }

    /// Adds loadgen_cpu_pct, server_cpu_pct and server_rss_kib (RSS read now) to `out`,
    /// CPU being in percent of one core between `self` and now.
    pub fn fill_since(&self, server_pid: Option<u32>, out: &mut Map<String, Value>) {
        let end = CpuMark::take(server_pid);
        let wall = end.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let tck = clock_ticks_per_sec();
        let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => json!(round2(b.saturating_sub(a) as f64 / tck / wall * 100.0)),
            _ => Value::Null,
        };
        out.insert("loadgen_cpu_pct".into(), pct(self.own, end.own));
        out.insert("server_cpu_pct".into(), pct(self.server, end.server));
        out.insert("server_rss_kib".into(), json!(server_pid.and_then(|p| rss_kib(Some(p)))));
        out.insert("loadgen_rss_kib".into(), json!(rss_kib(None)));
    }
}

/// Clock ticks of one core since boot, from /proc/stat.
#[derive(Clone, Copy, Debug)]
pub struct CoreTicks {
    /// All but idle and iowait.
    pub busy: u64,
    /// irq + softirq, part of `busy` charged to no process (on loopback, much of TCP's
    /// receive work).
    pub interrupts: u64,
    /// Part of `busy` the hypervisor ran something else (a virtual machine's core).
    pub steal: u64,
    pub total: u64,
}

pub fn core_ticks(core: u32) -> Option<CoreTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{core}");
    let line = stat.lines().find(|l| l.split_ascii_whitespace().next() == Some(name.as_str()))?;
    let ticks: Vec<u64> = line.split_ascii_whitespace().skip(1).map(|t| t.parse().ok()).collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let field = |i: usize| ticks.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice (guest time is in user).
    let total = total - field(8) - field(9);
    Some(CoreTicks { busy: total - field(3) - field(4), interrupts: field(5) + field(6), steal: field(7), total })
}

/// CPU-time readings of the loadgen, of several server processes (a cluster's nodes and its
/// broker, which share the server core) and of that core as a whole.
pub struct ProcsMark {
    at: Instant,
    own: Option<u64>,
    procs: Vec<Option<u64>>,
    core: Option<CoreTicks>,
}

impl ProcsMark {
    pub fn take(pids: &[u32], core: Option<u32>) -> Self {
        ProcsMark {
            at: Instant::now(),
            own: cpu_ticks(None),
            procs: pids.iter().map(|&p| cpu_ticks(Some(p))).collect(),
            core: core.and_then(core_ticks),
        }
    }

    /// Adds loadgen_cpu_pct, server_cpu_pct (the sum over `pids`), server_cpu_pct_each,
    /// server_core_busy_pct (the whole core's, every process on it: with server_cpu_pct it
    /// tells what others took from what the servers left idle), server_core_irq_pct (the part
    /// of it in interrupts, charged to no process), server_core_steal_pct (the part the
    /// hypervisor gave to others), server_rss_kib (the sum, read
    /// now) and loadgen_rss_kib to `out`; CPU in percent of one core between `self` and now.
    pub fn fill_since(&self, pids: &[u32], core: Option<u32>, out: &mut Map<String, Value>) {
        let end = ProcsMark::take(pids, core);
        let (mut busy, mut interrupts, mut steal) = (Value::Null, Value::Null, Value::Null);
        if let (Some(a), Some(b)) = (self.core, end.core)
            && b.total > a.total
        {
            let share = |x: u64, y: u64| json!(round2(y.saturating_sub(x) as f64 / (b.total - a.total) as f64 * 100.0));
            (busy, interrupts, steal) =
                (share(a.busy, b.busy), share(a.interrupts, b.interrupts), share(a.steal, b.steal));
        }
        out.insert("server_core_busy_pct".into(), busy);
        out.insert("server_core_irq_pct".into(), interrupts);
        out.insert("server_core_steal_pct".into(), steal);
        let wall = end.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let tck = clock_ticks_per_sec();
        let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(round2(b.saturating_sub(a) as f64 / tck / wall * 100.0)),
            _ => None,
        };
        let each: Vec<Option<f64>> = self.procs.iter().zip(&end.procs).map(|(&a, &b)| pct(a, b)).collect();
        let sum = if pids.is_empty() || each.iter().any(Option::is_none) {
            Value::Null
        } else {
            json!(round2(each.iter().flatten().sum::<f64>()))
        };
        let rss: Option<Vec<u64>> = pids.iter().map(|&p| rss_kib(Some(p))).collect();
        out.insert("loadgen_cpu_pct".into(), json!(pct(self.own, end.own)));
        out.insert("server_cpu_pct".into(), sum);
        out.insert("server_cpu_pct_each".into(), json!(each));
        out.insert("server_rss_kib".into(), json!(rss.filter(|r| !r.is_empty()).map(|r| r.iter().sum::<u64>())));
        out.insert("loadgen_rss_kib".into(), json!(rss_kib(None)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_proc() {
        assert!(cpu_ticks(None).is_some());
        assert!(rss_kib(None).unwrap() > 0);
        let me = std::process::id();
        assert!(cpu_ticks(Some(me)).is_some());
    }

    #[test]
    fn reads_core_ticks() {
        let c = core_ticks(0).unwrap();
        assert!(c.interrupts + c.steal <= c.busy && c.busy <= c.total && c.total > 0);
        assert!(core_ticks(100_000).is_none());
    }

    #[test]
    fn window_bounds() {
        let w = Window::after_warmup(10, 1.0, 2.0);
        assert!(!w.contains(10));
        assert!(w.contains(1_000_000_010));
        assert!(!w.contains(3_000_000_010));
        assert_eq!(w.rate(10), 5.0);
    }
}
