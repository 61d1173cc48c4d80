"""One node of a test cluster, run as its own process so a test can SIGKILL or SIGSTOP it.

    python tests/cluster_node.py --broker redis://... [--lease 1] [--buffer N] [--chat]

Plain mode: connections to ``/room/NAME`` join room NAME and every text they send is
broadcast to it (through ``room.broadcast``, so through the broker); ``/send/NAME``
broadcasts the same way without joining. ``--chat``: the chat preset, on every path.
Either way, plain HTTP ``GET /count?room=NAME`` answers ``len(app.room(NAME))`` (the chat
preset's ``num`` with ``--chat``) and ``GET /stats`` the server's ``stats()`` as JSON.
Prints ``ready PORT`` once it serves.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

import roomcast
from roomcast import presets


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--broker", required=True)
    p.add_argument("--lease", type=float, default=3.0)
    p.add_argument("--buffer", type=int, default=65536)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--chat", action="store_true")
    p.add_argument("--offline-limit", type=int, default=100)
    p.add_argument("--offline-ttl", type=float, default=7 * 24 * 3600.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    settings: dict[str, Any] = dict(
        broker=args.broker, broker_lease=args.lease, broker_buffer=args.buffer
    )
    if args.chat:
        app = presets.chat(
            heartbeat_interval=None,
            offline_limit=args.offline_limit,
            offline_ttl=args.offline_ttl,
            **settings,
        )
    else:
        app = roomcast.Server(heartbeat_interval=None, **settings)

        @app.on_connect
        def joined(conn: roomcast.Connection, request: object) -> None:
            if conn.path.startswith("/room/"):
                conn.join(conn.path[len("/room/") :])

        @app.on_message
        def said(conn: roomcast.Connection, message: object) -> None:
            for prefix in ("/room/", "/send/"):
                if conn.path.startswith(prefix):
                    app.room(conn.path[len(prefix) :]).broadcast(message)

    def probe(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        room = parse_qs(environ.get("QUERY_STRING", "")).get("room", [""])[0]
        if environ["PATH_INFO"] == "/count":
            n = app.chat.count(room) if args.chat else len(app.room(room))
            body = str(n).encode()
        else:
            body = json.dumps(app.stats()).encode()
        start("200 OK", [("Content-Type", "text/plain")])
        return [body]

    app.wsgi(probe)
    running = app.start(port=args.port)
    print(f"ready {running.port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    running.stop()


if __name__ == "__main__":
    main()
