"""Rooms: join, leave, exclude, counts, broadcast from hooks and from foreign threads."""

from __future__ import annotations

import json
import threading

import pytest
from websockets.sync.client import connect

import roomcast

from conftest import wait_for


def room_app():
    app = roomcast.Server()

    @app.on("join")
    def join(conn, data):
        conn.join(data["room"])
        conn.send({"joined": data["room"], "count": len(app.room(data["room"]))})

    @app.on("leave")
    def leave(conn, data):
        conn.send({"left": conn.leave(data["room"])})

    @app.on("say")
    def say(conn, data):
        n = app.room(data["room"]).broadcast({"said": data["text"]}, exclude=conn)
        conn.send({"delivered": n})

    @app.on("rooms")
    def rooms(conn, data):
        conn.send({"mine": sorted(conn.rooms)})

    return app


def call(ws, **data):
    ws.send(json.dumps(data))
    return json.loads(ws.recv(timeout=5))


def test_join_broadcast_exclude_and_leave(start):
    app = room_app()
    server = start(app)
    with connect(server.url) as a, connect(server.url) as b, connect(server.url) as c:
        assert call(a, event="join", room="r1") == {"joined": "r1", "count": 1}
        assert call(b, event="join", room="r1") == {"joined": "r1", "count": 2}
        assert call(c, event="join", room="other")["count"] == 1
        assert call(a, event="join", room="r2")["count"] == 1
        assert call(a, event="rooms") == {"mine": ["r1", "r2"]}
        assert sorted(r.name for r in app.rooms) == ["other", "r1", "r2"]

        assert call(a, event="say", room="r1", text="hi") == {"delivered": 1}
        assert json.loads(b.recv(timeout=5)) == {"said": "hi"}

        assert call(b, event="leave", room="r1") == {"left": True}
        assert call(b, event="leave", room="r1") == {"left": False}
        assert call(a, event="say", room="r1", text="alone") == {"delivered": 0}
        assert app.room("r1").count == 1
        assert [m.id for m in app.room("r1").members] == [m.id for m in app.room("r2").members]
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.2)


def test_members_leave_every_room_when_they_disconnect(start):
    app = room_app()
    server = start(app)
    with connect(server.url) as a:
        call(a, event="join", room="r")
        with connect(server.url) as b:
            call(b, event="join", room="r")
            assert len(app.room("r")) == 2
        wait_for(lambda: len(app.room("r")) == 1, what="b to leave the room")
    wait_for(lambda: not app.rooms, what="the room to disappear")


def test_join_in_on_connect_and_broadcast_from_a_foreign_thread(start):
    app = roomcast.Server()

    @app.on_connect
    def enter(conn, request):
        conn.join("clock")
        conn.send("welcome")

    server = start(app)
    with connect(server.url) as a, connect(server.url) as b:
        assert a.recv(timeout=5) == "welcome"
        assert b.recv(timeout=5) == "welcome"
        # The seed's "push the time every second", from a thread that is not a hook.
        pushed = []
        t = threading.Thread(target=lambda: pushed.append(app.room("clock").broadcast({"tick": 1})))
        t.start()
        t.join()
        assert pushed == [2]
        assert json.loads(a.recv(timeout=5)) == {"tick": 1}
        assert json.loads(b.recv(timeout=5)) == {"tick": 1}
        assert app.broadcast(b"\x01", exclude=app.room("clock").members[:1]) == 1


def test_broadcast_to_everyone_and_binary(start):
    app = roomcast.Server()
    server = start(app)
    with connect(server.url) as a, connect(server.url) as b:
        wait_for(lambda: app.connection_count == 2, what="two connections")
        assert app.broadcast(b"\x00bin") == 2
        assert a.recv(timeout=5) == b"\x00bin"
        assert b.recv(timeout=5) == b"\x00bin"


def test_room_api_needs_a_running_server():
    app = roomcast.Server()
    with pytest.raises(RuntimeError, match="not running"):
        app.room("x")
    with pytest.raises(RuntimeError, match="not running"):
        app.broadcast("x")


def test_closed_connections_cannot_send_or_join(start):
    kept = []
    app = roomcast.Server()
    app.on_disconnect(lambda conn, code, reason: kept.append(conn))
    server = start(app)
    with connect(server.url):
        pass
    conn = wait_for(lambda: kept and kept[0], what="on_disconnect")
    assert not conn.is_open
    with pytest.raises(roomcast.ConnectionClosed):
        conn.send("late")
    with pytest.raises(roomcast.ConnectionClosed):
        conn.join("room")
    conn.close()  # idempotent, no error


def test_relay_paths_broadcast_without_python(start):
    calls = []
    app = roomcast.Server(paths=["/ws"])
    app.relay("/feed", "news", echo=False)
    app.relay("/publish", "news", join=False, echo=False)
    app.relay("/chat", "chat")
    app.on_message(lambda conn, msg: calls.append(msg))
    server = start(app)
    with connect(f"{server.url}/feed") as a, connect(f"{server.url}/feed") as b:
        wait_for(lambda: len(app.room("news")) == 2, what="subscribers in the room")
        with connect(f"{server.url}/publish") as pub:
            pub.send("headline")
            pub.send(b"\x00binary")
            assert [a.recv(timeout=5), a.recv(timeout=5)] == ["headline", b"\x00binary"]
            assert [b.recv(timeout=5), b.recv(timeout=5)] == ["headline", b"\x00binary"]
            a.send("from a subscriber")
            assert b.recv(timeout=5) == "from a subscriber"
            with pytest.raises(TimeoutError):
                a.recv(timeout=0.2)  # echo=False: not back to its sender
            with pytest.raises(TimeoutError):
                pub.recv(timeout=0.1)  # join=False: the publisher is not a member
    with connect(f"{server.url}/chat") as c1, connect(f"{server.url}/chat") as c2:
        wait_for(lambda: len(app.room("chat")) == 2, what="chat members")
        c1.send("hi all")
        assert c1.recv(timeout=5) == "hi all"  # echo=True: the sender too
        assert c2.recv(timeout=5) == "hi all"
    assert calls == []  # no frame reached Python


def test_relays_are_checked():
    app = roomcast.Server()
    with pytest.raises(ValueError, match="must start with"):
        app.relay("feed", "news")
