"""Shared fixtures: servers on port 0, stopped after each test, and small waiting helpers.

Servers report readiness by returning from ``start()`` with their port bound; nothing here
sleeps and hopes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import roomcast

# tests/django runs on its own, once per Django version (tests/matrix.sh django).
collect_ignore = ["django"]


@pytest.fixture
def start() -> Iterator[Callable[..., roomcast.RunningServer]]:
    """``start(app)`` starts ``app`` on a free port and stops it after the test."""
    running: list[roomcast.RunningServer] = []

    def _start(app: roomcast.Server, **kw: Any) -> roomcast.RunningServer:
        server = app.start(port=0, **kw)
        running.append(server)
        return server

    yield _start
    for server in running:
        server.stop(timeout=2.0)


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def sigterm_closes_with_1001(proc: Any, ws: Any) -> None:
    """SIGTERM the server process ``proc``: the client ``ws`` gets 1001, the process exits 0."""
    import signal

    from websockets.exceptions import ConnectionClosed

    proc.send_signal(signal.SIGTERM)
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1001
    assert proc.wait(timeout=15) == 0


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "roomcast"]


@pytest.fixture(autouse=True)
def _roomcast_debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="roomcast")


def echo_app(**settings: Any) -> roomcast.Server:
    """A server whose one hook sends every message back."""
    app = roomcast.Server(**settings)

    @app.on_message
    def echo(conn: roomcast.Connection, message: Any) -> None:
        conn.send(message)

    return app
