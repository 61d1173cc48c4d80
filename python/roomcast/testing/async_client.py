"""``AsyncClient``: ``Client``'s API for async tests, on ``websockets.asyncio.client``.

It lives on the event loop that connected it (pytest-asyncio's or anyio's, both asyncio) and
answers the server's pings whenever that loop runs: a test that blocks the loop (a sync
``time.sleep``, a sync ``reap_silent``) keeps it from answering.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any, Optional

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .._payload import encode
from . import registry
from .address import Headers, Query, ServerOrUrl, header_list, ws_url
from .client import DEFAULT_TIMEOUT, connect_options
from .errors import ReceiveTimeout
from .frames import Frame, Inbox, decode_json, expectation, is_match, match


class AsyncClient:
    """``Client`` with coroutines: ``await client.expect("said")``. Same rules: frames in
    arrival order, skipped frames kept, failures that list what arrived instead."""

    def __init__(self, websocket: ClientConnection, url: str) -> None:
        self.websocket = websocket
        """The underlying ``websockets.asyncio.client.ClientConnection``."""
        self.url = url
        self.loop = asyncio.get_running_loop()
        """The event loop the connection lives on."""
        self._inbox = Inbox()
        registry.track(self)

    @classmethod
    async def connect(
        cls,
        server_or_url: ServerOrUrl,
        path: str = "/",
        headers: Optional[Headers] = None,
        subprotocols: Optional[list[str]] = None,
        query: Optional[Query] = None,
        *,
        open_timeout: float = DEFAULT_TIMEOUT,
    ) -> AsyncClient:
        """``client = await AsyncClient.connect(server)``; close it (``async with client:``)."""
        url = ws_url(server_or_url, path, query)
        websocket = await connect(
            url,
            additional_headers=header_list(headers) or None,
            subprotocols=subprotocols,  # type: ignore[arg-type]  # Subprotocol is a NewType of str
            open_timeout=open_timeout,
            **connect_options(connect),
        )
        return cls(websocket, url)

    # -- sending -----------------------------------------------------------------------------

    async def send(self, message: Any) -> None:
        """``str`` as a text frame, ``bytes`` as binary, a dict or list as JSON text."""
        await self.websocket.send(encode(message))

    async def ping(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Send a Ping and wait for its Pong: the server has read everything sent before it."""
        pong = await self.websocket.ping()
        try:
            await asyncio.wait_for(pong, timeout)
        except asyncio.TimeoutError:
            raise ReceiveTimeout(f"no Pong within {timeout:g} s of a Ping") from None

    # -- receiving ---------------------------------------------------------------------------

    async def receive(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The next frame: ``str`` for text, ``bytes`` for binary."""
        held = self._inbox.take()
        if held is not None:
            return held
        return await self._read(time.monotonic() + timeout, timeout, "a frame")

    async def receive_json(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """The next frame, decoded from JSON; a frame that is not JSON fails the test."""
        return decode_json(await self.receive(timeout))

    async def expect(
        self, event: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT, **fields: Any
    ) -> Any:
        """The first JSON frame matching ``event`` and ``fields``; see ``Client.expect``."""
        found = self._inbox.take_match(event, fields)
        if is_match(found):
            return found
        wanted = expectation(event, fields)
        deadline = time.monotonic() + timeout
        while True:
            frame = await self._read(deadline, timeout, wanted)
            data = match(frame, event, fields)
            if is_match(data):
                return data
            self._inbox.keep(frame)

    async def assert_nothing(self, within: float = 0.1) -> None:
        """Fail if a frame arrives within ``within`` seconds or one is waiting already."""
        if self._inbox.held:
            raise self._inbox.unwanted(within)
        try:
            # websockets documents recv() as safe to cancel: no frame is lost.
            frame = await asyncio.wait_for(self.websocket.recv(), within)
        except asyncio.TimeoutError:
            return
        except ConnectionClosed:
            raise self._closed("nothing (no frame, no close)") from None
        self._inbox.keep(frame)
        raise self._inbox.unwanted(within)

    async def _read(self, deadline: float, timeout: float, wanted: str) -> Frame:
        try:
            remaining = max(0.0, deadline - time.monotonic())
            return await asyncio.wait_for(self.websocket.recv(), remaining)
        except asyncio.TimeoutError:
            raise self._inbox.timed_out(wanted, timeout) from None
        except ConnectionClosed:
            raise self._closed(wanted) from None

    def _closed(self, wanted: str) -> AssertionError:
        registry.untrack(self)
        return self._inbox.closed(wanted, self.close_code, self.close_reason)

    # -- closing -----------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close (the closing handshake completes before it returns). Idempotent."""
        registry.untrack(self)
        try:
            await self.websocket.close(code, reason)
        except ConnectionClosed:
            pass  # closed by the server already (websockets raises when that was an error)

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the server to close the connection; return the close code. Frames that
        arrive first are kept for ``receive``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                remaining = max(0.0, deadline - time.monotonic())
                frame = await asyncio.wait_for(self.websocket.recv(), remaining)
            except asyncio.TimeoutError:
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

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<AsyncClient {self.url} {state}>"
