"""``SilentClient``: a connection that completes the handshake and then answers nothing, not a
Ping and not a Close, as a client whose network vanished looks to the server. It is what a
heartbeat test reaps.

The handshake and the frames it reads go through the ``websockets`` library's sans-I/O
``ClientProtocol``; the answers that protocol prepares (Pongs, the closing handshake) are
never sent.
"""

from __future__ import annotations

import socket
import time
from types import TracebackType
from typing import Optional

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import Event, State
from websockets.uri import parse_uri

from .address import ServerOrUrl, ws_url
from .client import DEFAULT_TIMEOUT
from .errors import ReceiveTimeout
from .frames import Frame as Message


class SilentClient:
    """Connected, then deaf: ``silent = SilentClient.connect(server)``; after
    ``reap_silent(server)``, ``silent.wait_closed()`` is 1011. Close it (or use ``with``)."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol, url: str) -> None:
        self.url = url
        self._sock = sock
        self._protocol = protocol
        self.pings = 0
        """Pings received (and left unanswered)."""
        self.frames: list[Message] = []
        """Text and binary messages received (never read by anyone else)."""

    @classmethod
    def connect(
        cls, server_or_url: ServerOrUrl, path: str = "/", timeout: float = DEFAULT_TIMEOUT
    ) -> SilentClient:
        """Open the connection; a refused handshake raises ``websockets.exceptions``'
        ``InvalidStatus``."""
        url = ws_url(server_or_url, path)
        uri = parse_uri(url)
        if uri.secure:
            raise ValueError("SilentClient speaks ws:// only")
        protocol = ClientProtocol(uri)
        sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
        try:
            protocol.send_request(protocol.connect())
            sock.sendall(b"".join(protocol.data_to_send()))
            client = cls(sock, protocol, url)
            deadline = time.monotonic() + timeout
            while not any(isinstance(e, Response) for e in client._read(deadline, "handshake")):
                pass
            if protocol.handshake_exc is not None:
                raise protocol.handshake_exc
        except BaseException:
            sock.close()
            raise
        return client

    def _read(self, deadline: float, what: str) -> list[Event]:
        """Feed what the socket has to the protocol; return the events it parsed."""
        self._sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = self._sock.recv(65536)
        except socket.timeout:
            raise ReceiveTimeout(f"SilentClient: no {what} from {self.url}") from None
        except OSError:  # reset by the server
            data = b""
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        events = self._protocol.events_received()
        for event in events:
            if not isinstance(event, Frame):
                continue
            if event.opcode is Opcode.PING:
                self.pings += 1
            elif event.opcode is Opcode.TEXT:
                self.frames.append(bytes(event.data).decode())
            elif event.opcode is Opcode.BINARY:
                self.frames.append(bytes(event.data))
        return events

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the server to close (its Close frame, or the TCP connection); return the
        code (1006 when no Close frame came)."""
        deadline = time.monotonic() + timeout
        while self._protocol.close_rcvd is None and self._protocol.state is not State.CLOSED:
            self._read(deadline, "close")
        return self.close_code or 1006

    @property
    def close_code(self) -> Optional[int]:
        """The code of the server's Close frame; None until one came."""
        close = self._protocol.close_rcvd
        return None if close is None else close.code

    @property
    def close_reason(self) -> Optional[str]:
        close = self._protocol.close_rcvd
        return None if close is None else close.reason

    def close(self) -> None:
        """Drop the TCP connection (no Close frame: the client stays silent to the end)."""
        self._sock.close()

    def __enter__(self) -> SilentClient:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SilentClient {self.url} pings={self.pings} close_code={self.close_code}>"
