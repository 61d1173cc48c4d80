"""`roomcast demo` and pages: the chat page, its scripts and the chat WebSocket on one port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import jwt
import pytest
from websockets.sync.client import connect

import roomcast
from roomcast import demo

from conftest import sigterm_closes_with_1001

SECRET = "a demo secret of at least 32 bytes!"


def get(url: str, method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pages_and_the_websocket_share_the_port(start):
    app = roomcast.Server()
    app.page("/", "<h1>hi</h1>")
    app.page("/app.js", "export {}", "text/javascript")
    app.on_message(lambda conn, msg: conn.send(msg))
    server = start(app)
    base = f"http://127.0.0.1:{server.port}"
    assert get(base + "/") == (200, "text/html; charset=utf-8", "<h1>hi</h1>")
    assert get(base + "/app.js")[1:] == ("text/javascript", "export {}")
    status, _, body = get(base + "/", method="POST")
    assert status == 405 and "GET" in body
    # Paths without a page keep the plain-HTTP answer; the WebSocket on "/" is unaffected.
    assert get(base + "/elsewhere")[0] == 426
    with connect(server.url + "/") as ws:
        ws.send("echo")
        assert ws.recv(timeout=5) == "echo"


def test_pages_are_checked_and_fixed_once_started(start):
    app = roomcast.Server()
    with pytest.raises(ValueError, match="start with '/'"):
        app.page("index.html", "x")
    start(app)
    with pytest.raises(RuntimeError, match="before the server starts"):
        app.page("/late", "x")


def test_the_demo_serves_its_page_script_and_chat(start):
    server = start(demo.app(heartbeat_interval=7.5))
    base = f"http://127.0.0.1:{server.port}"
    status, kind, page = get(base + "/")
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert "{{" not in page, "placeholders are filled"
    assert 'content="7500"' in page
    status, kind, script = get(base + "/roomcast.js")
    assert status == 200 and kind.startswith("text/javascript")
    assert "export" in script
    with connect(server.url + "/") as ws:
        ws.send(json.dumps({"event": "enter", "message": "Ann", "roomid": "r", "uid": "a"}))
        frame = json.loads(ws.recv(timeout=5))
        assert (frame["event"], frame["num"]) == ("enter", 1)


def test_the_demo_page_carries_a_token_the_server_accepts(start):
    server = start(demo.app(jwt_secret=SECRET))
    page = get(f"http://127.0.0.1:{server.port}/")[2]
    token = page.split('name="roomcast-token" content="')[1].split('"')[0]
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["exp"] > claims["iat"]
    with connect(f"{server.url}/?token={token}") as ws:
        ws.send(json.dumps({"event": "enter", "message": "Ann", "roomid": "r", "uid": "a"}))
        assert json.loads(ws.recv(timeout=5))["event"] == "enter"


def run_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "roomcast", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_roomcast_demo_command_serves_and_stops_on_sigterm():
    port = free_port()
    proc = run_cli("demo", "--port", str(port))
    try:
        line = proc.stderr.readline()
        assert f"open http://127.0.0.1:{port}/" in line, line
        assert "serving on" in proc.stderr.readline()
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        with connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.send("ping")
            assert ws.recv(timeout=5) == "pong"
            sigterm_closes_with_1001(proc, ws)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def test_a_taken_port_is_one_clear_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = run_cli("demo", "--port", str(taken.getsockname()[1]))
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    lines = [line for line in err.splitlines() if line.startswith("roomcast: error:")]
    assert len(lines) == 1 and "could not listen" in lines[0], err
    assert "Traceback" not in err


def test_version_and_help():
    out = subprocess.run(
        [sys.executable, "-m", "roomcast", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"roomcast {roomcast.__version__}"
    bare = subprocess.run([sys.executable, "-m", "roomcast"], capture_output=True, text=True)
    assert bare.returncode == 2 and "demo" in bare.stderr
