"""What the heartbeat costs at the largest idle count one process can hold: a roomcast server
(its own process) holds N idle connections that answer Pings, and its CPU time (utime + stime
from /proc/<pid>/stat) is read over several heartbeat intervals, with the heartbeat on and off.
The difference is the sweep's cost (the Pings, the Pongs read, the ticks), as a fraction of one
core. Also the server's RSS per connection (VmRSS after opening them minus before, over N).

    python benches/heartbeat_sweep.py [--conns 19900] [--interval 30] [--intervals 4]
                                      [--holders 4] [--modes on,off] [--workers 1]

Build the extension with `maturin develop --release` first. The clients run in `--holders`
processes of their own (one fd each per connection; the open-files limit is per process),
bound to 127.0.0.2, 127.0.0.3, ... (loopback only). Every second the server's CPU is sampled
too: the busiest second shows whether the sweep comes in one burst or spread over the
interval. A holder counts the Pings it answered and the connections the server closed; with
the heartbeat on, no idle client that answers may be closed.

`--workers N` (above 1) holds more connections than one process may open here: the server is
`roomcast run servers/idle_app.py:app --workers N` (N processes on one port, SO_REUSEPORT)
with a Redis broker (roomcast.testing.RedisServer), and the CPU and RSS are the workers' sums.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import subprocess
import sys
import time
from typing import Any, Optional

HERE = os.path.abspath(__file__)
SERVERS = os.path.join(os.path.dirname(HERE), "servers")


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_times(pid: int) -> tuple[float, float]:
    """The process's user and system CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_workers(
    interval: Optional[float], workers: int, broker: str
) -> tuple[subprocess.Popen[str], int, list[int]]:
    """`roomcast run --workers` on a free port; returns it, its port and its workers' pids once
    every worker listens."""
    port = free_port()
    env = dict(os.environ, IDLE_HEARTBEAT="none" if interval is None else str(interval))
    env["IDLE_BROKER"] = broker
    cmd = [sys.executable, "-m", "roomcast", "run", "idle_app:app", "--app-dir", SERVERS]
    cmd += ["--workers", str(workers), "--port", str(port), "--log-level", "warning"]
    sup = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    assert sup.stderr is not None
    serving = 0
    deadline = time.monotonic() + 60
    while serving < workers and time.monotonic() < deadline:
        line = sup.stderr.readline()
        if not line:
            raise RuntimeError(f"roomcast run exited ({sup.poll()}) before its workers served")
        serving += "serving on" in line
    if serving < workers:
        raise RuntimeError(f"{serving} of {workers} workers served within 60 s")
    return sup, port, children(sup.pid)


# -- the server process -------------------------------------------------------------------------


def serve(interval: Optional[float]) -> None:
    import roomcast

    raise_fd_limit()
    app = roomcast.Server(heartbeat_interval=interval)
    running = app.start(host="127.0.0.1", port=0)
    print(running.port, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    running.stop(timeout=2.0)


# -- a holder process: idle connections that answer Pings --------------------------------------


class Idle(asyncio.Protocol):
    def __init__(self, port: int, counts: dict[str, int], opened: asyncio.Future[bool]):
        self.port = port
        self.counts = counts
        self.opened = opened
        self.buf = b""
        self.upgraded = False
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            ok = head.startswith(b"HTTP/1.1 101")
            if not self.opened.done():
                self.opened.set_result(ok)
            if not ok:
                self.transport.close()
                return
            self.upgraded, self.buf = True, rest
        while len(self.buf) >= 2:
            n = self.buf[1] & 0x7F
            start = 2 + {126: 2, 127: 8}.get(n, 0)
            if len(self.buf) < start:
                return
            if n == 126:
                n = int.from_bytes(self.buf[2:4], "big")
            elif n == 127:
                n = int.from_bytes(self.buf[2:10], "big")
            if len(self.buf) < start + n:
                return
            opcode, payload = self.buf[0] & 0x0F, self.buf[start : start + n]
            self.buf = self.buf[start + n :]
            if opcode == 0x9:
                self.counts["pings"] += 1
                # A masked Pong; a zero mask leaves the payload as it is.
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 0x8:
                self.counts["closed"] += 1
                self.transport.close()
                return

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if not self.opened.done():
            self.opened.set_result(False)


async def hold(port: int, conns: int, source: str) -> None:
    loop = asyncio.get_running_loop()
    counts = {"pings": 0, "closed": 0}
    gate = asyncio.Semaphore(200)
    transports = []

    async def one() -> bool:
        async with gate:
            opened: asyncio.Future[bool] = loop.create_future()
            try:
                transport, _ = await loop.create_connection(
                    lambda: Idle(port, counts, opened), "127.0.0.1", port, local_addr=(source, 0)
                )
            except OSError:
                return False
            transports.append(transport)
            return await opened

    results = await asyncio.gather(*(one() for _ in range(conns)))
    print(json.dumps({"open": sum(results), "failed": conns - sum(results)}), flush=True)
    # Holds until the parent closes stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    print(json.dumps(counts), flush=True)
    for t in transports:
        t.close()


# -- the run ------------------------------------------------------------------------------------


def measure(mode: str, args: argparse.Namespace, broker: Optional[str]) -> dict[str, Any]:
    interval = args.interval if mode == "on" else None
    if broker is None:
        server = subprocess.Popen(
            [sys.executable, HERE, "--serve", "none" if interval is None else str(interval)],
            stdout=subprocess.PIPE,
            text=True,
        )
        port = int(server.stdout.readline())
        pids = [server.pid]
    else:
        server, port, pids = start_workers(interval, args.workers, broker)

    def rss_sum() -> int:
        return sum(rss_kib(p) for p in pids)

    def cpu_sum() -> float:
        return sum(cpu_seconds(p) for p in pids)

    def times_sum() -> tuple[float, float]:
        both = [cpu_times(p) for p in pids]
        return sum(u for u, _ in both), sum(s for _, s in both)

    holders: list[subprocess.Popen[str]] = []
    try:
        time.sleep(1.0)
        rss_before = rss_sum()
        per = [
            args.conns // args.holders + (i < args.conns % args.holders)
            for i in range(args.holders)
        ]
        opened_at = time.monotonic()
        for i, n in enumerate(per):
            holders.append(
                subprocess.Popen(
                    [sys.executable, HERE, "--hold", str(port), str(n), f"127.0.0.{2 + i}"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        opened = [json.loads(h.stdout.readline()) for h in holders]
        open_s = time.monotonic() - opened_at
        n_open = sum(o["open"] for o in opened)
        time.sleep(2.0)  # the handshakes' after-effects settle
        rss_after = rss_sum()
        seconds = args.intervals * args.interval
        user0, system0 = times_sum()
        samples = [(time.monotonic(), cpu_sum())]
        while samples[-1][0] - samples[0][0] < seconds:
            time.sleep(1.0)
            samples.append((time.monotonic(), cpu_sum()))
        wall = samples[-1][0] - samples[0][0]
        cpu = samples[-1][1] - samples[0][1]
        user1, system1 = times_sum()
        busiest = max((b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(samples, samples[1:]))
        counts = {"pings": 0, "closed": 0}
        for h in holders:
            h.stdin.close()
            for k, v in json.loads(h.stdout.readline()).items():
                counts[k] += v
        return {
            "mode": f"heartbeat every {args.interval:g} s" if interval else "heartbeat off",
            "workers": len(pids),
            "conns": n_open,
            "failed": sum(o["failed"] for o in opened),
            "open_s": round(open_s, 1),
            "measured_s": round(wall, 1),
            "cpu_s": round(cpu, 3),
            "core_pct": round(100 * cpu / wall, 3),
            "user_pct": round(100 * (user1 - user0) / wall, 3),
            "system_pct": round(100 * (system1 - system0) / wall, 3),
            "busiest_second_pct": round(100 * busiest, 1),
            "rss_kib_per_conn": round((rss_after - rss_before) / max(n_open, 1), 1),
            "pings_answered": counts["pings"],
            "closed_by_server": counts["closed"],
        }
    finally:
        for h in holders:
            if h.poll() is None:
                h.kill()
            h.wait()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        for pid in pids:  # workers a killed supervisor left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(None if sys.argv[2] == "none" else float(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--hold":
        raise_fd_limit()
        asyncio.run(hold(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=19_900)
    p.add_argument("--interval", type=float, default=30.0, help="the default is 30 s")
    p.add_argument("--intervals", type=int, default=4, help="intervals measured per mode")
    p.add_argument("--holders", type=int, default=4, help="client processes")
    p.add_argument("--modes", default="on,off")
    p.add_argument("--workers", type=int, default=1, help="server processes (above 1: a broker)")
    args = p.parse_args()
    limit = raise_fd_limit()
    print(f"open-files limit per process: {limit}", file=sys.stderr)
    if args.workers > 1:
        from roomcast.testing import RedisServer

        with RedisServer() as redis:
            rows = [measure(mode, args, redis.url) for mode in args.modes.split(",")]
    else:
        rows = [measure(mode, args, None) for mode in args.modes.split(",")]
    for row in rows:
        print(json.dumps(row))
    by = {r["mode"].split()[1]: r for r in rows}
    if "every" in by and "off" in by:
        extra = by["every"]["core_pct"] - by["off"]["core_pct"]
        print(f"the sweep: {extra:.3f} % of a core at {by['every']['conns']} idle connections")


if __name__ == "__main__":
    main()
