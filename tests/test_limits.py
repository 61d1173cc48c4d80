"""Origin allow-list and connection limits, over real sockets: what the client gets, what
the log says, what the metrics count."""

from __future__ import annotations

import contextlib
import socket

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import roomcast

from conftest import log_lines, wait_for


def handshake(
    port: int, origin: str | None = None, source: str = "127.0.0.1", extra: tuple[str, ...] = ()
) -> str:
    """The status line and headers of a raw handshake from ``source``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    head = [
        "GET / HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        head.append(f"Origin: {origin}")
    head += extra
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    OPEN.append(sock)  # an accepted one stays open until the test ends
    return data.decode(errors="replace")


OPEN: list[socket.socket] = []


@pytest.fixture(autouse=True)
def close_sockets():
    yield
    for sock in OPEN:
        sock.close()
    OPEN.clear()


def test_origins_outside_the_allow_list_get_403(start, caplog):
    app = roomcast.Server(allowed_origins=["https://chat.example.com", "*.example.org"])
    server = start(app)
    assert handshake(server.port, "https://chat.example.com").startswith("HTTP/1.1 101")
    assert handshake(server.port, "https://a.example.org").startswith("HTTP/1.1 101")
    # Not a browser: no Origin, nothing to hijack.
    assert handshake(server.port).startswith("HTTP/1.1 101")
    refused = handshake(server.port, "https://evil.example.net")
    assert refused.startswith("HTTP/1.1 403")
    assert "origin https://evil.example.net is not allowed" in refused
    assert handshake(server.port, "http://chat.example.com").startswith("HTTP/1.1 403")
    assert handshake(server.port, "null").startswith("HTTP/1.1 403")
    wait_for(
        lambda: any(
            'Origin "https://evil.example.net" is not in allowed_origins; 403' in x
            for x in log_lines(caplog)
        ),
        what="the log line",
    )
    assert server.stats()["connections_refused"]["origin"] == {403: 3}
    # An independent client sees the refusal as the 403 it is.
    with pytest.raises(InvalidStatus) as refused_client:
        connect(server.url, origin="https://evil.example.net")
    assert refused_client.value.response.status_code == 403


def test_a_bad_origin_pattern_is_refused_at_start_saying_how_to_write_it():
    with pytest.raises(ValueError, match=r"https://example\.com"):
        roomcast.Server(allowed_origins=["https://example.com/path"]).start(port=0)


def test_max_connections_refuses_with_503_and_retry_after_then_admits_again(start, caplog):
    server = start(roomcast.Server(max_connections=2))
    with connect(server.url) as first, connect(server.url):
        third = handshake(server.port)
        assert third.startswith("HTTP/1.1 503")
        assert "Retry-After: 5" in third
        assert "max_connections" in third
        wait_for(
            lambda: any(
                "refused with 503" in x and "(max_connections)" in x for x in log_lines(caplog)
            ),
            what="the log line",
        )
        first.close()
        # The slot is given back: a new client is admitted.
        wait_for(lambda: handshake(server.port).startswith("HTTP/1.1 101"), what="a free slot")
    assert server.stats()["connections_refused"]["limit"][503] >= 1


def test_max_connections_per_ip_counts_each_address(start):
    server = start(roomcast.Server(max_connections_per_ip=1))
    assert handshake(server.port, source="127.0.0.1").startswith("HTTP/1.1 101")
    over = handshake(server.port, source="127.0.0.1")
    assert over.startswith("HTTP/1.1 503")
    assert "connections open from 127.0.0.1 (max_connections_per_ip)" in over
    # Another address on the loopback has its own allowance.
    assert handshake(server.port, source="127.0.0.2").startswith("HTTP/1.1 101")


def echo_app(**settings) -> roomcast.Server:
    app = roomcast.Server(**settings)

    @app.on_message
    def echo(conn, message):
        if conn.is_open:
            conn.send(message)

    return app


def test_a_client_over_its_message_rate_is_closed_with_1008(start, caplog):
    server = start(echo_app(rate_limit_messages=10))
    with connect(server.url) as ws:
        # The close may come while the client is still sending.
        with contextlib.suppress(ConnectionClosed):
            for i in range(100):
                ws.send(str(i))
        echoed = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                echoed.append(ws.recv(timeout=5))
    # At most the burst (2 s at 10/s, and what refilled while the client sent) was echoed:
    # the close follows at once, so the hooks of the last ones may find it closing.
    assert len(echoed) <= 25
    assert closed.value.rcvd.code == 1008
    assert "rate limit exceeded" in closed.value.rcvd.reason
    wait_for(
        lambda: any(
            "over its rate limit (10 messages/s, burst 2.0 s); closing with 1008" in x
            for x in log_lines(caplog)
        ),
        what="the log line",
    )
    assert server.stats()["rate_limited"] >= 1


def test_the_drop_policy_keeps_the_client_and_counts_what_it_dropped(start, caplog):
    server = start(echo_app(rate_limit_messages=10, rate_limit_policy="drop"))
    with connect(server.url) as ws:
        for i in range(100):
            ws.send(str(i))
        echoed = []
        try:
            while True:
                echoed.append(ws.recv(timeout=1))
        except TimeoutError:
            pass
        assert echoed == [str(i) for i in range(len(echoed))]  # the first ones, in order
        assert 20 <= len(echoed) <= 25  # the burst, and what refilled while the client sent
        assert server.stats()["rate_limited"] == 100 - len(echoed)
        # The rate refills: a message a little later goes through.
        ws.send("later")
        assert ws.recv(timeout=5) == "later"
    wait_for(lambda: any("dropping what it sends too fast" in x for x in log_lines(caplog)))


def test_bad_rate_settings_are_refused():
    with pytest.raises(ValueError, match="rate_limit_messages"):
        roomcast.Server(rate_limit_messages=0).start(port=0)
    with pytest.raises(ValueError, match="rate_limit_policy"):
        roomcast.Server(rate_limit_messages=1, rate_limit_policy="block").start(port=0)


def test_behind_a_trusted_proxy_the_client_is_who_it_forwards(start):
    seen = []
    app = roomcast.Server(trusted_proxies=["127.0.0.1"], max_connections_per_ip=1)
    app.on_connect(lambda conn, request: seen.append(conn.remote_addr))
    server = start(app)
    xff = ("X-Forwarded-For: 198.51.100.1, 203.0.113.7",)
    assert handshake(server.port, extra=xff).startswith("HTTP/1.1 101")
    assert seen == [("203.0.113.7", 0)]
    # Each client behind the proxy has its own allowance...
    other = ("Forwarded: for=203.0.113.8",)
    assert handshake(server.port, extra=other).startswith("HTTP/1.1 101")
    # ...and one client's second socket is over it.
    over = handshake(server.port, extra=xff)
    assert over.startswith("HTTP/1.1 503")
    assert "from 203.0.113.7 (max_connections_per_ip)" in over


def test_forwarding_headers_from_anyone_else_are_ignored(start):
    seen = []
    app = roomcast.Server(max_connections_per_ip=1)
    app.on_connect(lambda conn, request: seen.append(conn.remote_addr[0]))
    server = start(app)
    assert handshake(server.port, extra=("X-Forwarded-For: 203.0.113.7",)).startswith(
        "HTTP/1.1 101"
    )
    assert seen == ["127.0.0.1"]
    # A forged header does not buy a second allowance.
    forged = handshake(server.port, extra=("X-Forwarded-For: 203.0.113.9",))
    assert forged.startswith("HTTP/1.1 503")


def test_a_bad_trusted_proxy_is_refused_at_start():
    with pytest.raises(ValueError, match="trusted_proxies"):
        roomcast.Server(trusted_proxies=["proxy.internal"]).start(port=0)


def test_handshakes_per_address_are_rate_limited_with_429(start, caplog):
    server = start(roomcast.Server(handshake_rate_per_ip=2))
    # The burst: two seconds at 2/s.
    results = [handshake(server.port) for _ in range(6)]
    assert sum(r.startswith("HTTP/1.1 101") for r in results) in (4, 5)  # + what refilled
    refused = [r for r in results if not r.startswith("HTTP/1.1 101")]
    assert refused and all(r.startswith("HTTP/1.1 429") for r in refused)
    assert "Retry-After: 1" in refused[0]
    assert "(handshake_rate_per_ip)" in refused[0]
    wait_for(lambda: any("refused with 429" in x for x in log_lines(caplog)), what="the log line")
    # Another address is not slowed by this one.
    assert handshake(server.port, source="127.0.0.2").startswith("HTTP/1.1 101")
    assert server.stats()["connections_refused"]["limit"][429] == len(refused)
