"""``request.websocket``: dwebsocket's blocking socket API over a roomcast connection.

A view blocks on it for the socket's whole life (``for message in request.websocket``), on
a thread of its own; the Rust core delivers the client's messages into this object's queue.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, Optional, Union

from ..connection import Connection
from ..exceptions import ConnectionClosed

logger = logging.getLogger("roomcast")

Message = Optional[bytes]

#: Messages waiting for a view that does not read before the socket is closed with 1013.
MAX_QUEUED = 1024

_CLOSED = object()  # the queue's end marker


class WebSocket:
    """The WebSocket of a request, as dwebsocket's views use it.

    Messages are ``bytes`` (text frames UTF-8 encoded, as dwebsocket gave them). Iterating
    ends when the client closes, never after a silence; like dwebsocket it yields one last
    ``None`` first, which ``send`` ignores.
    """

    def __init__(self, conn: Connection, max_queued: int = MAX_QUEUED) -> None:
        self._conn = conn
        self._queue: queue.Queue[Any] = queue.Queue()
        self._max_queued = max_queued
        self._accepted: Future[bool] = Future()
        self._lock = threading.Lock()
        self._ended = False  # the client left, or we closed
        self.closed = False  # dwebsocket: set when the server closed the socket
        self.protocol = _Protocol(self)
        #: dwebsocket's per-frame callback; accepted and never called.
        self.handle: Any = None
        conn._sink = self._deliver

    # -- fed by the server ----------------------------------------------------------------

    def _deliver(self, message: Union[str, bytes]) -> None:
        if self._queue.qsize() >= self._max_queued:
            logger.warning(
                "WebSocket view for connection %s: %d messages unread (the view does not "
                "read); closing with 1013",
                self._conn.id,
                self._max_queued,
            )
            self._conn.close(1013, "the server is not reading your messages")
            return
        self._queue.put(message.encode() if isinstance(message, str) else message)

    def _client_gone(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self._queue.put(_CLOSED)

    # -- the handshake ----------------------------------------------------------------------

    def accept_connection(self) -> None:
        """Complete the handshake (idempotent; the decorators and middleware call it)."""
        if not self._accepted.done():
            self._accepted.set_result(True)

    @property
    def accepted(self) -> bool:
        return self._accepted.done() and self._accepted.exception() is None

    # -- dwebsocket's API --------------------------------------------------------------------

    def send(self, message: Any) -> None:
        """Send ``message``: UTF-8 ``bytes`` and ``str`` as a text frame (what browsers
        expect from dwebsocket), other bytes as binary, dict/list as JSON. ``None`` and
        sends to a closed socket do nothing (a broadcast loop may keep closed sockets)."""
        if message is None:
            return
        self.accept_connection()
        if isinstance(message, (bytes, bytearray, memoryview)):
            raw = bytes(message)
            try:
                payload: Union[str, bytes] = raw.decode("utf-8")
            except UnicodeDecodeError:
                payload = raw
        elif isinstance(message, str):
            payload = message
        else:
            payload = json.dumps(message, ensure_ascii=False)
        try:
            self._conn.send(payload)
        except ConnectionClosed:
            pass

    def wait(self, timeout: Optional[float] = None) -> Message:
        """The next message, waiting for it; ``None`` once the socket is closed, or when
        ``timeout`` seconds pass (``None`` or a negative timeout waits for ever)."""
        self.accept_connection()
        if timeout is not None and timeout < 0:
            timeout = None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSED:
            self._queue.put(_CLOSED)  # every later wait returns None at once too
            return None
        return item  # type: ignore[no-any-return]

    def read(self, fallback: Message = None) -> Message:
        """A message if one is waiting, else ``fallback`` (``None`` once closed)."""
        self.accept_connection()
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return fallback
        if item is _CLOSED:
            self._queue.put(_CLOSED)
            return None
        return item  # type: ignore[no-any-return]

    def has_messages(self) -> bool:
        return self.count_messages() > 0

    def count_messages(self) -> int:
        """Messages waiting to be read."""
        n = self._queue.qsize()
        return n - 1 if self._ended and n > 0 else n

    def __iter__(self) -> Iterator[Message]:
        while True:
            message = self.wait()
            yield message
            if message is None:
                return

    def close(self, code: Optional[int] = None, reason: Union[str, bytes, None] = None) -> None:
        """Close the socket (1000 unless ``code`` says otherwise). Idempotent."""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        self.closed = True
        if not self.accepted:
            # Never opened: the handshake is refused instead.
            if not self._accepted.done():
                self._accepted.set_result(False)
        else:
            try:
                self._conn.close(code or 1000, reason or "")
            except ValueError:
                self._conn.close(1000, reason or "")
        self._client_gone()

    def is_closed(self) -> bool:
        return self.closed or self._ended

    is_close = is_closed  # dwebsocket's base class spelled it so

    def __repr__(self) -> str:
        return f"<WebSocket connection={self._conn.id} closed={self.is_closed()}>"


class _Protocol:
    """``request.websocket.protocol.write(message, binary=False)``, for views that reach
    into dwebsocket's protocol object to send binary frames."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws

    def write(self, message: Union[str, bytes], binary: bool = False) -> None:
        if binary:
            data = message.encode() if isinstance(message, str) else message
            try:
                self._ws._conn.send(data)
            except ConnectionClosed:
                pass
        else:
            self._ws.send(message)
