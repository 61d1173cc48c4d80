"""The event-driven style beside the views (examples/django_chat/chat/ws.py, ROOMCAST_APP)."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import urllib.parse

from websockets.sync.client import connect


def post(port: int, path: str, form: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = urllib.parse.urlencode(form)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_on_connect_sees_the_session_user_and_hooks_broadcast(runws, session_cookie):
    cookie = session_cookie("cat")
    server = runws()
    url = f"ws://127.0.0.1:{server.port}/live/socket"
    with connect(url, additional_headers={"Cookie": cookie}) as cat, connect(url) as anon:
        cat.send(json.dumps({"event": "say", "text": "meow"}))
        expected = {"event": "said", "name": "cat", "text": "meow"}
        assert json.loads(cat.recv(timeout=5)) == expected
        assert json.loads(anon.recv(timeout=5)) == expected
        anon.send(json.dumps({"event": "say", "text": "hi"}))
        assert json.loads(cat.recv(timeout=5))["name"] == "anonymous"


def test_a_django_view_broadcasts_to_the_sockets(runws):
    server = runws()
    url = f"ws://127.0.0.1:{server.port}/live/socket"
    with connect(url) as a, connect(url) as b:
        status, body = post(server.port, "/live/notify", {"text": "deploy at 5"})
        assert status == 200 and json.loads(body) == {"sent": 2}
        for ws in (a, b):
            assert json.loads(ws.recv(timeout=5)) == {"event": "notice", "text": "deploy at 5"}


def test_event_sockets_hold_no_thread(runws):
    server = runws()
    url = f"ws://127.0.0.1:{server.port}/live/socket"

    def server_threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name.startswith("roomcast"))

    before = server_threads()
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(url)) for _ in range(40)]
        sockets[0].send(json.dumps({"event": "say", "text": "all"}))
        for ws in sockets:
            assert json.loads(ws.recv(timeout=5))["text"] == "all"
        assert server.app.django_views.open == 0
        assert server_threads() == before  # a dwebsocket view would hold one per socket
