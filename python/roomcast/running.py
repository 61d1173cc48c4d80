"""A started server: its address, stats, certificate reload and graceful stop."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Optional

from . import _logging
from . import wsgi as _wsgi
from ._dispatch import Dispatcher
from ._roomcast import Core, reload_tls

if TYPE_CHECKING:
    from .server import Server


class RunningServer:
    """A started server: its address, and ``stop()``. Also a context manager."""

    def __init__(self, app: Server, core: Core, loop: Optional[asyncio.AbstractEventLoop]):
        self.app = app
        self._core = core
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._own_loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        if loop is None:
            loop = asyncio.new_event_loop()
            self._own_loop = loop
            self._loop_thread = threading.Thread(
                target=loop.run_forever, name="roomcast-asyncio", daemon=True
            )
            self._loop_thread.start()
        self._dispatcher = Dispatcher(app, core, loop, app.workers)
        self._dispatcher.start()
        self._http: Optional[_wsgi.WSGIThreads] = None
        if app._wsgi is not None:
            self._http = _wsgi.WSGIThreads(core, *app._wsgi)
            self._http.start()

    @property
    def host(self) -> str:
        return self._core.host

    @property
    def port(self) -> int:
        return self._core.port

    def sweep_heartbeat(self) -> bool:
        """Run one heartbeat sweep of every connection now, as the timer does over an interval
        (nothing to a connection heard from since its last sweep, a Ping to a silent one, 1011
        to one still silent since its Ping; the JSON heartbeat, if on, to all that stay): tests
        of reaping and of the JSON heartbeat need not wait. False when the heartbeat is off."""
        return self._core.sweep_now()

    def stats(self) -> dict[str, Any]:
        """Counters (totals since the start) and gauges (now), read from the core while it
        runs: callable from any thread, cheap enough to poll, nothing is paused or locked
        for longer than one pass over the open connections. Keys:

        - ``connections_open`` (gauge), ``connections_accepted``, ``connections_closed``;
          ``connections_refused``: ``{"request": {status: n}, "on_connect": {status: n},
          "on_connect_timeout": {503: n}}`` (the core's own refusals, such as 404, 408, 431,
          503; ``on_connect`` returning False (403), raising ``Reject`` or anything else
          (500); ``on_connect`` not deciding within ``handshake_timeout``).
        - ``rooms`` and ``room_members`` (gauges; a connection in two rooms counts twice).
        - ``messages_received``/``bytes_received``, ``messages_sent``/``bytes_sent``: data
          messages and their payload bytes (sent: written to the socket).
        - ``broadcasts`` (calls) and ``broadcast_deliveries`` (messages queued for members).
        - ``tls_handshake_failures``: sockets on a TLS port that failed or stalled in the TLS
          handshake (an untrusted certificate, a plaintext client, a scanner).
        - ``messages_dropped`` (``overflow="drop"``), ``slow_consumer_closes`` (1013 by
          ``overflow="close"``), ``heartbeat_timeouts`` (1011), ``protocol_errors``
          (``{close code: n}``: 1002 protocol, 1007 bad UTF-8, 1009 too big, 1011).
        - ``hook_calls``, ``hook_errors`` (calls that raised) and ``hook_duration``:
          ``{"buckets": [(upper bound in s, cumulative count), ..., (inf, n)], "sum": s,
          "count": n}``, timed by the dispatcher around each hook call (an async hook: to
          its completion); a worker hands its times over when it ends its batch.
        - ``events_pending`` (gauge): events waiting for a hook worker.
        - ``runtime_tasks`` (gauge): tasks alive on the server's tokio runtime: two per open
          WebSocket connection, one per other socket being served (a plain HTTP request,
          a handshake under way), and the server's own few (accepting, deferred sends, the
          heartbeat, the broker's links). One that grows while the connections do not is a
          leak (``make soak`` checks it).
        - ``http_responses``: plain HTTP requests answered on the port (WSGI app, pages,
          metrics path, 426), ``{"1xx": n, ..., "5xx": n}``.
        - ``chat``: the chat preset's offline store (``offline_kept``,
          ``offline_delivered``, ``offline_dropped_full``, ``offline_dropped_expired``,
          ``offline_waiting``; with a broker these are the whole cluster's, as of the last
          roster tick) and ``store_failures`` (this node's roster calls to Redis that failed
          while it was away: messages sent meanwhile may not be kept), or None without the
          preset.
        - ``broker``: None without ``Server(broker=...)``; else this node's side of it:
          ``published`` (messages Redis accepted from this node, replays and beats
          included), ``received`` (messages from other nodes delivered here, in order, once),
          ``duplicates`` (repeats dropped), ``gaps`` (gaps noticed and asked for again),
          ``lost`` (messages from other nodes given up on: past the sender's
          ``broker_buffer``), ``unsent`` (gauge: messages waiting for Redis), ``dropped``
          (messages dropped unsent: Redis was away and ``broker_buffer`` was full),
          ``malformed`` (bus messages that were not roomcast's), ``reconnects`` (connections
          to Redis made again after one was lost), ``nodes`` (gauge: other nodes heard from
          within their lease) and ``connected`` (``True`` while both Redis connections,
          publish and subscribe, are up).
        """
        return self._core.stats()

    @property
    def tls(self) -> bool:
        """Whether the server serves TLS (``wss://``)."""
        return self.app._settings["tls"] is not None

    @property
    def url(self) -> str:
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}"

    def reload_tls(self, *, raise_errors: bool = True) -> bool:
        """Read the certificate and key files again: connections from now on use them, open
        ones keep theirs (what SIGHUP does under ``run()``). When the files are unusable the
        old certificate stays in use, and the error (naming the file) is raised, or with
        ``raise_errors=False`` logged; returns whether the new files took effect."""
        try:
            reload_tls(self._core)
        except ValueError as exc:
            if raise_errors:
                raise
            _logging.logger.error("TLS reload failed, the old certificate stays: %s", exc)
            return False
        return True

    def stop(self, timeout: Optional[float] = None) -> None:
        """Graceful shutdown: stop accepting, close every connection with 1001, wait up to
        ``timeout`` (default: the server's ``shutdown_timeout``) for their queues to drain,
        run every ``on_disconnect``, then return. Idempotent; callable from any thread."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        timeout = self.app.shutdown_timeout if timeout is None else timeout
        self._core.stop(timeout)
        if self._http is not None:
            self._http.join(timeout + 5.0)
        if not self._dispatcher.join(timeout + 5.0):
            _logging.logger.warning("shutdown: some hooks were still running; not waiting for them")
        if self._own_loop is not None and self._loop_thread is not None:
            self._own_loop.call_soon_threadsafe(self._own_loop.stop)
            self._loop_thread.join(timeout)
            if not self._loop_thread.is_alive():
                self._own_loop.close()
        self.app._stopped(self)
        _logging.flush()

    async def aclose(self) -> None:
        """``stop()`` without blocking the running event loop (async hooks may still run)."""
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RunningServer {self.url}>"
