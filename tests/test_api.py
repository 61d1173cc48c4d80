"""The public surface: exports, defaults, argument errors."""

from __future__ import annotations

import inspect

import pytest
from websockets.sync.client import connect

import roomcast
from roomcast import _roomcast

from conftest import wait_for


def test_all_is_the_public_surface():
    # "@py_builtins"/"@pytest_ar": pytest rewrites asserts in the package of a pytest11 plugin.
    public = {n for n in dir(roomcast) if not n.startswith(("_", "@"))}
    submodules = {
        "chat",
        "cli",
        "connection",
        "demo",
        "django",
        "exceptions",
        "metrics",
        "presets",
        "rooms",
        "running",
        "server",
        "supervisor",
        "testing",
        "wsgi",
    }
    assert set(roomcast.__all__) - {"__version__"} == public - submodules


def test_python_defaults_match_the_core():
    params = inspect.signature(roomcast.Server).parameters
    wsgi = inspect.signature(roomcast.Server.wsgi).parameters
    # Settings made by methods rather than the constructor, and where their defaults live.
    elsewhere = {
        "max_body_size": wsgi["max_body_size"].default,
        "http_queue": wsgi["queue"].default,
        "http_timeout": wsgi["timeout"].default,
        "relays": [],  # app.relay()
        "pages": [],  # app.page()
        "chat": None,  # presets.chat()
        "http_app": False,  # app.wsgi()
        "reuse_port": False,  # app.run(processes=N) / roomcast run --workers N
        "broker": None,  # Server(broker=URL) builds the dict
        "tls": None,  # Server(ssl_certfile=, ssl_keyfile=) builds the pair
    }
    core = _roomcast.default_settings()
    for name, value in core.items():
        default = elsewhere[name] if name in elsewhere else params[name].default
        if isinstance(default, tuple):
            default = list(default)
        assert default == value, name


def test_bad_settings_are_refused_with_the_setting_named():
    with pytest.raises(ValueError, match="overflow"):
        roomcast.Server(overflow="block").start(port=0)
    with pytest.raises(ValueError, match="queue_size"):
        roomcast.Server(queue_size=0).start(port=0)
    with pytest.raises(ValueError, match="heartbeat_interval"):
        roomcast.Server(heartbeat_interval=-1).start(port=0)
    with pytest.raises(ValueError, match="workers"):
        roomcast.Server(workers=0)
    with pytest.raises(ValueError, match="400-599"):
        roomcast.Reject(200)


def test_exception_hierarchy():
    assert issubclass(roomcast.ConnectionClosed, roomcast.RoomcastError)
    assert issubclass(roomcast.Reject, roomcast.RoomcastError)
    assert issubclass(roomcast.RoomcastError, Exception)


def test_send_arguments(start):
    conns = []
    app = roomcast.Server()
    app.on_connect(lambda conn, request: conns.append(conn))
    server = start(app)
    with connect(server.url) as ws:
        conn = wait_for(lambda: conns and conns[0], what="connection")
        conn.send({"a": [1, "é"]})
        assert ws.recv(timeout=5) == '{"a":[1,"é"]}'
        conn.send(bytearray(b"ab"))
        assert ws.recv(timeout=5) == b"ab"
        with pytest.raises(TypeError, match="cannot send object"):
            conn.send(object())
        with pytest.raises(ValueError, match="close code 1005"):
            conn.close(1005)
        assert conn.is_open
        assert repr(conn).startswith(f"<Connection {conn.id} 127.0.0.1:")
        conn.close(4000, "done")
        assert not conn.is_open


def test_rust_log_records_reach_python_logging(start, caplog):
    server = start(roomcast.Server(paths=["/only"]))
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus):
        connect(f"{server.url}/nope")
    record = wait_for(
        lambda: [r for r in caplog.records if r.name == "roomcast" and "/nope" in r.getMessage()],
        what="the core's log record",
    )[0]
    assert record.levelname == "INFO"


def test_importing_roomcast_never_imports_django():
    import subprocess
    import sys

    code = (
        "import sys, roomcast\n"
        "from roomcast import presets, demo, cli, wsgi\n"
        "assert 'django' not in sys.modules, 'django was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
