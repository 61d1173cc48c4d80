"""`roomcast run module:app`: serves a user's app; errors are one line and exit status 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from conftest import sigterm_closes_with_1001, wait_for

ECHO_APP = """
import roomcast

app = roomcast.Server()

@app.on_message
def echo(conn, message):
    conn.send({prefix!r} + message)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_app(folder: Path, prefix: str = "", name: str = "myapp.py") -> None:
    (folder / name).write_text(textwrap.dedent(ECHO_APP.format(prefix=prefix)))


def roomcast(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "roomcast", *args],
        cwd=cwd,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def fails_with(*args: str, cwd: Path) -> str:
    proc = roomcast(*args, cwd=cwd)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roomcast: error: "), err
    return lines[0]


def echo_once(port: int, text: str) -> str:
    with connect(f"ws://127.0.0.1:{port}") as ws:
        ws.send(text)
        return str(ws.recv(timeout=5))


def test_run_serves_the_app_and_stops_on_sigterm(tmp_path):
    write_app(tmp_path)
    port = free_port()
    proc = roomcast("run", "myapp:app", "--port", str(port), "--log-level", "debug", cwd=tmp_path)
    try:
        wait_for(lambda: "serving on" in proc.stderr.readline(), what="the serving line")
        with connect(f"ws://127.0.0.1:{port}") as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            sigterm_closes_with_1001(proc, ws)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def test_errors_are_one_line_with_exit_status_2(tmp_path):
    write_app(tmp_path)
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    (tmp_path / "notaserver.py").write_text("app = 42\n")
    assert "cannot import module 'nosuch'" in fails_with("run", "nosuch:app", cwd=tmp_path)
    assert "has no attribute 'api'" in fails_with("run", "myapp:api", cwd=tmp_path)
    assert "is a int, not a roomcast.Server" in fails_with("run", "notaserver:app", cwd=tmp_path)
    line = fails_with("run", "broken:app", cwd=tmp_path)
    assert "ZeroDivisionError" in line and "broken.py, line 1" in line
    assert "module:attribute" in fails_with("run", "myapp", cwd=tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert "could not listen" in fails_with("run", "myapp:app", "--port", port, cwd=tmp_path)


def test_reload_restarts_the_server_when_code_changes(tmp_path):
    pytest.importorskip("watchfiles")
    write_app(tmp_path, prefix="v1:")
    port = free_port()
    proc = roomcast("run", "myapp:app", "--port", str(port), "--reload", cwd=tmp_path)
    try:
        wait_for(lambda: _answers(port, "v1:"), timeout=20, what="the first version to serve")
        time.sleep(0.5)  # let the watcher settle before the edit (watchfiles debounces)
        write_app(tmp_path, prefix="v2:")
        wait_for(lambda: _answers(port, "v2:"), timeout=20, what="the edited version to serve")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()


def _answers(port: int, prefix: str) -> bool:
    try:
        return echo_once(port, "x") == prefix + "x"
    except Exception:  # not up yet, or the old version going down
        return False
