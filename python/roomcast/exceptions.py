"""Exceptions raised by roomcast.

The hierarchy::

    RoomcastError          base class of every roomcast error
    ├── ConnectionClosed   send/join/close on a connection that has closed
    └── Reject             raised by *your* ``on_connect`` hook to refuse a handshake

Bad arguments raise the standard ``ValueError`` / ``TypeError``; a port that cannot be
opened raises ``OSError``.
"""

from __future__ import annotations

from ._roomcast import ConnectionClosed, RoomcastError

__all__ = ["ConnectionClosed", "Reject", "RoomcastError"]


class Reject(RoomcastError):
    """Raise from ``on_connect`` to refuse the connection with an HTTP status.

    The client receives ``status`` and ``reason`` as the HTTP response to its handshake
    (for example 401 when a token is missing), and no WebSocket is opened.
    """

    def __init__(self, status: int = 403, reason: str = "Forbidden") -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"Reject status must be an HTTP error status, 400-599 (got {status})")
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"
