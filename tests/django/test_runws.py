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


def runws(tmp_path: Path, *options: str) -> tuple[subprocess.Popen[str], int, list[str]]:
    """Migrates a fresh database and starts runws on a free port; returns it with its banner."""
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
        [*manage, "runws", f"127.0.0.1:{port}", "--noreload", *options],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    banner: list[str] = []
    while not any("Quit the server" in line for line in banner):
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            proc.kill()
            proc.wait()
            raise AssertionError(f"runws exited early: {banner}")
        banner.append(line)
    return proc, port, banner


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_runws_serves_the_project_and_stops_on_sigterm(tmp_path):
    proc, port, banner = runws(tmp_path)
    try:
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


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_runws_serves_tls_and_reloads_on_sighup(tmp_path, certificate):
    (certfile, keyfile), ctx = certificate
    proc, port, banner = runws(
        tmp_path, "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)
    )
    try:
        assert any(f"Starting roomcast server at https://127.0.0.1:{port}/" in x for x in banner)
        page = f"https://127.0.0.1:{port}/echo?message=hi"
        with urllib.request.urlopen(page, timeout=10, context=ctx) as r:
            assert r.read() == b"hi"
        proc.send_signal(signal.SIGHUP)  # reloads the (same) files; the server stays up
        with connect(f"wss://127.0.0.1:{port}/echo", ssl=ctx) as ws:
            ws.send("over TLS")
            assert ws.recv(timeout=5) == "over TLS"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
