"""Graceful shutdown: 1001 to every client, every on_disconnect run, idempotent stop."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import roomcast

from conftest import sigterm_closes_with_1001, wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_stop_sends_1001_runs_every_disconnect_and_is_idempotent():
    gone = []
    app = roomcast.Server()
    app.on_disconnect(lambda conn, code, reason: gone.append((code, reason)))
    opened = []
    app.on_connect(lambda conn, request: opened.append(conn))
    server = app.start(port=0)
    stack = contextlib.ExitStack()
    clients = [stack.enter_context(connect(server.url)) for _ in range(3)]
    wait_for(lambda: len(opened) == 3, what="three connections")
    opened[0].send("queued before shutdown")
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    assert clients[0].recv(timeout=5) == "queued before shutdown"
    for ws in clients:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1001
    stopper.join(10)
    assert not stopper.is_alive()
    stack.close()
    # stop() returned after every on_disconnect ran.
    assert sorted(gone) == [(1001, "server shutting down")] * 3
    server.stop()
    server.stop(timeout=0)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_a_stopped_server_can_start_again_and_stop_from_a_hook():
    app = roomcast.Server()
    first = app.start(port=0)
    first.stop()

    @app.on_message
    def stop_from_hook(conn, msg):
        threading.Thread(target=running.stop).start()

    running = app.start(port=0)
    with pytest.raises(RuntimeError, match="already running"):
        app.start(port=0)
    with connect(running.url) as ws:
        ws.send("stop")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    wait_for(lambda: app._running is None, what="the server to stop")


def test_serve_context_stops_on_exit():
    import asyncio

    app = roomcast.Server()
    gone = []
    app.on_disconnect(lambda conn, code, reason: gone.append(code))

    async def main():
        from websockets.asyncio.client import connect as aconnect

        async with app.serve() as server:
            ws = await aconnect(server.url)
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1001

    asyncio.run(main())
    assert gone == [1001]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_run_stops_gracefully_on_sigterm(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "echo.py"), str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stderr.readline()
        assert "serving on ws://127.0.0.1:" in line, line
        with connect(f"ws://127.0.0.1:{port}") as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            sigterm_closes_with_1001(proc, ws)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
