"""Backpressure that async code awaits: ``await conn.drain()`` and ``await room.drain()``.

The slow clients are raw sockets with a small receive buffer that read nothing until told to,
so the server's queue really fills; the producers are async (a hook on the app's loop, or code
beside ``async with app.serve()`` on the test's loop).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest

import roomcast
from roomcast import ConnectionClosed

from conftest import wait_for
from rawws import RawClient

QUEUE_BYTES = 64 * 1024
LOW_WATER = QUEUE_BYTES // 2
CHUNK = 16 * 1024
# 8 MiB in all. Loopback socket buffers take 2.5-4 MiB of a client that reads nothing, even
# with a 4 KiB SO_RCVBUF (the server's send buffer grows to tcp_wmem's maximum): 1 MiB would
# never make the producer wait.
COUNT = 512


def message(i: int) -> str:
    """Message ``i``: its number first, so that order and loss show."""
    return f"{i:06d}".ljust(CHUNK, "x")


@pytest.fixture
def slow_client() -> Iterator[Callable[[int], RawClient]]:
    """``slow_client(port)``: a client that reads nothing until the test reads for it, with a
    4 KiB receive buffer; closed after the test."""
    clients: list[RawClient] = []

    def connect(port: int) -> RawClient:
        client = RawClient(port, rcvbuf=4096)
        clients.append(client)
        assert client.handshake().startswith("HTTP/1.1 101")
        return client

    yield connect
    for client in clients:
        client.close()


def read_messages(client: RawClient, n: int) -> list[str]:
    """Reads ``n`` text messages (skipping Pings); fails on a Close."""
    got: list[str] = []
    while len(got) < n:
        opcode, payload = client.recv_frame()
        assert opcode != 0x8, f"closed after {len(got)} messages: {payload[:2]!r} {payload[2:]!r}"
        if opcode == 0x1:
            got.append(payload.decode())
    return got


def expect_all(got: list[str]) -> None:
    assert len(got) == COUNT
    assert [int(m[:6]) for m in got] == list(range(COUNT)), "lost or out of order"
    assert got == [message(i) for i in range(COUNT)]


def track(app: roomcast.Server) -> tuple[list[roomcast.Connection], list[tuple[int, int, str]]]:
    conns: list[roomcast.Connection] = []
    closed: list[tuple[int, int, str]] = []
    app.on_connect(lambda conn, request: conns.append(conn))
    app.on_disconnect(lambda conn, code, reason: closed.append((conn.id, code, reason)))
    return conns, closed


async def until(predicate: Any, timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)
    return value


class Producer:
    """Sends ``COUNT`` messages of 16 KiB, awaiting ``drain()`` before each; records what it saw."""

    def __init__(self, conn: roomcast.Connection):
        self.conn = conn
        self.blocked = 0  # drains that had to wait
        self.waiting = threading.Event()  # inside a drain that waits, now
        self.peak = 0  # the most ever queued, right after a send
        self.after_drain: list[int] = []  # what was queued when each waiting drain returned
        self.results: list[bool] = []

    async def run(self) -> None:
        conn = self.conn
        for i in range(COUNT):
            above = conn.buffered_amount > LOW_WATER
            if above:
                self.waiting.set()
            ok = await conn.drain()
            self.waiting.clear()
            self.results.append(ok)
            if above:
                self.blocked += 1
                self.after_drain.append(conn.buffered_amount)
            conn.send(message(i))
            self.peak = max(self.peak, conn.buffered_amount)


def check_producer(p: Producer) -> None:
    assert all(p.results), "a drain without a timeout returned False"
    assert p.blocked >= 1, "drain never had to wait: the test did not fill the queue"
    assert p.peak <= QUEUE_BYTES, f"{p.peak} bytes queued, over queue_bytes"
    # Woken at the low-water mark: by then the writer took the queue down to half or less.
    assert max(p.after_drain) <= LOW_WATER, p.after_drain


def test_a_producer_beside_serve_waits_for_a_slow_reader_and_loses_nothing(slow_client):
    app = roomcast.Server(queue_bytes=QUEUE_BYTES, close_timeout=0.5)
    conns, closed = track(app)

    async def scenario() -> None:
        async with app.serve() as server:
            client = slow_client(server.port)
            conn = await until(lambda: conns and conns[0], what="the connection")
            producer = Producer(conn)
            task = asyncio.ensure_future(producer.run())
            # The client reads nothing: the producer must end up waiting in drain().
            await until(
                lambda: producer.waiting.is_set() or task.done(),
                what="the producer to wait in drain()",
            )
            if task.done():
                task.result()  # its error, if it failed
            await asyncio.sleep(0.3)
            assert not task.done()
            assert producer.waiting.is_set(), "drain returned although nobody read"
            assert conn.is_open
            assert LOW_WATER < conn.buffered_amount <= QUEUE_BYTES
            # Now it reads: every message arrives, in order, and the producer finishes.
            got = await asyncio.to_thread(read_messages, client, COUNT)
            await asyncio.wait_for(task, 5)
            expect_all(got)
            check_producer(producer)
            assert conn.is_open and not closed
            assert server.stats()["slow_consumer_closes"] == 0

    asyncio.run(scenario())


def test_an_async_hook_awaiting_drain_waits_on_the_apps_loop(start, slow_client):
    app = roomcast.Server(queue_bytes=QUEUE_BYTES, close_timeout=0.5)
    conns, closed = track(app)
    producers: list[Producer] = []
    done = threading.Event()

    @app.on_message
    async def produce(conn, msg):
        producer = Producer(conn)
        producers.append(producer)
        await producer.run()
        done.set()

    server = start(app)
    client = slow_client(server.port)
    conn = wait_for(lambda: conns and conns[0], what="the connection")
    client.send(0x1, b"go")
    producer = wait_for(lambda: producers and producers[0], what="the hook")
    wait_for(lambda: producer.waiting.is_set() or done.is_set(), what="the hook to wait")
    assert not done.is_set(), "the hook ended without waiting in drain()"
    # It stays there while nobody reads, the queue within its bound, the connection open.
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        assert conn.buffered_amount <= QUEUE_BYTES
        assert not done.is_set()
        time.sleep(0.01)
    assert producer.waiting.is_set() and conn.is_open
    expect_all(read_messages(client, COUNT))
    assert done.wait(5)
    check_producer(producer)
    assert conn.is_open and not closed


def fill(conn: roomcast.Connection, *also: roomcast.Connection, send: Any = None) -> int:
    """Sends 16 KiB messages (``conn.send``, or ``send``) without overflowing ``conn`` or
    ``also``, until the client of ``conn``, which reads nothing, has its socket buffers full
    and its queue stuck above the low-water mark; returns how many."""
    send = send or conn.send
    sent = 0
    stuck_since: Optional[float] = None
    while True:
        assert sent < 600, "the queue never filled: the socket buffers took 9 MiB?"
        while all(c.buffered_amount + CHUNK <= QUEUE_BYTES for c in (conn, *also)):
            send(message(sent))
            sent += 1
        before = conn.buffered_amount
        time.sleep(0.02)
        if conn.buffered_amount != before or before <= LOW_WATER:
            stuck_since = None
        elif stuck_since is None:
            stuck_since = time.monotonic()
        elif time.monotonic() - stuck_since > 0.2:
            assert conn.is_open
            return sent


def test_drain_times_out_with_false_and_returns_true_at_once_when_empty(slow_client):
    app = roomcast.Server(queue_bytes=QUEUE_BYTES, close_timeout=0.5)
    conns, closed = track(app)

    async def scenario() -> None:
        async with app.serve() as server:
            slow_client(server.port)
            conn = await until(lambda: conns and conns[0], what="the connection")
            assert await conn.drain() is True  # nothing queued: at once
            assert await conn.drain(timeout=0) is True
            await asyncio.to_thread(fill, conn)
            start = time.monotonic()
            assert await conn.drain(timeout=0.3) is False
            assert time.monotonic() - start >= 0.25
            assert await conn.drain(timeout=0) is False
            # asyncio's own timeout cancels the wait as well.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(conn.drain(), 0.1)
            for bad in (-1.0, float("nan")):
                with pytest.raises(ValueError, match="timeout"):
                    await conn.drain(timeout=bad)
            assert conn.is_open and not closed

    asyncio.run(scenario())


@pytest.mark.parametrize("who", ["server", "client"])
def test_a_closing_connection_ends_a_waiting_drain(who, slow_client):
    app = roomcast.Server(queue_bytes=QUEUE_BYTES, close_timeout=0.5)
    conns, _closed = track(app)

    async def scenario() -> None:
        async with app.serve() as server:
            client = slow_client(server.port)
            conn = await until(lambda: conns and conns[0], what="the connection")
            await asyncio.to_thread(fill, conn)
            waiters = [asyncio.ensure_future(conn.drain(timeout=30)) for _ in range(3)]
            await asyncio.sleep(0.2)
            assert not any(w.done() for w in waiters)
            start = time.monotonic()
            if who == "server":
                conn.close(1000, "bye")
            else:
                client.close()  # unread data: the kernel resets the connection
            results = await asyncio.wait_for(asyncio.gather(*waiters), 5)
            assert results == [True, True, True]
            # At once: not when the writer gives up on the client (close_timeout + 1 s later).
            assert time.monotonic() - start < 0.5
            assert not conn.is_open
            # The producer's loop ends on its next send; drain itself returns at once now.
            with pytest.raises(ConnectionClosed):
                conn.send("more")
            assert await conn.drain() is True

    asyncio.run(scenario())


def os_threads() -> Optional[int]:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def test_waiters_hold_no_thread(slow_client):
    app = roomcast.Server(queue_bytes=QUEUE_BYTES, close_timeout=0.5)
    conns, _closed = track(app)

    async def scenario() -> None:
        async with app.serve() as server:
            client = slow_client(server.port)
            conn = await until(lambda: conns and conns[0], what="the connection")
            sent = await asyncio.to_thread(fill, conn)
            # One wait first, so that the drain runtime's own threads exist already.
            assert await conn.drain(timeout=0.01) is False
            before = os_threads()
            waiters = [asyncio.ensure_future(conn.drain()) for _ in range(200)]
            await asyncio.sleep(0.3)
            during = os_threads()
            assert not any(w.done() for w in waiters)
            if before is not None and during is not None:
                assert during - before < 10, f"{during - before} threads for 200 waiters"
            await asyncio.to_thread(read_messages, client, sent)
            assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True] * 200

    asyncio.run(scenario())


def test_room_drain_names_the_slow_member_then_returns_empty(slow_client):
    app = roomcast.Server(queue_bytes=QUEUE_BYTES, close_timeout=0.5)
    conns, closed = track(app)

    async def scenario() -> None:
        async with app.serve() as server:
            room = app.room("feed")
            assert await room.drain() == []  # no members: nothing to wait for
            slow = slow_client(server.port)
            fast = slow_client(server.port)
            slow_conn, fast_conn = await until(
                lambda: len(conns) == 2 and conns, what="the connections"
            )
            for conn in (slow_conn, fast_conn):
                conn.join("feed")
            # The fast member reads everything as it comes, up to "end"; the slow one nothing.
            fast_got: list[str] = []

            def read_fast() -> None:
                while True:
                    opcode, payload = fast.recv_frame()
                    if opcode == 0x1 and payload == b"end":
                        return
                    if opcode == 0x1:
                        fast_got.append(payload.decode())

            reader = threading.Thread(target=read_fast, daemon=True)
            reader.start()

            def to_room(msg: str) -> None:
                assert room.broadcast(msg) == 2

            sent = await asyncio.to_thread(fill, slow_conn, fast_conn, send=to_room)
            fast_conn.send("end")
            start = time.monotonic()
            lagging = await room.drain(timeout=0.5)
            assert time.monotonic() - start >= 0.45
            assert lagging == [slow_conn]
            await asyncio.to_thread(reader.join, 5)
            assert fast_got == [message(i) for i in range(sent)]
            # Once the slow member reads, the room drains fully.
            slow_reader = asyncio.ensure_future(asyncio.to_thread(read_messages, slow, sent))
            start = time.monotonic()
            assert await room.drain(timeout=10) == []
            assert time.monotonic() - start < 5, "woken by the timeout, not by the reads"
            got = await asyncio.wait_for(slow_reader, 5)
            assert got == [message(i) for i in range(sent)]
            assert slow_conn.is_open and fast_conn.is_open and not closed

    asyncio.run(scenario())
