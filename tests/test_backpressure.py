"""Slow readers: the queue bound, the overflow policies, and buffered_amount."""

from __future__ import annotations

import time

from websockets.sync.client import connect

import roomcast

from conftest import log_lines, wait_for
from rawws import RawClient

CHUNK = "z" * 65536


def slow_reader(port: int) -> RawClient:
    # Set before connecting, so the window the client advertises stays small.
    client = RawClient(port, rcvbuf=4096)
    assert client.handshake().startswith("HTTP/1.1 101")
    return client


def test_a_slow_reader_hitting_the_queue_bound_is_closed_with_1013(start, caplog):
    closed = []
    conns = []
    app = roomcast.Server(queue_size=8, close_timeout=0.5)
    app.on_connect(lambda conn, request: conns.append(conn))
    app.on_disconnect(lambda conn, code, reason: closed.append((conn.id, code, reason)))
    server = start(app)
    slow = slow_reader(server.port)
    with connect(server.url) as fast:
        slow_conn, fast_conn = wait_for(lambda: len(conns) == 2 and conns, what="connections")
        for conn in (slow_conn, fast_conn):
            conn.join("feed")
        sent = 0
        while slow_conn.is_open and sent < 10_000:
            app.room("feed").broadcast(CHUNK, exclude=fast_conn)
            sent += 1
        assert not slow_conn.is_open, "the slow reader should have overflowed"
        # The fast member of the same room is unaffected.
        app.room("feed").broadcast("fast one")
        assert fast.recv(timeout=5) == "fast one"
    found = wait_for(lambda: [c for c in closed if c[0] == slow_conn.id], what="on_disconnect")
    assert found[0][1] == 1013
    assert "queue full" in found[0][2]
    wait_for(lambda: any("outbound queue full" in x and "1013" in x for x in log_lines(caplog)))
    slow.close()


def test_the_queue_is_bounded_in_bytes_not_only_frames(start, caplog):
    # 1024 frames of 64 KiB would be 64 MiB held for a client that never reads; the byte
    # bound (256 KiB here) closes it long before.
    conns = []
    peak = []
    app = roomcast.Server(queue_bytes=256 * 1024, close_timeout=0.5)
    app.on_connect(lambda conn, request: conns.append(conn))
    server = start(app)
    slow = slow_reader(server.port)
    conn = wait_for(lambda: conns and conns[0], what="connection")
    sent = 0
    while conn.is_open and sent < 1000:
        conn.send(CHUNK)
        peak.append(conn.buffered_amount)
        sent += 1
    assert not conn.is_open, "the byte bound should have closed the slow reader"
    assert sent < 64, f"{sent} chunks of 64 KiB queued before the 256 KiB bound closed it"
    assert max(peak) <= 256 * 1024
    wait_for(
        lambda: any("queue_bytes 262144 bytes); closing with 1013" in x for x in log_lines(caplog)),
        what="the log line naming the bound",
    )
    # One message larger than the bound still goes out on an empty queue.
    with connect(server.url, max_size=None) as ok:
        big = wait_for(lambda: len(conns) == 2 and conns[1], what="second connection")
        big.send("y" * (512 * 1024))
        assert len(ok.recv(timeout=5)) == 512 * 1024
    slow.close()


def test_drop_policy_keeps_the_connection(start, caplog):
    conns = []
    app = roomcast.Server(queue_size=4, overflow="drop")
    app.on_connect(lambda conn, request: conns.append(conn))
    server = start(app)
    slow = slow_reader(server.port)
    conn = wait_for(lambda: conns and conns[0], what="connection")
    for _ in range(200):
        conn.send(CHUNK)
    assert conn.is_open
    assert conn.buffered_amount > 0
    wait_for(lambda: any("dropping messages" in x for x in log_lines(caplog)), what="log line")
    slow.close()


def test_buffered_amount_drains_to_zero(start):
    conns = []
    app = roomcast.Server()
    app.on_connect(lambda conn, request: conns.append(conn))
    server = start(app)
    with connect(server.url) as ws:
        conn = wait_for(lambda: conns and conns[0], what="connection")
        for _ in range(10):
            conn.send(CHUNK)
        for _ in range(10):
            assert ws.recv(timeout=5) == CHUNK
        wait_for(lambda: conn.buffered_amount == 0, what="the queue to drain")


def test_a_flooding_client_is_paused_not_buffered_without_bound(start, caplog):
    import threading

    release = threading.Event()
    got = []
    app = roomcast.Server(mailbox_limit=4, workers=1)

    @app.on_message
    def slow_hook(conn, msg):
        release.wait(10)
        got.append(msg)

    server = start(app)
    with connect(server.url) as ws:
        for i in range(200):
            ws.send(str(i))
        core = server._core
        wait_for(lambda: core.pending_events() >= 4, what="the mailbox to fill")
        time.sleep(0.2)  # give a reader that ignored the limit time to queue more
        assert core.pending_events() <= 4
        release.set()
        wait_for(lambda: len(got) == 200, timeout=10, what="every message")
    # Nothing lost, in order, although the server stopped reading while the hook was stuck.
    assert got == [str(i) for i in range(200)]
    wait_for(lambda: any("reading paused" in x for x in log_lines(caplog)), what="log line")
