"""roomcast's pytest plugin: test a roomcast app as easily as a view.

Installed with roomcast and registered through the ``pytest11`` entry point; it does nothing
until a test asks for one of its fixtures (importing it starts nothing and imports neither
websockets nor Django)::

    def test_echo(roomcast_server, roomcast_client):
        client = roomcast_client(roomcast_server(app))
        client.send("hi")
        assert client.receive() == "hi"

Fixtures:

- ``roomcast_server(app, **settings)``: starts the app on a free port of 127.0.0.1, returns
  the ``RunningServer``, stops it after the test; a hook that raised fails the test with its
  traceback (opt out: ``@pytest.mark.roomcast_allow_hook_errors``).
- ``roomcast_client(server_or_url, path="/", headers=None, subprotocols=None, query=None)``: a
  connected ``Client``, closed after the test.
- ``roomcast_async_client(...)``: the same, awaited, an ``AsyncClient`` (pytest-asyncio or
  anyio on asyncio).
- ``roomcast_live_server``: the Django project served as ``manage.py runws`` serves it
  (needs pytest-django).
- ``roomcast_redis``: a real ``redis-server`` on a free port, stopped after the test; a
  ``RedisServer`` (``.url``, ``.kill()``, ``.restart()``, ``.pause()``, ``.command(...)``).

Heartbeats without waiting: ``server.sweep_heartbeat()`` runs one sweep now;
``reap_silent(server)`` (``await reap_silent_async(server)``) closes the connections that
answer nothing, such as a ``SilentClient`` (``roomcast_client.silent(server)``).

Waiting methods fail with ``ReceiveError`` (an ``AssertionError``; see ``.errors``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ReceiveClosed, ReceiveError, ReceiveTimeout
from .plugin import AsyncClientFactory, ClientFactory, ServerFactory
from .plugin import pytest_configure as pytest_configure
from .plugin import pytest_runtest_makereport as pytest_runtest_makereport
from .plugin import roomcast_async_client as roomcast_async_client
from .plugin import roomcast_client as roomcast_client
from .plugin import roomcast_live_server as roomcast_live_server
from .plugin import roomcast_redis as roomcast_redis
from .plugin import roomcast_server as roomcast_server

if TYPE_CHECKING:
    from .async_client import AsyncClient
    from .client import DEFAULT_TIMEOUT, Client
    from .heartbeat import reap_silent, reap_silent_async
    from .redis import RedisError, RedisServer
    from .silent import SilentClient

# Loaded on first use: they import websockets, which a project may lack until it tests.
_LAZY = {
    "AsyncClient": ".async_client",
    "Client": ".client",
    "DEFAULT_TIMEOUT": ".client",
    "RedisError": ".redis",
    "RedisServer": ".redis",
    "SilentClient": ".silent",
    "reap_silent": ".heartbeat",
    "reap_silent_async": ".heartbeat",
}

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "AsyncClientFactory",
    "Client",
    "ClientFactory",
    "ReceiveClosed",
    "ReceiveError",
    "ReceiveTimeout",
    "RedisError",
    "RedisServer",
    "ServerFactory",
    "SilentClient",
    "reap_silent",
    "reap_silent_async",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
