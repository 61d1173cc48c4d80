"""Soak and churn: a million connections come and go through one roomcast server while a
few stay; afterwards the server must hold what it held before, and the stayers must have
lost nothing. A benchmark-like script, never part of the tests (`make soak`).

    python benches/soak.py [--connections 1000000 | --quick] [--seconds 900] [--stayers 50]
                           [--concurrency 128] [--slow 4] [--clients 1] [--tls] [--write-docs]

The server (benches/servers/soak_server.py) runs sync and async Python hooks, some of which
raise on purpose. The stayers (benches/soak_stayers.py) stay in room `stay` and get a
numbered broadcast 100 times a second. The churn is the Rust load generator's `churn`
scenario (benches/loadgen/src/churn.rs): connect, a frame or two, go, in a mix of endings
(clean Close, TCP reset, FIN without Close, half a frame, a reset before the 101, hooks that
raise), plus slow readers in room `stay` that stop reading until `queue_bytes` sheds them.

Order: stayers connect; a warm-up churn (so that one-time growth, such as allocator arenas
and hash tables reaching their working size, is not counted as a leak); settle; baseline;
the churn; settle; end. Pass: RSS at the end within 5 % of the baseline, open file
descriptors and runtime tasks back to the baseline, the server's open connections equal to
the stayers, every stayer got every number once and in order, and the server is still up.
Results go to build/soak/ (server log, loadgen logs, soak.json); `--write-docs` also puts
the report in docs/soak.md.

`--tls` runs it all over TLS (wss://, and https:// for the metrics): the soak makes its own
CA and a certificate for 127.0.0.1 (trustme), the server loads it (`ssl_certfile`), and every
client (stayers, churn, slow readers, the scrapes) verifies it against that CA.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from harness import HERE, LOADGEN, ROOT, SERVERS_DIR, free_port, stop, wait_port
from soak_report import Reading, splice_docs, verdict, write_report

OUT = ROOT / "build" / "soak"


class Tls:
    """The soak's own CA and the server's certificate for 127.0.0.1, as files in `where`."""

    def __init__(self, where: Path) -> None:
        try:
            import trustme
        except ImportError:
            sys.exit("soak: --tls needs trustme (pip install trustme, or run benches/setup.sh)")
        where.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        self.ca_file = where / "ca.pem"
        self.cert_file = where / "server.pem"
        self.key_file = where / "server.key"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(self.key_file))
        for i, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(self.cert_file), append=i > 0)
        self.context = ssl.create_default_context(cafile=str(self.ca_file))


# Set by run(): the metrics are scraped over https:// under --tls.
TLS: Tls | None = None


def metrics_url(port: int) -> str:
    return f"{'https' if TLS else 'http'}://127.0.0.1:{port}/metrics"


def scrape(port: int) -> bytes:
    ctx = TLS.context if TLS else None
    with urllib.request.urlopen(metrics_url(port), timeout=10, context=ctx) as r:
        body: bytes = r.read()
    return body


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metrics(port: int) -> dict[str, float]:
    """The server's Prometheus exposition, sample by sample (`name{labels}` → value)."""
    text = scrape(port).decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


class Stayers:
    """The stayers' process, driven a line at a time (see soak_stayers.py)."""

    def __init__(self, port: int, n: int, rate: float, log: IO[bytes]) -> None:
        cmd = [sys.executable, str(HERE / "soak_stayers.py"), "--port", str(port)]
        cmd += ["--stayers", str(n), "--rate", str(rate)]
        if TLS:
            cmd += ["--ca", str(TLS.ca_file)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )

    def line(self, send: str | None = None, timeout: float = 60) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if send is not None:
            self.proc.stdin.write(send + "\n")
            self.proc.stdin.flush()
        got: list[str] = []
        out = self.proc.stdout
        reader = threading.Thread(target=lambda: got.append(out.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not got or not got[0]:
            raise RuntimeError(
                f"the stayers did not answer {send or 'ready'!r} (exit {self.proc.poll()})"
            )
        return got[0].strip()

    def census(self) -> dict[str, Any]:
        try:
            census: dict[str, Any] = json.loads(self.line("census"))
        except (RuntimeError, OSError) as e:  # reported as a failure, with the other figures
            return {"error": str(e)}
        return census

    def verdict(self, timeout: float) -> dict[str, Any]:
        try:
            result: dict[str, Any] = json.loads(self.line("stop", timeout))
        except (RuntimeError, OSError) as e:
            return {"error": str(e), "complete": 0, "published": 0, "problems": []}
        return result


def read(pid: int, port: int, stayers: Stayers) -> Reading:
    # The fds first: the scrape's own socket must not be open on the server while they are counted.
    fds = fd_count(pid)
    rss = rss_kib(pid)
    m = metrics(port)
    return Reading(rss_kib=rss, fds=fds, metrics=m, census=stayers.census(), at=time.monotonic())


def settle(pid: int, port: int, want_open: int, base: Reading | None, seconds: float) -> float:
    """Waits `seconds`, then up to 60 s more until the gauges are back where they were (the
    server closes a slow reader's socket up to close_timeout after shedding it). Returns the
    time taken."""
    start = time.monotonic()
    time.sleep(seconds)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = metrics(port)
        back = (
            m["roomcast_connections_open"] == want_open and m["roomcast_hook_events_pending"] == 0
        )
        if base is not None:
            back = back and m["roomcast_runtime_tasks"] == base.tasks and fd_count(pid) == base.fds
        if back:
            return time.monotonic() - start
        time.sleep(0.5)
    # Kept for the post-mortem: the report fails on these gauges anyway.
    (OUT / "unsettled-metrics.txt").write_bytes(scrape(port))
    print("soak: the gauges did not come back within 60 s; see build/soak/unsettled-metrics.txt")
    return time.monotonic() - start


def churn(args: argparse.Namespace, port: int, pid: int, count: int, label: str) -> dict[str, Any]:
    """Runs the churn over `args.clients` load generator processes; samples the server's RSS
    meanwhile. Returns the loadgens' reports summed, with the peak RSS."""
    procs, logs = [], []
    for k in range(args.clients):
        share = count // args.clients + (1 if k < count % args.clients else 0)
        cmd = [str(LOADGEN), "churn", "--port", str(port), "--server-pid", str(pid)]
        cmd += ["--count", str(share), "--seconds", str(args.seconds), "--tag", f"{label}{k}"]
        cmd += ["--concurrency", str(max(1, args.concurrency // args.clients))]
        if TLS:
            cmd += ["--tls-ca", str(TLS.ca_file)]
        cmd += [
            "--slow",
            str(args.slow // args.clients + (1 if k < args.slow % args.clients else 0)),
        ]
        log = open(OUT / f"loadgen-{label}{k}.log", "wb")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True))
    started = time.monotonic()
    peak, last_print = rss_kib(pid), started
    series: list[tuple[int, int, int]] = []  # (seconds, accepted so far, RSS KiB)
    last = metrics(port)["roomcast_connections_accepted_total"]
    while any(p.poll() is None for p in procs):
        time.sleep(0.5)
        peak = max(peak, rss_kib(pid))
        if time.monotonic() - last_print >= 10:
            m = metrics(port)
            accepted = m["roomcast_connections_accepted_total"]
            series.append((round(time.monotonic() - started), int(accepted), rss_kib(pid)))
            rate = (accepted - last) / (time.monotonic() - last_print)
            last, last_print = accepted, time.monotonic()
            print(
                f"  {label}: {time.monotonic() - started:5.0f} s, {accepted:,.0f} accepted "
                f"({rate:,.0f}/s now), {m['roomcast_connections_open']:.0f} open, "
                f"RSS {rss_kib(pid) / 1024:,.1f} MiB, tasks {m['roomcast_runtime_tasks']:.0f}",
                flush=True,
            )
    seconds = time.monotonic() - started
    total: dict[str, Any] = {"seconds": seconds, "peak_rss_kib": peak, "series": series}
    total["clients"] = []
    for k, p in enumerate(procs):
        assert p.stdout is not None
        lines = [ln for ln in p.stdout.read().splitlines() if ln.startswith("{")]
        logs[k].close()
        if not lines:
            raise RuntimeError(f"loadgen {label}{k} printed no result (exit {p.returncode})")
        total["clients"].append(json.loads(lines[-1]))
    return total


def run(args: argparse.Namespace) -> dict[str, Any]:
    global TLS
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ)
    if args.tls:
        TLS = Tls(OUT / "tls")
        env |= {"SOAK_CERTFILE": str(TLS.cert_file), "SOAK_KEYFILE": str(TLS.key_file)}
    server_log = open(OUT / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, str(SERVERS_DIR / "soak_server.py"), str(port)],
        stdout=server_log,
        stderr=server_log,
        start_new_session=True,
        env=env,
    )
    stayers: Stayers | None = None
    try:
        wait_port(port, server)
        stayers = Stayers(port, args.stayers, args.rate, open(OUT / "stayers.log", "wb"))
        if stayers.line(timeout=60) != "ready":
            raise RuntimeError("the stayers did not get ready")
        start = read(server.pid, port, stayers)
        print(f"soak: {args.stayers} stayers in; warm-up churn of {args.warmup:,} connections")
        warm = churn(args, port, server.pid, args.warmup, "w")
        settle(server.pid, port, args.stayers, None, args.settle)
        base = read(server.pid, port, stayers)
        print(
            f"soak: baseline RSS {base.rss_kib / 1024:,.1f} MiB, {base.fds} fds, {base.tasks} "
            f"tasks; churning {args.connections:,} connections (at most {args.seconds:,.0f} s)",
            flush=True,
        )
        cpu0 = cpu_seconds(server.pid)
        main = churn(args, port, server.pid, args.connections, "p")
        server_cpu = cpu_seconds(server.pid) - cpu0
        settled_s = settle(server.pid, port, args.stayers, base, args.settle)
        end = read(server.pid, port, stayers)
        result = stayers.verdict(timeout=90)
        alive = server.poll() is None
        stop(server)
        stayers.proc.wait(10)
        log = (OUT / "server.log").read_text(errors="replace")
        return {
            "args": vars(args),
            "warmup": warm,
            "churn": main,
            "server_cpu_s": server_cpu,
            "settle_s": settled_s,
            "readings": {
                "start": start.as_dict(),
                "baseline": base.as_dict(),
                "end": end.as_dict(),
            },
            "stayers": result,
            "server": {
                "alive_at_end": alive,
                "exit_code": server.returncode,
                "panics": log.count("panicked"),
                "hook_tracebacks": log.count("hook raised for connection"),
                "shed_warnings": log.count("closing with 1013"),
            },
        }
    finally:
        if stayers is not None and stayers.proc.poll() is None:
            stayers.proc.kill()
        stop(server)
        server_log.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", type=int, default=1_000_000, help="connections to churn")
    p.add_argument("--quick", action="store_true", help="50,000 connections")
    p.add_argument("--seconds", type=float, default=900, help="cap on the churn's duration")
    p.add_argument("--warmup", type=int, help="warm-up connections (default: 5 %%, 20k to 50k)")
    p.add_argument("--stayers", type=int, default=50)
    p.add_argument("--rate", type=float, default=100, help="numbered broadcasts a second")
    p.add_argument("--concurrency", type=int, default=128, help="churn loops in all")
    p.add_argument("--slow", type=int, default=4, help="slow-reader loops in all")
    p.add_argument("--clients", type=int, default=1, help="load generator processes")
    p.add_argument("--settle", type=float, default=10, help="seconds of quiet before a reading")
    p.add_argument("--tls", action="store_true", help="everything over TLS (wss://, https://)")
    p.add_argument("--write-docs", action="store_true", help="put the report in docs/soak.md")
    args = p.parse_args()
    if args.quick:
        args.connections = 50_000
    if args.warmup is None:
        args.warmup = min(50_000, max(20_000, args.connections // 20))
    if not LOADGEN.exists():
        sys.exit(
            f"soak: {LOADGEN} missing; build it: (cd benches && cargo build --release -p loadgen)"
        )
    results = run(args)
    checks = verdict(results)
    (OUT / "soak.json").write_text(json.dumps({**results, "checks": checks}, indent=1))
    report = write_report(results, checks)
    print(report)
    if args.write_docs:
        which = ("quick" if args.quick else "full") + ("-tls" if args.tls else "")
        splice_docs(ROOT / "docs" / "soak.md", report, which)
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
