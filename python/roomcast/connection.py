"""A client connection, and the HTTP request that opened it."""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any, Callable, Optional, Union
from urllib.parse import parse_qsl

from ._payload import encode
from ._roomcast import conn_drain as _conn_drain

if TYPE_CHECKING:
    from ._roomcast import Core
    from ._roomcast import _InfoTuple as InfoTuple


@dataclass(frozen=True)
class Request:
    """The handshake request, as ``on_connect`` sees it.

    ``query`` maps each parameter to its last value (``?name=a&name=b`` → ``"b"``); all
    values are in ``query_list``. Header names are lower-case. ``secure`` is True when the
    connection came over TLS (``wss://``): the server's own, not a proxy's in front of it.
    """

    path: str
    query_string: str
    headers: dict[str, str]
    remote_addr: tuple[str, int]
    subprotocols: list[str]
    secure: bool = False
    query: dict[str, str] = field(init=False)
    query_list: list[tuple[str, str]] = field(init=False)
    cookies: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        pairs = parse_qsl(self.query_string, keep_blank_values=True)
        object.__setattr__(self, "query_list", pairs)
        object.__setattr__(self, "query", dict(pairs))
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header must not refuse the connection
            jar = SimpleCookie()
        object.__setattr__(self, "cookies", {k: m.value for k, m in jar.items()})

    @classmethod
    def _from_info(cls, info: InfoTuple) -> Request:
        path, query, headers, addr, offered, _chosen, secure = info
        return cls(path, query, dict(headers), (addr[0], addr[1]), list(offered), secure)


class Connection:
    """One open WebSocket. Safe to use from any thread; no method blocks (``drain`` is
    awaited, from async code).

    ``state`` is a plain dict for your own per-connection data. Connections are the same
    object in every hook of one connection's life.
    """

    __slots__ = ("__weakref__", "_core", "_sink", "id", "request", "state", "subprotocol")

    def __init__(self, core: Core, conn_id: int, info: InfoTuple) -> None:
        self._core = core
        self.id: int = conn_id
        self.request: Request = Request._from_info(info)
        self.subprotocol: Optional[str] = info[5]
        self.state: dict[str, Any] = {}
        # When set, this connection's messages go here instead of the message hooks (a
        # blocking reader such as a dwebsocket-style Django view takes them).
        self._sink: Optional[Callable[[Union[str, bytes]], None]] = None

    @property
    def path(self) -> str:
        return self.request.path

    @property
    def remote_addr(self) -> tuple[str, int]:
        """The client's ``(ip, port)``."""
        return self.request.remote_addr

    @property
    def is_open(self) -> bool:
        """False once a close started (by either side) or the connection ended."""
        return self._core.is_open(self.id)

    @property
    def buffered_amount(self) -> int:
        """Payload bytes queued for this client and not yet written to its socket."""
        return self._core.buffered_amount(self.id)

    def send(self, message: Any) -> None:
        """Queue a message: ``str`` as text, ``bytes`` as binary, dict/list as JSON text.

        Returns at once. When the client reads too slowly and its queue (``queue_size``
        frames, ``queue_bytes`` bytes) is full, the server's ``overflow`` policy applies:
        ``"close"`` (default) closes it with 1013, ``"drop"`` drops the message; a producer
        that would rather wait awaits ``drain()`` between sends. Raises ``ConnectionClosed``
        if the connection has closed. From a hook, messages leave in order when the hook's
        batch is done (at most about a millisecond later); see ``Room.broadcast``.
        """
        self._core.send(self.id, encode(message))

    async def drain(self, timeout: Optional[float] = None) -> bool:
        """Wait until this client's queue has room: backpressure for async producers.

        Returns True at once when the queue is at or below its low-water mark, half its
        bounds: at most ``queue_bytes / 2`` bytes and ``queue_size / 2`` frames waiting. Else
        waits until the client has read enough for that, and returns True; or returns False
        when ``timeout`` seconds (``None``: no limit) pass first. Below the mark a message of
        up to ``queue_bytes / 2`` bytes is sure to fit, so a producer that awaits ``drain()``
        before each such ``send`` never meets the overflow policy::

            for chunk in chunks:
                await conn.drain()
                conn.send(chunk)

        A connection that closes (or has closed) ends the wait with True, raising nothing:
        the next ``send`` raises ``ConnectionClosed``, and ``is_open`` tells. Any number of
        coroutines may wait; none holds a thread. Await it from a coroutine on a running
        asyncio loop (an async hook, or code beside ``async with app.serve()``); cancelling
        it stops the wait. Sync hooks can read ``buffered_amount`` instead.
        """
        waiting = _conn_drain(self._core, self.id, timeout)
        return True if waiting is None else await waiting

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close after the messages already queued. Idempotent."""
        self._core.close(self.id, code, reason)

    def join(self, room: str) -> bool:
        """Join ``room``; False if already a member. Raises ``ConnectionClosed`` if closed."""
        return self._core.join(self.id, room)

    def leave(self, room: str) -> bool:
        """Leave ``room``; False if not a member."""
        return self._core.leave(self.id, room)

    @property
    def rooms(self) -> frozenset[str]:
        """Names of the rooms this connection is in."""
        return frozenset(self._core.rooms_of(self.id))

    def __repr__(self) -> str:
        host, port = self.remote_addr
        return f"<Connection {self.id} {host}:{port} {self.path!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Connection) and other.id == self.id and other._core is self._core

    def __hash__(self) -> int:
        return hash(self.id)
