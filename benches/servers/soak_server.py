"""The roomcast app that the soak (benches/soak.py) churns through; ordinary sync and async
Python hooks, nothing relayed in Rust, so every connection costs the hook machinery its share.

    python soak_server.py PORT

Only pages of https://soak.example may connect (the churn's foreign-origin cycles get 403).
Each connection joins the room its query names (`?room=c17`; `stay` without one). Text
messages, by their first character: `e...` is echoed, `b...` broadcast to the sender's rooms,
`r...` makes `on_message` raise, `s` is answered with 64 KiB (a slow reader swamping itself).
JSON events: `pub` broadcasts numbered message `n` to room
`stay` (the stayers' sequence); `aecho` is echoed by an async hook, `araise` makes one raise;
`census` answers what the Python side holds (live `Connection` objects, asyncio tasks,
threads, gc objects, disconnects by close code), a count the Rust metrics cannot see.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import json
import logging
import os
import sys
import threading
from typing import Any

import roomcast

# 100 KB/s of numbered broadcasts: `queue_bytes` (1 MiB) holds ten seconds of them, so a
# server stalled by a busy machine does not shed a stayer when its hooks catch up (a backlog
# of broadcasts is queued all at once, before the writer has written any of it).
PAD = "x" * 1000
# A slow reader asks for this a hundred times a second while it does not read: the numbered
# broadcasts alone would take ten seconds to fill its `queue_bytes`.
SWAMP = b"s" * 65536


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()
    ]


def malloc_heap() -> dict[str, int]:
    """What glibc's malloc (the Rust core's allocator too) has in use and holds free, over
    every arena: RSS that stays up while "in use" comes back is the allocator keeping freed
    memory, not a leak. Empty where there is no glibc 2.33+."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return {}
    m = libc.mallinfo2()
    return {"in_use": m.uordblks + m.hblkhd, "free_held": m.fordblks}


class SoakError(Exception):
    """Raised on purpose by a hook: the server must log it and keep the connection."""


app = roomcast.Server(
    heartbeat_interval=float(os.environ.get("SOAK_HEARTBEAT", "10")),
    metrics_path="/metrics",
    io_threads=int(os.environ.get("ROOMCAST_IO_THREADS", "2")),
    workers=int(os.environ.get("ROOMCAST_WORKERS", "2")),
    # The soak's clients come from this page; a share of the churn comes from another and
    # must be refused (403).
    allowed_origins=["https://soak.example"],
    # wss:// under `soak.py --tls`, which makes the certificate.
    ssl_certfile=os.environ.get("SOAK_CERTFILE"),
    ssl_keyfile=os.environ.get("SOAK_KEYFILE"),
)
closes: collections.Counter[int] = collections.Counter()
closes_lock = threading.Lock()


@app.on_connect
def join(conn: roomcast.Connection, request: roomcast.Request) -> None:
    conn.join(request.query.get("room", "stay"))


@app.on_message
def message(conn: roomcast.Connection, msg: Any) -> None:
    kind = msg[:1]
    if kind == "e":
        conn.send(msg)
    elif kind == "b":
        for room in conn.rooms:
            app.room(room).broadcast(msg)
    elif kind == "r":
        raise SoakError(f"on_message raised on purpose for connection {conn.id}")
    elif kind == "s":
        try:
            conn.send(SWAMP)
        except roomcast.ConnectionClosed:
            pass  # shed already: its last requests are still being read


@app.on("pub")
def publish(conn: roomcast.Connection, data: dict[str, Any]) -> None:
    app.room("stay").broadcast(f"n{data['n']:08d}{PAD}")


@app.on("aecho")
async def async_echo(conn: roomcast.Connection, data: dict[str, Any]) -> None:
    await asyncio.sleep(0)
    conn.send(f"a{data['t']}")


@app.on("araise")
async def async_raise(conn: roomcast.Connection, data: dict[str, Any]) -> None:
    await asyncio.sleep(0)
    raise SoakError(f"an async hook raised on purpose for connection {conn.id}")


@app.on("census")
async def census(conn: roomcast.Connection, data: dict[str, Any]) -> None:
    # On the hooks' own loop, so all_tasks() is the tasks async hooks may have left behind.
    live = sum(1 for o in gc.get_objects() if isinstance(o, roomcast.Connection))
    with closes_lock:
        by_code = {str(code): n for code, n in sorted(closes.items())}
    answer = {
        "event": "census",
        "connections": live,
        "asyncio_tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "gc_objects": len(gc.get_objects()),
        "closes": by_code,
        "malloc": malloc_heap(),
    }
    conn.send(json.dumps(answer))


@app.on_disconnect
def bye(conn: roomcast.Connection, code: int, reason: str) -> None:
    with closes_lock:
        closes[code] += 1


if __name__ == "__main__":
    # Warnings (slow readers shed) and errors (hooks that raised, with their tracebacks) only:
    # the soak counts them in this log; info would be a line per ordinary close.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
