"""The HTTP side: routing by path, plain HTTP, malformed and oversized handshakes."""

from __future__ import annotations

import socket

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import roomcast

from conftest import log_lines, wait_for
from rawws import RawClient, http_request


def test_unserved_paths_get_404_and_served_ones_open(start, caplog):
    app = roomcast.Server(paths=["/ws"])
    server = start(app)
    with pytest.raises(InvalidStatus) as missing:
        connect(f"{server.url}/elsewhere")
    assert missing.value.response.status_code == 404
    with connect(f"{server.url}/ws") as ws:
        ws.ping().wait(5)
    wait_for(
        lambda: any("no WebSocket endpoint at /elsewhere" in x for x in log_lines(caplog)),
        what="the 404 log line",
    )


def test_plain_http_gets_a_clear_426_page(start):
    server = start(roomcast.Server())
    status, text = http_request(server.port, b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 426
    assert "WebSocket endpoint" in text
    assert "Upgrade: websocket" in text


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
        (
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            426,
        ),
        (b"POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 405),
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400),
    ],
)
def test_bad_handshakes_get_their_status(start, raw, status):
    server = start(roomcast.Server())
    assert http_request(server.port, raw)[0] == status


def test_oversized_request_head_gets_431(start, caplog):
    server = start(roomcast.Server(max_header_bytes=1024))
    raw = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
    status, text = http_request(server.port, raw)
    assert status == 431
    assert "max_header_bytes" in text
    wait_for(lambda: any("431" in x for x in log_lines(caplog)), what="the 431 log line")


def test_a_silent_client_gets_408_after_the_handshake_timeout(start):
    server = start(roomcast.Server(handshake_timeout=0.3))
    status, _ = http_request(server.port, b"GET / HTTP/1.1\r\n")
    assert status == 408


def test_on_connect_that_never_decides_gets_503(start, caplog):
    import threading

    release = threading.Event()
    app = roomcast.Server(handshake_timeout=0.3)

    @app.on_connect
    def stuck(conn, request):
        release.wait(5)

    server = start(app)
    try:
        with pytest.raises(InvalidStatus) as late:
            connect(server.url)
        assert late.value.response.status_code == 503
    finally:
        release.set()
    wait_for(lambda: any("did not decide" in x for x in log_lines(caplog)), what="log line")


def test_a_late_yes_from_on_connect_runs_on_disconnect_with_1006(start):
    import threading

    release = threading.Event()
    gone: list[tuple[int, str]] = []
    app = roomcast.Server(handshake_timeout=0.3)

    @app.on_connect
    def late(conn, request):
        release.wait(5)
        return True  # accepted, but the handshake already got 503

    app.on_disconnect(lambda conn, code, reason: gone.append((code, reason)))
    server = start(app)
    with pytest.raises(InvalidStatus):
        connect(server.url)
    release.set()
    # on_connect may have set things up for the connection: on_disconnect tells it to stop.
    wait_for(lambda: gone, what="on_disconnect after the late accept")
    assert gone[0][0] == 1006 and "handshake" in gone[0][1]


def test_frames_sent_with_the_handshake_are_not_lost(start):
    app = roomcast.Server()
    app.on_message(lambda conn, msg: conn.send(msg))
    server = start(app)
    client = RawClient(server.port)
    head = client.handshake(extra=RawClient.frame(0x1, b"early"))
    assert head.startswith("HTTP/1.1 101")
    assert client.recv_frame() == (0x1, b"early")
    client.close()


def test_ipv6_and_port_in_use_errors():
    app = roomcast.Server()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=r"could not listen on 127\.0\.0\.1"):
            app.start(port=port)
