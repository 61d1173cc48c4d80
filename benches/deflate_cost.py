"""What permessage-deflate costs the server and saves on the wire: the same traffic against a
roomcast server with `compression=None` and with `compression="deflate"`, at a fixed rate the
clients keep up with, so the server's CPU time per delivered message (utime + stime from
/proc/<pid>/stat) and the bytes it wrote per message (`wchar` from /proc/<pid>/io: every
byte of every frame, headers included) are compared, not a throughput ceiling.

    python benches/deflate_cost.py [--subs 100] [--rate 200] [--seconds 8]
                                   [--sizes 100,512,4096] [--kinds chat,records]
                                   [--echo-conns 50] [--idle 2000]

Messages are JSON text, 256 distinct ones of each kind and size: `chat`, a chat line of English
words; `records`, a push update listing objects with the same keys (prices and volumes).
Shapes:
- broadcast: `--subs` members of one room, one publisher sending `--rate` messages a second,
  each broadcast by a Python hook (compressed once for all members when deflate is on);
- echo: `--echo-conns` clients, each sending `--rate / 10` messages a second and reading the
  echo (each echo compressed for its own connection, each request inflated);
- idle: `--idle` connections that negotiated deflate (or not), the server's RSS per
  connection.

The clients are the `websockets` library, which offers permessage-deflate by default; the
script checks what each connection negotiated. The server is benches/servers/roomcast_server.py
pinned to core 0, the clients run in this process on core 1. Build the extension with
`maturin develop --release` first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import LOADGEN_CORE, SERVER_CORE, SERVERS_DIR, free_port, stop, wait_port

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from "
    "or one had by word but not what all were we when your can said there use an each which "
    "she do how their if will up other about out many then them these so some her would make "
    "like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part meet "
    "tonight lunch deploy release review ticket server room chat message hello thanks"
).split()


def chat_message(rng: random.Random, i: int, size: int) -> str:
    """A chat line: one JSON object whose text is English words."""
    head = f'{{"type":"message","room":"lobby","user":"user{i % 40}","text":"'
    words: list[str] = []
    while len(head) + len(" ".join(words)) + 2 < size:
        words.append(rng.choice(WORDS))
    return head + " ".join(words)[: size - len(head) - 2] + '"}'


def records_message(rng: random.Random, i: int, size: int) -> str:
    """A push update: a list of objects with the same keys (prices, positions, scores)."""
    items: list[str] = []
    head, tail = f'{{"type":"update","seq":{i},"items":[', "]}"
    while True:
        sym = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
        bid, ask, volume = rng.uniform(10, 500), rng.uniform(10, 500), rng.randrange(10**6)
        item = f'{{"symbol":"{sym}","bid":{bid:.2f},"ask":{ask:.2f},"volume":{volume}}}'
        body = ",".join([*items, item])
        if len(head) + len(body) + len(tail) > size:
            break
        items.append(item)
    body = ",".join(items)
    return head + body + " " * (size - len(head) - len(body) - len(tail)) + tail


KINDS = {"chat": chat_message, "records": records_message}


def messages(kind: str, size: int, count: int = 256, seed: int = 7) -> list[str]:
    """`count` distinct JSON text frames of `kind` and `size` bytes."""
    rng = random.Random(seed)
    return [KINDS[kind](rng, i, size) for i in range(count)]


def cpu_seconds(pid: int) -> float:
    """CPU time of the server's threads, in nanoseconds' precision (schedstat), where
    /proc/<pid>/stat counts in 10 ms ticks: too coarse for a few seconds of light traffic."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def written_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/<pid>/io")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Meter:
    """The server's CPU and written bytes between `start` and `stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def start(self) -> None:
        self.cpu0, self.bytes0, self.t0 = (
            cpu_seconds(self.pid),
            written_bytes(self.pid),
            time.monotonic(),
        )

    def stop(self, delivered: int) -> dict[str, Any]:
        cpu = cpu_seconds(self.pid) - self.cpu0
        wrote = written_bytes(self.pid) - self.bytes0
        secs = time.monotonic() - self.t0
        return {
            "delivered": delivered,
            "server_cpu_pct": round(100 * cpu / secs, 1),
            "cpu_us_per_msg": round(1e6 * cpu / max(delivered, 1), 2),
            "wire_bytes_per_msg": round(wrote / max(delivered, 1), 1),
        }


async def connect(url: str, deflate: bool) -> Any:
    ws = await websockets.connect(url, compression="deflate" if deflate else None, max_queue=None)
    return ws


def negotiated(ws: Any) -> bool:
    return bool(ws.protocol.extensions)


async def paced(rate: float, seconds: float, send_one) -> int:
    """Calls `send_one` `rate` times a second for `seconds`, in 10 ms ticks; returns how many."""
    sent, start = 0, time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate) + 1
        while sent < due:
            await send_one(sent)
            sent += 1
        await asyncio.sleep(0.01)
    return sent


async def settle(counter: list[int], want: int, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while counter[0] < want and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def broadcast_shape(
    port: int, pid: int, msgs: list[str], a: argparse.Namespace
) -> dict[str, Any]:
    base = f"ws://127.0.0.1:{port}"
    subs = [await connect(base + "/sub", True) for _ in range(a.subs)]
    pub = await connect(base + "/pub", True)
    got = [0]

    async def read(ws: Any) -> None:
        async for _ in ws:
            got[0] += 1

    readers = [asyncio.create_task(read(ws)) for ws in subs]
    await asyncio.sleep(0.5)  # every subscriber in the room before the first broadcast
    await paced(a.rate, 1.0, lambda i: pub.send(msgs[i % len(msgs)]))  # warm-up
    await settle(got, got[0])
    await asyncio.sleep(0.3)
    meter, before = Meter(pid), got[0]
    meter.start()
    sent = await paced(a.rate, a.seconds, lambda i: pub.send(msgs[i % len(msgs)]))
    await settle(got, before + sent * len(subs))
    row = meter.stop(got[0] - before)
    row["expected"] = sent * len(subs)
    row["negotiated"] = all(negotiated(ws) for ws in subs)
    for ws in [*subs, pub]:
        await ws.close()
    for t in readers:
        t.cancel()
    return row


async def echo_shape(port: int, pid: int, msgs: list[str], a: argparse.Namespace) -> dict[str, Any]:
    conns = [await connect(f"ws://127.0.0.1:{port}/echo", True) for _ in range(a.echo_conns)]
    got = [0]

    async def read(ws: Any) -> None:
        async for _ in ws:
            got[0] += 1

    readers = [asyncio.create_task(read(ws)) for ws in conns]
    rate = a.rate / 10 * len(conns)

    def send(i: int):
        return conns[i % len(conns)].send(msgs[i % len(msgs)])

    await paced(rate, 1.0, send)
    await asyncio.sleep(0.3)
    meter, before = Meter(pid), got[0]
    meter.start()
    sent = await paced(rate, a.seconds, send)
    await settle(got, before + sent)
    row = meter.stop(got[0] - before)
    row["expected"] = sent
    row["negotiated"] = all(negotiated(ws) for ws in conns)
    for ws in conns:
        await ws.close()
    for t in readers:
        t.cancel()
    return row


async def idle_shape(port: int, pid: int, a: argparse.Namespace) -> dict[str, Any]:
    before = rss_kib(pid)
    conns = [await connect(f"ws://127.0.0.1:{port}/echo", True) for _ in range(a.idle)]
    await asyncio.sleep(2.0)
    after = rss_kib(pid)
    row = {"conns": len(conns), "kib_per_conn": round((after - before) / len(conns), 2)}
    row["negotiated"] = all(negotiated(ws) for ws in conns)
    for ws in conns:
        await ws.close()
    return row


async def measure(mode: str, a: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "ROOMCAST_COMPRESSION": "deflate" if mode == "deflate" else ""}
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            SERVER_CORE,
            sys.executable,
            str(SERVERS_DIR / "roomcast_server.py"),
            str(port),
        ],
        env=env,
    )
    try:
        wait_port(port, server)
        out: dict[str, Any] = {}
        for kind in a.kinds:
            for size in a.sizes:
                msgs = messages(kind, size)
                out[f"broadcast {kind} {size} B"] = await broadcast_shape(port, server.pid, msgs, a)
                out[f"echo {kind} {size} B"] = await echo_shape(port, server.pid, msgs, a)
        out["idle"] = await idle_shape(port, server.pid, a)
        return out
    finally:
        stop(server)


def report(results: dict[str, dict[str, Any]]) -> str:
    off, on = results["off"], results["deflate"]
    lines = [
        "| shape | server CPU per message, off → deflate | wire bytes per message, off → deflate |",
        "|---|---:|---:|",
    ]
    for key in off:
        if key == "idle":
            continue
        a, b = off[key], on[key]
        lines.append(
            f"| {key} | {a['cpu_us_per_msg']:.2f} → {b['cpu_us_per_msg']:.2f} µs "
            f"({b['cpu_us_per_msg'] / a['cpu_us_per_msg']:.2f}×) | "
            f"{a['wire_bytes_per_msg']:,.0f} → {b['wire_bytes_per_msg']:,.0f} "
            f"({b['wire_bytes_per_msg'] / a['wire_bytes_per_msg']:.2f}×) |"
        )
    lines.append(
        f"| idle, {off['idle']['conns']:,} connections | RSS {off['idle']['kib_per_conn']:.2f} → "
        f"{on['idle']['kib_per_conn']:.2f} KiB per connection | |"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--subs", type=int, default=100)
    ap.add_argument("--rate", type=float, default=200.0, help="broadcasts a second")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 512, 4096]
    )
    ap.add_argument("--kinds", type=lambda s: s.split(","), default=list(KINDS))
    ap.add_argument("--echo-conns", type=int, default=50)
    ap.add_argument("--idle", type=int, default=2000)
    a = ap.parse_args()
    os.sched_setaffinity(0, {int(LOADGEN_CORE)})
    results = {mode: asyncio.run(measure(mode, a)) for mode in ("off", "deflate")}
    for mode, rows in results.items():
        for key, row in rows.items():
            print(f"{mode:8} {key:24} {row}")
    failed = [
        f"{mode} {key}"
        for mode, rows in results.items()
        for key, row in rows.items()
        if row["negotiated"] != (mode == "deflate")
        or row.get("delivered", 0) < row.get("expected", 0)
    ]
    print()
    print(report(results))
    if failed:
        sys.exit(
            f"deflate_cost: not as expected (negotiation or lost messages): {', '.join(failed)}"
        )


if __name__ == "__main__":
    main()
