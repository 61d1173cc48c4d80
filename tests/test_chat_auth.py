"""JWT auth in the chat preset (PROTOCOL.md and the contract): tokens in the handshake query
or the ``auth`` event, ``noauth`` for everything else until one passes, heartbeats before
auth, and a token that expires while in the room. Tokens are made with PyJWT."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from chatclient import NOAUTH, ChatClient, SilentChat

from roomcast import presets

SECRET = "roomcast-test-secret-0123456789abcdef"  # PyJWT warns below 32 bytes
WRONG = "someone-elses-secret-0123456789abcdef"
INTERVAL = 0.3


def token(sub="u1", *, secret=SECRET, exp_in=300.0, **claims):
    payload = {"sub": sub, **claims}
    if exp_in is not None:
        payload["exp"] = int(time.time() + exp_in)
    return jwt.encode(payload, secret, algorithm="HS256")


def tampered():
    """A valid token's signature on another payload."""
    head, _, signature = token("u1").split(".")
    claims = json.dumps({"sub": "admin", "exp": int(time.time()) + 300}).encode()
    payload = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
    return f"{head}.{payload}.{signature}"


BAD_TOKENS = {
    "expired": lambda: token(exp_in=-30),
    "forged": lambda: token(secret=WRONG),
    "garbage": lambda: "not-a-jwt",
    "unsigned": lambda: jwt.encode({"sub": "u1"}, None, algorithm="none"),
    "tampered": tampered,
}


def serve(start, **settings):
    app = presets.chat(jwt_secret=SECRET, **settings)
    return app, start(app)


def authed(server, roomid="r", uid="u1", name="alice"):
    a = ChatClient(f"{server.url}/?token={token(uid)}")
    assert a.enter(roomid, uid, name)["num"] >= 1
    return a


def assert_shut_out(client, bystander):
    """``client`` gets only noauth, whatever it sends, and none of ``bystander``'s room."""
    for frame in (
        {"event": "enter", "message": "eve", "roomid": "r", "uid": "u9"},
        {"event": "message", "message": "let me in", "name": "eve"},
        {"event": "typing"},
        {"event": "leave"},
    ):
        client.send_json(frame)
        assert client.expect("noauth") == NOAUTH
    bystander.say("room secret")
    bystander.expect("message")
    bystander.assert_nothing(within=0.1)  # no enter from eve, none of her frames
    frames = client.drain()
    assert all(f == NOAUTH for f in frames), frames


def test_a_valid_token_in_the_query(start):
    app, server = serve(start)
    with authed(server) as a:
        b = ChatClient(f"{server.url}/?token={token('u2')}")
        assert b.enter("r", "u2", "bob")["num"] == 2
        a.expect("enter")
        b.say("hi")
        assert b.expect("message")["message"] == "hi"
        assert a.expect("message")["name"] == "bob"
        assert app.chat.count("r") == 2
        b.close()
        assert a.expect("out")["name"] == "bob"


def test_a_valid_token_via_the_auth_event(start):
    _, server = serve(start)
    with authed(server) as a, ChatClient(server.url) as b:
        b.send_json(event="auth", message=token("u2"))
        b.send_json(event="enter", message="bob", roomid="r", uid="u2")
        frames = b.until("enter")
        assert all(f.get("event") not in ("noauth", "error") for f in frames), frames
        assert frames[-1]["num"] == 2
        assert a.expect("enter")["name"] == "bob"
        a.say("hello bob")
        assert b.expect("message")["message"] == "hello bob"


def test_a_token_without_exp_is_accepted(start):
    _, server = serve(start)
    with ChatClient(f"{server.url}/?token={token(exp_in=None)}") as a:
        assert a.enter("r", "u1", "alice")["num"] == 1


def test_without_a_token_every_event_gets_noauth_and_no_room_traffic(start):
    app, server = serve(start)
    with authed(server) as a, ChatClient(server.url) as eve:
        assert_shut_out(eve, a)
        assert app.chat.count("r") == 1


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_a_bad_token_in_the_query_gets_noauth_at_once(start, kind):
    app, server = serve(start)
    with authed(server) as a, ChatClient(f"{server.url}/?token={BAD_TOKENS[kind]()}") as eve:
        assert eve.expect("noauth") == NOAUTH  # sent on its own, before eve says anything
        eve.assert_nothing()  # once
        assert_shut_out(eve, a)
        assert app.chat.count("r") == 1
        # A valid token later lets it in.
        eve.send_json(event="auth", message=token("u9"))
        eve.send_json(event="enter", message="eve", roomid="r", uid="u9")
        frames = eve.until("enter")
        assert NOAUTH not in frames, frames
        assert a.expect("enter")["num"] == 2


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_a_bad_token_in_the_auth_event_gets_noauth(start, kind):
    app, server = serve(start)
    with authed(server) as a, ChatClient(server.url) as eve:
        eve.send_json(event="auth", message=BAD_TOKENS[kind]())
        assert eve.expect("noauth") == NOAUTH
        assert_shut_out(eve, a)
        assert app.chat.count("r") == 1


def test_an_auth_event_without_a_string_token_gets_noauth(start):
    _, server = serve(start)
    with authed(server) as a, ChatClient(server.url) as eve:
        for message in (None, 42, {"token": token()}):
            eve.send_json(event="auth", message=message)
            assert eve.expect("noauth") == NOAUTH
        eve.send_json(event="auth")
        assert eve.expect("noauth") == NOAUTH
        assert_shut_out(eve, a)


def test_text_ping_and_json_pong_work_before_auth(start):
    _, server = serve(start)
    with ChatClient(server.url) as eve:
        eve.send_text("ping")
        assert eve.recv_json() == "pong"
        eve.send_json(event="heartbeat", message="pong")
        eve.send_text("ping")
        # The heartbeat answer drew no noauth: the next frame is the text pong.
        assert eve.recv_json() == "pong"


def test_a_connection_waiting_to_auth_answering_json_heartbeats_is_not_reaped(start):
    _, server = serve(start, heartbeat_interval=INTERVAL)
    raw = SilentChat(server.port)  # never answers a protocol Ping
    try:
        assert raw.pump(INTERVAL * 4) is None, "reaped although it answered every heartbeat"
        frames = raw.json_frames()
        assert len([f for f in frames if f.get("event") == "heartbeat"]) >= 3
        assert frames.count(NOAUTH) <= 1, "the heartbeat answers drew noauth"
    finally:
        raw.close()


def test_a_connection_waiting_to_auth_sending_text_pings_is_not_reaped(start):
    _, server = serve(start, heartbeat_interval=INTERVAL)
    raw = SilentChat(server.port)  # answers neither protocol Pings nor JSON heartbeats
    try:
        for _ in range(8):
            raw.send_text("ping")
            assert raw.pump(INTERVAL / 2, answer_heartbeats=False) is None, "reaped"
        assert raw.texts.count("pong") >= 7
        assert NOAUTH not in raw.json_frames()
    finally:
        raw.close()


def test_a_connection_waiting_to_auth_answering_protocol_pings_is_not_reaped(start):
    _, server = serve(start, heartbeat_interval=INTERVAL)
    with ChatClient(server.url, answer_heartbeats=False) as eve:
        frames = eve.drain(INTERVAL * 4)
        assert len(eve.heartbeats) >= 3
        assert frames.count(NOAUTH) <= 1
        eve.send_text("ping")
        assert eve.recv_json() == "pong"
        eve.send_json(event="auth", message=token("u9"))
        assert eve.enter("r", "u9", "eve")["num"] == 1


def test_a_token_that_expires_in_the_room(start):
    app, server = serve(start)
    with authed(server) as a:
        exp = int(time.time()) + 2
        short = jwt.encode({"sub": "u2", "exp": exp}, SECRET, algorithm="HS256")
        with ChatClient(f"{server.url}/?token={short}") as b:
            assert b.enter("r", "u2", "bob")["num"] == 2
            a.expect("enter")
            a.say("before")
            assert b.expect("message")["message"] == "before"
            a.expect("message")

            # Waiting for the clock to pass exp is the point here.
            time.sleep(max(0.0, exp + 0.2 - time.time()))
            a.say("after exp")
            heard = b.drain(0.4)
            b.say("bob talks")
            heard += b.drain(0.4)
            assert NOAUTH in heard, heard
            assert all(f == NOAUTH for f in heard), heard  # no room traffic at all

            # The room sees bob go (he was its only connection), before or after alice's line.
            frames = a.collect(2)
            assert {"event": "out", "name": "bob", "num": 1} in frames, frames
            assert [f["message"] for f in frames if f["event"] == "message"] == ["after exp"]
            a.assert_nothing(within=0.2)  # "bob talks" was not broadcast
            assert app.chat.count("r") == 1

            # A fresh token puts him back: kept messages first, then the enter.
            b.send_json(event="auth", message=token("u2"))
            frames = b.until("enter")
            kept, enter = frames[:-1], frames[-1]
            assert enter["num"] == 2 and enter["uid"] == "u2"
            assert all(f["event"] == "message" and f["roomid"] == "r" for f in kept), kept
            assert [f["message"] for f in kept] in ([], ["after exp"])
            assert a.expect("enter")["num"] == 2
            a.say("welcome back")
            assert b.expect("message")["message"] == "welcome back"
