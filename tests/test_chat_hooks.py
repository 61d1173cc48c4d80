"""Python in charge of the chat preset: a hook for an event gets it instead of the preset and
may hand it back with ``app.chat.handle``; ``on_connect`` may refuse; ``app.chat.users``,
``count`` and ``post`` work from any thread, and posts are kept for offline members."""

from __future__ import annotations

import threading
import time

import pytest
from chatclient import ChatClient
from websockets.exceptions import InvalidStatus

import roomcast
from roomcast import presets

from conftest import wait_for


def two_in_a_room(server):
    a = ChatClient(server.url)
    a.enter("r", "u1", "alice")
    b = ChatClient(server.url)
    b.enter("r", "u2", "bob")
    a.expect("enter")
    return a, b


def test_a_message_hook_moderates_and_hands_back(start):
    app = presets.chat()
    seen = []

    @app.on("message")
    def moderate(conn, data):
        seen.append(dict(data))
        if "badword" in data.get("message", ""):
            return
        data["message"] = data["message"].upper()
        app.chat.handle(conn, data)

    server = start(app)
    a, b = two_in_a_room(server)
    with a, b:
        a.say("hello")
        for who in (a, b):
            frame = who.expect("message")
            assert (frame["message"], frame["name"], frame["num"]) == ("HELLO", "alice", 2)
        a.say("a badword here")
        a.say("bye")
        # The dropped line never arrives; the next one does.
        for who in (a, b):
            frame = who.expect("message")
            assert (frame["message"], frame["name"]) == ("BYE", "alice")
        b.say("from bob")
        assert a.expect("message")["message"] == "FROM BOB"
        assert b.expect("message")["message"] == "FROM BOB"
        assert [d["message"] for d in seen] == ["hello", "a badword here", "bye", "from bob"]
        assert all(d["event"] == "message" for d in seen)


def test_what_a_hook_hands_back_is_kept_for_offline_members(start):
    app = presets.chat()

    @app.on("message")
    def moderate(conn, data):
        if data.get("message") != "drop me":
            data["message"] = data["message"].upper()
            app.chat.handle(conn, data)

    server = start(app)
    with ChatClient(server.url) as a:
        a.enter("r", "u1", "alice")
        c = ChatClient(server.url)
        c.enter("r", "u3", "carol")
        a.expect("enter")
        c.close()
        a.expect("out")
        for text in ("one", "drop me", "two"):
            a.say(text)
        assert [f["message"] for f in a.collect(2)] == ["ONE", "TWO"]
        c = ChatClient(server.url)
        c.send_json(event="enter", message="carol", roomid="r", uid="u3")
        frames = c.until("enter")
        assert [(f["message"], f["roomid"]) for f in frames[:-1]] == [("ONE", "r"), ("TWO", "r")]
        c.close()


def test_a_hook_for_another_event_replaces_the_broadcast(start):
    app = presets.chat()
    calls = []

    @app.on("typing")
    def typing(conn, data):
        calls.append(data)
        conn.send({"event": "ack", "of": data["event"]})

    server = start(app)
    a, b = two_in_a_room(server)
    with a, b:
        a.send_json(event="typing", message="...")
        assert a.expect("ack") == {"event": "ack", "of": "typing"}
        b.assert_nothing()
        assert calls == [{"event": "typing", "message": "..."}]
        # An event without a hook is still the preset's: broadcast.
        a.send_json(event="reaction", message="+1")
        assert b.expect("reaction")["name"] == "alice"
        assert a.expect("reaction")["num"] == 2


def test_a_slow_hook_keeps_the_order_of_one_connections_events(start):
    app = presets.chat()

    @app.on("typing")
    def slow(conn, data):
        time.sleep(0.2)
        app.chat.handle(conn, data)

    server = start(app)
    a, b = two_in_a_room(server)
    with a, b:
        a.send_json(event="typing", message="...")
        a.say("after typing")  # no hook: the preset's, yet it waits for the hooked one
        assert [f["event"] for f in b.collect(2)] == ["typing", "message"]
        assert [f["event"] for f in a.collect(2)] == ["typing", "message"]


def test_an_enter_hook_can_refuse_or_hand_back(start):
    app = presets.chat()

    @app.on("enter")
    def only_named(conn, data):
        if not str(data.get("message", "")).strip():
            conn.send({"event": "error", "message": "a name is required"})
            return
        app.chat.handle(conn, data)

    server = start(app)
    with ChatClient(server.url) as a, ChatClient(server.url) as b:
        assert a.enter("r", "u1", "alice")["num"] == 1
        b.send_json(event="enter", message="  ", roomid="r", uid="u2")
        assert b.expect("error") == {"event": "error", "message": "a name is required"}
        a.assert_nothing()
        assert app.chat.count("r") == 1
        assert b.enter("r", "u2", "bob")["num"] == 2
        assert a.expect("enter")["name"] == "bob"


def test_on_connect_can_refuse(start):
    app = presets.chat()

    @app.on_connect
    def gate(conn, request):
        key = request.query.get("key")
        if key is None:
            raise roomcast.Reject(401, "key required")
        return key == "open-sesame"

    server = start(app)
    with pytest.raises(InvalidStatus) as refused:
        ChatClient(server.url)
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        ChatClient(f"{server.url}/?key=wrong")
    assert refused.value.response.status_code == 403
    with ChatClient(f"{server.url}/?key=open-sesame") as a:
        assert a.enter("r", "u1", "alice")["num"] == 1
    wait_for(lambda: app.chat.count("r") == 0, what="alice gone")


def test_users_count_and_post_from_another_thread(start):
    app = presets.chat()
    server = start(app)
    a1, b = two_in_a_room(server)
    with a1, b, ChatClient(server.url) as a2, ChatClient(server.url) as c:
        a2.enter("r", "u1", "alice")  # alice twice
        a1.expect("enter")
        b.expect("enter")
        c.enter("elsewhere", "u3", "carol")
        results = {}

        def from_a_thread():
            results["users"] = app.chat.users("r")
            results["count"] = app.chat.count("r")
            results["nobody"] = (app.chat.users("nowhere"), app.chat.count("nowhere"))
            results["post"] = app.chat.post("r", "server notice", name="system")

        thread = threading.Thread(target=from_a_thread)
        thread.start()
        thread.join(5)
        assert not thread.is_alive()
        assert results["users"] == {"u1": "alice", "u2": "bob"}
        assert results["count"] == 2
        assert results["nobody"] == ({}, 0)
        for who in (a1, a2, b):
            frame = who.expect("message")
            assert (frame["message"], frame["name"], frame["num"]) == ("server notice", "system", 2)
        assert results["post"] == 3  # delivered to three connections
        c.assert_nothing()

        a1.close()
        a2.close()
        b.expect("out")
        assert app.chat.users("r") == {"u2": "bob"}
        assert app.chat.count("r") == 1


def test_post_is_kept_for_offline_members(start):
    app = presets.chat()
    server = start(app)
    c = ChatClient(server.url)
    c.enter("r", "u3", "carol")
    c.close()
    wait_for(lambda: app.chat.count("r") == 0, what="carol gone")
    assert app.chat.post("r", "while you were out", name="system") == 0
    with ChatClient(server.url) as a:
        a.enter("r", "u1", "alice")
        assert app.chat.post("r", "now", name="system") == 1
        assert a.expect("message")["message"] == "now"
        c = ChatClient(server.url)
        c.send_json(event="enter", message="carol", roomid="r", uid="u3")
        frames = c.until("enter")
        kept = frames[:-1]
        assert [(f["message"], f["name"], f["roomid"]) for f in kept] == [
            ("while you were out", "system", "r"),
            ("now", "system", "r"),
        ]
        assert frames[-1]["num"] == 2
        c.close()
