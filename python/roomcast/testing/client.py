"""``Client``: a WebSocket client for tests, on the ``websockets`` library's sync client.

The library's background thread reads the socket and answers the server's pings by itself,
so the heartbeat does not reap an open ``Client``, even one the test never reads from (but
see ``reap_silent`` for sweeps run back to back).
"""

from __future__ import annotations

import inspect
import time
from types import TracebackType
from typing import Any, Callable, Optional

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .._payload import encode
from . import registry
from .address import Headers, Query, ServerOrUrl, header_list, ws_url
from .errors import ReceiveTimeout
from .frames import Frame, Inbox, decode_json, expectation, is_match, match

DEFAULT_TIMEOUT = 5.0
"""Seconds ``receive``/``expect``/``ping`` wait before failing the test (a lost frame fails
fast instead of hanging the run)."""


def connect_options(connect: Callable[..., Any]) -> dict[str, Any]:
    """What every test client sets, among the options this ``websockets`` version's
    ``connect`` knows: no keepalive of its own (the server's heartbeat is what is tested), any
    message size, room for 65,536 unread frames (flow control would stop reading, and so
    answering pings, for a test that reads nothing), no compression, never a proxy
    (websockets 15+ would honour ``HTTPS_PROXY``)."""
    wanted: dict[str, Any] = {
        "ping_interval": None,
        "max_size": None,
        "max_queue": 1 << 16,  # None (no limit) is refused by the asyncio client before 14
        "compression": None,
        "close_timeout": 2.0,
        "proxy": None,
    }
    known = inspect.signature(connect).parameters
    return {name: value for name, value in wanted.items() if name in known}


class Client:
    """A connected WebSocket client with the assertions a test needs.

    Frames are read in arrival order; ``expect()`` keeps the frames it skips, and the next
    ``receive()``/``expect()`` sees them first. Waiting methods fail with ``ReceiveTimeout``
    or ``ReceiveClosed`` (both ``AssertionError``), whose message lists what arrived instead.
    Use it from one thread at a time.
    """

    def __init__(self, websocket: ClientConnection, url: str) -> None:
        self.websocket = websocket
        """The underlying ``websockets.sync.client.ClientConnection``."""
        self.url = url
        self._inbox = Inbox()
        registry.track(self)

    @classmethod
    def connect(
        cls,
        server_or_url: ServerOrUrl,
        path: str = "/",
        headers: Optional[Headers] = None,
        subprotocols: Optional[list[str]] = None,
        query: Optional[Query] = None,
        *,
        open_timeout: float = DEFAULT_TIMEOUT,
    ) -> Client:
        """Connect to a ``RunningServer`` or a ``ws://`` URL. A refused handshake raises
        ``websockets.exceptions.InvalidStatus`` (``.response.status_code``)."""
        url = ws_url(server_or_url, path, query)
        websocket = connect(
            url,
            additional_headers=header_list(headers) or None,
            subprotocols=subprotocols,  # type: ignore[arg-type]  # Subprotocol is a NewType of str
            open_timeout=open_timeout,
            **connect_options(connect),
        )
        # websockets 17 wants connect() used as a context manager; this is its __enter__.
        websocket.__enter__()
        return cls(websocket, url)

    # -- sending -----------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        """``str`` as a text frame, ``bytes`` as binary, a dict or list as JSON text."""
        self.websocket.send(encode(message))

    def ping(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Send a Ping and wait for its Pong: the server has read everything sent before it."""
        if not self.websocket.ping().wait(timeout):
            raise ReceiveTimeout(f"no Pong within {timeout:g} s of a Ping")

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The next frame: ``str`` for text, ``bytes`` for binary."""
        held = self._inbox.take()
        if held is not None:
            return held
        return self._read(time.monotonic() + timeout, timeout, "a frame")

    def receive_json(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """The next frame, decoded from JSON; a frame that is not JSON fails the test."""
        return decode_json(self.receive(timeout))

    def expect(
        self, event: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT, **fields: Any
    ) -> Any:
        """The first JSON frame whose ``"event"`` is ``event`` and whose ``fields`` have these
        values (any JSON frame when none are given), decoded. Frames skipped on the way are
        kept, in order, for the next receives."""
        found = self._inbox.take_match(event, fields)
        if is_match(found):
            return found
        wanted = expectation(event, fields)
        deadline = time.monotonic() + timeout
        while True:
            frame = self._read(deadline, timeout, wanted)
            data = match(frame, event, fields)
            if is_match(data):
                return data
            self._inbox.keep(frame)

    def assert_nothing(self, within: float = 0.1) -> None:
        """Fail if a frame arrives within ``within`` seconds, or one is waiting already
        (frames ``expect()`` skipped count). A frame that arrives is kept for ``receive``."""
        if self._inbox.held:
            raise self._inbox.unwanted(within)
        try:
            frame = self.websocket.recv(timeout=within)
        except TimeoutError:
            return
        except ConnectionClosed:
            raise self._closed("nothing (no frame, no close)") from None
        self._inbox.keep(frame)
        raise self._inbox.unwanted(within)

    def _read(self, deadline: float, timeout: float, wanted: str) -> Frame:
        try:
            return self.websocket.recv(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise self._inbox.timed_out(wanted, timeout) from None
        except ConnectionClosed:
            raise self._closed(wanted) from None

    def _closed(self, wanted: str) -> AssertionError:
        registry.untrack(self)
        return self._inbox.closed(wanted, self.close_code, self.close_reason)

    # -- closing -----------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close (the closing handshake completes before it returns). Idempotent."""
        registry.untrack(self)
        try:
            self.websocket.close(code, reason)
        except ConnectionClosed:
            pass  # closed by the server already (websockets raises when that was an error)

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the server to close the connection; return the close code. Frames that
        arrive first are kept for ``receive``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = self.websocket.recv(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise self._inbox.timed_out("the server to close the connection", timeout) from None
            except ConnectionClosed:
                registry.untrack(self)
                code = self.close_code
                assert code is not None
                return code
            self._inbox.keep(frame)

    @property
    def close_code(self) -> Optional[int]:
        """The code of the server's Close frame (1006 if none came); None while open."""
        return self.websocket.protocol.close_code  # the connection has it too from websockets 14

    @property
    def close_reason(self) -> Optional[str]:
        return self.websocket.protocol.close_reason

    @property
    def subprotocol(self) -> Optional[str]:
        """The subprotocol the server chose, if any."""
        return self.websocket.subprotocol

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<Client {self.url} {state}>"
