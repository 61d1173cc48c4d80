"""Runs the application's hooks: a pool of worker threads for sync hooks, an asyncio loop for
async ones.

Each worker waits in Rust (GIL released) for connections with events and gets the waiting
events of many of them at once; it claims them one connection at a time, and when it stays
in one hook for long, an idle worker takes the rest of its batch. One connection's events
are handled in order, one at a time; different connections in parallel. When a hook returns
a coroutine, the connection is held until it completes on the loop, and then handed back to
the pool, so an async hook keeps the order too without tying up a worker while it awaits.

Every hook call is timed for ``Server.stats()``: ``call_hook`` (Rust) calls the hook between
two clock reads and tallies the time in its thread; a worker hands its tally to the core with
its next ``next_batch``. ``on_connect`` and async hooks (to their completion) are timed here,
with ``perf_counter``, and handed over at once (``record_hook_times``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
from collections.abc import Awaitable
from functools import partial
from time import perf_counter as _clock
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._roomcast import call_hook as _call_hook
from .connection import Connection
from .exceptions import Reject

if TYPE_CHECKING:
    from ._roomcast import Core
    from ._roomcast import _Event as Event
    from .server import Server

logger = logging.getLogger("roomcast")

# Event kinds; mirrored from src/py/core.rs.
CONNECT, OPEN, TEXT, BINARY, ROUTED, CLOSE, CHAT = range(7)


class Dispatcher:
    def __init__(self, app: Server, core: Core, loop: asyncio.AbstractEventLoop, workers: int):
        self._app = app
        self._core = core
        self._loop = loop
        self._conns: dict[int, Connection] = {}
        self._held: dict[int, list[Event]] = {}
        self._threads = [
            threading.Thread(target=self._work, name=f"roomcast-worker-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> bool:
        """Wait for the workers to drain and exit; False if some did not in time."""
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(timeout)
        return not any(t.is_alive() and t is not me for t in self._threads)

    def connection(self, conn_id: int) -> Optional[Connection]:
        conn = self._conns.get(conn_id)
        if conn is None:
            info = self._core.info(conn_id)
            if info is not None:
                # No hook saw this connection (none registered): a fresh handle will do.
                conn = Connection(self._core, conn_id, info)
        return conn

    def _known(self, conn_id: int) -> Optional[Connection]:
        conn = self._conns.get(conn_id)
        if conn is None:
            # Opened before any hook was registered: adopt it now; its close event will come.
            conn = self.connection(conn_id)
            if conn is not None:
                self._conns[conn_id] = conn
        return conn

    def _work(self) -> None:
        core = self._core
        run = self._run
        while True:
            batch = core.next_batch()
            if batch is None:
                return
            while True:
                claimed = batch.claim()
                if claimed is None:
                    break
                conn_id, events = claimed
                try:
                    run(conn_id, events)
                except BaseException:  # never lose a worker, never leave a connection held
                    logger.exception("roomcast internal error handling connection %s", conn_id)
                    core.finish(conn_id)

    def _run(self, conn_id: int, events: list[Event]) -> None:
        held = self._held.pop(conn_id, None)
        if held:
            events = held + events
        for i, event in enumerate(events):
            pending = self._handle(conn_id, event)
            if pending is not None:
                rest = events[i + 1 :]
                try:
                    fut = asyncio.run_coroutine_threadsafe(pending, self._loop)
                except RuntimeError:
                    logger.error(
                        "connection %s: the asyncio loop is closed; async hook skipped", conn_id
                    )
                    pending.close()
                    continue
                fut.add_done_callback(partial(self._resume, conn_id, rest))
                return
        self._core.finish(conn_id)

    def _resume(self, conn_id: int, rest: list[Event], _fut: Any) -> None:
        if rest:
            self._held[conn_id] = rest
        self._core.wake(conn_id)

    def _handle(self, conn_id: int, event: Event) -> Optional[Any]:
        """Runs the hook for one event; returns a coroutine to await, if the hook is async."""
        app = self._app
        kind = event[0]
        if kind == TEXT or kind == BINARY:
            conn = self._known(conn_id)
            if conn is not None and conn._sink is not None:
                conn._sink(event[1])
                return None
            if conn is None or app._on_message is None:
                return None
            return _call(app._on_message, "on_message", conn, event[1])
        if kind == ROUTED:
            conn = self._known(conn_id)
            hook = app._events.get(event[2])
            if conn is None:
                return None
            if conn._sink is not None:
                conn._sink(event[1])
                return None
            if hook is None:  # the hook was removed after the frame was read
                if app._on_message is not None:
                    return _call(app._on_message, "on_message", conn, event[1])
                return None
            return _call(hook, event[2], conn, json.loads(event[1]))
        if kind == CHAT:
            # A chat frame no hook takes, queued behind this connection's hooked events:
            # straight back to the preset, in its place.
            chat = self._core.chat()
            if chat is not None:
                try:
                    chat.handle(conn_id, event[1])
                except Exception:
                    logger.exception("chat preset: connection %s: frame not handled", conn_id)
            return None
        if kind == CONNECT or kind == OPEN:
            conn = Connection(self._core, conn_id, event[1])
            self._conns[conn_id] = conn
            if kind == OPEN:
                return None
            return self._connect(conn)
        if kind == CLOSE:
            conn = self._conns.pop(conn_id, None)
            if conn is None or app._on_disconnect is None:
                return None
            return _call(app._on_disconnect, "on_disconnect", conn, event[1], event[2])
        return None

    def _connect(self, conn: Connection) -> Optional[Any]:
        hook = self._app._on_connect
        if hook is None:
            self._decide(conn, True)
            return None
        start = _clock()
        try:
            result = hook(conn, conn.request)
        except BaseException as exc:
            self._core.record_hook_times([_connect_time(start, exc)])
            self._refuse(conn, exc)
            return None
        if inspect.isawaitable(result):
            return self._connect_async(conn, result, start)
        self._core.record_hook_times([_clock() - start])
        self._decide(conn, result)
        return None

    async def _connect_async(self, conn: Connection, pending: Awaitable[Any], start: float) -> None:
        try:
            result = await pending
        except BaseException as exc:
            self._core.record_hook_times([_connect_time(start, exc)])
            self._refuse(conn, exc)
            return
        self._core.record_hook_times([_clock() - start])
        self._decide(conn, result)

    def _decide(self, conn: Connection, result: Any) -> None:
        if result is False:
            self._conns.pop(conn.id, None)
            self._core.reject(conn.id, 403, "Forbidden: the server refused this connection\n")
        elif not self._core.accept(conn.id):
            # The handshake is gone (client left, or on_connect took longer than
            # handshake_timeout): no further event will come for it. on_connect said yes,
            # so it may have set things up: on_disconnect lets it clean them up.
            self._conns.pop(conn.id, None)
            hook = self._app._on_disconnect
            if hook is not None:
                reason = "the handshake ended before on_connect decided (handshake_timeout)"
                pending = _call(hook, "on_disconnect", conn, 1006, reason)
                # On the asyncio loop (an async on_connect), no batch ends: hand the time over.
                self._core.record_hook_times([])
                if pending is not None:
                    asyncio.run_coroutine_threadsafe(pending, self._loop)

    def _refuse(self, conn: Connection, exc: BaseException) -> None:
        self._conns.pop(conn.id, None)
        if isinstance(exc, Reject):
            self._core.reject(conn.id, exc.status, exc.reason)
            return
        logger.error(
            "on_connect hook raised for connection %s; refusing it with 500",
            conn.id,
            exc_info=exc,
        )
        self._core.reject(conn.id, 500, "Internal Server Error\n")
        if not isinstance(exc, Exception):
            raise exc


def _label(name: str) -> str:
    """``on_message``/``on_disconnect`` as they are; an event name as ``on('name')``."""
    return name if name in ("on_message", "on_disconnect") else f"on({name!r})"


def _connect_time(start: float, exc: BaseException) -> float:
    """An ``on_connect`` that raised: ``Reject`` is its decision, anything else a failure
    (``-1 - seconds``)."""
    elapsed = _clock() - start
    return elapsed if isinstance(exc, Reject) else -1.0 - elapsed


def _call(hook: Callable[..., Any], name: str, conn: Connection, *args: Any) -> Optional[Any]:
    """Calls a hook (timed); returns what must still be awaited when the hook is async."""
    try:
        result = _call_hook(hook, conn, *args)
    except Exception:
        logger.exception("%s hook raised for connection %s", _label(name), conn.id)
        return None
    if result is None:  # the common case: a sync hook
        return None
    if inspect.isawaitable(result):
        return _guard(result, name, conn, _clock())
    return None


async def _guard(pending: Awaitable[Any], name: str, conn: Connection, start: float) -> None:
    """Runs an async hook on the loop; its time is from its call to its completion."""
    try:
        await pending
    except Exception:
        conn._core.record_hook_times([-1.0 - (_clock() - start)])
        logger.exception("%s hook raised for connection %s", _label(name), conn.id)
        return
    conn._core.record_hook_times([_clock() - start])
