"""permessage-deflate (RFC 7692): negotiated with real clients, compressed on the wire,
bounded when it inflates, and a broadcast's members served whatever each negotiated."""

from __future__ import annotations

import zlib

from websockets.sync.client import connect

import roomcast

from conftest import echo_app, log_lines, wait_for
from rawws import RawClient

OFFER = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    out = packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(data: bytes) -> bytes:
    return zlib.decompressobj(wbits=-15).decompress(data + b"\x00\x00\xff\xff")


def test_deflate_is_negotiated_and_large_messages_are_compressed_on_the_wire(start):
    server = start(echo_app(compression="deflate"))
    client = RawClient(server.port, headers=OFFER)
    head = client.handshake()
    assert (
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
        "client_no_context_takeover" in head
    )
    text = '{"event":"message","text":"' + "hello " * 200 + '"}'
    client.sock.sendall(client.frame(0x1, deflate(text.encode()), rsv1=True))
    first, payload = client.recv_raw()
    assert first & 0x40, "a large echo goes out compressed"
    assert len(payload) < len(text) / 4
    assert inflate(payload).decode() == text
    client.send(0x1, b"tiny")
    first, payload = client.recv_raw()
    assert not first & 0x40 and payload == b"tiny", "small messages are not compressed"
    client.close()


def test_an_independent_client_round_trips_text_and_binary(start):
    server = start(echo_app(compression="deflate", compression_threshold=0))
    with connect(server.url) as ws:  # websockets offers permessage-deflate by default
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        for message in ["x", "é" * 5000, b"\x00\x01" * 40_000, ""]:
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_compression_is_off_by_default(start):
    server = start(echo_app())
    client = RawClient(server.port, headers=OFFER)
    assert "Sec-WebSocket-Extensions" not in client.handshake()
    client.sock.sendall(client.frame(0x1, deflate(b"x" * 300), rsv1=True))
    assert client.recv_close()[0] == 1002, "RSV1 means nothing without the extension"
    client.close()


def test_a_zip_bomb_closes_with_1009_and_harms_no_one(start, caplog):
    server = start(echo_app(compression="deflate", max_message_size=1 << 20))
    bomb = deflate(b"\x00" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 100_000
    client = RawClient(server.port, headers=OFFER)
    client.handshake()
    client.sock.sendall(client.frame(0x2, bomb, rsv1=True))
    code, reason = client.recv_close()
    assert code == 1009 and "max_message_size" in reason
    client.close()
    wait_for(lambda: any("inflates to more than" in m for m in log_lines(caplog)))
    with connect(server.url) as ws:
        ws.send("still serving")
        assert ws.recv(timeout=5) == "still serving"


def test_corrupt_compressed_data_closes_with_1002(start):
    server = start(echo_app(compression="deflate"))
    client = RawClient(server.port, headers=OFFER)
    client.handshake()
    client.sock.sendall(client.frame(0x1, b"\xff\xfe\xfd not deflate", rsv1=True))
    assert client.recv_close()[0] == 1002
    client.close()


def test_a_broadcast_reaches_members_with_and_without_deflate(start):
    app = roomcast.Server(compression="deflate")

    @app.on_connect
    def join(conn: roomcast.Connection, request: object) -> None:
        conn.join("all")

    server = start(app)
    plain = RawClient(server.port)
    plain.handshake()
    deflating = RawClient(server.port, headers=OFFER)
    deflating.handshake()
    wait_for(lambda: len(app.room("all")) == 2)
    text = "news " * 100
    assert app.room("all").broadcast(text) == 2
    first, payload = plain.recv_raw()
    assert not first & 0x40 and payload.decode() == text
    first, payload = deflating.recv_raw()
    assert first & 0x40 and inflate(payload).decode() == text
    plain.close()
    deflating.close()
