"""Test clients for the chat preset, independent of roomcast's code.

``ChatClient`` wraps the ``websockets`` sync client: it sends JSON frames, and reads frames
with a bounded wait. Like the seed's Vue client it answers the server's JSON heartbeat
(``{"event":"heartbeat","message":"pong"}``) unless told not to; heartbeat frames are recorded
in ``heartbeats`` and never returned by ``recv_json``/``expect``, so a test with a short
heartbeat interval reads only room traffic. The ``websockets`` library answers protocol Pings
by itself.

``SilentChat`` is a raw socket client (tests/rawws.py) for what a polite client never does:
it answers no protocol Ping, and answers JSON heartbeats only when asked to.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any, Optional

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from rawws import RawClient

NOAUTH = {"event": "noauth", "message": "please auth again"}


class ChatClient:
    def __init__(self, url: str, *, answer_heartbeats: bool = True, **kw: Any) -> None:
        kw.setdefault("ping_interval", None)
        kw.setdefault("open_timeout", 5)
        kw.setdefault("close_timeout", 2)
        kw.setdefault("max_queue", 4096)
        # Entered as a context manager (websockets 17 warns otherwise); closed by close().
        self.ws = connect(url, **kw).__enter__()
        self.answer_heartbeats = answer_heartbeats
        self.heartbeats: list[dict[str, Any]] = []

    # -- sending -------------------------------------------------------------------------

    def send_json(self, obj: Optional[dict[str, Any]] = None, **fields: Any) -> None:
        self.ws.send(json.dumps({**(obj or {}), **fields}))

    def send_text(self, text: str) -> None:
        self.ws.send(text)

    def enter(self, roomid: Any, uid: Any, name: str) -> dict[str, Any]:
        """Send the seed client's ``enter`` and return this connection's own ``enter``
        broadcast (failing if anything else arrives first)."""
        self.send_json(event="enter", message=name, roomid=roomid, uid=uid)
        return self.expect("enter")

    def say(self, text: str, **extra: Any) -> None:
        self.send_json(event="message", message=text, **extra)

    # -- receiving -----------------------------------------------------------------------

    def recv_raw(self, timeout: float = 5.0) -> Any:
        """The next frame as received (``str`` or ``bytes``), heartbeats included."""
        return self.ws.recv(timeout=timeout)

    def _recv_one(self, timeout: float) -> tuple[bool, Any]:
        """One frame: ``(True, heartbeat)`` (recorded, answered) or ``(False, frame)``."""
        raw = self.ws.recv(timeout=max(0.0, timeout))
        try:
            frame = json.loads(raw)
        except ValueError:
            return False, raw
        if isinstance(frame, dict) and frame.get("event") == "heartbeat":
            self.heartbeats.append(frame)
            if self.answer_heartbeats:
                self.send_json(event="heartbeat", message="pong")
            return True, frame
        return False, frame

    def recv_json(self, timeout: float = 5.0) -> Any:
        """The next frame that is not a JSON heartbeat, decoded when it is JSON (the raw
        ``str``/``bytes`` otherwise). Raises ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            heartbeat, frame = self._recv_one(deadline - time.monotonic())
            if not heartbeat:
                return frame

    def expect(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next (non-heartbeat) frame, which must be a JSON object with ``event``."""
        try:
            frame = self.recv_json(timeout)
        except TimeoutError:
            raise AssertionError(f"no {event!r} frame within {timeout} s") from None
        assert isinstance(frame, dict) and frame.get("event") == event, (
            f"expected a {event!r} frame, got {frame!r}"
        )
        return frame

    def until(self, event: str, timeout: float = 5.0) -> list[Any]:
        """Every (non-heartbeat) frame up to and including the first with ``event``."""
        deadline = time.monotonic() + timeout
        frames: list[Any] = []
        while True:
            try:
                frame = self.recv_json(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(
                    f"no {event!r} frame within {timeout} s; got {frames!r}"
                ) from None
            frames.append(frame)
            if isinstance(frame, dict) and frame.get("event") == event:
                return frames

    def collect(self, n: int, timeout: float = 5.0) -> list[Any]:
        """Exactly the next ``n`` (non-heartbeat) frames."""
        deadline = time.monotonic() + timeout
        frames: list[Any] = []
        while len(frames) < n:
            try:
                frames.append(self.recv_json(max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                raise AssertionError(
                    f"only {len(frames)} of {n} frames within {timeout} s: {frames!r}"
                ) from None
        return frames

    def drain(self, within: float = 0.2) -> list[Any]:
        """Every (non-heartbeat) frame that arrives within ``within`` seconds."""
        deadline = time.monotonic() + within
        frames: list[Any] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return frames
            try:
                frames.append(self.recv_json(left))
            except TimeoutError:
                return frames

    def assert_nothing(self, within: float = 0.2) -> None:
        """No (non-heartbeat) frame arrives within ``within`` seconds."""
        frames = self.drain(within)
        assert not frames, f"expected no frame, got {frames!r}"

    def wait_heartbeats(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """Read until ``n`` heartbeats are recorded (in all); fail on any other frame."""
        deadline = time.monotonic() + timeout
        while len(self.heartbeats) < n:
            try:
                heartbeat, frame = self._recv_one(deadline - time.monotonic())
            except TimeoutError:
                raise AssertionError(
                    f"{len(self.heartbeats)} of {n} heartbeats in {timeout} s"
                ) from None
            assert heartbeat, f"expected only heartbeats, got {frame!r}"
        return self.heartbeats

    def wait_closed(self, timeout: float = 5.0) -> Optional[int]:
        """Read until the server closes the connection; return the close code it sent."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        except ConnectionClosed:
            return self.ws.close_code
        except TimeoutError:
            raise AssertionError(f"the server did not close within {timeout} s") from None

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SilentChat:
    """A raw-socket chat client that never answers a protocol Ping.

    It reads only while ``pump()`` runs, answering JSON heartbeats there unless told not to;
    otherwise it reads nothing at all.
    """

    def __init__(self, port: int, path: str = "/") -> None:
        self.raw = RawClient(port, path)
        head = self.raw.handshake()
        assert head.startswith("HTTP/1.1 101"), head
        self.pings = 0
        self.texts: list[str] = []

    def send_json(self, **fields: Any) -> None:
        self.raw.send(0x1, json.dumps(fields).encode())

    def send_text(self, text: str) -> None:
        self.raw.send(0x1, text.encode())

    def pump(self, duration: float, answer_heartbeats: bool = True) -> Optional[int]:
        """Read for ``duration`` seconds, answering JSON heartbeats (never protocol Pings),
        collecting text frames in ``texts``. Returns the close code if the server closed."""
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            frame = self._parse()
            if frame is None:
                self.raw.sock.settimeout(left)
                try:
                    chunk = self.raw.sock.recv(65536)
                except socket.timeout:
                    return None
                except OSError:
                    return 1006
                if not chunk:
                    return 1006
                self.raw.buf += chunk
                continue
            opcode, payload = frame
            if opcode == 0x9:
                self.pings += 1
            elif opcode == 0x8:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            elif opcode == 0x1:
                text = payload.decode()
                self.texts.append(text)
                if answer_heartbeats and text.startswith("{"):
                    obj = json.loads(text)
                    if obj.get("event") == "heartbeat":
                        self.send_json(event="heartbeat", message="pong")

    def json_frames(self) -> list[Any]:
        """The text frames read so far that are JSON, decoded."""
        out = []
        for text in self.texts:
            try:
                out.append(json.loads(text))
            except ValueError:
                continue
        return out

    def _parse(self) -> Optional[tuple[int, bytes]]:
        """One whole (unmasked, server-sent) frame off the buffer, or None if incomplete."""
        buf = self.raw.buf
        if len(buf) < 2:
            return None
        n, at = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, at = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, at = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            return None
        self.raw.buf = buf[at + n :]
        return buf[0] & 0x0F, buf[at : at + n]

    def close(self) -> None:
        self.raw.close()
