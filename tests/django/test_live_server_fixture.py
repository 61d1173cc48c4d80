"""roomcast_live_server (the pytest plugin, roomcast.testing): the example project served as
``manage.py runws`` serves it, its dwebsocket-style views and its ROOMCAST_APP hooks alike."""

from __future__ import annotations

import urllib.request

from roomcast.testing import reap_silent

from rawws import RawClient


def test_a_view_broadcasts_to_every_socket(roomcast_live_server, roomcast_client):
    # chat/views.py echo: every message goes to every socket the view has seen.
    ann = roomcast_client(roomcast_live_server, "/echo", query={"username": "ann"})
    ann.send("ann here")
    assert ann.receive() == "ann here"  # ann's view is running: it holds her socket
    bob = roomcast_client(roomcast_live_server, "/echo")
    bob.send("bob here")
    assert bob.receive() == "bob here"
    assert ann.receive() == "bob here"
    ann.send(b"\xff\x00raw")  # not UTF-8: the view sends it back as binary
    assert ann.receive() == b"\xff\x00raw"
    assert bob.receive() == b"\xff\x00raw"


def test_the_hooks_see_the_session_user(roomcast_live_server, roomcast_client, session_cookie):
    # chat/ws.py (ROOMCAST_APP): on_connect went through the middleware; the user was created
    # by the test, in the database the server's threads read (transactional_db).
    cat = roomcast_client(
        roomcast_live_server, "/live/socket", headers={"Cookie": session_cookie("cat")}
    )
    anon = roomcast_client(roomcast_live_server, "/live/socket")
    cat.send({"event": "say", "text": "meow"})
    assert cat.expect("said") == {"event": "said", "name": "cat", "text": "meow"}
    assert anon.expect("said", name="cat")["text"] == "meow"


def test_pages_are_served_on_the_same_port(roomcast_live_server):
    url = f"http://127.0.0.1:{roomcast_live_server.port}/echo?message=hi"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"hi"  # the echo view's plain HTTP branch


def test_a_silent_view_socket_is_reaped_without_waiting(roomcast_live_server, roomcast_client):
    answering = roomcast_client(roomcast_live_server, "/echo")
    silent = RawClient(roomcast_live_server.port, "/echo")
    assert silent.handshake().startswith("HTTP/1.1 101")
    reap_silent(roomcast_live_server)  # the project's heartbeat_interval is 30 s
    assert silent.recv_close()[0] == 1011
    silent.close()
    answering.send("still here")
    assert answering.receive() == "still here"
