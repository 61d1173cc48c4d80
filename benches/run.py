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

The `cluster` scenario (benches/cluster.py) runs three nodes of each kind and one Redis, all on
core 0 (the load generator alone on core 1). `--only cluster` rewrites only its section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster import cluster_section, run_cluster, splice_section
from harness import (
    HERE,
    LOADGEN,
    LOADGEN_CORE,
    REFSERVER,
    ROOT,
    SERVER_CORE,
    SERVERS_DIR,
    VENV_PY,
    fmt,
    free_port,
    median_of,
    stop,
    wait_port,
)

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
        Scenario(
            "echo-64-w1",
            "(a) echo via a sync hook, 64 B, 50 conns, 1 in flight",
            ["echo", "--conns", "50", "--window", "1", "--size", "64", *d],
            "msgs_per_s",
        ),
        Scenario(
            "echo-64-w8",
            "(a) echo via a sync hook, 64 B, 50 conns, 8 in flight",
            ["echo", "--conns", "50", "--window", "8", "--size", "64", *d],
            "msgs_per_s",
        ),
        Scenario(
            "echo-64-w8-burst",
            "(a) echo via a sync hook, 64 B, 50 conns, 8 in flight written together (burst)",
            ["echo", "--conns", "50", "--window", "8", "--size", "64", "--burst", *d],
            "msgs_per_s",
        ),
        Scenario(
            "echo-1k-w1",
            "(a) echo via a sync hook, 1 KiB, 50 conns, 1 in flight",
            ["echo", "--conns", "50", "--window", "1", "--size", "1024", *d],
            "msgs_per_s",
        ),
        Scenario(
            "echo-1k-w8",
            "(a) echo via a sync hook, 1 KiB, 50 conns, 8 in flight",
            ["echo", "--conns", "50", "--window", "8", "--size", "1024", *d],
            "msgs_per_s",
        ),
        Scenario(
            "fanout-500",
            "(b) fan-out from one sender via a hook, 500 members, 64 B, window 16",
            ["fanout", "--subs", "500", "--window", "16", "--size", "64", *d],
            "deliveries_per_s",
        ),
        Scenario(
            "fanout-5000",
            "(b) fan-out from one sender via a hook, 5,000 members, 64 B, window 16",
            ["fanout", "--subs", "5000", "--window", "16", "--size", "64", *d],
            "deliveries_per_s",
        ),
        Scenario(
            "chat-16",
            "(b) chat shape via a hook: 16 clients, each message to all 16, window 4",
            ["chat", "--conns", "16", "--window", "4", "--size", "64", *d],
            "deliveries_per_s",
        ),
        Scenario(
            "preset-fanout-500",
            "(c) chat preset, no Python in the path: fan-out to 500 "
            "members, 64 B text, window 16 (the publisher is in the room too: 501 copies per "
            "message, the 500 subscribers' counted); rust-reference in its chat mode",
            ["fanout", "--protocol", "chat", "--subs", "500", "--window", "16", "--size", "64", *d],
            "deliveries_per_s",
            server_args=chat,
            only=no_py,
        ),
        Scenario(
            "preset-chat-16",
            "(c) chat preset, no Python in the path: 16 members, each "
            "message to all 16, 64 B text, window 4; rust-reference in its chat mode",
            ["chat", "--protocol", "chat", "--conns", "16", "--window", "4", "--size", "64", *d],
            "deliveries_per_s",
            server_args=chat,
            only=no_py,
        ),
        Scenario(
            "idle-10k",
            "(d) idle: 10,000 connections, heartbeat on (roomcast: every 5 s, "
            "so the hold includes sweeps); RSS per connection (KiB)",
            ["idle", "--conns", "10000", "--hold", str(idle_hold)],
            "rss_per_conn_kib",
            lower_is_better=True,
            roomcast_env={"ROOMCAST_HEARTBEAT": "5"},
        ),
        Scenario(
            "handshakes",
            "(e) handshakes per second (8 concurrent)",
            ["handshake", "--concurrency", "8", *d],
            "handshakes_per_s",
        ),
    ]


def idle_100k(idle_hold: float, names: tuple[str, ...]) -> Scenario:
    """100,000 idle connections, or as many as the fd limit allows (said in the title)."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    conns = 100_000 if hard >= 101_000 else max(0, hard - 1_000)
    ips = ",".join(f"127.0.0.{i}" for i in range(1, 6))
    title = "(d) idle: 100,000 connections, heartbeat on (roomcast: every 5 s); RSS per connection (KiB)"
    if conns < 100_000:
        title = (
            f"(d) idle: {conns:,} connections, the most this machine allows (open-files hard "
            f"limit {hard:,}, which no process here may raise), instead of 100,000; heartbeat on "
            "(roomcast: every 5 s); RSS per connection (KiB)"
        )
    return Scenario(
        "idle-max",
        title,
        ["idle", "--conns", str(conns), "--hold", str(idle_hold), "--source-ips", ips],
        "rss_per_conn_kib",
        lower_is_better=True,
        only=names,
        roomcast_env={"ROOMCAST_HEARTBEAT": "5"},
    )


def run_one(server: Server, sc: Scenario, log) -> dict:
    port = free_port()
    extra = sc.server_args.get(server.name, [])
    env = {**os.environ, **(sc.roomcast_env if server.name == "roomcast" else {})}
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *server.cmd, str(port), *extra],
        stdout=log,
        stderr=log,
        cwd=SERVERS_DIR,
        start_new_session=True,
        env=env,
    )
    try:
        wait_port(port, proc)
        cmd = [
            "taskset",
            "-c",
            LOADGEN_CORE,
            str(LOADGEN),
            *sc.args,
            "--port",
            str(port),
            "--server-pid",
            str(proc.pid),
        ]
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
    return (
        f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def versions() -> str:
    code = (
        "import importlib.metadata as m\n"
        "for p in ['roomcast','websockets','picows','aiohttp','uvloop','socketify']:\n"
        "    try: print(p, m.version(p))\n"
        "    except Exception: print(p, 'missing')\n"
    )
    out = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True).stdout.split(
        "\n"
    )
    node = shutil.which("node")
    if node:
        ws = SERVERS_DIR / "node" / "node_modules" / "ws" / "package.json"
        wsv = json.loads(ws.read_text())["version"] if ws.exists() else "missing"
        out.append(
            f"node {subprocess.run([node, '--version'], capture_output=True, text=True).stdout.strip()}, ws {wsv}"
        )
    return ", ".join(x for x in out if x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--idle-hold", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="1 run of 2 s each")
    ap.add_argument("--only", default="", help="comma-separated scenario keys")
    ap.add_argument("--servers", default="", help="comma-separated server names")
    ap.add_argument(
        "--idle-100k",
        default="roomcast,rust-reference",
        help="servers that also run the 100,000-connection idle test ('' for none)",
    )
    ap.add_argument(
        "--cluster-members",
        type=int,
        default=500,
        help="cluster: room members, spread over the nodes",
    )
    ap.add_argument("--cluster-senders", type=int, default=3, help="cluster: senders, spread too")
    ap.add_argument(
        "--cluster-window", type=int, default=8, help="cluster: messages in flight per sender"
    )
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report from benches/results/raw.json without running",
    )
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
    plan = [
        (r, sc, s)
        for r in range(args.runs)
        for sc in scs
        for s in runnable
        if not sc.only or s.name in sc.only
    ]
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
            print(
                f"[{i}/{len(plan)} run {r + 1}, ~{eta / 60:.0f} min left] {sc.key:<17} {s.name:<15} {shown}",
                file=sys.stderr,
                flush=True,
            )
    if not scs:  # the cluster alone: the other sections keep their figures
        if cl is not None:
            splice_section(Path(args.out), cluster_section(cl))
        return 0
    raw = {f"{k[0]}|{k[1]}": v for k, v in results.items()}
    raw["__meta__"] = {"runs": args.runs, "duration": args.duration}
    (logdir / "raw.json").write_text(json.dumps(raw, indent=1))
    write_report(Path(args.out), scs, all_servers, results, args, cl)
    return 0


# A row whose load generator used this much of its core or more may show the load generator's
# limit rather than the server's: it is marked, and a ratio built on it says so.
LOADGEN_CEILING_PCT = 80

# Sections below this line are studies measured by their own scripts (each names its command);
# a new report keeps them as they are.
STUDIES_MARK = "<!-- studies: measured by their own scripts; make bench keeps this part -->"


def kept_studies(report: Path) -> list[str]:
    """The studies part of an existing report, from its mark up to `## Reproduce`."""
    old = report.read_text().split("\n") if report.exists() else []
    if STUDIES_MARK not in old:
        return [STUDIES_MARK, ""]
    start = old.index(STUDIES_MARK)
    end = next((i for i in range(start, len(old)) if old[i] == "## Reproduce"), len(old))
    return old[start:end]


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
        f"- `loadgen CPU` at {LOADGEN_CEILING_PCT} % of its core or more marks a row: there the load "
        "generator, not the server, may be the limit, and the row's figure is a floor.",
        "",
    ]
    missing = [s for s in all_servers if s.why_missing]
    if missing:
        lines += [
            "Missing peers: " + "; ".join(f"**{s.name}**: {s.why_missing}" for s in missing),
            "",
        ]
    chart: dict[str, dict[str, float]] = {}
    for sc in scs:
        names = [
            s.name for s in all_servers if not s.why_missing and (not sc.only or s.name in sc.only)
        ]
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
        lines += [
            f"## {sc.title}",
            "",
            f"metric: `{sc.metric}`",
            "",
            "| server | median | ratio to best peer | ratio to rust-reference | p50 µs | p99 µs "
            "| server CPU % | loadgen CPU % | notes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
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
            if lg is not None and lg >= LOADGEN_CEILING_PCT:
                extra.append(
                    f"load generator at {lg:.0f} % of its core (≥ {LOADGEN_CEILING_PCT} %): "
                    "it may be the limit, so this figure is a floor"
                )
            extra += [f"error: {e}" for e in errs]
            lines.append(
                f"| {n} | {fmt(v, sc.metric)} | {f'{ratio:.2f}×' if ratio else '—'} | "
                f"{f'{rref:.2f}×' if rref else '—'} | "
                f"{fmt(median_of(rs, 'p50_us'), 'n')} | {fmt(median_of(rs, 'p99_us'), 'n')} | "
                f"{fmt(median_of(rs, 'server_cpu_pct'), 'n')} | {fmt(median_of(rs, 'loadgen_cpu_pct'), 'n')} | "
                f"{'; '.join(extra)} |"
            )
        lines.append("")
    lines += targets(results)
    lines += ["![ratios](benchmarks.png)", ""]
    if cluster_results:
        lines += cluster_section(cluster_results)
    lines += kept_studies(out)
    lines += [
        "## Reproduce",
        "",
        "```sh",
        "make bench            # full: 3 runs of every scenario (about 30-40 min)",
        "make bench-quick      # 1 run of 2 s each",
        "```",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    draw(chart, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)


def targets(results) -> list[str]:
    """The project's targets, each with where it stands in this run."""

    def med(sc: str, name: str, metric: str) -> float | None:
        return median_of(results.get((sc, name), []), metric)

    def ratio(
        sc: str, metric: str, peer: str, want: float, ceiling: bool = False
    ) -> tuple[str, str]:
        a, b = med(sc, "roomcast", metric), med(sc, peer, metric)
        if a is None or b is None:
            return "—", "not measured"
        r = a / b
        verdict = "met" if r >= want else f"missed: {r / want:.0%} of the target"
        if ceiling:  # a server whose figure is the load generator's limit, not its own
            capped = [
                n
                for n in ("roomcast", peer)
                if (med(sc, n, "loadgen_cpu_pct") or 0) >= LOADGEN_CEILING_PCT
            ]
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
    got, verdict = ratio("echo-64-w8-burst", "msgs_per_s", "aiohttp+uvloop", 1.5)
    rows.append(("echo-64-w8-burst: roomcast / aiohttp+uvloop ≥ 1.5×", got, verdict))
    for sc in ("fanout-500", "fanout-5000"):
        got, verdict = ratio(sc, "deliveries_per_s", "socketify", 1.2, ceiling=True)
        rows.append((f"{sc}: roomcast / socketify ≥ 1.2×", got, verdict))
    for sc in ("preset-fanout-500", "preset-chat-16"):
        got, verdict = ratio(sc, "deliveries_per_s", "rust-reference", 0.95, ceiling=True)
        rows.append(
            (f"{sc}: roomcast chat preset / rust-reference (chat mode) ≥ 0.95×", got, verdict)
        )
    for sc in ("idle-10k", "idle-max"):
        kib = med(sc, "roomcast", "rss_per_conn_kib")
        if kib is not None:
            rows.append(
                (
                    f"{sc}: ≤ 4 KiB per idle connection",
                    f"{kib:.1f} KiB",
                    "met" if kib <= 4 else f"missed: {kib / 4:.1f}× the budget",
                )
            )
        cpu = med(sc, "roomcast", "server_cpu_pct")
        if cpu is not None:
            rows.append(
                (
                    f"{sc}: CPU while idle, heartbeat every 5 s (the sweep)",
                    f"{cpu:.1f} % of a core",
                    "see the note: at the default 30 s it is a sixth of this",
                )
            )
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
