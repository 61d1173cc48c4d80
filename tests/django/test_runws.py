"""`python manage.py runws` itself: banner, one port for pages and WebSockets, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from roomcast.django.management.commands.runws import parse_addrport

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_chat"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_addrport_parses_like_runserver():
    assert parse_addrport("8001") == ("127.0.0.1", 8001)
    assert parse_addrport("0:8001") == ("0.0.0.0", 8001)
    assert parse_addrport("[::1]:8001") == ("::1", 8001)
    assert parse_addrport("localhost:80") == ("localhost", 80)
    from django.core.management.base import CommandError

    for bad in ("x", "1.2.3.4:", "99999"):
        with pytest.raises(CommandError):
            parse_addrport(bad)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_runws_serves_the_project_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "django_chat.settings",
        "DJANGO_DB": str(tmp_path / "db.sqlite3"),
        "PYTHONUNBUFFERED": "1",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=PROJECT, env=env, check=True, timeout=120)
    proc = subprocess.Popen(
        [*manage, "runws", f"127.0.0.1:{port}", "--noreload"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = []
        while not any("Quit the server" in line for line in banner):
            line = proc.stdout.readline()
            assert line, f"runws exited early: {banner}"
            banner.append(line)
        assert any(f"Starting roomcast server at http://127.0.0.1:{port}/" in x for x in banner)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/echo?message=hi", timeout=10) as r:
            assert r.read() == b"hi"
        with connect(f"ws://127.0.0.1:{port}/echo") as ws:
            ws.send("over the same port")
            assert ws.recv(timeout=5) == "over the same port"
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1001
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
