"""``server.stats()``, the Prometheus collector and the metrics path, over real sockets: every
counter moves when its event happens, and both Prometheus outputs parse and agree."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from chatclient import ChatClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import roomcast
from roomcast import presets
from roomcast.metrics import RoomcastCollector

from conftest import wait_for
from rawws import RawClient, http_request

CHUNK = "z" * 65536


def settled(server: Any, **want: Any) -> dict[str, Any]:
    """``stats()`` once every key in ``want`` has its value (a worker hands its hook times
    over when it ends its batch; a writer counts a batch once it is on the socket)."""

    def check() -> Any:
        stats = server.stats()
        return stats if all(stats[k] == v for k, v in want.items()) else None

    try:
        return wait_for(check, what=f"stats {want}")
    except AssertionError:
        raise AssertionError(f"wanted {want}, got {server.stats()}") from None


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    status, text = http_request(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = text.partition("\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:])
    return status, {k.lower(): v for k, v in headers.items()}, body


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], name: str, **labels: str) -> float:
    for family in fams.values():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"no sample {name}{labels}")


def assert_same_families(core: str, collector: str) -> None:
    """The core's exposition and the collector's output have the same families, types,
    help and samples."""
    ours, theirs = families(core), families(collector)
    assert set(theirs) == set(ours)
    for name, family in ours.items():
        other = theirs[name]
        assert (family.type, family.documentation) == (other.type, other.documentation), name
        if name == "roomcast_runtime_tasks":
            # The core's count includes the task answering that very scrape; the collector's
            # stats() has no scrape under way.
            continue
        mine = sorted((s.name, sorted(s.labels.items()), float(s.value)) for s in family.samples)
        got = sorted((s.name, sorted(s.labels.items()), float(s.value)) for s in other.samples)
        assert mine == got, name


def test_traffic_rooms_and_broadcasts_are_counted(start):
    calls = []
    app = roomcast.Server()

    @app.on_connect
    def join(conn, request):
        calls.append("connect")
        conn.join("lobby")

    @app.on_message
    def message(conn, msg):
        calls.append("message")
        if msg == "all":
            app.room("lobby").broadcast("x" * 10)
        else:
            conn.send(msg)

    server = start(app)
    assert server.stats()["connections_open"] == 0
    with connect(server.url) as a, connect(server.url) as b, connect(server.url) as c:
        settled(server, connections_open=3, connections_accepted=3, rooms=1, room_members=3)
        a.send("hello")
        assert a.recv(timeout=5) == "hello"
        a.send("é")  # bytes, not characters
        assert a.recv(timeout=5) == "é"
        b.send(b"\x00\x01\x02")
        assert b.recv(timeout=5) == b"\x00\x01\x02"
        c.send("all")
        for ws in (a, b, c):
            assert ws.recv(timeout=5) == "x" * 10
        stats = settled(server, messages_sent=6, hook_calls=7)
        assert stats["messages_received"] == 4
        assert stats["bytes_received"] == 5 + 2 + 3 + 3
        assert stats["bytes_sent"] == 5 + 2 + 3 + 30
        assert (stats["broadcasts"], stats["broadcast_deliveries"]) == (1, 3)
        assert stats["connections_closed"] == 0
    stats = settled(server, connections_open=0, connections_closed=3, rooms=0, room_members=0)
    # Closed connections' traffic stays counted.
    assert stats["messages_received"] == 4
    assert stats["messages_sent"] == 6
    assert stats["hook_calls"] == len(calls) == 7
    assert stats["hook_errors"] == 0
    assert stats["hook_duration"]["count"] == len(calls)
    assert stats["connections_refused"] == {
        "request": {},
        "origin": {},
        "limit": {},
        "on_connect": {},
        "on_connect_timeout": {},
    }
    # The app's stats are the running server's.
    assert app.stats()["connections_closed"] == 3


def test_refusals_are_counted_by_reason_and_status(start):
    calls = []
    app = roomcast.Server(paths=["/ws"], handshake_timeout=0.3)

    @app.on_connect
    def gate(conn, request):
        calls.append(request.query.get("q"))
        q = request.query.get("q")
        if q == "deny":
            return False
        if q == "reject":
            raise roomcast.Reject(401, "who are you")
        if q == "boom":
            raise RuntimeError("boom")
        if q == "slow":
            time.sleep(0.6)
        return None

    server = start(app)
    url = f"{server.url}/ws"
    for query, status in (("deny", 403), ("reject", 401), ("boom", 500), ("slow", 503)):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{url}?q={query}", open_timeout=5)
        assert refused.value.response.status_code == status
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.url}/elsewhere", open_timeout=5)
    assert refused.value.response.status_code == 404
    big = b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert http_request(server.port, big)[0] == 431
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
        slow.sendall(b"GET /ws HTTP/1.1\r\n")  # and nothing more: 408
        assert slow.recv(100).startswith(b"HTTP/1.1 408")
    with connect(url):
        pass

    stats = settled(server, hook_calls=5, connections_closed=1)
    assert stats["connections_refused"] == {
        "request": {404: 1, 408: 1, 431: 1},
        "origin": {},
        "limit": {},
        "on_connect": {401: 1, 403: 1, 500: 1},
        "on_connect_timeout": {503: 1},
    }
    assert stats["connections_accepted"] == 1
    # Reject is on_connect's answer, not a failure; the RuntimeError is.
    assert stats["hook_errors"] == 1
    assert calls == ["deny", "reject", "boom", "slow", None]
    # The slow on_connect's 0.6 s are in the histogram.
    buckets = dict(stats["hook_duration"]["buckets"])
    assert buckets[0.5] == 4 and buckets[1.0] == 5
    assert stats["hook_duration"]["sum"] >= 0.6


def test_protocol_errors_are_counted_by_close_code(start):
    server = start(roomcast.Server(max_message_size=16))
    with connect(server.url) as ws:
        ws.send("x" * 100)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1009
    unmasked = RawClient(server.port)
    assert unmasked.handshake().startswith("HTTP/1.1 101")
    unmasked.send(0x1, b"hi", mask=False)
    assert unmasked.recv_close()[0] == 1002
    bad_utf8 = RawClient(server.port)
    assert bad_utf8.handshake().startswith("HTTP/1.1 101")
    bad_utf8.send(0x1, b"\xff\xfe")
    assert bad_utf8.recv_close()[0] == 1007
    stats = settled(server, connections_closed=3)
    assert stats["protocol_errors"] == {1002: 1, 1007: 1, 1009: 1, 1011: 0}
    for client in (unmasked, bad_utf8):
        client.close()


def test_a_heartbeat_reap_is_counted(start):
    server = start(roomcast.Server(heartbeat_interval=60))
    silent = RawClient(server.port)  # never answers a ping
    assert silent.handshake().startswith("HTTP/1.1 101")
    with connect(server.url) as answering:  # websockets answers pings by itself
        settled(server, connections_open=2)
        assert server.sweep_heartbeat()  # neither has sent a frame yet: both pinged
        answering.send("still here")
        settled(server, messages_received=1)
        assert server.sweep_heartbeat()  # the silent one sent nothing since: closed
        assert silent.recv_close()[0] == 1011
        stats = settled(server, heartbeat_timeouts=1, connections_open=1)
        assert stats["connections_closed"] == 1
    silent.close()


def test_the_slow_consumer_policies_are_counted(start):
    conns = []
    app = roomcast.Server(queue_size=8, close_timeout=0.5)
    app.on_connect(lambda conn, request: conns.append(conn))
    server = start(app)
    slow = RawClient(server.port)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert slow.handshake().startswith("HTTP/1.1 101")
    conn = wait_for(lambda: conns and conns[0], what="connection")
    conn.join("feed")
    sent = 0
    while conn.is_open and sent < 10_000:
        app.room("feed").broadcast(CHUNK)
        sent += 1
    assert not conn.is_open
    stats = settled(server, slow_consumer_closes=1)
    assert stats["broadcasts"] == sent
    assert stats["messages_dropped"] == 0
    slow.close()

    conns.clear()
    dropping = roomcast.Server(queue_size=4, overflow="drop")
    dropping.on_connect(lambda conn, request: conns.append(conn))
    server = start(dropping)
    slow = RawClient(server.port)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert slow.handshake().startswith("HTTP/1.1 101")
    conn = wait_for(lambda: conns and conns[0], what="connection")
    for _ in range(200):
        conn.send(CHUNK)
    assert conn.is_open
    stats = server.stats()
    assert stats["messages_dropped"] > 0
    assert stats["slow_consumer_closes"] == 0
    slow.close()


def test_hook_errors_and_the_histogram(start):
    calls = []
    app = roomcast.Server()

    @app.on("boom")
    def boom(conn, data):
        calls.append("boom")
        raise ValueError("on purpose")

    @app.on("nap")
    async def nap(conn, data):
        calls.append("nap")
        await asyncio.sleep(0.03)
        conn.send("rested")

    @app.on_message
    def message(conn, msg):
        calls.append("message")
        conn.send(msg)

    server = start(app)
    with connect(server.url) as ws:
        ws.send('{"event": "boom"}')
        ws.send('{"event": "nap"}')
        assert ws.recv(timeout=5) == "rested"
        ws.send("ok")
        assert ws.recv(timeout=5) == "ok"
        stats = settled(server, hook_calls=3)
    assert calls == ["boom", "nap", "message"]
    assert stats["hook_errors"] == 1
    histogram = stats["hook_duration"]
    assert histogram["count"] == stats["hook_calls"] == 3
    bounds = [le for le, _ in histogram["buckets"]]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf")
    counts = [n for _, n in histogram["buckets"]]
    assert counts == sorted(counts) and counts[-1] == 3  # cumulative
    # The async hook is timed to its completion: 30 ms asleep.
    buckets = dict(histogram["buckets"])
    assert buckets[0.025] == 2 and buckets[0.25] == 3
    assert 0.03 <= histogram["sum"] < 1.0


def test_runtime_tasks_follow_the_connections(start):
    app = roomcast.Server()
    server = start(app)
    idle = server.stats()["runtime_tasks"]
    assert idle >= 3  # accepting, deferred sends, the heartbeat
    with connect(server.url):
        # Its reader and its writer.
        wait_for(lambda: server.stats()["runtime_tasks"] == idle + 2, what="two more tasks")
    wait_for(lambda: server.stats()["runtime_tasks"] == idle, what="the tasks gone")


def test_the_prometheus_collector(start):
    registry = CollectorRegistry()
    app = roomcast.Server()
    app.on_message(lambda conn, msg: conn.send(msg))
    registry.register(RoomcastCollector(app))  # before start: describe() reserves the names
    assert generate_latest(registry) == b""  # not running: no samples, no failure
    server = start(app)
    with connect(server.url) as ws:
        ws.send("ping!")
        assert ws.recv(timeout=5) == "ping!"
        settled(server, messages_sent=1, hook_calls=1)
        text = generate_latest(registry).decode()
    fams = families(text)
    assert fams["roomcast_connections_open"].type == "gauge"
    assert value(fams, "roomcast_connections_open") == 1
    assert fams["roomcast_received_bytes"].type == "counter"
    assert value(fams, "roomcast_received_bytes_total") == 5
    assert value(fams, "roomcast_sent_messages_total") == 1
    assert value(fams, "roomcast_protocol_errors_total", code="1009") == 0
    assert value(fams, "roomcast_http_responses_total", **{"class": "2xx"}) == 0
    assert fams["roomcast_hook_duration_seconds"].type == "histogram"
    assert value(fams, "roomcast_hook_duration_seconds_count") == 1
    assert value(fams, "roomcast_hook_duration_seconds_bucket", le="+Inf") == 1
    assert "roomcast_chat_offline_kept" not in fams
    assert "roomcast_broker_published" not in fams
    # A RunningServer works too, and its registration conflicts with the app's (same names).
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(RoomcastCollector(server))
    settled(server, connections_open=0)
    other = CollectorRegistry()
    other.register(RoomcastCollector(server))
    assert value(families(generate_latest(other).decode()), "roomcast_connections_open") == 0


def test_the_metrics_path_agrees_with_the_collector(start):
    app = roomcast.Server(metrics_path="/metrics")
    app.on_message(lambda conn, msg: conn.send(msg))
    server = start(app)
    with connect(server.url) as ws:
        ws.send("abc")
        assert ws.recv(timeout=5) == "abc"
    old_version = (
        "GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    )
    assert http_request(server.port, old_version.encode())[0] == 426
    status, headers, _ = http_get(server.port, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    # Its own answer is counted once written: wait for it, so both outputs see the same.
    settled(server, connections_closed=1, hook_calls=1)
    wait_for(lambda: server.stats()["http_responses"]["2xx"] == 1, what="the GET counted")
    registry = CollectorRegistry()
    registry.register(RoomcastCollector(server))
    from_collector = generate_latest(registry).decode()
    _, _, text = http_get(server.port, "/metrics")

    lines = text.splitlines()
    names = {f.name for f in text_string_to_metric_families(text)}
    for family in text_string_to_metric_families(text):
        exposed = family.name + ("_total" if family.type == "counter" else "")
        assert f"# HELP {exposed} {family.documentation}" in lines
        assert f"# TYPE {exposed} {family.type}" in lines
        assert family.name.startswith("roomcast_")
        assert family.documentation
    assert "roomcast_hook_duration_seconds" in names
    fams = families(text)
    assert value(fams, "roomcast_connections_accepted_total") == 1
    assert value(fams, "roomcast_received_messages_total") == 1
    assert value(fams, "roomcast_sent_bytes_total") == 3
    assert value(fams, "roomcast_connections_refused_total", reason="request", status="426") == 1
    assert value(fams, "roomcast_http_responses_total", **{"class": "2xx"}) == 1

    assert_same_families(text, from_collector)

    assert http_get(server.port, "/metrics", method="POST")[0] == 405
    assert http_get(server.port, "/other")[0] == 426
    wait_for(lambda: server.stats()["http_responses"]["4xx"] == 2, what="4xx counted")


def test_metrics_path_setting():
    with pytest.raises(ValueError, match="metrics_path"):
        roomcast.Server(metrics_path="metrics").start(port=0)
    with pytest.raises(RuntimeError, match="not running"):
        roomcast.Server().stats()


def test_wsgi_answers_are_counted_by_class(start):
    def wsgi(environ, start_response):
        status = "404 Not Found" if environ["PATH_INFO"] == "/missing" else "200 OK"
        start_response(status, [("Content-Type", "text/plain")])
        return [b"hi"]

    app = roomcast.Server()
    app.wsgi(wsgi, threads=1)
    server = start(app)
    assert http_get(server.port, "/")[0] == 200
    assert http_get(server.port, "/missing")[0] == 404
    stats = wait_for(
        lambda: (s := server.stats())["http_responses"]["4xx"] == 1 and s, what="4xx counted"
    )
    assert stats["http_responses"] == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 1, "5xx": 0}


def test_the_chat_preset_counters(start):
    app = presets.chat(metrics_path="/metrics")
    server = start(app)
    assert server.stats()["chat"] == {
        "offline_kept": 0,
        "offline_delivered": 0,
        "offline_dropped_full": 0,
        "offline_dropped_expired": 0,
        "offline_waiting": 0,
        "store_failures": 0,  # roster calls to Redis: none without a broker
    }
    with ChatClient(server.url) as a:
        a.enter("r", "u1", "alice")
        b = ChatClient(server.url)
        b.enter("r", "u2", "bob")
        a.expect("enter")
        b.close()
        a.expect("out")
        a.say("while you were away")
        a.expect("message")
    chat = wait_for(
        lambda: (c := server.stats()["chat"])["offline_kept"] == 1 and c, what="a kept message"
    )
    assert chat["offline_waiting"] == 1
    fams = families(http_get(server.port, "/metrics")[2])
    assert value(fams, "roomcast_chat_offline_kept_total") == 1
    assert value(fams, "roomcast_chat_offline_waiting") == 1
    assert value(fams, "roomcast_chat_offline_dropped_total", reason="full") == 0
    assert value(fams, "roomcast_chat_store_failures_total") == 0
    assert "roomcast_broker_published" not in fams
    # The preset's broadcasts (enter, out, message) go through the same counters.
    assert server.stats()["broadcasts"] >= 4
    registry = CollectorRegistry()
    registry.register(RoomcastCollector(app))
    fams = families(generate_latest(registry).decode())
    assert value(fams, "roomcast_chat_offline_kept_total") == 1


BROKER_COUNTERS = [
    "published",
    "received",
    "duplicates",
    "gaps",
    "lost",
    "dropped",
    "malformed",
    "reconnects",
]
BROKER_GAUGES = ["unsent", "nodes", "connected"]


def scrape_both(server: Any) -> tuple[str, str, dict[str, Any]]:
    """The core's ``/metrics`` text, the collector's output and ``stats()``, read while
    nothing but the GET's own count moved (the broker's beats count as published)."""
    registry = CollectorRegistry()
    registry.register(RoomcastCollector(server))
    gets = server.stats()["http_responses"]["2xx"]
    for _ in range(20):
        before = server.stats()
        from_collector = generate_latest(registry).decode()
        _, _, text = http_get(server.port, "/metrics")
        gets += 1
        # Its own answer is counted once written, after the text was made.
        after = wait_for(
            lambda gets=gets: (s := server.stats())["http_responses"]["2xx"] == gets and s,
            what="the GET counted",
        )
        before.pop("http_responses")
        after.pop("http_responses")
        if before == after:
            return text, from_collector, after
    raise AssertionError("stats() kept moving while /metrics was read")


def test_the_broker_families(start, roomcast_redis):
    # Two nodes on one Redis; a long lease keeps beats (counted as published) rare.
    settings: dict[str, Any] = dict(broker=roomcast_redis.url, broker_lease=30.0)
    app = presets.chat(metrics_path="/metrics", **settings)
    described = {f.name for f in RoomcastCollector(app).describe()}
    assert {f"roomcast_broker_{n}" for n in BROKER_COUNTERS + BROKER_GAUGES} <= described
    assert "roomcast_chat_store_failures" in described
    server = start(app)
    other_app = presets.chat(**settings)
    other = start(other_app)
    for node in (server, other):
        wait_for(
            lambda node=node: (b := node.stats()["broker"])["connected"] and b["nodes"] == 1,
            timeout=10,
            what="both nodes on the bus",
        )
    with ChatClient(server.url) as a, ChatClient(other.url) as b:
        a.enter("r", "u1", "alice")
        # alice's enter reached the other node (it carries num) before bob enters there.
        wait_for(lambda: other_app.chat.count("r") == 1, what="alice counted on the other node")
        b.enter("r", "u2", "bob")
        assert a.expect("enter")["name"] == "bob"  # from the other node, through Redis
        a.say("hello")
        assert b.expect("message")["message"] == "hello"
        wait_for(
            lambda: (s := server.stats()["broker"])["received"] >= 1 and s["unsent"] == 0,
            what="the other node's enter received",
        )
        text, from_collector, stats = scrape_both(server)

    broker = stats["broker"]
    assert broker["connected"] is True and broker["nodes"] == 1
    assert broker["published"] >= 2 and broker["received"] >= 1
    assert (broker["lost"], broker["dropped"], broker["malformed"]) == (0, 0, 0)
    fams = families(text)
    for key in BROKER_COUNTERS:
        assert fams[f"roomcast_broker_{key}"].type == "counter", key
        assert value(fams, f"roomcast_broker_{key}_total") == broker[key], key
    for key in BROKER_GAUGES:
        assert fams[f"roomcast_broker_{key}"].type == "gauge", key
        assert value(fams, f"roomcast_broker_{key}") == int(broker[key]), key
    assert fams["roomcast_chat_store_failures"].type == "counter"
    failures = value(fams, "roomcast_chat_store_failures_total")
    assert failures == stats["chat"]["store_failures"] == app.chat.stats()["store_failures"]
    assert_same_families(text, from_collector)
