//! Command line of the WebSocket load generator: parses options, raises RLIMIT_NOFILE, runs one
//! scenario on a single-threaded runtime under an overall deadline and prints one JSON line.

mod chatproto;
mod churn;
mod cluster;
mod conn;
mod fanout;
mod flow;
mod handshake;
mod idle;
mod payload;
mod peer;
mod rawws;
mod reading;
mod sequence;
mod socketio;
mod stats;
mod tls;

use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

use crate::chatproto::Proto;
use crate::conn::Target;
use crate::stats::Clock;

/// WebSocket load generator for the benchmark protocol (see benches/PROTOCOL.md).
///
/// Prints exactly one JSON object on stdout; progress and errors go to stderr.
#[derive(Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options every subcommand takes (a runner can pass the same set to all of them).
#[derive(Args, Clone)]
struct Common {
    /// Server host (name or IP).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port.
    #[arg(long)]
    port: u16,
    /// Server process id: sample its CPU over the measurement and its RSS (from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(flatten)]
    run: RunOpts,
}

/// Timing and message size of a run (every subcommand takes them, `cluster` too).
#[derive(Args, Clone)]
struct RunOpts {
    /// Measurement window in seconds (idle measures over --hold instead).
    #[arg(long, default_value_t = 5.0, value_parser = positive_secs)]
    duration: f64,
    /// Seconds of traffic before the window, not counted (not used by idle).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative_secs)]
    warmup: f64,
    /// Message payload size in bytes: a 40-byte header padded with 'x' (not used by handshake, idle).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(payload::HEADER_LEN as i64..=(16 << 20)))]
    size: u32,
}

/// Measurement timing of the traffic scenarios.
#[derive(Clone, Copy)]
pub struct Timing {
    pub duration: f64,
    pub warmup: f64,
}

impl RunOpts {
    fn timing(&self) -> Timing {
        Timing { duration: self.duration, warmup: self.warmup }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Connections to /echo, each keeping --window messages in flight.
    Echo {
        #[command(flatten)]
        c: Common,
        /// Connections.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        conns: u32,
        /// Messages in flight per connection.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
        window: u32,
        /// Write a connection's --window messages together (one write), and the next window
        /// once all of them have come back: the burst shape of a client that sends in batches.
        #[arg(long)]
        burst: bool,
    },
    /// Subscribers on /sub, one publisher on /pub keeping --window messages in flight.
    Fanout {
        #[command(flatten)]
        c: Common,
        /// Subscriber connections.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
        subs: u32,
        /// Published messages in flight (complete when every subscriber has it).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
        window: u32,
        /// raw: /sub and /pub of the benchmark protocol; chat: everyone (publisher too) enters
        /// room `bench` of the chat protocol on `/` and messages are JSON `message` events.
        #[arg(long, value_enum, default_value_t = Proto::Raw)]
        protocol: Proto,
    },
    /// Connections to /chat, each keeping --window of its own messages in flight.
    Chat {
        #[command(flatten)]
        c: Common,
        /// Room members.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
        conns: u32,
        /// Own messages in flight per member (complete when it gets its own copy back).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
        window: u32,
        /// raw: /chat of the benchmark protocol; chat: members enter room `chat` of the chat
        /// protocol on `/` and messages are JSON `message` events.
        #[arg(long, value_enum, default_value_t = Proto::Raw)]
        protocol: Proto,
    },
    /// Loops of connect + handshake on /echo + reset (SO_LINGER 0).
    Handshake {
        #[command(flatten)]
        c: Common,
        /// Parallel connect-handshake-reset loops.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: u32,
    },
    /// Many quiet connections to /echo: server memory per connection and CPU while holding.
    Idle {
        #[command(flatten)]
        c: Common,
        /// Connections to open and hold.
        #[arg(long, default_value_t = 10000, value_parser = clap::value_parser!(u32).range(1..))]
        conns: u32,
        /// Seconds to hold the connections open while measuring.
        #[arg(long, default_value_t = 10.0, value_parser = non_negative_secs)]
        hold: f64,
        /// Comma-separated IPv4 source addresses to bind to, round-robin (e.g. 127.0.0.1,127.0.0.2).
        #[arg(long, value_delimiter = ',')]
        source_ips: Vec<IpAddr>,
        /// Connections being opened at once.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: u32,
        /// Give up opening connections after this many seconds.
        #[arg(long, default_value_t = 120.0, value_parser = positive_secs)]
        open_timeout: f64,
    },
    /// The soak benchmark's load (benches/soak.py): connect, a frame or two, go, --count
    /// times in a mix of endings (clean, reset, FIN, half a frame, hooks that raise), and slow
    /// readers that stop reading until the server sheds them.
    Churn {
        #[command(flatten)]
        c: Common,
        /// Connections to make in all.
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        /// Stop starting connections after this many seconds, even short of --count.
        #[arg(long, default_value_t = 900.0, value_parser = positive_secs)]
        seconds: f64,
        /// Parallel connect-exchange-close loops.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: u32,
        /// Parallel slow-reader loops (0: none).
        #[arg(long, default_value_t = 4)]
        slow: u32,
        /// Seconds a slow reader reads nothing before it reads again to see how it ended.
        #[arg(long, default_value_t = 2.0, value_parser = positive_secs)]
        slow_hold: f64,
        /// Churn rooms, joined round-robin (`?room=c0` ... ): rooms keep appearing and emptying.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
        rooms: u32,
        /// Prefix of this process's echo tokens (several processes share the rooms).
        #[arg(long, default_value = "p0")]
        tag: String,
        /// Comma-separated IPv4 source addresses to bind to, round-robin (more ports to use).
        #[arg(long, value_delimiter = ',')]
        source_ips: Vec<IpAddr>,
        /// Speak wss://, trusting only the CA certificate(s) in this PEM file; the server's
        /// certificate must name --host.
        #[arg(long)]
        tls_ca: Option<std::path::PathBuf>,
    },
    /// Subscribers spread round-robin over several nodes of a cluster, senders on the first or
    /// every node; every delivery is checked per sender: no loss, no duplicate, order kept.
    Cluster {
        #[command(flatten)]
        run: RunOpts,
        /// The nodes, host:port, comma-separated (one node is a cluster of one).
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Processes to sample CPU and RSS of (the nodes and the broker), comma-separated.
        #[arg(long, value_delimiter = ',')]
        server_pids: Vec<u32>,
        /// The core the servers are pinned to: its busy time is reported too.
        #[arg(long)]
        server_core: Option<u32>,
        /// Subscribers, spread round-robin over the nodes.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
        subs: u32,
        /// Sender connections (not room members).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=4096))]
        senders: u32,
        /// Where the senders connect: all on the first node, or round-robin over them.
        #[arg(long, value_enum, default_value_t = cluster::SenderNodes::All)]
        sender_nodes: cluster::SenderNodes,
        /// Messages in flight per sender (complete when every subscriber has it).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
        window: u32,
        /// raw: /sub and /pub of the benchmark protocol; socketio: Socket.IO v5 over the
        /// websocket transport (`role=sub|pub` in the query), events `pub` in and `m` out.
        #[arg(long, value_enum, default_value_t = cluster::Wire::Raw)]
        protocol: cluster::Wire,
        /// Seconds after the senders stop that deliveries may still arrive (then: lost).
        #[arg(long, default_value_t = 5.0, value_parser = non_negative_secs)]
        drain: f64,
    },
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

fn non_negative_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a number of seconds >= 0, got {s:?}")),
    }
}

/// What a scenario reports: its JSON fields, and whether it could connect at all.
pub struct Outcome {
    pub out: Map<String, Value>,
    pub connected: bool,
}

impl Cmd {
    fn name(&self) -> &'static str {
        match self {
            Cmd::Echo { .. } => "echo",
            Cmd::Fanout { .. } => "fanout",
            Cmd::Chat { .. } => "chat",
            Cmd::Handshake { .. } => "handshake",
            Cmd::Idle { .. } => "idle",
            Cmd::Churn { .. } => "churn",
            Cmd::Cluster { .. } => "cluster",
        }
    }

    /// The single server's options (None for `cluster`, which has several).
    fn common(&self) -> Option<&Common> {
        match self {
            Cmd::Echo { c, .. }
            | Cmd::Fanout { c, .. }
            | Cmd::Chat { c, .. }
            | Cmd::Handshake { c, .. }
            | Cmd::Idle { c, .. }
            | Cmd::Churn { c, .. } => Some(c),
            Cmd::Cluster { .. } => None,
        }
    }

    fn run_opts(&self) -> &RunOpts {
        match (self, self.common()) {
            (Cmd::Cluster { run, .. }, _) => run,
            (_, Some(c)) => &c.run,
            (_, None) => unreachable!("every other subcommand has Common"),
        }
    }

    /// The whole run never lasts longer than this.
    fn deadline(&self) -> Duration {
        let r = self.run_opts();
        let secs = match self {
            Cmd::Idle { hold, open_timeout, .. } => open_timeout + 2.0 + hold + 30.0,
            // The cycles under way when time is up, and the slow readers' last (up to 45 s).
            Cmd::Churn { seconds, slow_hold, .. } => seconds + slow_hold + 90.0,
            Cmd::Cluster { nodes, drain, .. } => {
                let setup = conn::OPEN_BUDGET + socketio::HANDSHAKE_TIMEOUT;
                let probes = cluster::BARRIER_TIMEOUT + cluster::PROBE_DRAIN_TIMEOUT;
                nodes.len() as f64 * setup.as_secs_f64() + probes.as_secs_f64() + r.warmup + r.duration + drain + 30.0
            }
            _ => r.warmup + r.duration + 30.0,
        };
        Duration::from_secs_f64(secs)
    }
}

/// host:port, or [v6]:port.
fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("expected host:port, got {s:?}"))?;
    let port = port.parse().map_err(|_| format!("bad port in {s:?}"))?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

async fn run(cmd: Cmd, clock: Clock) -> Result<Outcome, String> {
    let (timing, size) = (cmd.run_opts().timing(), cmd.run_opts().size as usize);
    if let Cmd::Cluster {
        nodes, server_pids, server_core, subs, senders, sender_nodes, window, protocol, drain, ..
    } = cmd
    {
        let mut targets = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let (host, port) = split_host_port(n)?;
            targets.push(Target::resolve(host, port).await?);
        }
        let a = cluster::ClusterArgs {
            wire: protocol,
            nodes: targets,
            subs: subs as usize,
            senders: senders as usize,
            sender_nodes,
            window,
            size,
            drain,
        };
        return Ok(cluster::run(a, timing, &server_pids, server_core, clock).await);
    }
    let Some(c) = cmd.common().cloned() else { unreachable!("cluster returned above") };
    let target = Target::resolve(&c.host, c.port).await?;
    let pid = c.server_pid;
    Ok(match cmd {
        Cmd::Echo { conns, window, burst, .. } => {
            let a = peer::PeerArgs {
                kind: peer::Kind::Echo,
                proto: Proto::Raw,
                conns: conns as usize,
                window,
                size,
                burst,
            };
            peer::run(a, target, timing, pid, clock).await
        }
        Cmd::Chat { conns, window, protocol, .. } => {
            let a = peer::PeerArgs {
                kind: peer::Kind::Chat,
                proto: protocol,
                conns: conns as usize,
                window,
                size,
                burst: false,
            };
            peer::run(a, target, timing, pid, clock).await
        }
        Cmd::Fanout { subs, window, protocol, .. } => {
            let a = fanout::FanoutArgs { proto: protocol, subs: subs as usize, window, size };
            fanout::run(a, target, timing, pid, clock).await
        }
        Cmd::Handshake { concurrency, .. } => handshake::run(concurrency as usize, target, timing, pid, clock).await,
        Cmd::Idle { conns, hold, source_ips, concurrency, open_timeout, .. } => {
            let a = idle::IdleArgs {
                conns: conns as usize,
                hold,
                concurrency: concurrency as usize,
                open_timeout,
                source_ips,
            };
            idle::run(a, target, pid).await
        }
        Cmd::Churn { count, seconds, concurrency, slow, slow_hold, rooms, tag, source_ips, tls_ca, .. } => {
            let tls = tls_ca.map(|ca| tls::TlsClient::new(&ca, &c.host)).transpose()?;
            let a = churn::ChurnArgs {
                count,
                seconds,
                concurrency: concurrency as usize,
                slow: slow as usize,
                slow_hold,
                rooms,
                tag,
                source_ips,
                tls,
            };
            churn::run(a, target.addr, &target.authority, pid).await
        }
        Cmd::Cluster { .. } => unreachable!("cluster returned above"),
    })
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the resulting soft limit.
fn raise_nofile_limit() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: r is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return None;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r = raised;
            }
        }
    }
    Some(r.rlim_cur)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cmd = cli.cmd;
    let name = cmd.name();
    let nofile = raise_nofile_limit();
    if let (Cmd::Idle { conns, .. }, Some(limit)) = (&cmd, nofile)
        && u64::from(*conns) + 32 > limit
    {
        eprintln!("loadgen: warning: RLIMIT_NOFILE is {limit}, too low for {conns} connections");
    }
    let (host, port) = match (&cmd, cmd.common()) {
        (Cmd::Cluster { nodes, .. }, _) => (nodes.join(","), None),
        (_, Some(c)) => (c.host.clone(), Some(c.port)),
        (_, None) => unreachable!("every other subcommand has Common"),
    };
    let deadline = cmd.deadline();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let clock = Clock::new();
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, async { tokio::time::timeout(deadline, run(cmd, clock)).await });

    let mut out = Map::new();
    let mut connected = false;
    let mut error = Value::Null;
    match result {
        Ok(Ok(o)) => {
            out = o.out;
            connected = o.connected;
            if !connected {
                error = json!("could not connect");
            }
        }
        Ok(Err(e)) => error = json!(e),
        Err(_) => {
            connected = true;
            error = json!(format!("overall deadline of {}s exceeded", deadline.as_secs_f64()));
        }
    }
    if !error.is_null() {
        eprintln!("loadgen: {name}: {}", error.as_str().unwrap_or_default());
    }
    out.insert("scenario".into(), json!(name));
    out.insert("host".into(), json!(host));
    out.insert("port".into(), json!(port));
    out.insert("error".into(), error);
    out.insert("nofile_limit".into(), json!(nofile));
    let line = Value::Object(out).to_string();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    // Skip tearing down thousands of connections one by one: the kernel closes them.
    std::process::exit(if connected { 0 } else { 1 })
}
