"""Where a test client connects: a running server or a ``ws://`` URL, a path, a query."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Optional, Union
from urllib.parse import urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from ..running import RunningServer

ServerOrUrl = Union["RunningServer", str]
Query = Union[str, Mapping[str, str], Iterable[tuple[str, str]]]
Headers = Union[Mapping[str, str], Iterable[tuple[str, str]]]

_LOOPBACK = {"localhost": "127.0.0.1", "::1": "::1"}


def ws_url(server_or_url: ServerOrUrl, path: str = "/", query: Optional[Query] = None) -> str:
    """The URL to connect to. A URL that has a path keeps it when ``path`` is left at "/";
    ``query`` (a dict, pairs or an encoded string) is added to the URL's own query."""
    base = server_or_url if isinstance(server_or_url, str) else server_or_url.url
    parts = urlsplit(base)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"a WebSocket URL starts with ws:// or wss:// (got {base!r})")
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/' (got {path!r})")
    if parts.path not in ("", "/") and path != "/":
        raise ValueError(f"the URL {base!r} has a path already; pass path={path!r} or the URL")
    url_path = path if parts.path in ("", "/") else parts.path
    query_string = parts.query
    if query is not None:
        extra = query if isinstance(query, str) else urlencode(list(_pairs(query)))
        query_string = f"{query_string}&{extra}" if query_string and extra else query_string + extra
    return urlunsplit((parts.scheme, parts.netloc, url_path, query_string, ""))


def _pairs(query: Union[Mapping[str, str], Iterable[tuple[str, str]]]) -> Iterable[tuple[str, str]]:
    return query.items() if isinstance(query, Mapping) else query


def header_list(headers: Optional[Headers]) -> list[tuple[str, str]]:
    if headers is None:
        return []
    return list(headers.items() if isinstance(headers, Mapping) else headers)


def endpoint(url: str) -> tuple[str, int]:
    """``(host, port)`` of a ``ws://`` URL, loopback names made one (to match a server)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    return _LOOPBACK.get(host, host), port


def serves(server: RunningServer, url: str) -> bool:
    """Whether a client connected to ``url`` is a client of ``server``."""
    host, port = endpoint(url)
    served_host, served_port = endpoint(server.url)
    return port == served_port and (host == served_host or served_host in ("0.0.0.0", "::"))
