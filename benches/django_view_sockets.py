"""How many idle dwebsocket-style view sockets one `manage.py runws` process holds, and at what
memory: each open view socket holds a thread (docs/django.md reports the figures).

python benches/django_view_sockets.py [--steps 500,1000,2000,4000]

Runs the example project (examples/django_chat) under runws in a subprocess, opens idle
WebSockets to its `echo` view from one asyncio client process, and reads the server's RSS and
thread count from /proc after each step. Needs roomcast and Django installed in this Python.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "examples" / "django_chat"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> tuple[float, int]:
    """(RSS in MiB, threads) of a process."""
    rss, threads = 0.0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads


async def measure(port: int, pid: int, steps: list[int]) -> list[tuple[int, float, int]]:
    sockets = []
    rows = [(0, *proc_status(pid))]
    url = f"ws://127.0.0.1:{port}/echo"
    for target in steps:
        while len(sockets) < target:
            batch = min(100, target - len(sockets))
            sockets += await asyncio.gather(
                *(connect(url, ping_interval=None, open_timeout=30) for _ in range(batch))
            )
        # One round trip through every view proves each thread is alive and reading.
        await sockets[-1].send("probe")
        for ws in sockets[-1:]:
            await asyncio.wait_for(ws.recv(), 30)
        await asyncio.sleep(1.0)
        rows.append((len(sockets), *proc_status(pid)))
        print(f"{rows[-1][0]:>6} sockets  {rows[-1][1]:8.1f} MiB  {rows[-1][2]:>6} threads", flush=True)
    for ws in sockets:
        await ws.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="500,1000,2000,4000")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    port = free_port()
    db = Path(tempfile.mkdtemp()) / "db.sqlite3"
    env = {
        **os.environ,
        "DJANGO_DB": str(db),
        "ROOMCAST_VIEW_THREADS": str(max(steps) + 100),
        "DJANGO_DEBUG": "0",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=PROJECT, env=env, check=True)
    server = subprocess.Popen(
        [*manage, "runws", f"127.0.0.1:{port}", "--noreload"], cwd=PROJECT, env=env
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        rows = asyncio.run(measure(port, server.pid, steps))
    finally:
        server.terminate()
        server.wait(30)
    base = rows[0][1]
    print("\n| idle view sockets | server RSS | per socket | threads |\n|---|---|---|---|")
    for n, rss, threads in rows:
        per = f"{(rss - base) * 1024 / n:.0f} KiB" if n else "-"
        print(f"| {n} | {rss:.0f} MiB | {per} | {threads} |")


if __name__ == "__main__":
    main()
