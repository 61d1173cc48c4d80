"""A server that holds connections and echoes what it is sent: the idle measurements' app
under `roomcast run --workers N` (benches/heartbeat_sweep.py --workers). Settings come from
the environment: IDLE_HEARTBEAT (seconds, or "none") and IDLE_BROKER (a redis:// URL, which
more than one worker needs).
"""

import os

import roomcast

_heartbeat = os.environ.get("IDLE_HEARTBEAT", "30")
app = roomcast.Server(
    heartbeat_interval=None if _heartbeat == "none" else float(_heartbeat),
    broker=os.environ.get("IDLE_BROKER"),
)


@app.on_message
def echo(conn: roomcast.Connection, message: object) -> None:
    conn.send(message)
