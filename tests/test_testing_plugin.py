"""The pytest plugin (roomcast.testing), run the way a user's project runs it: example test files
in a fresh directory, through pytester; and its clients and heartbeat helpers used directly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import roomcast
from roomcast import presets
from roomcast.testing import Client, ReceiveClosed, ReceiveError, reap_silent
from roomcast.testing.frames import Inbox

from conftest import wait_for
from rawws import RawClient

pytest_plugins = ["pytester"]

HAS_PYTEST_ASYNCIO = importlib.util.find_spec("pytest_asyncio") is not None
HAS_ANYIO = importlib.util.find_spec("anyio") is not None
IN_CI = bool(os.environ.get("CI"))  # where roomcast[test] installed both: never skipped

ECHO_APP = """
import roomcast

app = roomcast.Server()

@app.on_message
def echo(conn, message):
    conn.send(message)
"""


STRICT_INI = "[pytest]\naddopts = --strict-markers\nfilterwarnings = error\n"
if HAS_PYTEST_ASYNCIO:  # it warns (an error here) when its loop scope is left to its default
    STRICT_INI += "asyncio_default_fixture_loop_scope = function\n"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's project: strict like ours, the plugin found as an installed one is."""
    pytester.makeini(STRICT_INI)
    pytester.makepyfile(echo_app=ECHO_APP)
    return pytester


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest("-p", "no:cacheprovider", *args)


# -- registration ----------------------------------------------------------------------------


def test_the_plugin_is_found_through_its_entry_point(project: pytest.Pytester) -> None:
    installed = importlib.metadata.distribution("roomcast").entry_points
    assert [ep.value for ep in installed if ep.group == "pytest11"] == ["roomcast.testing"]
    project.makepyfile("def test_x(roomcast_server, roomcast_client): pass")
    result = run(project)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins: *roomcast-*"])


def test_importing_the_plugin_starts_nothing() -> None:
    code = (
        "import sys, threading\n"
        "import roomcast.testing\n"
        "heavy = sorted(m for m in ('django', 'websockets') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- the fixtures, from a user's test files ----------------------------------------------------


def test_a_three_line_test_passes(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_proj_echo="""
        from echo_app import app

        def test_echo(roomcast_server, roomcast_client):
            client = roomcast_client(roomcast_server(app))
            client.send("hi")
            assert client.receive() == "hi"
        """
    )
    run(project).assert_outcomes(passed=1)


def test_a_failed_expect_names_the_expectation_and_what_arrived(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_proj_expect="""
        from echo_app import app

        def test_said(roomcast_server, roomcast_client):
            client = roomcast_client(roomcast_server(app))
            client.send({"event": "said", "text": "ho"})
            client.send("plain text")
            client.expect("said", timeout=0.2, text="hi")
        """
    )
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            '*ReceiveTimeout: timed out after 0.2 s waiting for a JSON object with event="said", '
            'text="hi"; 2 frames arrived instead*',
            '*{"event":"said","text":"ho"}',
            "*text 'plain text'",
        ]
    )


HOOKS_APP = """
import time
import roomcast

app = roomcast.Server()

@app.on("boom")
def boom(conn, data):
    raise ValueError("a bug in a hook")

@app.on("late")
def late(conn, data):
    time.sleep(0.1)
    raise KeyError("after the test")

@app.on_message
def echo(conn, message):
    conn.send(message)
"""


def test_a_hook_that_raises_fails_the_test_unless_marked(project: pytest.Pytester) -> None:
    project.makepyfile(hooks_app=HOOKS_APP)
    project.makepyfile(
        test_proj_hooks="""
        import pytest
        from hooks_app import app

        def test_boom(roomcast_server, roomcast_client):
            client = roomcast_client(roomcast_server(app))
            client.send({"event": "boom"})
            client.send("after")
            assert client.receive() == "after"  # one connection's events run in order

        @pytest.mark.roomcast_allow_hook_errors
        def test_allowed(roomcast_server, roomcast_client):
            client = roomcast_client(roomcast_server(app))
            client.send({"event": "boom"})
            client.send("after")
            assert client.receive() == "after"
            [record] = roomcast_server.hook_errors
            assert isinstance(record.exc_info[1], ValueError)

        def test_late(roomcast_server, roomcast_client):
            client = roomcast_client(roomcast_server(app))
            client.send({"event": "late"})
        """
    )
    result = run(project, "-rA")
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_boom _*",
            "a roomcast hook raised during this test (mark the test "
            "@pytest.mark.roomcast_allow_hook_errors if that is expected):",
            "on('boom') hook raised for connection *",
            "Traceback (most recent call last):",
            '*raise ValueError("a bug in a hook")',
            "ValueError: a bug in a hook",
        ]
    )
    # Raised after the test body returned: its teardown fails, with the traceback.
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_late*", "KeyError: 'after the test'"])


def test_servers_stop_and_clients_close_after_a_failed_test(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_proj_cleanup="""
        import roomcast
        import pytest

        app = roomcast.Server()
        closed = []
        app.on_disconnect(lambda conn, code, reason: closed.append(code))
        seen = {}

        def test_fails(roomcast_server, roomcast_client):
            server = roomcast_server(app, heartbeat_interval=3600)
            seen["url"] = server.url
            roomcast_client(server)
            assert app._settings["heartbeat_interval"] == 30.0  # overrides were for that start
            assert False, "the test fails"

        def test_after():
            from websockets.sync.client import connect
            assert closed == [1000]  # the client closed before the server stopped
            with pytest.raises(OSError):
                connect(seen["url"], open_timeout=2)
        """
    )
    run(project).assert_outcomes(passed=1, failed=1)


def test_unknown_settings_are_refused(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_proj_settings="""
        import pytest
        from echo_app import app

        def test_typo(roomcast_server):
            with pytest.raises(TypeError, match="heartbeat_intervall"):
                roomcast_server(app, heartbeat_intervall=3)
        """
    )
    run(project).assert_outcomes(passed=1)


ASYNC_TESTS = """
import pytest
from echo_app import app
from rawws import RawClient
from roomcast.testing import AsyncClient, reap_silent_async

closed = []
app.on_disconnect(lambda conn, code, reason: closed.append(code))

{mark}
async def test_fixture_client(roomcast_server, roomcast_async_client):
    server = roomcast_server(app, heartbeat_interval=3600)
    client = await roomcast_async_client(server, query={{"name": "ann"}})
    await client.send({{"event": "said", "text": "hi"}})
    assert await client.expect("said") == {{"event": "said", "text": "hi"}}
    await client.assert_nothing(within=0.05)
    silent = RawClient(server.port)
    assert silent.handshake().startswith("HTTP/1.1 101")
    await reap_silent_async(server)  # the AsyncClient answers on this loop meanwhile
    assert silent.recv_close()[0] == 1011
    silent.close()
    assert client.close_code is None

{mark}
async def test_plain_client(roomcast_server):
    assert sorted(closed) == [1000, 1011]  # reaped; the fixture's client closed after its test
    async with await AsyncClient.connect(roomcast_server(app)) as client:
        await client.send(b"raw")
        assert await client.receive() == b"raw"
    assert client.close_code == 1000
"""


@pytest.mark.skipif(not (HAS_PYTEST_ASYNCIO or IN_CI), reason="pytest-asyncio is not installed")
def test_async_clients_under_pytest_asyncio(project: pytest.Pytester) -> None:
    project.syspathinsert(Path(__file__).parent)
    project.makepyfile(test_proj_async=ASYNC_TESTS.format(mark="@pytest.mark.asyncio"))
    run(project, "-p", "no:anyio").assert_outcomes(passed=2)


@pytest.mark.skipif(not (HAS_ANYIO or IN_CI), reason="anyio is not installed")
def test_async_clients_under_anyio(project: pytest.Pytester) -> None:
    project.syspathinsert(Path(__file__).parent)
    tests = ASYNC_TESTS.format(mark="@pytest.mark.anyio")
    tests += '\n@pytest.fixture\ndef anyio_backend():\n    return "asyncio"\n'
    project.makepyfile(test_proj_async=tests)
    run(project).assert_outcomes(passed=2)  # beside pytest-asyncio (strict), when installed


# -- the clients and the heartbeat, in this suite's own tests ---------------------------------


def echo_app() -> roomcast.Server:
    app = roomcast.Server()

    @app.on_message
    def echo(conn: roomcast.Connection, message: Any) -> None:
        conn.send(message)

    @app.on("bye")
    def bye(conn: roomcast.Connection, data: Any) -> None:
        conn.close(4000, data["why"])

    return app


def test_client_receives_in_order_and_keeps_what_expect_skipped(
    roomcast_server: Any, roomcast_client: Any
) -> None:
    server = roomcast_server(echo_app())
    client = roomcast_client(server, "/room", headers={"X-Test": "1"}, query={"a": "b c"})
    assert client.url == f"{server.url}/room?a=b+c"
    for message in ("one", {"event": "x", "n": 1}, b"\x00two", {"event": "y", "n": 2}):
        client.send(message)
    assert client.expect(n=2) == {"event": "y", "n": 2}
    assert client.expect("x") == {"event": "x", "n": 1}
    assert client.receive() == "one"
    assert client.receive() == b"\x00two"
    client.send("[1, 2]")
    assert client.receive_json() == [1, 2]
    client.send("not json")
    with pytest.raises(ReceiveError, match="expected a JSON frame, received text 'not json'"):
        client.receive_json()
    client.assert_nothing(within=0.05)
    client.send("late")
    with pytest.raises(ReceiveError, match=r"expected nothing within 1 s; 1 frame arrived"):
        client.assert_nothing(within=1)
    assert client.receive() == "late"  # kept


def test_a_close_by_the_server_ends_the_wait_with_its_code(roomcast_server: Any) -> None:
    server = roomcast_server(echo_app())
    with Client.connect(server) as client:
        client.send("before")
        client.send({"event": "bye", "why": "done"})
        with pytest.raises(ReceiveClosed) as closed:
            client.expect("never")
        assert (closed.value.code, closed.value.reason) == (4000, "done")
        assert "closed (code 4000, reason 'done') while waiting for a JSON object with " in str(
            closed.value
        )
        assert client.receive() == "before"  # what came before the close is still there
        assert (client.close_code, client.close_reason) == (4000, "done")
    with Client.connect(server.url + "/") as client:
        client.send({"event": "bye", "why": "again"})
        assert client.wait_closed() == 4000
    with Client.connect(server) as client:
        client.close(4001, "the client's")
        assert client.close_code == 4001  # the server echoes the client's Close


def test_two_sweeps_reap_a_client_that_answers_nothing(
    roomcast_server: Any, roomcast_client: Any
) -> None:
    closed: dict[int, tuple[int, str]] = {}
    opened: list[int] = []
    app = roomcast.Server()
    app.on_connect(lambda conn, request: opened.append(conn.id))
    app.on_disconnect(lambda conn, code, reason: closed.setdefault(conn.id, (code, reason)))
    server = roomcast_server(app, heartbeat_interval=3600)
    answering = roomcast_client(server)
    silent = RawClient(server.port)  # never answers a Ping
    assert silent.handshake().startswith("HTTP/1.1 101")
    wait_for(lambda: len(opened) == 2, what="both connected")
    assert server.sweep_heartbeat()  # a new connection has not been heard from: pinged
    assert silent.recv_frame()[0] == 0x9
    assert not closed
    answering.ping()  # its Pong to the sweep's Ping may still be on its way: this one is not
    assert server.sweep_heartbeat()  # silent since the last sweep: reaped
    assert silent.recv_close()[0] == 1011
    code, reason = wait_for(lambda: closed.get(opened[1]), what="on_disconnect")
    assert code == 1011 and "heartbeat timeout" in reason
    silent.close()

    late = roomcast_client.silent(server, "/late")  # the plugin's own silent client
    wait_for(lambda: len(opened) == 3, what="connected")
    reap_silent(server)  # both sweeps at once
    assert late.wait_closed() == 1011
    assert late.pings == 1 and "heartbeat timeout" in (late.close_reason or "")
    for _ in range(3):
        reap_silent(server)  # the answering client stays, however many sweeps
    answering.ping()
    assert answering.close_code is None and opened[0] not in closed


def test_the_chat_preset_sends_its_heartbeat_on_a_sweep(
    roomcast_server: Any, roomcast_client: Any
) -> None:
    server = roomcast_server(presets.chat(), heartbeat_interval=3600)
    ann = roomcast_client(server)
    ann.send({"event": "enter", "message": "ann", "roomid": "r1", "uid": "u1"})
    assert ann.expect("enter")["num"] == 1
    assert server.sweep_heartbeat()
    assert ann.receive_json() == {"event": "heartbeat", "message": "ping", "num": 1}
    ann.send({"event": "heartbeat", "message": "pong"})
    ann.send("ping")
    assert ann.receive() == "pong"
    reap_silent(server)
    ann.expect("heartbeat", num=1)
    ann.expect("heartbeat", num=1)
    ann.assert_nothing(within=0.05)
    assert ann.close_code is None


def test_reap_silent_needs_a_heartbeat(roomcast_server: Any) -> None:
    server = roomcast_server(roomcast.Server(), heartbeat_interval=None)
    assert server.sweep_heartbeat() is False
    with pytest.raises(RuntimeError, match="heartbeat_interval"):
        reap_silent(server)


def test_failure_messages_cut_long_frames_and_long_lists() -> None:
    inbox = Inbox()
    for i in range(25):
        inbox.keep("x" * 500 if i == 0 else f'{{"n":{i}}}')
    text = str(inbox.timed_out('a JSON object with event="go"', 1.5))
    assert text.startswith('timed out after 1.5 s waiting for a JSON object with event="go"; 25')
    assert f"text '{'x' * 100}" in text and "(500 characters)" in text
    assert text.endswith("  ... and 5 more")
    assert len(re.findall(r'^  \{"n":', text, re.M)) == 19


def test_urls_keep_their_path_and_add_the_query() -> None:
    from roomcast.testing.address import ws_url

    assert ws_url("ws://h:1", "/a", {"x": "1"}) == "ws://h:1/a?x=1"
    assert ws_url("ws://h:1/feed?t=2", query=[("x", "1")]) == "ws://h:1/feed?t=2&x=1"
    assert ws_url("ws://h:1/", "/b", "raw=1") == "ws://h:1/b?raw=1"
    with pytest.raises(ValueError, match="has a path already"):
        ws_url("ws://h:1/feed", "/other")
    with pytest.raises(ValueError, match="ws://"):
        ws_url("http://h:1")


def test_the_client_threads_end_with_the_clients(roomcast_server: Any) -> None:
    server = roomcast_server(echo_app())
    before = threading.active_count()
    for _ in range(3):
        with Client.connect(server) as client:
            client.send("x")
            client.receive()
    wait_for(lambda: threading.active_count() <= before, what="client threads gone")


def test_roomcast_server_takes_the_broker_keywords(roomcast_server, roomcast_redis):
    app = roomcast.Server()
    server = roomcast_server(app, broker=roomcast_redis.url, broker_lease=1.5)
    wait_for(lambda: server.stats()["broker"]["connected"], what="the broker to connect")
    # The app itself is left as the test found it.
    assert app.broker_url is None
