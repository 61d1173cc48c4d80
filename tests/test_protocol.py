"""Clients that break the protocol get the RFC 6455 close code and affect nobody else."""

from __future__ import annotations

import pytest
from websockets.sync.client import connect

import roomcast

from conftest import log_lines, wait_for
from rawws import RawClient


@pytest.fixture
def echo(start):
    closed = []
    app = roomcast.Server(max_message_size=1024)
    app.on_message(lambda conn, msg: conn.send(msg))
    app.on_disconnect(lambda conn, code, reason: closed.append((code, reason)))
    server = start(app)
    server.closed = closed
    return server


def opened(server) -> RawClient:
    client = RawClient(server.port)
    assert client.handshake().startswith("HTTP/1.1 101")
    return client


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (RawClient.frame(0x1, b"unmasked", mask=False), 1002),
        (RawClient.frame(0x1, b"\xff\xfe bad utf-8"), 1007),
        (RawClient.frame(0x2, b"x" * 2048), 1009),
        (RawClient.frame(0x3, b"reserved opcode"), 1002),
        (RawClient.frame(0x9, b"p" * 126), 1002),
    ],
    ids=["unmasked", "bad-utf8", "too-big", "bad-opcode", "big-control"],
)
def test_violations_get_their_close_code(echo, caplog, frame, code):
    with connect(echo.url) as bystander:
        client = opened(echo)
        client.sock.sendall(frame)
        got, reason = client.recv_close()
        assert got == code
        assert reason
        assert client.at_eof()
        client.close()
        # Nothing else was affected.
        bystander.send("still here")
        assert bystander.recv(timeout=5) == "still here"
    wait_for(lambda: any(c == code for c, _ in echo.closed), what="on_disconnect")
    wait_for(lambda: any(f"closing with {code}" in x for x in log_lines(caplog)), what="log line")


def test_messages_at_the_limit_pass(echo):
    with connect(echo.url) as ws:
        ws.send("y" * 1024)
        assert ws.recv(timeout=5) == "y" * 1024


def test_fragmented_messages_are_reassembled(echo):
    client = opened(echo)
    client.sock.sendall(RawClient.frame(0x1, b"frag", fin=False) + RawClient.frame(0x0, b"ment"))
    assert client.recv_frame() == (0x1, b"fragment")
    client.close()
