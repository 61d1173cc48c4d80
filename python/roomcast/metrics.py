"""Prometheus metrics for a roomcast server, through the ``prometheus_client`` library
(``pip install 'roomcast[metrics]'``).

Register the collector in the registry your ``/metrics`` endpoint already serves (the
default one, django-prometheus's, your own), and every scrape reads ``server.stats()``::

    from prometheus_client import REGISTRY
    from roomcast.metrics import RoomcastCollector

    app = roomcast.Server()
    REGISTRY.register(RoomcastCollector(app))

Without a registry of your own, ``roomcast.Server(metrics_path="/metrics")`` serves the same
families on the server's own port, written by the core (src/metrics/exposition.rs). Names
follow Prometheus' conventions: the ``roomcast_`` prefix, base units (seconds, bytes),
``_total`` on counters. A ``Server`` that is not running yields no samples (a scrape does not
fail because the WebSocket server is stopped). The ``roomcast_chat_*`` families appear only
with the chat preset, the ``roomcast_broker_*`` ones only with ``Server(broker=...)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional, Union

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .running import RunningServer
from .server import Server

__all__ = ["RoomcastCollector"]

_Family = Union[CounterMetricFamily, GaugeMetricFamily]

# (stats key, name without _total, kind, help): the unlabelled families, in exposition order.
# The help texts are the core's (src/metrics/exposition.rs); tests/test_metrics.py compares
# the two outputs.
_TOP = [
    ("connections_open", "roomcast_connections_open", "gauge", "WebSocket connections open now."),
    (
        "connections_accepted",
        "roomcast_connections_accepted",
        "counter",
        "WebSocket handshakes completed.",
    ),
    (
        "connections_closed",
        "roomcast_connections_closed",
        "counter",
        "Accepted WebSocket connections that ended.",
    ),
]
_ROOMS = [
    ("rooms", "roomcast_rooms", "gauge", "Rooms with members now."),
    (
        "room_members",
        "roomcast_room_members",
        "gauge",
        "Room memberships now (a connection in two rooms counts twice).",
    ),
    (
        "messages_received",
        "roomcast_received_messages",
        "counter",
        "Data messages received from clients.",
    ),
    (
        "bytes_received",
        "roomcast_received_bytes",
        "counter",
        "Payload bytes of the data messages received from clients.",
    ),
    ("messages_sent", "roomcast_sent_messages", "counter", "Data messages written to clients."),
    (
        "bytes_sent",
        "roomcast_sent_bytes",
        "counter",
        "Payload bytes of the data messages written to clients.",
    ),
    (
        "broadcasts",
        "roomcast_broadcasts",
        "counter",
        "Broadcasts to a room or to every connection.",
    ),
    (
        "broadcast_deliveries",
        "roomcast_broadcast_deliveries",
        "counter",
        "Messages queued for members by broadcasts.",
    ),
    (
        "messages_dropped",
        "roomcast_dropped_messages",
        "counter",
        "Messages dropped because a client's queue was full (overflow='drop').",
    ),
    (
        "slow_consumer_closes",
        "roomcast_slow_consumer_closes",
        "counter",
        "Connections closed with 1013 because their queue was full (overflow='close').",
    ),
    (
        "rate_limited",
        "roomcast_rate_limited",
        "counter",
        "Messages from clients over their rate limit (closed with 1008, or dropped).",
    ),
    (
        "tls_handshake_failures",
        "roomcast_tls_handshake_failures",
        "counter",
        "Sockets on the TLS port whose TLS handshake failed or timed out.",
    ),
    (
        "heartbeat_timeouts",
        "roomcast_heartbeat_timeouts",
        "counter",
        "Connections closed with 1011 by the heartbeat: nothing received for an interval.",
    ),
]
_HOOKS = [
    ("hook_calls", "roomcast_hook_calls", "counter", "Python hook calls."),
    ("hook_errors", "roomcast_hook_errors", "counter", "Python hook calls that raised."),
]
_REFUSED_HELP = (
    "Connections refused before opening, by reason (request, origin, limit, on_connect,"
    " on_connect_timeout) and HTTP status."
)
_PROTOCOL_HELP = (
    "Connections closed for breaking the protocol, by close code (1002 protocol, 1007 bad"
    " UTF-8, 1009 too big)."
)
_HOOK_DURATION_HELP = "Time from a hook's call to its return (an async hook's: to its completion)."
_PENDING_HELP = "Events waiting for a hook worker now."
_TASKS_HELP = (
    "Tasks alive on the server's I/O runtime now (two per open WebSocket connection, one per"
    " other socket being served, a few of the server's own)."
)
_HTTP_HELP = (
    "Plain HTTP requests answered on the server's port (WSGI app, pages, metrics, 426), by"
    " status class."
)
_CHAT = [
    (
        "offline_kept",
        "roomcast_chat_offline_kept",
        "counter",
        "Chat messages kept for members away (one per member and message).",
    ),
    (
        "offline_delivered",
        "roomcast_chat_offline_delivered",
        "counter",
        "Kept chat messages delivered when their member came back.",
    ),
]
_CHAT_DROPPED_HELP = (
    "Kept chat messages dropped, by reason (full: offline_limit; expired: offline_ttl)."
)
_CHAT_WAITING_HELP = "Kept chat messages waiting for their member now."
_CHAT_STORE_FAILURES_HELP = (
    "Chat roster calls to Redis that failed (messages sent meanwhile may not be kept)."
)
# The broker's families (Server(broker=...)), from stats()["broker"].
_BROKER = [
    (
        "published",
        "roomcast_broker_published",
        "counter",
        "Messages Redis accepted from this node (replays included).",
    ),
    (
        "received",
        "roomcast_broker_received",
        "counter",
        "Messages from other nodes delivered here, in order, once.",
    ),
    (
        "duplicates",
        "roomcast_broker_duplicates",
        "counter",
        "Repeated messages from other nodes dropped.",
    ),
    (
        "gaps",
        "roomcast_broker_gaps",
        "counter",
        "Gaps in another node's messages noticed and asked for again.",
    ),
    (
        "lost",
        "roomcast_broker_lost",
        "counter",
        "Messages from other nodes given up on (past the sender's broker_buffer).",
    ),
    (
        "dropped",
        "roomcast_broker_dropped",
        "counter",
        "Messages this node dropped unsent: Redis was away and broker_buffer was full.",
    ),
    (
        "malformed",
        "roomcast_broker_malformed",
        "counter",
        "Messages on the bus channel that were not roomcast's.",
    ),
    (
        "reconnects",
        "roomcast_broker_reconnects",
        "counter",
        "Connections to Redis made again after one was lost.",
    ),
    ("unsent", "roomcast_broker_unsent", "gauge", "Messages waiting for Redis."),
    ("nodes", "roomcast_broker_nodes", "gauge", "Other nodes heard from within their lease."),
    (
        "connected",
        "roomcast_broker_connected",
        "gauge",
        "1 while both Redis connections (publish, subscribe) are up.",
    ),
]


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (``repr``; ``+Inf``), as the core does."""
    return "+Inf" if bound == float("inf") else repr(bound)


def _single(key: str, name: str, kind: str, help: str, stats: Optional[dict[str, Any]]) -> Metric:
    family: _Family
    if kind == "counter":
        family = CounterMetricFamily(name, help)
    else:
        family = GaugeMetricFamily(name, help)
    if stats is not None:
        family.add_metric([], int(stats[key]))  # int(): the broker's ``connected`` is a bool
    return family


class RoomcastCollector(Collector):
    """Yields a roomcast server's ``stats()`` as Prometheus metric families on each scrape.

    ``server`` is a ``roomcast.Server`` (scraped while it runs; nothing while it is
    stopped) or the ``RunningServer`` that ``start()`` returned. ``collect()`` runs on the
    scraping thread and costs one ``stats()`` call.
    """

    def __init__(self, server: Union[Server, RunningServer]) -> None:
        self._server = server

    def _stats(self) -> Optional[dict[str, Any]]:
        try:
            return self._server.stats()
        except RuntimeError:  # a Server that is not running
            return None

    def _settings(self) -> dict[str, Any]:
        app = self._server.app if isinstance(self._server, RunningServer) else self._server
        return app._settings

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (so registering reserves their names even before
        the server starts)."""
        settings = self._settings()
        return self._families(
            None, chat=settings["chat"] is not None, broker=settings["broker"] is not None
        )

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return iter(())
        return self._families(
            stats, chat=stats["chat"] is not None, broker=stats["broker"] is not None
        )

    def _families(self, s: Optional[dict[str, Any]], chat: bool, broker: bool) -> Iterator[Metric]:
        for row in _TOP:
            yield _single(*row, s)
        refused = CounterMetricFamily(
            "roomcast_connections_refused", _REFUSED_HELP, labels=["reason", "status"]
        )
        if s is not None:
            for reason, by_status in s["connections_refused"].items():
                for status, n in sorted(by_status.items()):
                    refused.add_metric([reason, str(status)], n)
        yield refused
        for row in _ROOMS:
            yield _single(*row, s)
        errors = CounterMetricFamily("roomcast_protocol_errors", _PROTOCOL_HELP, labels=["code"])
        if s is not None:
            for code, n in sorted(s["protocol_errors"].items()):
                errors.add_metric([str(code)], n)
        yield errors
        for row in _HOOKS:
            yield _single(*row, s)
        duration = HistogramMetricFamily("roomcast_hook_duration_seconds", _HOOK_DURATION_HELP)
        if s is not None:
            h = s["hook_duration"]
            buckets = [(_le(le), n) for le, n in h["buckets"]]
            duration.add_metric([], buckets, sum_value=h["sum"])
        yield duration
        yield _single("events_pending", "roomcast_hook_events_pending", "gauge", _PENDING_HELP, s)
        yield _single("runtime_tasks", "roomcast_runtime_tasks", "gauge", _TASKS_HELP, s)
        http = CounterMetricFamily("roomcast_http_responses", _HTTP_HELP, labels=["class"])
        if s is not None:
            for cls, n in s["http_responses"].items():
                http.add_metric([cls], n)
        yield http
        if chat:
            yield from self._chat(None if s is None else s["chat"])
        if broker:
            b = None if s is None else s["broker"]
            for row in _BROKER:
                yield _single(*row, b)

    def _chat(self, c: Optional[dict[str, Any]]) -> Iterator[Metric]:
        for row in _CHAT:
            yield _single(*row, c)
        dropped = CounterMetricFamily(
            "roomcast_chat_offline_dropped", _CHAT_DROPPED_HELP, labels=["reason"]
        )
        if c is not None:
            dropped.add_metric(["full"], c["offline_dropped_full"])
            dropped.add_metric(["expired"], c["offline_dropped_expired"])
        yield dropped
        yield _single(
            "offline_waiting", "roomcast_chat_offline_waiting", "gauge", _CHAT_WAITING_HELP, c
        )
        yield _single(
            "store_failures",
            "roomcast_chat_store_failures",
            "counter",
            _CHAT_STORE_FAILURES_HELP,
            c,
        )
