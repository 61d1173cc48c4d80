//! The `churn` scenario, the load of the soak benchmark (benches/soak.py, against
//! benches/servers/soak_server.py): `concurrency` loops that each connect, handshake, exchange
//! a frame or two with the server's hooks and go, `count` times in all, in a fixed mix of
//! endings (`MIX`); and `slow` loops of clients that join the stayers' room and stop reading
//! while its broadcasts flow, until the server sheds them (`queue_bytes`): some then read, and
//! must find a Close 1013; the others never do, and must be dropped. Every request carries the
//! Origin the soak server allows (`ORIGIN`), but for one kind of cycle, which must get a 403.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Map, json};
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::Outcome;
use crate::rawws::{self, Fail, OP_TEXT, SocketOpts, Ws};
use crate::stats::{CpuMark, round2};
use crate::tls::TlsClient;

/// One cycle (connect to goodbye) taking longer than this is counted as an error.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed cycle, so that a refusing server is not hammered in a hot loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// How long a late slow reader reads before it counts as never shed.
const SLOW_DRAIN: Duration = Duration::from_secs(15);
/// How long a slow reader that never reads waits for the server to drop it (it takes the
/// server `close_timeout`, 5 s by default, and a second more, after it is shed).
const SLOW_GIVE_UP: Duration = Duration::from_secs(30);
/// A slow reader's receive buffer: small, so that what the kernel holds for it does not
/// stand in for the server's queue.
const SLOW_RCVBUF: u32 = 4096;
/// A slow reader's segment size: Ethernet's (see `SocketOpts::max_segment`).
const SLOW_MSS: u32 = 1400;
/// How often a slow reader asks the server for 64 KiB it will not read (see soak_server.py).
const SWAMP_EVERY: Duration = Duration::from_millis(10);
/// Examples of errors kept for the report.
const EXAMPLES: usize = 8;
/// The page the clients come from: soak_server.py's `allowed_origins`.
const ORIGIN: &str = "https://soak.example";
/// A page the server must refuse (a cross-site WebSocket hijack).
const FOREIGN_ORIGIN: &str = "https://elsewhere.example";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Echo through the sync hook, then a clean close.
    Echo,
    /// Broadcast to its churn room through the sync hook (its own copy comes back), clean close.
    Broadcast,
    /// Echo, then a TCP reset instead of a Close.
    Reset,
    /// Echo, then a TCP FIN without a Close.
    Fin,
    /// Half a frame after the 101, then gone (FIN or reset, alternately).
    HalfFrame,
    /// The request sent, then a reset before the 101 comes back (while `on_connect` runs).
    ResetEarly,
    /// A message the sync hook raises on; an echo afterwards proves the connection survived.
    Raise,
    /// Echo through an async hook, clean close.
    AsyncEcho,
    /// An async hook raises; an echo afterwards, clean close.
    AsyncRaise,
    /// A page of another site: the handshake must be refused with 403.
    ForeignOrigin,
}

/// The mix: cycles per hundred of each kind.
const MIX: [(Kind, u64); 10] = [
    (Kind::Echo, 53),
    (Kind::Broadcast, 10),
    (Kind::Reset, 10),
    (Kind::Fin, 5),
    (Kind::HalfFrame, 8),
    (Kind::ResetEarly, 4),
    (Kind::Raise, 4),
    (Kind::AsyncEcho, 3),
    (Kind::AsyncRaise, 1),
    (Kind::ForeignOrigin, 2),
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Broadcast => "broadcast",
            Kind::Reset => "reset",
            Kind::Fin => "fin",
            Kind::HalfFrame => "half_frame",
            Kind::ResetEarly => "reset_before_101",
            Kind::Raise => "hook_raise",
            Kind::AsyncEcho => "async_echo",
            Kind::AsyncRaise => "async_raise",
            Kind::ForeignOrigin => "foreign_origin",
        }
    }

    /// Cycle `i`'s kind. 37 is prime to 100, so the kinds interleave rather than come in runs.
    fn of(i: u64) -> Kind {
        let mut slot = i.wrapping_mul(37) % 100;
        for (kind, share) in MIX {
            if slot < share {
                return kind;
            }
            slot -= share;
        }
        unreachable!("MIX adds up to 100")
    }
}

pub struct ChurnArgs {
    pub count: u64,
    pub seconds: f64,
    pub concurrency: usize,
    pub slow: usize,
    pub slow_hold: f64,
    pub rooms: u32,
    /// Distinguishes this process's echo tokens from another's in a shared room.
    pub tag: String,
    pub source_ips: Vec<IpAddr>,
    /// wss:// when set.
    pub tls: Option<TlsClient>,
}

struct Shared {
    addr: SocketAddr,
    count: u64,
    tag: String,
    source_ips: Vec<IpAddr>,
    tls: Option<TlsClient>,
    /// The upgrade request of each churn room, and of the stayers' room.
    requests: Vec<Vec<u8>>,
    stay_request: Vec<u8>,
    foreign_request: Vec<u8>,
    slow_hold: Duration,
    deadline: Instant,
    next: Cell<u64>,
    churn_over: Cell<bool>,
    ok: RefCell<BTreeMap<&'static str, u64>>,
    errors: RefCell<BTreeMap<String, u64>>,
    slow: RefCell<BTreeMap<String, u64>>,
    examples: RefCell<Vec<String>>,
}

impl Shared {
    fn source(&self, i: u64) -> Option<IpAddr> {
        (!self.source_ips.is_empty()).then(|| self.source_ips[(i % self.source_ips.len() as u64) as usize])
    }

    fn error(&self, what: &str, f: &Fail) {
        *self.errors.borrow_mut().entry(format!("{what}:{}", f.key)).or_default() += 1;
        let mut ex = self.examples.borrow_mut();
        if ex.len() < EXAMPLES {
            let line = format!("{what}: {}: {}", f.key, f.detail);
            eprintln!("loadgen: churn error: {line}");
            ex.push(line);
        }
    }
}

pub async fn run(a: ChurnArgs, addr: SocketAddr, authority: &str, server_pid: Option<u32>) -> Outcome {
    let started = Instant::now();
    let requests =
        (0..a.rooms.max(1)).map(|r| rawws::request(authority, &format!("/churn?room=c{r}"), ORIGIN)).collect();
    let sh = Rc::new(Shared {
        addr,
        count: a.count,
        tag: a.tag,
        source_ips: a.source_ips,
        tls: a.tls,
        requests,
        stay_request: rawws::request(authority, "/slow?room=stay", ORIGIN),
        foreign_request: rawws::request(authority, "/churn?room=c0", FOREIGN_ORIGIN),
        slow_hold: Duration::from_secs_f64(a.slow_hold),
        deadline: started + Duration::from_secs_f64(a.seconds),
        next: Cell::new(0),
        churn_over: Cell::new(false),
        ok: RefCell::default(),
        errors: RefCell::default(),
        slow: RefCell::default(),
        examples: RefCell::default(),
    });
    eprintln!(
        "loadgen: churn: {} cycles, {} loops, {} slow readers, at most {} s{}",
        a.count,
        a.concurrency,
        a.slow,
        a.seconds,
        if sh.tls.is_some() { ", over TLS" } else { "" }
    );
    let mark = CpuMark::take(server_pid);
    let slow: Vec<_> = (0..a.slow as u64).map(|n| tokio::task::spawn_local(slow_reader(sh.clone(), n))).collect();
    let loops: Vec<_> = (0..a.concurrency.max(1)).map(|_| tokio::task::spawn_local(worker(sh.clone()))).collect();
    let progress = tokio::task::spawn_local(progress(sh.clone(), started));
    for t in loops {
        let _ = t.await;
    }
    let churn_secs = started.elapsed().as_secs_f64();
    sh.churn_over.set(true);
    progress.abort();
    let mut out = Map::new();
    // CPU over the churn itself, not the slow readers' last drain.
    mark.fill_since(server_pid, &mut out);
    for t in slow {
        let _ = t.await;
    }
    let started_cycles = sh.next.get();
    let ok: u64 = sh.ok.borrow().values().sum();
    let errors: u64 = sh.errors.borrow().values().sum();
    out.insert("cycles".into(), json!(started_cycles));
    out.insert("cycles_ok".into(), json!(ok));
    out.insert("errors".into(), json!(errors));
    out.insert("seconds".into(), json!(round2(churn_secs)));
    out.insert("cycles_per_s".into(), json!(round2(started_cycles as f64 / churn_secs.max(1e-9))));
    out.insert("ok_by_kind".into(), json!(*sh.ok.borrow()));
    out.insert("errors_by_kind".into(), json!(*sh.errors.borrow()));
    out.insert("slow_readers".into(), json!(*sh.slow.borrow()));
    out.insert("error_examples".into(), json!(*sh.examples.borrow()));
    let connected = ok > 0 || !sh.slow.borrow().is_empty();
    Outcome { out, connected }
}

async fn worker(sh: Rc<Shared>) {
    loop {
        let i = sh.next.get();
        if i >= sh.count || Instant::now() >= sh.deadline {
            return;
        }
        sh.next.set(i + 1);
        let kind = Kind::of(i);
        let result = timeout(CYCLE_TIMEOUT, cycle(&sh, i, kind)).await;
        match result {
            Ok(Ok(())) => *sh.ok.borrow_mut().entry(kind.name()).or_default() += 1,
            Ok(Err(f)) => {
                sh.error(kind.name(), &f);
                sleep(ERROR_BACKOFF).await;
            }
            Err(_) => sh.error(kind.name(), &Fail::new("timeout", format!("cycle {i} took over {CYCLE_TIMEOUT:?}"))),
        }
    }
}

/// One connection, start to end, as its kind says.
async fn cycle(sh: &Shared, i: u64, kind: Kind) -> Result<(), Fail> {
    // Half frames: three shapes, each ended by FIN and by reset in turn.
    let shape = (i / 100) % 6;
    let linger0 = matches!(kind, Kind::Reset | Kind::ResetEarly) || (kind == Kind::HalfFrame && shape % 2 == 1);
    let opts = SocketOpts { source: sh.source(i), linger0, ..SocketOpts::default() };
    let req = match kind {
        Kind::ForeignOrigin => &sh.foreign_request,
        _ => &sh.requests[(i % sh.requests.len() as u64) as usize],
    };
    let tcp = rawws::connect(sh.addr, req, opts, sh.tls.as_ref()).await?;
    match kind {
        Kind::ResetEarly => return Ok(()),
        Kind::ForeignOrigin => {
            return match Ws::upgraded(tcp, 0).await {
                Err(Fail { key: "refused", detail }) if detail.starts_with("HTTP/1.1 403") => Ok(()),
                Err(f) => Err(f),
                Ok(_) => Err(Fail::new("origin_accepted", format!("{FOREIGN_ORIGIN} was let in"))),
            };
        }
        _ => {}
    }
    let mut ws = Ws::upgraded(tcp, (i as u32) ^ 0x5a5a_5a5a).await?;
    let echo = format!("e{}-{i}", sh.tag);
    match kind {
        Kind::Echo | Kind::Reset | Kind::Fin => {
            ws.send_text(&echo).await?;
            ws.expect_text(echo.as_bytes()).await?;
            if kind == Kind::Echo {
                ws.close().await?;
            }
            // Reset: SO_LINGER 0 makes the drop a reset; Fin: a plain close, no Close frame.
        }
        Kind::Broadcast => {
            let b = format!("b{}-{i}", sh.tag);
            ws.send_text(&b).await?;
            ws.expect_text(b.as_bytes()).await?;
            ws.close().await?;
        }
        Kind::HalfFrame => {
            let whole = rawws::frame(OP_TEXT, &[b'e'; 200], [1, 2, 3, 4]);
            let part: &[u8] = match shape / 2 {
                0 => &[0x81],
                1 => &[0x81, 0xfe, 0x00],
                _ => &whole[..whole.len() - 150],
            };
            ws.send_raw(part).await?;
        }
        Kind::Raise | Kind::AsyncRaise => {
            let raise = if kind == Kind::Raise { format!("r{}-{i}", sh.tag) } else { r#"{"event":"araise"}"#.into() };
            ws.send_text(&raise).await?;
            ws.send_text(&echo).await?;
            ws.expect_text(echo.as_bytes()).await?;
            ws.close().await?;
        }
        Kind::AsyncEcho => {
            ws.send_text(&format!(r#"{{"event":"aecho","t":"{}-{i}"}}"#, sh.tag)).await?;
            ws.expect_text(format!("a{}-{i}", sh.tag).as_bytes()).await?;
            ws.close().await?;
        }
        Kind::ResetEarly | Kind::ForeignOrigin => unreachable!("returned above"),
    }
    Ok(())
}

/// Slow readers, one after another until the churn is over, in turn of two kinds. Both join
/// the stayers' room and ask the server for 64 KiB every 10 ms without reading. A *late*
/// reader starts reading after `slow_hold` and must find a Close 1013 at the end of what was
/// queued for it (the server waits `close_timeout` for it). A *never* reader goes on until the
/// server gives up and drops the socket (its writes fail then), `SLOW_GIVE_UP` at most.
async fn slow_reader(sh: Rc<Shared>, n: u64) {
    let mut k = 0u64;
    while !sh.churn_over.get() && Instant::now() < sh.deadline {
        let late = k % 2 == 1;
        let opts = SocketOpts {
            source: sh.source(n + k),
            linger0: true,
            recv_buffer: Some(SLOW_RCVBUF),
            max_segment: Some(SLOW_MSS),
        };
        let outcome = async {
            let tcp = rawws::connect(sh.addr, &sh.stay_request, opts, sh.tls.as_ref()).await?;
            let mut ws = Ws::upgraded(tcp, (n << 20 | k) as u32).await?;
            let until = Instant::now() + if late { sh.slow_hold } else { SLOW_GIVE_UP };
            let mut dropped = false;
            while Instant::now() < until {
                if ws.send_text("s").await.is_err() {
                    dropped = true;
                    break;
                }
                sleep(SWAMP_EVERY).await;
            }
            if !late {
                return Ok(if dropped { "never_read:dropped" } else { "never_read:not_dropped" }.to_owned());
            }
            sleep_until(until).await;
            Ok(match rawws::drain(&mut ws, SLOW_DRAIN).await {
                Ok(Some(code)) => format!("read_late:close_{code}"),
                Ok(None) => "read_late:ended_without_close".to_owned(),
                // Reading it made it a fast reader: it was not shed before it started (a server
                // whose hooks lag on a busy machine had not answered enough of its asks yet).
                Err(Fail { key: "not_shed", .. }) => "read_late:resumed_before_shed".to_owned(),
                Err(f) => return Err(f),
            })
        }
        .await;
        let key = outcome.unwrap_or_else(|f| {
            sh.error("slow_reader", &f);
            format!("error:{}", f.key)
        });
        if key.starts_with("error") {
            sleep(ERROR_BACKOFF).await;
        }
        *sh.slow.borrow_mut().entry(key).or_default() += 1;
        k += 1;
    }
}

async fn progress(sh: Rc<Shared>, started: Instant) {
    loop {
        sleep(Duration::from_secs(10)).await;
        let n = sh.next.get();
        let errors: u64 = sh.errors.borrow().values().sum();
        let secs = started.elapsed().as_secs_f64();
        eprintln!("loadgen: churn: {n} cycles in {secs:.0} s ({:.0}/s), {errors} errors", n as f64 / secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up_and_every_hundred_cycles_has_it() {
        assert_eq!(MIX.iter().map(|(_, n)| n).sum::<u64>(), 100);
        for (kind, share) in MIX {
            assert_eq!((1000..1100).filter(|&i| Kind::of(i) == kind).count() as u64, share, "{kind:?}");
        }
    }
}
