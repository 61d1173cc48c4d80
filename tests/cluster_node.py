"""One node of a test cluster, run as its own process so a test can SIGKILL or SIGSTOP it.

    python tests/cluster_node.py --broker redis://... [--lease 1] [--buffer N]

Connections to ``/room/NAME`` join room NAME and every text they send is broadcast to it
(through ``room.broadcast``, so through the broker); ``/send/NAME`` broadcasts the same way
without joining. A connection to ``/probe`` answers
``count NAME`` with ``len(app.room(NAME))`` and ``stats`` with the broker's counters (JSON).
Prints ``ready PORT`` once it serves.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

import roomcast


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--broker", required=True)
    p.add_argument("--lease", type=float, default=3.0)
    p.add_argument("--buffer", type=int, default=65536)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    app = roomcast.Server(
        broker=args.broker,
        broker_lease=args.lease,
        broker_buffer=args.buffer,
        heartbeat_interval=None,
    )

    @app.on_connect
    def joined(conn: roomcast.Connection, request: object) -> None:
        if conn.path.startswith("/room/"):
            conn.join(conn.path[len("/room/") :])

    @app.on_message
    def said(conn: roomcast.Connection, message: object) -> None:
        for prefix in ("/room/", "/send/"):
            if conn.path.startswith(prefix):
                app.room(conn.path[len(prefix) :]).broadcast(message)
                return
        text = str(message)
        if text.startswith("count "):
            conn.send(str(len(app.room(text[len("count ") :]))))
        elif text == "stats":
            conn.send(json.dumps(app.stats()["broker"]))

    running = app.start(port=args.port)
    print(f"ready {running.port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    running.stop()


if __name__ == "__main__":
    main()
