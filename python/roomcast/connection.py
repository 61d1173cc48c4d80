"""A client connection, and the HTTP request that opened it."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any, Callable, Optional, Union
from urllib.parse import parse_qsl

from ._payload import encode
from ._roomcast import conn_drain as _conn_drain

if TYPE_CHECKING:
    from ._roomcast import Core, RequestInfo


class Request:
    """The handshake request, as ``on_connect`` sees it. Read-only.

    ``path``, ``query_string``, ``headers`` (names lower-case), ``remote_addr`` (the client's
    ``(ip, port)``), ``subprotocols`` (offered), ``secure`` (True when the connection came
    over TLS, ``wss://``: the server's own, not a proxy's in front of it); and, parsed from
    them, ``query`` (each parameter's last value: ``?name=a&name=b`` → ``"b"``),
    ``query_list`` (all values) and ``cookies``.

    Only ``path`` is read when the connection opens: the rest comes from the server's core
    the first time it is used, so connections whose hooks never look cost no Python memory
    for their headers.
    """

    __slots__ = ("_cookies", "_fields", "_info", "_query", "_query_list", "path")

    path: str
    _info: Optional[RequestInfo]
    _fields: Optional[_Fields]
    _query_list: Optional[list[tuple[str, str]]]
    _query: Optional[dict[str, str]]
    _cookies: Optional[dict[str, str]]

    def __init__(
        self,
        path: str,
        query_string: str,
        headers: dict[str, str],
        remote_addr: tuple[str, int],
        subprotocols: list[str],
        secure: bool = False,
    ) -> None:
        _init(self, None, path, (query_string, headers, remote_addr, subprotocols, secure))

    @classmethod
    def _from_info(cls, info: RequestInfo) -> Request:
        request = cls.__new__(cls)
        _init(request, info, info.path, None)
        return request

    def _loaded(self) -> _Fields:
        fields = self._fields
        if fields is None:
            assert self._info is not None
            query, headers, addr, offered, secure = self._info.fields()
            fields = (query, dict(headers), (addr[0], addr[1]), list(offered), secure)
            object.__setattr__(self, "_fields", fields)
        return fields

    @property
    def query_string(self) -> str:
        return self._loaded()[0]

    @property
    def headers(self) -> dict[str, str]:
        return self._loaded()[1]

    @property
    def remote_addr(self) -> tuple[str, int]:
        return self._loaded()[2]

    @property
    def subprotocols(self) -> list[str]:
        return self._loaded()[3]

    @property
    def secure(self) -> bool:
        return self._loaded()[4]

    @property
    def query_list(self) -> list[tuple[str, str]]:
        pairs = self._query_list
        if pairs is None:
            pairs = parse_qsl(self.query_string, keep_blank_values=True)
            object.__setattr__(self, "_query_list", pairs)
        return pairs

    @property
    def query(self) -> dict[str, str]:
        query = self._query
        if query is None:
            query = dict(self.query_list)
            object.__setattr__(self, "_query", query)
        return query

    @property
    def cookies(self) -> dict[str, str]:
        cookies = self._cookies
        if cookies is None:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(self.headers.get("cookie", ""))
            except Exception:  # a malformed Cookie header must not refuse the connection
                jar = SimpleCookie()
            cookies = {k: m.value for k, m in jar.items()}
            object.__setattr__(self, "_cookies", cookies)
        return cookies

    def _copy_into(self, other: Request) -> None:
        """Gives ``other`` (a subclass's new instance) this request's fields."""
        _init(other, self._info, self.path, self._fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Request is read-only: cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.path, *self._loaded()) == (other.path, *other._loaded())

    __hash__ = None  # type: ignore[assignment]  # its headers are a dict

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(path={self.path!r}, query_string={self.query_string!r}, "
            f"headers={self.headers!r}, remote_addr={self.remote_addr!r}, "
            f"subprotocols={self.subprotocols!r}, secure={self.secure!r})"
        )


# query_string, headers, remote_addr, offered subprotocols, secure
_Fields = tuple[str, dict[str, str], tuple[str, int], list[str], bool]


def _init(
    request: Request, info: Optional[RequestInfo], path: str, fields: Optional[_Fields]
) -> None:
    for name, value in (
        ("_info", info),
        ("_fields", fields),
        ("_query_list", None),
        ("_query", None),
        ("_cookies", None),
        ("path", path),
    ):
        object.__setattr__(request, name, value)


class Connection:
    """One open WebSocket. Safe to use from any thread; no method blocks (``drain`` is
    awaited, from async code).

    ``state`` is a plain dict for your own per-connection data. Connections are the same
    object in every hook of one connection's life.
    """

    __slots__ = ("__weakref__", "_core", "_sink", "_state", "id", "request", "subprotocol")

    def __init__(self, core: Core, conn_id: int, info: RequestInfo) -> None:
        self._core = core
        self.id: int = conn_id
        self.request: Request = Request._from_info(info)
        self.subprotocol: Optional[str] = info.subprotocol
        self._state: Optional[dict[str, Any]] = None
        # When set, this connection's messages go here instead of the message hooks (a
        # blocking reader such as a dwebsocket-style Django view takes them).
        self._sink: Optional[Callable[[Union[str, bytes]], None]] = None

    @property
    def state(self) -> dict[str, Any]:
        """Your own data for this connection (made at first use: most connections never
        need one)."""
        if self._state is None:
            self._state = {}
        return self._state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self._state = value

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
