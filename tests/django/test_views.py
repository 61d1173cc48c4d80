"""The seed-003 view (examples/django_chat/chat/views.py, dwebsocket's API) over real sockets,
with the project's pages on the same port."""

from __future__ import annotations

import contextlib
import http.client
import os

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import log_lines, wait_for


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def ws_url(server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def test_echo_and_broadcast_to_every_socket(runws):
    server = runws()
    url = ws_url(server, "/echo?username=zhangsan&token=xxxx")
    with connect(url) as a, connect(url) as b:
        a.send("hahahahhahaha")
        # The view sends each message to every socket in its list, the sender included.
        assert a.recv(timeout=5) == "hahahahhahaha"
        assert b.recv(timeout=5) == "hahahahhahaha"
        b.send("从 b")
        assert a.recv(timeout=5) == "从 b"
        assert b.recv(timeout=5) == "从 b"


def test_binary_messages_arrive_as_bytes_and_go_back_as_binary(runws):
    server = runws()
    with connect(ws_url(server, "/echo")) as ws:
        ws.send(b"\xff\x00raw")
        assert ws.recv(timeout=5) == b"\xff\x00raw"
        ws.send("text")
        assert ws.recv(timeout=5) == "text"


def test_http_on_the_same_port(runws, settings):
    settings.DEBUG = True  # pytest-django turns it off; runserver serves static files in DEBUG
    server = runws()
    assert get(server.port, "/echo?message=hi") == (200, b"hi")  # the view's HTTP branch
    status, page = get(server.port, "/")
    assert status == 200 and b"/echo?username=zhangsan" in page
    status, _ = get(server.port, "/admin/login/")
    assert status == 200
    status, css = get(server.port, "/static/admin/css/base.css")  # DEBUG static files
    assert status == 200 and b"{" in css


def test_require_websocket_answers_plain_http_with_400(runws):
    server = runws()
    assert get(server.port, "/clock")[0] == 400
    with connect(ws_url(server, "/clock")) as ws:
        assert len(ws.recv(timeout=5)) == len("12:34:56")


def test_a_view_without_the_decorator_refuses_websockets(runws):
    server = runws()
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, "/live/"))  # a page, not a WebSocket view
    assert refused.value.response.status_code == 400


def test_without_a_roomcast_app_unknown_paths_get_404(runws, settings):
    settings.ROOMCAST_APP = None
    server = runws()
    with pytest.raises(InvalidStatus) as missing:
        connect(ws_url(server, "/nowhere"))
    assert missing.value.response.status_code == 404


def test_an_idle_socket_stays_open_past_nine_seconds(runws):
    server = runws()
    with connect(ws_url(server, "/echo")) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=10)  # dwebsocket's head ended the view after 9 s of silence
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"


def test_a_closed_client_is_skipped_by_the_broadcast_loop(runws):
    server = runws()
    url = ws_url(server, "/echo")
    with connect(url) as a:
        with connect(url) as b:
            a.send("both")
            assert b.recv(timeout=5) == "both"
            assert a.recv(timeout=5) == "both"
        # b is closed but stays in the view's list: sends to it must do nothing.
        for i in range(3):
            a.send(f"after {i}")
            assert a.recv(timeout=5) == f"after {i}"


def test_the_session_user_is_visible_in_a_websocket_view(runws, session_cookie):
    cookie = session_cookie("ann")
    server = runws()
    with connect(ws_url(server, "/whoami"), additional_headers={"Cookie": cookie}) as ws:
        assert ws.recv(timeout=5) == "ann"
        ws.send("again")
        assert ws.recv(timeout=5) == "ann"
    with connect(ws_url(server, "/whoami")) as ws:
        assert ws.recv(timeout=5) == "anonymous"
    assert get(server.port, "/whoami", {"Cookie": cookie}) == (200, b"ann")


def test_the_thread_cap_refuses_with_503(runws, settings, caplog):
    settings.ROOMCAST_VIEW_THREADS = 2
    server = runws()
    url = ws_url(server, "/echo")
    with connect(url) as a, connect(url) as b:
        a.send("x")
        b.recv(timeout=5)
        with pytest.raises(InvalidStatus) as refused:
            connect(url)
        assert refused.value.response.status_code == 503
        assert any("ROOMCAST_VIEW_THREADS" in line for line in log_lines(caplog))
    # Closed sockets give their threads back.
    wait_for(lambda: server.app.django_views.open == 0, what="the view threads to end")
    with connect(url) as c:
        c.send("room again")
        assert c.recv(timeout=5) == "room again"


def _db_files_open(path: str) -> int:
    fds = os.listdir("/proc/self/fd")
    return sum(1 for fd in fds if _target(fd) == path)


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_no_database_connection_is_left_open_after_sockets_close(runws, settings, session_cookie):
    from django.db import connection

    db = os.path.realpath(settings.DATABASES["default"]["NAME"])
    cookie = session_cookie("bob")
    connection.close()  # the test's own connection is not the server's
    before = _db_files_open(db)
    server = runws()
    with contextlib.ExitStack() as stack:
        for _ in range(4):
            ws = stack.enter_context(
                connect(ws_url(server, "/whoami"), additional_headers={"Cookie": cookie})
            )
            assert ws.recv(timeout=5) == "bob"  # each view thread queried the database
        assert _db_files_open(db) > before
    wait_for(lambda: server.app.django_views.open == 0, what="the view threads to end")
    wait_for(lambda: _db_files_open(db) == before, what="the views' connections to close")


def test_a_view_that_raises_closes_with_1011_and_the_server_goes_on(runws):
    server = runws()
    with connect(ws_url(server, "/fail")) as ws:
        ws.send("trigger")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 1011
    with connect(ws_url(server, "/echo")) as ws:
        ws.send("fine")
        assert ws.recv(timeout=5) == "fine"
