"""Every hook, sync and async, driven by the independent ``websockets`` client."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import roomcast

from conftest import log_lines, wait_for


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_on_message_echoes_text_and_binary(start, kind):
    app = roomcast.Server()
    if kind == "sync":

        @app.on_message
        def echo(conn, msg):
            conn.send(msg)

    else:

        @app.on_message
        async def echo(conn, msg):
            await asyncio.sleep(0)
            conn.send(msg)

    server = start(app)
    with connect(server.url) as ws:
        ws.send("héllo")
        assert ws.recv() == "héllo"
        ws.send(b"\x00\xff")
        assert ws.recv() == b"\x00\xff"


def test_on_connect_sees_the_request(start):
    seen = {}
    app = roomcast.Server(subprotocols=["superchat"])

    @app.on_connect
    def connect_hook(conn, request):
        seen.update(
            path=request.path,
            query=request.query,
            agent=request.headers.get("x-test"),
            cookies=request.cookies,
            offered=request.subprotocols,
            addr=request.remote_addr,
            chosen=conn.subprotocol,
        )
        conn.state["name"] = request.query.get("name")

    @app.on_message
    def reply(conn, msg):
        conn.send(conn.state["name"])

    server = start(app)
    url = f"{server.url}/chat?name=ann&token=t1"
    headers = {"X-Test": "yes", "Cookie": "sid=abc; theme=dark"}
    with connect(url, additional_headers=headers, subprotocols=["chat", "superchat"]) as ws:
        assert ws.subprotocol == "superchat"
        ws.send("who")
        assert ws.recv() == "ann"
    assert seen["path"] == "/chat"
    assert seen["query"] == {"name": "ann", "token": "t1"}
    assert seen["agent"] == "yes"
    assert seen["cookies"] == {"sid": "abc", "theme": "dark"}
    assert seen["offered"] == ["chat", "superchat"]
    assert seen["addr"][0] == "127.0.0.1" and seen["addr"][1] > 0
    assert seen["chosen"] == "superchat"


def test_a_request_first_read_after_the_close_is_whole(start):
    # The request is read from the core when first used; a connection whose hooks never
    # looked at it must still show all of it to on_disconnect, after the core let it go.
    seen = {}
    app = roomcast.Server()

    @app.on_message
    def ignore(conn, msg):
        pass

    @app.on_disconnect
    def gone(conn, code, reason):
        r = conn.request
        seen.update(path=r.path, query=r.query, agent=r.headers.get("x-test"), secure=r.secure)
        seen.update(addr=r.remote_addr, cookies=r.cookies, offered=r.subprotocols)

    server = start(app)
    headers = {"X-Test": "late", "Cookie": "sid=x1"}
    with connect(f"{server.url}/room?a=1&a=2", additional_headers=headers) as ws:
        ws.send("hi")
    wait_for(lambda: seen, timeout=5)
    assert seen["path"] == "/room" and seen["query"] == {"a": "2"} and seen["agent"] == "late"
    assert seen["cookies"] == {"sid": "x1"} and seen["offered"] == [] and seen["secure"] is False
    assert seen["addr"][0] == "127.0.0.1"


def test_a_request_is_read_only_and_compares_by_its_fields():
    a = roomcast.Request("/p", "x=1", {"h": "v"}, ("127.0.0.1", 5), [])
    b = roomcast.Request("/p", "x=1", {"h": "v"}, ("127.0.0.1", 5), [], secure=False)
    assert a == b and a.query == {"x": "1"} and a.query_list == [("x", "1")]
    assert a != roomcast.Request("/p", "x=2", {"h": "v"}, ("127.0.0.1", 5), [])
    with pytest.raises(AttributeError, match="read-only"):
        a.path = "/q"  # type: ignore[misc]
    assert "path='/p'" in repr(a)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_on_connect_refuses_with_a_status(start, kind):
    app = roomcast.Server()
    if kind == "sync":

        @app.on_connect
        def gate(conn, request):
            if request.query.get("token") != "ok":
                raise roomcast.Reject(401, "missing token")
            if request.query.get("ban"):
                return False

    else:

        @app.on_connect
        async def gate(conn, request):
            await asyncio.sleep(0)
            if request.query.get("token") != "ok":
                raise roomcast.Reject(401, "missing token")
            if request.query.get("ban"):
                return False

    server = start(app)
    with pytest.raises(InvalidStatus) as refused:
        connect(server.url)
    assert refused.value.response.status_code == 401
    assert b"missing token" in refused.value.response.body
    with pytest.raises(InvalidStatus) as banned:
        connect(f"{server.url}/?token=ok&ban=1")
    assert banned.value.response.status_code == 403
    with connect(f"{server.url}/?token=ok") as ws:
        ws.ping().wait(5)


def test_on_connect_that_raises_refuses_with_500_and_logs(start, caplog):
    app = roomcast.Server()

    @app.on_connect
    def broken(conn, request):
        raise KeyError("boom")

    server = start(app)
    with pytest.raises(InvalidStatus) as refused:
        connect(server.url)
    assert refused.value.response.status_code == 500
    assert any("on_connect hook raised" in line for line in log_lines(caplog))


def test_on_event_routes_json_and_falls_back_to_on_message(start):
    app = roomcast.Server()

    @app.on("chat")
    def chat(conn, data):
        conn.send({"got": data})

    @app.on("async")
    async def later(conn, data):
        conn.send({"async": data["n"]})

    @app.on_message
    def other(conn, msg):
        conn.send(f"fallback:{msg}")

    server = start(app)
    with connect(server.url) as ws:
        ws.send(json.dumps({"event": "chat", "text": "hi", "n": [1, 2]}))
        assert json.loads(ws.recv()) == {"got": {"event": "chat", "text": "hi", "n": [1, 2]}}
        ws.send(json.dumps({"event": "async", "n": 3}))
        assert json.loads(ws.recv()) == {"async": 3}
        ws.send('{"event":"unknown"}')
        assert ws.recv() == 'fallback:{"event":"unknown"}'
        ws.send("not json")
        assert ws.recv() == "fallback:not json"


def test_hooks_registered_after_start_take_effect(start):
    app = roomcast.Server()
    server = start(app)
    with connect(server.url) as ws:

        @app.on("late")
        def late(conn, data):
            conn.send("late hook")

        ws.send('{"event":"late"}')
        assert ws.recv() == "late hook"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_on_disconnect_gets_the_client_close_code(start, kind):
    closed = []
    app = roomcast.Server()
    if kind == "sync":

        @app.on_disconnect
        def gone(conn, code, reason):
            closed.append((conn.id, code, reason, conn.state.get("x")))

    else:

        @app.on_disconnect
        async def gone(conn, code, reason):
            await asyncio.sleep(0)
            closed.append((conn.id, code, reason, conn.state.get("x")))

    @app.on_connect
    def hello(conn, request):
        conn.state["x"] = "kept"

    server = start(app)
    with connect(server.url) as ws:
        ws.close(code=4001, reason="bye now")
    wait_for(lambda: closed, what="on_disconnect")
    assert closed[0][1:] == (4001, "bye now", "kept")


def test_a_client_that_vanishes_is_1006(start):
    closed = []
    app = roomcast.Server()
    app.on_disconnect(lambda conn, code, reason: closed.append(code))
    server = start(app)
    ws = connect(server.url)
    # No Close frame, just the TCP connection ending. shutdown() first: the client's reader
    # thread keeps the descriptor busy, and close() alone may not send the FIN.
    ws.socket.shutdown(socket.SHUT_RDWR)
    ws.socket.close()
    wait_for(lambda: closed, what="on_disconnect")
    assert closed == [1006]


def test_a_raising_hook_is_logged_and_the_connection_stays_open(start, caplog):
    app = roomcast.Server()

    @app.on_message
    def flaky(conn, msg):
        if msg == "boom":
            raise RuntimeError("hook failed")
        conn.send(f"ok:{msg}")

    @app.on("async_boom")
    async def flaky_async(conn, data):
        raise ValueError("async hook failed")

    server = start(app)
    with connect(server.url) as ws:
        ws.send("boom")
        ws.send('{"event":"async_boom"}')
        ws.send("after")
        assert ws.recv() == "ok:after"
    lines = log_lines(caplog)
    assert any("on_message hook raised for connection" in line for line in lines)
    assert any("on('async_boom') hook raised for connection" in line for line in lines)
    raised = [r for r in caplog.records if r.exc_info and r.name == "roomcast"]
    assert {type(r.exc_info[1]) for r in raised} >= {RuntimeError, ValueError}


def test_a_blocking_hook_delays_no_other_connection(start):
    release = threading.Event()
    app = roomcast.Server(workers=4)

    @app.on_message
    def maybe_block(conn, msg):
        if msg == "block":
            release.wait(10)
        conn.send(msg)

    server = start(app)
    with connect(server.url) as blocked, connect(server.url) as other:
        blocked.send("block")
        started = time.monotonic()
        for i in range(20):
            other.send(f"m{i}")
            assert other.recv(timeout=2) == f"m{i}"
        elapsed = time.monotonic() - started
        release.set()
        assert blocked.recv(timeout=5) == "block"
    # Behaviour, not speed: the other connection was served while the hook still blocked.
    assert elapsed < 10


def test_one_connection_keeps_its_order_through_async_hooks(start):
    app = roomcast.Server(workers=4)

    @app.on_message
    async def slow_then_fast(conn, msg):
        # Earlier messages sleep longer: only per-connection ordering keeps replies in order.
        await asyncio.sleep(0.02 * (5 - int(msg)) / 5)
        conn.send(msg)

    server = start(app)
    with connect(server.url) as ws:
        for i in range(5):
            ws.send(str(i))
        assert [ws.recv(timeout=5) for _ in range(5)] == ["0", "1", "2", "3", "4"]


def test_async_hooks_run_on_the_callers_loop_with_serve():
    app = roomcast.Server()
    loops = []

    @app.on_message
    async def where(conn, msg):
        loops.append(asyncio.get_running_loop())
        conn.send(msg)

    async def main():
        from websockets.asyncio.client import connect as aconnect

        async with app.serve() as server:
            async with aconnect(server.url) as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert loops == [loop]
