"""The heartbeat sweeper: silent clients are reaped, answering ones stay; app-level heartbeats."""

from __future__ import annotations

import json
import time

from websockets.sync.client import connect

import roomcast

from conftest import log_lines, wait_for
from rawws import RawClient

INTERVAL = 0.5


def test_a_silent_client_is_reaped_and_an_answering_one_stays(start, caplog):
    closed = {}
    app = roomcast.Server(heartbeat_interval=INTERVAL)
    app.on_disconnect(lambda conn, code, reason: closed.setdefault(conn.id, (code, reason)))
    opened = []
    app.on_connect(lambda conn, request: opened.append(conn.id))
    server = start(app)

    # websockets answers protocol pings by itself, from its background thread.
    with connect(server.url, ping_interval=None) as answering:
        silent = RawClient(server.port)
        assert silent.handshake().startswith("HTTP/1.1 101")
        silent_id = wait_for(lambda: len(opened) == 2 and opened[1], what="both connected")
        started = time.monotonic()
        code, reason = wait_for(
            lambda: closed.get(silent_id), timeout=10, what="the silent one reaped"
        )
        assert code == 1011
        assert "heartbeat timeout" in reason
        # Reaped after one unanswered ping: between one and three intervals.
        assert time.monotonic() - started >= INTERVAL * 0.9
        # It was sent protocol Pings and then a Close with the same code.
        assert silent.recv_frame()[0] == 0x9
        assert silent.recv_close()[0] == 1011
        silent.close()

        # Several more sweeps pass; the answering client is still fine.
        deadline = time.monotonic() + INTERVAL * 4
        while time.monotonic() < deadline:
            answering.send("x")
            time.sleep(INTERVAL / 3)
        assert opened[0] not in closed
        answering.ping().wait(5)
    wait_for(lambda: any("heartbeat timeout" in x for x in log_lines(caplog)), what="log line")


def test_idle_client_answering_only_pings_stays(start):
    closed = []
    app = roomcast.Server(heartbeat_interval=INTERVAL)
    app.on_disconnect(lambda conn, code, reason: closed.append(code))
    server = start(app)
    with connect(server.url, ping_interval=None) as ws:
        time.sleep(INTERVAL * 5)  # sends nothing itself: only its automatic Pongs keep it
        assert not closed
        ws.ping().wait(5)


def test_heartbeat_off_never_reaps(start):
    closed = []
    app = roomcast.Server(heartbeat_interval=None)
    app.on_disconnect(lambda conn, code, reason: closed.append(code))
    server = start(app)
    silent = RawClient(server.port)
    assert silent.handshake().startswith("HTTP/1.1 101")
    time.sleep(0.5)
    assert not closed
    silent.close()


def test_app_heartbeat_json_and_text(start):
    seen = []
    app = roomcast.Server(heartbeat_interval=INTERVAL, app_heartbeat=True)
    app.on_message(lambda conn, msg: seen.append(msg))
    server = start(app)
    with connect(server.url, ping_interval=None) as ws:
        ping = json.loads(ws.recv(timeout=5))
        assert ping == {"event": "heartbeat", "message": "ping"}
        ws.send(json.dumps({"event": "heartbeat", "message": "pong"}))
        ws.send("ping")
        assert ws.recv(timeout=5) == "pong"
        ws.send("after")
        wait_for(lambda: seen, what="the next message")
    # The heartbeat frames never reached the hook.
    assert seen == ["after"]


def test_text_ping_is_echoed_when_app_heartbeat_is_off(start):
    app = roomcast.Server(app_heartbeat=False)
    app.on_message(lambda conn, msg: conn.send(f"echo:{msg}"))
    server = start(app)
    with connect(server.url) as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "echo:ping"


def test_a_client_paused_by_a_slow_hook_is_not_reaped(start):
    import threading

    release = threading.Event()
    closed = []
    app = roomcast.Server(heartbeat_interval=0.2, mailbox_limit=2, workers=1)

    @app.on_message
    def stuck(conn, msg):
        release.wait(10)
        conn.send(msg)

    app.on_disconnect(lambda conn, code, reason: closed.append(code))
    server = start(app)
    with connect(server.url, ping_interval=None) as ws:
        for i in range(10):
            ws.send(str(i))
        # The server stopped reading this client (its pongs wait unread) for many sweeps.
        time.sleep(1.0)
        release.set()
        assert [ws.recv(timeout=5) for _ in range(10)] == [str(i) for i in range(10)]
    assert closed in ([], [1000])
