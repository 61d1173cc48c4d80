"""Heartbeats without waiting: reap the silent connections of a server now.

``server.sweep_heartbeat()`` runs one sweep of every connection as the timer would: nothing
to a connection heard from since the previous sweep, a Ping to a silent one, 1011 to one still
silent since its Ping (and the JSON heartbeat to every one that stays when ``app_heartbeat`` is
on, with ``num`` on the chat preset). A new connection has not been heard from yet, so a client
that answers nothing is pinged by the first sweep and reaped by the second.
``reap_silent(server)`` runs two sweeps, each after every open ``roomcast.testing`` client of
the server has round-tripped a Ping: a client that answers is never reaped by a race (a frame
still on its way), however many times it is called.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Optional

from websockets.exceptions import ConnectionClosed

from . import registry
from .client import DEFAULT_TIMEOUT, Client

if TYPE_CHECKING:
    from ..running import RunningServer
    from .async_client import AsyncClient


def _sweep(server: RunningServer) -> None:
    if not server.sweep_heartbeat():
        raise RuntimeError(
            "the heartbeat of this server is off (heartbeat_interval=None): start it with an "
            "interval, e.g. roomcast_server(app, heartbeat_interval=3600)"
        )


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def reap_silent(server: RunningServer, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Close, now, the connections of ``server`` that answer nothing (1011 "heartbeat
    timeout", then ``on_disconnect``); the others stay (and get the JSON heartbeat, if on).

    Two heartbeat sweeps, each after a Ping round trip of every open test client of
    ``server`` (so those are heard from, whatever the timing of their last Pong). The reaped
    connections are closing when it returns. From an async test whose ``AsyncClient``s run on
    the test's loop, ``await reap_silent_async(server)`` instead.
    """
    here = _running_loop()
    for _ in range(2):
        _answer_pings(server, here, timeout)
        _sweep(server)


def _answer_pings(
    server: RunningServer, here: Optional[asyncio.AbstractEventLoop], timeout: float
) -> None:
    """A Ping round trip of each open test client of ``server``: each has been heard from."""
    for client in registry.clients_of(server):
        try:
            if isinstance(client, Client):
                client.ping(timeout)
                continue
            loop = client.loop
            if loop.is_closed():
                continue
            if loop is here:
                raise RuntimeError(
                    "reap_silent() would block the loop this test's AsyncClient answers pings "
                    "on: use `await reap_silent_async(server)`"
                )
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(client.ping(timeout), loop).result(timeout + 1)
            else:
                loop.run_until_complete(client.ping(timeout))
        except ConnectionClosed:
            pass  # closed meanwhile: nothing to keep alive


async def reap_silent_async(server: RunningServer, timeout: float = DEFAULT_TIMEOUT) -> None:
    """``reap_silent`` for async tests: the ``AsyncClient``s on this loop answer meanwhile."""
    here = asyncio.get_running_loop()
    for _ in range(2):
        for client in registry.clients_of(server):
            try:
                if isinstance(client, Client):
                    client.ping(timeout)  # its own thread answers: this blocks one round trip
                elif client.loop is here:
                    await client.ping(timeout)
                elif client.loop.is_running():
                    await _elsewhere(client, timeout)
            except ConnectionClosed:
                pass
        _sweep(server)


async def _elsewhere(client: AsyncClient, timeout: float) -> None:
    pending = asyncio.run_coroutine_threadsafe(client.ping(timeout), client.loop)
    await asyncio.wrap_future(pending)
