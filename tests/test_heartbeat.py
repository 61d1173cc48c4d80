"""The heartbeat sweeper: no Ping to a client that talks, a Ping to a silent one, which is
reaped if it does not answer within an interval; answering ones stay; app-level heartbeats."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from typing import Optional

from websockets.sync.client import connect

import roomcast

from conftest import log_lines, wait_for
from rawws import RawClient

INTERVAL = 0.5
# The short interval of the timing tests. Their bounds have slack for a busy machine: what they
# tell apart (a Ping every interval or none; reaped after one interval or after two) is far
# wider than a scheduling delay.
SHORT = 0.3


class Peer:
    """A raw client whose frames are read on a thread, with when each came; it answers Pings
    (and JSON heartbeats) only if told to."""

    def __init__(self, port: int, answer_pings: bool, answer_json: bool = False):
        self.raw = RawClient(port)
        assert self.raw.handshake().startswith("HTTP/1.1 101")
        self.raw.sock.settimeout(None)
        self.answer_pings = answer_pings
        self.answer_json = answer_json
        self.frames: list[tuple[float, int, bytes]] = []
        self.close: Optional[tuple[float, int, str]] = None
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def send(self, opcode: int, payload: bytes) -> None:
        with self._send_lock:
            self.raw.send(opcode, payload)

    def _read(self) -> None:
        while True:
            try:
                opcode, payload = self.raw.recv_frame()
            except (OSError, ConnectionError):
                return
            now = time.monotonic()
            self.frames.append((now, opcode, payload))
            if opcode == 0x9 and self.answer_pings:
                self.send(0xA, payload)
            elif opcode == 0x1 and self.answer_json and b'"heartbeat"' in payload:
                self.send(0x1, b'{"event":"heartbeat","message":"pong"}')
            elif opcode == 0x8:
                (code,) = struct.unpack("!H", payload[:2])
                self.close = (now, code, payload[2:].decode())
                return

    def pings(self) -> list[float]:
        return [t for t, opcode, _ in self.frames if opcode == 0x9]

    def texts(self) -> list[bytes]:
        return [p for _, opcode, p in self.frames if opcode == 0x1]

    def shut(self) -> None:
        try:
            self.raw.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(5)
        self.raw.close()


def test_a_client_that_keeps_talking_gets_no_ping(start):
    closed = []
    app = roomcast.Server(heartbeat_interval=SHORT)
    app.on_disconnect(lambda conn, code, reason: closed.append(code))
    server = start(app)
    talking = Peer(server.port, answer_pings=False)
    idle = Peer(server.port, answer_pings=True)  # the control: it is pinged
    try:
        sent = [time.monotonic()]
        while sent[-1] - sent[0] < SHORT * 8:
            talking.send(0x1, b"still here")
            time.sleep(SHORT / 10)
            sent.append(time.monotonic())
        gaps = max(b - a for a, b in zip(sent, sent[1:]))
        assert talking.pings() == [], f"pinged although it talked (longest gap {gaps:.2f} s)"
        assert talking.close is None and not closed
        assert len(idle.pings()) >= 2 and idle.close is None
    finally:
        talking.shut()
        idle.shut()


def test_an_idle_client_that_answers_pings_stays_and_is_pinged_every_other_interval(start):
    closed = []
    app = roomcast.Server(heartbeat_interval=SHORT)
    app.on_disconnect(lambda conn, code, reason: closed.append(code))
    server = start(app)
    idle = Peer(server.port, answer_pings=True)
    try:
        time.sleep(SHORT * 10)
        assert idle.close is None and not closed
        # Its Pong is heard by the next sweep, which then sends none: 5 Pings in 10 intervals
        # (10 if every sweep pinged it).
        assert 2 <= len(idle.pings()) <= 7, idle.pings()
    finally:
        idle.shut()


def test_a_client_that_stops_answering_is_closed_two_to_three_intervals_after_its_last_frame(
    start, caplog
):
    closed = {}
    app = roomcast.Server(heartbeat_interval=SHORT)
    app.on_disconnect(lambda conn, code, reason: closed.setdefault(conn.id, (code, reason)))
    server = start(app)
    quiet = Peer(server.port, answer_pings=False)
    try:
        for _ in range(5):
            quiet.send(0x1, b"talking")
            time.sleep(SHORT / 5)
        last = time.monotonic()
        quiet.send(0x1, b"the last frame")
        wait_for(lambda: quiet.close, timeout=SHORT * 3 + 5, what="the close")
        at, code, reason = quiet.close
        assert (code, reason) == (1011, f"heartbeat timeout: nothing received for {SHORT:.1f} s")
        # Never before two intervals: a sweep that heard it, then one that pinged it.
        assert at - last > SHORT * 2, f"closed {at - last:.2f} s after its last frame"
        assert at - last < SHORT * 3 + 2.0, f"closed {at - last:.2f} s after its last frame"
        # One Ping after its last frame, then one interval to answer it. (A busy machine may
        # stretch the pauses above past an interval: a Ping then may come earlier too.)
        after = [t for t in quiet.pings() if t > last]
        assert len(after) == 1, after
        assert after[0] - last > SHORT
        # on_disconnect runs on a hook thread, maybe a moment after the client saw the Close.
        wait_for(lambda: [c for c, _ in closed.values()] == [1011], what="on_disconnect")
        wait_for(lambda: any("heartbeat timeout" in x for x in log_lines(caplog)), what="log line")
    finally:
        quiet.shut()


def test_the_json_heartbeat_still_goes_every_interval_without_protocol_pings(start):
    # A client that answers the JSON heartbeat is heard from at every sweep: it gets the JSON
    # heartbeat each interval (the chat protocol promises it) and no protocol Ping.
    app = roomcast.Server(heartbeat_interval=SHORT, app_heartbeat=True)
    server = start(app)
    peer = Peer(server.port, answer_pings=False, answer_json=True)
    try:
        time.sleep(SHORT * 8)
        beats = [t for t in peer.texts() if b'"heartbeat"' in t]
        assert len(beats) >= 5, beats
        # One Ping at most: at its first sweep, before it had answered anything.
        assert len(peer.pings()) <= 1 and peer.close is None, peer.pings()
    finally:
        peer.shut()


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
        # A new connection is pinged at its first sweep, within an interval, and closed one
        # interval later.
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
