"""The chat preset's wire protocol (PROTOCOL.md): enter, message, out, leave, other events,
``num`` counting by uid, heartbeats (JSON and protocol), text ping, and bad input."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack

from chatclient import ChatClient, SilentChat

from roomcast import presets

from conftest import wait_for

INTERVAL = 0.3


def serve(start, **settings):
    app = presets.chat(**settings)
    return app, start(app)


def enter_frame(name, roomid, uid, num):
    return {
        "event": "enter",
        "message": name,
        "roomid": roomid,
        "uid": uid,
        "name": name,
        "num": num,
    }


def assert_message(frame, text, name, num):
    assert frame["event"] == "message", frame
    assert (frame["message"], frame["name"], frame["num"]) == (text, name, num), frame


# -- enter / message / out / leave ---------------------------------------------------------


def test_enter_is_broadcast_to_the_room_newcomer_included(start):
    app, server = serve(start)
    with ChatClient(server.url) as a, ChatClient(server.url) as b, ChatClient(server.url) as c:
        assert a.enter("r1", "u1", "alice") == enter_frame("alice", "r1", "u1", 1)
        assert c.enter("r2", "u3", "carol") == enter_frame("carol", "r2", "u3", 1)
        assert b.enter("r1", "u2", "bob") == enter_frame("bob", "r1", "u2", 2)
        assert a.expect("enter") == enter_frame("bob", "r1", "u2", 2)
        c.assert_nothing()  # another room hears nothing
        assert app.chat.count("r1") == 2
        assert app.chat.users("r1") == {"u1": "alice", "u2": "bob"}
        assert app.chat.count("r2") == 1


def test_the_seed_client_url_and_any_path_are_accepted(start):
    _, server = serve(start)
    for path in ("/", "/chat", "/ws/room?x=1"):
        with ChatClient(server.url + path) as a:
            assert a.enter("r", "u", "alice")["num"] == 1


def test_numeric_and_string_ids_are_the_same_room_and_user(start):
    app, server = serve(start)
    with ChatClient(server.url) as a, ChatClient(server.url) as b, ChatClient(server.url) as c:
        a.enter("5", "7", "alice")
        assert b.enter(5, 8, "bob")["num"] == 2
        assert a.expect("enter")["num"] == 2
        # uid 7 as a number is the user "7": counted once.
        assert c.enter(5, 7, "alice")["num"] == 2
        assert app.chat.count("5") == 2
        b.say("hi", roomid="5")  # the string form of the number b entered with
        assert_message(a.until("message")[-1], "hi", "bob", 2)
        assert_message(b.until("message")[-1], "hi", "bob", 2)


def test_message_reaches_the_room_sender_included_with_name_and_num_stamped(start):
    _, server = serve(start)
    with ChatClient(server.url) as a, ChatClient(server.url) as b, ChatClient(server.url) as c:
        a.enter("r", "u1", "alice")
        b.enter("r", "u2", "bob")
        a.expect("enter")
        c.enter("elsewhere", "u3", "carol")
        # The frame claims another name: the entered name is what goes out.
        a.say("hello", name="mallory", extra={"kept": [1, 2]})
        for who in (a, b):
            frame = who.expect("message")
            assert_message(frame, "hello", "alice", 2)
            assert frame["extra"] == {"kept": [1, 2]}  # unknown fields are passed on
        # A matching roomid is accepted.
        b.say("with roomid", name="bob", roomid="r")
        assert_message(a.expect("message"), "with roomid", "bob", 2)
        assert_message(b.expect("message"), "with roomid", "bob", 2)
        c.assert_nothing()


def test_message_with_another_roomid_is_refused_and_not_broadcast(start):
    _, server = serve(start)
    with ChatClient(server.url) as a, ChatClient(server.url) as b, ChatClient(server.url) as c:
        a.enter("r", "u1", "alice")
        b.enter("r", "u2", "bob")
        a.expect("enter")
        c.enter("other", "u3", "carol")
        a.say("sneaky", roomid="other")
        assert a.expect("error")["message"]
        b.assert_nothing()
        c.assert_nothing()


def test_out_goes_to_the_rest_of_the_room_when_a_connection_closes(start):
    app, server = serve(start)
    with ChatClient(server.url) as a, ChatClient(server.url) as c:
        a.enter("r", "u1", "alice")
        c.enter("other", "u3", "carol")
        b = ChatClient(server.url)
        b.enter("r", "u2", "bob")
        a.expect("enter")
        b.close()
        assert a.expect("out") == {"event": "out", "name": "bob", "num": 1}
        c.assert_nothing()
        assert app.chat.users("r") == {"u1": "alice"}


def test_entering_another_room_moves_the_connection(start):
    app, server = serve(start)
    with ChatClient(server.url) as a, ChatClient(server.url) as b, ChatClient(server.url) as d:
        a.enter("r1", "u1", "alice")
        b.enter("r1", "u2", "bob")
        a.expect("enter")
        d.enter("r2", "u4", "dave")
        assert b.enter("r2", "u2", "bob") == enter_frame("bob", "r2", "u2", 2)
        assert d.expect("enter") == enter_frame("bob", "r2", "u2", 2)
        assert a.expect("out") == {"event": "out", "name": "bob", "num": 1}
        assert app.chat.count("r1") == 1
        assert app.chat.count("r2") == 2
        a.say("only r1")
        assert_message(a.expect("message"), "only r1", "alice", 1)
        d.say("only r2")
        assert_message(b.expect("message"), "only r2", "dave", 2)  # nothing from r1 first
        assert_message(d.expect("message"), "only r2", "dave", 2)
        a.assert_nothing()


def test_leave_ends_membership_for_every_connection_of_the_uid(start):
    app, server = serve(start)
    with ChatClient(server.url) as a, ChatClient(server.url) as b1, ChatClient(server.url) as b2:
        a.enter("r", "u1", "alice")
        b1.enter("r", "u2", "bob")
        a.expect("enter")
        assert b2.enter("r", "u2", "bob")["num"] == 2
        a.expect("enter")
        b1.expect("enter")
        b1.send_json(event="leave")
        assert a.expect("out") == {"event": "out", "name": "bob", "num": 1}
        assert app.chat.users("r") == {"u1": "alice"}
        a.say("after leave")
        assert_message(a.expect("message"), "after leave", "alice", 1)
        for who in (b1, b2):
            assert not [f for f in who.drain() if f.get("event") == "message"]
        # A connection that left is in no room: its message is refused, not broadcast.
        b2.say("still here?")
        assert b2.expect("error")
        a.assert_nothing()


def test_other_events_are_broadcast_with_name_and_num_stamped(start):
    _, server = serve(start)
    with ChatClient(server.url) as a, ChatClient(server.url) as b, ChatClient(server.url) as c:
        a.enter("r", "u1", "alice")
        b.enter("r", "u2", "bob")
        a.expect("enter")
        c.enter("other", "u3", "carol")
        b.send_json(event="typing", name="nobody", message="...", data={"n": 1})
        expected = {"event": "typing", "name": "bob", "num": 2, "message": "...", "data": {"n": 1}}
        assert a.expect("typing") == expected
        assert b.expect("typing") == expected
        c.assert_nothing()


def test_unnamed_fields_of_an_enter_are_passed_on(start):
    _, server = serve(start)
    with ChatClient(server.url) as a, ChatClient(server.url) as b:
        a.enter("r", "u1", "alice")
        b.send_json(event="enter", message="bob", roomid="r", uid="u2", avatar="b.png")
        for who in (a, b):
            frame = who.expect("enter")
            assert frame == {**enter_frame("bob", "r", "u2", 2), "avatar": "b.png"}


# -- num counts users, not connections ------------------------------------------------------


def test_two_connections_of_one_uid_count_once_and_out_comes_with_the_last(start):
    app, server = serve(start)
    with ChatClient(server.url) as b:
        b.enter("r", "u2", "bob")
        a1 = ChatClient(server.url)
        assert a1.enter("r", "u1", "alice")["num"] == 2
        assert b.expect("enter")["num"] == 2
        a2 = ChatClient(server.url)
        assert a2.enter("r", "u1", "alice")["num"] == 2  # the same user: still 2
        assert b.expect("enter")["num"] == 2
        assert a1.expect("enter")["num"] == 2
        assert app.chat.count("r") == 2
        # Both connections of alice receive the room.
        b.say("to both")
        for who in (a1, a2, b):
            assert_message(who.expect("message"), "to both", "bob", 2)

        a1.close()
        b.assert_nothing()  # alice is still here through a2
        a2.assert_nothing()
        assert app.chat.count("r") == 2
        a2.close()
        assert b.expect("out") == {"event": "out", "name": "alice", "num": 1}
        assert app.chat.count("r") == 1


def test_reconnecting_never_double_counts(start):
    app, server = serve(start)
    with ChatClient(server.url) as b:
        b.enter("r", "u2", "bob")
        for _ in range(5):
            a = ChatClient(server.url)
            assert a.enter("r", "u1", "alice")["num"] == 2
            assert b.expect("enter")["num"] == 2
            # Entering the same room again on the same connection changes nothing.
            a.send_json(event="enter", message="alice", roomid="r", uid="u1")
            a.say("count?")  # after the second enter: one connection's frames keep their order
            frames = b.until("message")
            assert frames[-1]["message"] == "count?"
            assert all(f["num"] == 2 for f in frames), frames
            assert app.chat.count("r") == 2
            a.close()
            assert b.expect("out") == {"event": "out", "name": "alice", "num": 1}
        assert app.chat.count("r") == 1
        # A reconnect that opens the new connection before the old one closes.
        old = ChatClient(server.url)
        old.enter("r", "u1", "alice")
        b.expect("enter")
        new = ChatClient(server.url)
        assert new.enter("r", "u1", "alice")["num"] == 2
        b.expect("enter")
        old.close()
        b.assert_nothing()
        new.close()
        assert b.expect("out")["num"] == 1


# -- heartbeats -----------------------------------------------------------------------------


def test_json_heartbeat_carries_the_room_num_and_omits_it_outside_rooms(start):
    _, server = serve(start, heartbeat_interval=INTERVAL)
    with ExitStack() as stack:
        lobby, a, b, c = (stack.enter_context(ChatClient(server.url)) for _ in range(4))
        a.enter("r", "u1", "alice")
        b.enter("r", "u2", "bob")
        a.expect("enter")
        c.enter("solo", "u3", "carol")
        for who in (lobby, a, b, c):
            who.heartbeats.clear()
        # The last of two heartbeats read after the enters is surely later than them.
        for who in (lobby, a, b, c):
            who.wait_heartbeats(2, timeout=INTERVAL * 6)
        assert lobby.heartbeats[-1] == {"event": "heartbeat", "message": "ping"}
        assert a.heartbeats[-1] == {"event": "heartbeat", "message": "ping", "num": 2}
        assert b.heartbeats[-1] == {"event": "heartbeat", "message": "ping", "num": 2}
        assert c.heartbeats[-1] == {"event": "heartbeat", "message": "ping", "num": 1}
        # The pongs every client sent (ChatClient answers each heartbeat) went nowhere.
        for who in (lobby, a, b, c):
            who.assert_nothing(within=0.1)


def test_heartbeat_pong_is_not_broadcast(start):
    _, server = serve(start)
    with ChatClient(server.url) as a, ChatClient(server.url) as b:
        a.enter("r", "u1", "alice")
        b.enter("r", "u2", "bob")
        a.expect("enter")
        a.send_json(event="heartbeat", message="pong")
        a.send_text("ping")
        assert a.recv_json() == "pong"  # the pong was swallowed: the text pong comes first
        b.assert_nothing()


def test_text_ping_is_answered_with_text_pong(start):
    _, server = serve(start)
    with ChatClient(server.url) as a:
        a.send_text("ping")
        assert a.recv_json() == "pong"
        a.enter("r", "u1", "alice")
        for _ in range(3):
            a.send_text("ping")
            assert a.recv_json() == "pong"


def test_a_client_that_stops_answering_is_reaped_and_the_room_gets_out(start):
    app, server = serve(start, heartbeat_interval=INTERVAL)
    with ChatClient(server.url) as a:
        a.enter("r", "u1", "alice")
        silent = SilentChat(server.port)
        sent = time.monotonic()
        silent.send_json(event="enter", message="ghost", roomid="r", uid="u9")
        assert a.expect("enter") == enter_frame("ghost", "r", "u9", 2)
        # From now on the raw client reads nothing and answers nothing: the sweep after its
        # enter hears it, the next pings it, the one after reaps it.
        out = a.expect("out", timeout=INTERVAL * 3 + 3)
        elapsed = time.monotonic() - sent
        assert out == {"event": "out", "name": "ghost", "num": 1}
        assert INTERVAL * 2 < elapsed < INTERVAL * 3 + 1.0, f"reaped after {elapsed:.2f} s"
        assert app.chat.count("r") == 1
        # The server closed it.
        assert silent.pump(3, answer_heartbeats=False) is not None
        silent.close()
        # a answered every heartbeat and is still here.
        a.send_text("ping")
        assert a.recv_json() == "pong"


def test_reaping_one_of_two_connections_of_a_user_sends_no_out(start):
    app, server = serve(start, heartbeat_interval=INTERVAL)
    with ChatClient(server.url) as a, ChatClient(server.url) as b1:
        a.enter("r", "u1", "alice")
        b1.enter("r", "u2", "bob")
        a.expect("enter")
        silent = SilentChat(server.port)
        silent.send_json(event="enter", message="bob", roomid="r", uid="u2")
        assert a.expect("enter")["num"] == 2
        b1.expect("enter")
        # It reads only to see its end, and answers nothing.
        assert silent.pump(INTERVAL * 3 + 3, answer_heartbeats=False) is not None
        silent.close()
        a.assert_nothing(within=INTERVAL)  # bob is still here through b1
        assert app.chat.count("r") == 2
        b1.close()
        assert a.expect("out") == {"event": "out", "name": "bob", "num": 1}


def test_json_pong_alone_keeps_a_connection_alive(start):
    _, server = serve(start, heartbeat_interval=INTERVAL)
    with ChatClient(server.url) as a:
        a.enter("r", "u1", "alice")
        raw = SilentChat(server.port)  # answers JSON heartbeats, never a protocol Ping
        raw.send_json(event="enter", message="bob", roomid="r", uid="u2")
        a.expect("enter")
        assert raw.pump(INTERVAL * 4) is None, "closed although it answered every heartbeat"
        heartbeats = [f for f in raw.json_frames() if f.get("event") == "heartbeat"]
        assert len(heartbeats) >= 3
        assert heartbeats[-1] == {"event": "heartbeat", "message": "ping", "num": 2}
        assert raw.pings == 0  # its pongs were heard: no sweep found it silent
        a.assert_nothing(within=0.1)  # no out: bob stayed
        raw.close()
        assert a.expect("out")["name"] == "bob"


def test_protocol_pong_alone_keeps_a_connection_alive(start):
    _, server = serve(start, heartbeat_interval=INTERVAL)
    with ChatClient(server.url) as a:
        a.enter("r", "u1", "alice")
        # websockets answers protocol Pings by itself; this client ignores JSON heartbeats.
        with ChatClient(server.url, answer_heartbeats=False) as quiet:
            quiet.enter("r", "u2", "bob")
            a.expect("enter")
            assert quiet.drain(INTERVAL * 4) == []
            assert len(quiet.heartbeats) >= 3
            a.assert_nothing(within=0.1)  # no out: bob stayed
            quiet.send_text("ping")
            assert quiet.recv_json() == "pong"
        assert a.expect("out")["name"] == "bob"


# -- bad input ------------------------------------------------------------------------------


def _bystander(server):
    a = ChatClient(server.url)
    a.enter("r", "u1", "alice")
    return a


def _assert_error_and_still_open(client):
    frame = client.expect("error")
    assert isinstance(frame["message"], str) and frame["message"], frame
    client.send_text("ping")
    assert client.recv_json() == "pong"
    return frame


def test_frames_that_are_not_chat_json_get_an_error_and_the_connection_stays(start):
    _, server = serve(start)
    with _bystander(server) as a, ChatClient(server.url) as bad:
        bad.enter("r", "u2", "bob")
        a.expect("enter")
        for text in ("hello", "{not json", "[1, 2]", '"event"', "42", "null"):
            bad.send_text(text)
            _assert_error_and_still_open(bad)
        for obj in ({"message": "no event"}, {"event": 5}, {"event": None}, {"event": ["x"]}):
            bad.send_text(json.dumps(obj))
            _assert_error_and_still_open(bad)
        bad.ws.send(b'{"event":"message","message":"binary"}')
        _assert_error_and_still_open(bad)
        a.assert_nothing()
        # Still a working member afterwards.
        bad.say("fine now")
        assert_message(a.expect("message"), "fine now", "bob", 2)


def test_enter_without_roomid_or_uid_is_an_error(start):
    app, server = serve(start)
    with _bystander(server) as a, ChatClient(server.url) as bad:
        bad.send_json(event="enter", message="bob", uid="u2")
        assert "enter" in _assert_error_and_still_open(bad)["message"]
        bad.send_json(event="enter", message="bob", roomid="r")
        assert "enter" in _assert_error_and_still_open(bad)["message"]
        a.assert_nothing()
        assert app.chat.count("r") == 1


def test_events_before_enter_are_an_error_and_not_broadcast(start):
    _, server = serve(start)
    with _bystander(server) as a, ChatClient(server.url) as early:
        early.say("too early", roomid="r")
        assert "enter" in _assert_error_and_still_open(early)["message"].lower()
        early.send_json(event="typing", roomid="r")
        assert "enter" in _assert_error_and_still_open(early)["message"].lower()
        a.assert_nothing()


def test_an_oversized_frame_closes_with_1009_and_the_room_gets_out(start):
    app, server = serve(start, max_message_size=1024)
    with _bystander(server) as a:
        big = ChatClient(server.url)
        big.enter("r", "u2", "bob")
        a.expect("enter")
        big.say("small is fine")
        assert_message(a.expect("message"), "small is fine", "bob", 2)
        big.say("x" * 2000)
        assert big.wait_closed() == 1009
        assert a.expect("out") == {"event": "out", "name": "bob", "num": 1}
        wait_for(lambda: app.chat.count("r") == 1, what="bob counted out")
