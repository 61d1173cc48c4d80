"""The application object: settings, hooks, and starting/stopping the server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Callable, Optional, TypeVar, Union

from . import _logging
from . import wsgi as _wsgi
from ._payload import encode
from ._roomcast import Core
from .chat import ChatControl
from .rooms import Exclude, Room, exclude_ids
from .running import RunningServer
from .wsgi import WSGIApp

F = TypeVar("F", bound=Callable[..., Any])
PathLike = Union[str, "os.PathLike[str]"]


def _tls(certfile: Optional[PathLike], keyfile: Optional[PathLike]) -> Optional[tuple[str, str]]:
    """The core's ``tls`` setting: both files, or neither."""
    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        given, missing = ("ssl_certfile", "ssl_keyfile")[:: 1 if certfile else -1]
        raise ValueError(
            f"{given} was given without {missing}: TLS needs both the certificate chain "
            "and its private key (PEM files)"
        )
    return os.fspath(certfile), os.fspath(keyfile)


def _broker(
    url: Optional[str], namespace: str = "roomcast", buffer: int = 65536, lease: float = 3.0
) -> Optional[dict[str, Any]]:
    """The core's broker setting for ``Server(broker=url, broker_namespace=..., ...)``."""
    if url is None:
        return None
    return {"url": url, "namespace": namespace, "buffer": buffer, "lease": lease}


def _hangup(running: RunningServer) -> None:
    if running.tls:
        running.reload_tls(raise_errors=False)
    else:
        _logging.logger.info("SIGHUP: this server has no TLS certificate to reload; ignored")


class Server:
    """A WebSocket server. Register hooks with the decorators, then ``run()``,
    ``start()``, or ``async with serve()``.

    Hooks may be plain functions or ``async def``. Sync hooks run on a pool of ``workers``
    threads; async hooks on an asyncio loop (the caller's with ``serve()``, a dedicated
    thread's with ``run()``/``start()``). Events of one connection reach its hooks in order,
    one at a time; different connections are handled concurrently. A hook that raises is
    logged (logger ``roomcast``) and its connection stays open.

    Settings (every limit has a default, an error code, and a log line):

    - ``heartbeat_interval`` (30.0 s; ``None`` = off): each interval the server pings every
      connection; one that sent nothing since the previous ping is closed (1011, reason
      "heartbeat timeout") and its ``on_disconnect`` runs.
    - ``app_heartbeat`` (False): also send ``{"event":"heartbeat","message":"ping"}`` each
      interval, swallow ``{"event":"heartbeat","message":"pong"}``, answer text ``ping`` with
      ``pong`` (the clients of seeds 000 and 004).
    - ``max_message_size`` (1 MiB): larger messages close the connection with 1009.
    - ``queue_size`` (1024 frames), ``queue_bytes`` (1 MiB of payload not yet written to the
      socket; a larger message still goes out alone) and ``overflow`` (``"close"``: close with
      1013; or ``"drop"``: drop what does not fit): what happens to a client that reads too
      slowly. A broadcast's bytes are shared, but count in every member's queue.
    - ``paths`` (None = every path): other paths get HTTP 404 at the handshake.
    - ``subprotocols``: offered subprotocols the server accepts, in preference order.
    - ``max_header_bytes`` (16 KiB → 431), ``handshake_timeout`` (10 s → 408, or 503 when
      ``on_connect`` does not decide in time), ``close_timeout`` (5 s to wait for the
      client's Close), ``shutdown_timeout`` (5 s for connections to drain at stop).
    - ``workers`` (8 threads for sync hooks), ``mailbox_limit`` (256 events of one
      connection waiting for a hook before the server stops reading from it),
      ``io_threads`` (0 = one per core), ``read_buffer_size``/``write_buffer_size`` (bytes
      per socket read and per vectored write; an idle connection holds neither).
    - ``compression`` (None; ``"deflate"``): permessage-deflate (RFC 7692) with clients that
      offer it (browsers do). Messages of ``compression_threshold`` (128) bytes or more are
      compressed; a broadcast is compressed once for all its members; a client's compressed
      message that inflates past ``max_message_size`` closes with 1009. No connection keeps
      a compressor between messages (``*_no_context_takeover``), so idle ones cost nothing.
      Off by default: a connection's own sends cost up to 2.8 times the CPU compressed, and a
      message mixing a secret with text an attacker chooses leaks through its size. Worth it
      for large (≥ 512 B), mostly broadcast messages to clients that pay for bytes: about half
      the bytes, for one compression per broadcast (docs/benchmarks.md).
    - ``metrics_path`` (None = off): a plain HTTP ``GET`` of this path on the server's own
      port answers ``stats()`` in Prometheus' text format, written by the core without
      Python (so it answers even while every hook worker is busy). To add the same metrics
      to an existing registry instead, see ``roomcast.metrics.RoomcastCollector``.
    - ``allowed_origins`` (None = any): the web pages allowed to open a WebSocket, as
      ``"https://chat.example.com"``, ``"example.com"`` (any scheme) or ``"*.example.com"``
      (subdomains); a browser handshake from another Origin gets HTTP 403 (cross-site
      WebSocket hijacking: any page could otherwise connect with the user's cookies). A
      handshake without an Origin header (not a browser) passes.
    - ``max_connections`` / ``max_connections_per_ip`` (None = no limit): sockets served at
      once, in total and per client address; past either, HTTP 503 with ``Retry-After: 5``.
    - ``handshake_rate_per_ip`` (None = no limit): WebSocket handshakes per second one
      address may make, with a 2 s burst; past it, HTTP 429 with ``Retry-After: 1``.
    - ``trusted_proxies`` (none): addresses or networks (``"10.0.0.0/8"``) of reverse proxies
      whose ``Forwarded`` / ``X-Forwarded-For`` headers name the client: then
      ``conn.remote_addr`` (port 0) and the per-address limit are the client's, not the
      proxy's. From anyone else those headers are ignored.
    - ``rate_limit_messages`` / ``rate_limit_bytes`` (None = no limit): what one connection
      may send per second, with ``rate_limit_burst`` (2 s) of traffic at that rate allowed at
      once; over it, ``rate_limit_policy`` ``"close"`` closes with 1008, ``"drop"`` drops the
      message (counted in ``stats()["rate_limited"]`` either way).
    - ``broker`` (None = rooms are local to this process): ``"redis://host:port/db"`` shares
      rooms with every other node on that Redis: broadcasts reach members on every node
      exactly once and in order, ``len(room)`` counts members on every live node
      (``room.members`` stays this node's connections). ``broker_namespace`` ("roomcast")
      separates applications sharing one Redis; ``broker_buffer`` (65536 messages) is what
      a node keeps for replay and for a Redis outage, oldest dropped and counted past it;
      ``broker_lease`` (3 s): a node not heard from for this long stops counting. See
      docs/scaling.md.
    - ``ssl_certfile`` / ``ssl_keyfile`` (None = plaintext): serve TLS (``wss://`` and
      ``https://``) with this PEM certificate chain (the server's certificate first, then
      its intermediates) and private key. ``RunningServer.reload_tls()``, or SIGHUP to a
      server started with ``run()``, reads them again without a restart. A plaintext
      client on the port gets HTTP 400 saying to use ``https://``/``wss://``. See
      docs/security.md.
    """

    def __init__(
        self,
        *,
        heartbeat_interval: Optional[float] = 30.0,
        app_heartbeat: bool = False,
        max_message_size: int = 1 << 20,
        queue_size: int = 1024,
        queue_bytes: int = 1 << 20,
        overflow: str = "close",
        paths: Optional[Iterable[str]] = None,
        subprotocols: Sequence[str] = (),
        max_header_bytes: int = 16 * 1024,
        handshake_timeout: float = 10.0,
        close_timeout: float = 5.0,
        shutdown_timeout: float = 5.0,
        workers: int = 8,
        mailbox_limit: int = 256,
        io_threads: int = 0,
        read_buffer_size: int = 16 * 1024,
        write_buffer_size: int = 16 * 1024,
        compression: Optional[str] = None,
        compression_threshold: int = 128,
        metrics_path: Optional[str] = None,
        allowed_origins: Optional[Sequence[str]] = None,
        max_connections: Optional[int] = None,
        max_connections_per_ip: Optional[int] = None,
        trusted_proxies: Sequence[str] = (),
        handshake_rate_per_ip: Optional[float] = None,
        rate_limit_messages: Optional[float] = None,
        rate_limit_bytes: Optional[float] = None,
        rate_limit_burst: float = 2.0,
        rate_limit_policy: str = "close",
        broker: Optional[str] = None,
        broker_namespace: str = "roomcast",
        broker_buffer: int = 65536,
        broker_lease: float = 3.0,
        ssl_certfile: Optional[PathLike] = None,
        ssl_keyfile: Optional[PathLike] = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1 (got {workers})")
        self._settings: dict[str, Any] = {
            "heartbeat_interval": heartbeat_interval,
            "app_heartbeat": app_heartbeat,
            "max_message_size": max_message_size,
            "queue_size": queue_size,
            "queue_bytes": queue_bytes,
            "overflow": overflow,
            "paths": None if paths is None else list(paths),
            "subprotocols": list(subprotocols),
            "max_header_bytes": max_header_bytes,
            "handshake_timeout": handshake_timeout,
            "close_timeout": close_timeout,
            "mailbox_limit": mailbox_limit,
            "io_threads": io_threads,
            "read_buffer_size": read_buffer_size,
            "write_buffer_size": write_buffer_size,
            "compression": compression,
            "compression_threshold": compression_threshold,
            "relays": [],
            "chat": None,
            "pages": [],
            "metrics_path": metrics_path,
            "allowed_origins": None if allowed_origins is None else list(allowed_origins),
            "max_connections": max_connections,
            "max_connections_per_ip": max_connections_per_ip,
            "trusted_proxies": list(trusted_proxies),
            "handshake_rate_per_ip": handshake_rate_per_ip,
            "rate_limit_messages": rate_limit_messages,
            "rate_limit_bytes": rate_limit_bytes,
            "rate_limit_burst": rate_limit_burst,
            "rate_limit_policy": rate_limit_policy,
            "broker": _broker(broker, broker_namespace, broker_buffer, broker_lease),
            "tls": _tls(ssl_certfile, ssl_keyfile),
        }
        self.shutdown_timeout = shutdown_timeout
        self.workers = workers
        self._on_connect: Optional[Callable[..., Any]] = None
        self._on_message: Optional[Callable[..., Any]] = None
        self._on_disconnect: Optional[Callable[..., Any]] = None
        self._events: dict[str, Callable[..., Any]] = {}
        self._wsgi: Optional[tuple[WSGIApp, int]] = None
        self._running: Optional[RunningServer] = None
        self._lock = threading.Lock()

    # -- hooks -----------------------------------------------------------------------------

    def on_connect(self, hook: F) -> F:
        """``hook(conn, request)`` runs before the handshake completes.

        Return ``False`` (HTTP 403) or raise ``roomcast.Reject(status, reason)`` to refuse;
        anything else accepts. The connection may already ``send`` and ``join`` rooms here:
        the frames go out right after the handshake. If it raises anything else, the
        client gets 500 and the error is logged.
        """
        self._on_connect = hook
        self._sync_routes()
        return hook

    def on_message(self, hook: F) -> F:
        """``hook(conn, message)`` for every text (``str``) or binary (``bytes``) message
        that no ``on(event)`` hook takes."""
        self._on_message = hook
        self._sync_routes()
        return hook

    def on(self, event: str) -> Callable[[F], F]:
        """``hook(conn, data)`` for JSON text messages whose ``"event"`` field is ``event``;
        ``data`` is the decoded object. Other messages fall through to ``on_message``."""

        def register(hook: F) -> F:
            self._events[event] = hook
            self._sync_routes()
            return hook

        return register

    def on_disconnect(self, hook: F) -> F:
        """``hook(conn, code, reason)`` once, after the connection has closed for any
        reason: the client's close code, 1006 if it vanished, the server's code (1001 at
        shutdown, 1011 heartbeat timeout, 1013 overflow, 1002/1007/1009 protocol errors)."""
        self._on_disconnect = hook
        self._sync_routes()
        return hook

    def relay(self, path: str, room: str, *, join: bool = True, echo: bool = True) -> None:
        """Serve ``path`` as a relay handled entirely in Rust: connections to it join
        ``room`` (unless ``join=False``), and every message they send is broadcast to the
        room (to the sender too when ``echo``), without reaching any Python hook.

        ``on_connect`` and ``on_disconnect`` still run for relay connections. For example
        ``app.relay("/feed", "news")`` for subscribers and
        ``app.relay("/publish", "news", join=False)`` for a publisher. Call before starting.
        """
        if self._running is not None:
            raise RuntimeError("add relays before the server starts")
        if not path.startswith("/"):
            raise ValueError(f"relay path must start with '/' (got {path!r})")
        self._settings["relays"] = [
            *(r for r in self._settings["relays"] if r[0] != path),
            (path, room, join, echo),
        ]

    def page(self, path: str, body: str, content_type: str = "text/html; charset=utf-8") -> None:
        """Answer plain HTTP ``GET path`` with ``body`` (a page, a script) on the server's own
        port; a WebSocket handshake on the same path is unaffected. Call before starting."""
        if self._running is not None:
            raise RuntimeError("add pages before the server starts")
        if not path.startswith("/"):
            raise ValueError(f"page path must start with '/' (got {path!r})")
        self._settings["pages"] = [
            *(p for p in self._settings["pages"] if p[0] != path),
            (path, content_type, body),
        ]

    def wsgi(
        self,
        app: WSGIApp,
        *,
        threads: int = 8,
        max_body_size: int = 10 << 20,
        queue: int = 1024,
        timeout: float = 60.0,
    ) -> None:
        """Answer plain HTTP on the server's port with the WSGI application ``app`` (Django's
        ``get_wsgi_application()``, Flask, ...), so pages and WebSockets share one port.

        ``threads`` run the application (not the hook workers). A body larger than
        ``max_body_size`` gets 413, a chunked body 411; more than ``queue`` requests waiting
        for a thread get 503; an answer slower than ``timeout`` seconds gets 504. Each
        request is answered on its own connection (``Connection: close``). Pages added with
        ``page()`` are served first. Call before starting.
        """
        if self._running is not None:
            raise RuntimeError("set the WSGI application before the server starts")
        self._settings.update(_wsgi.settings(threads, max_body_size, queue, timeout))
        self._wsgi = (app, threads)

    @property
    def chat(self) -> ChatControl:
        """The chat preset's controls (``roomcast.presets.chat`` servers only): hand events
        back to the preset, read a room's users and count, post into a room."""
        if self._settings["chat"] is None:
            raise AttributeError(
                "this server does not run the chat preset; create it with roomcast.presets.chat()"
            )
        return ChatControl(self)

    def _sync_routes(self) -> None:
        running = self._running
        if running is not None:
            running._core.set_routes(*self._routes())

    def _routes(self) -> tuple[bool, bool, bool, list[str]]:
        return (
            self._on_connect is not None,
            self._on_message is not None,
            self._on_disconnect is not None,
            list(self._events),
        )

    # -- rooms and broadcast -----------------------------------------------------------------

    def _core(self) -> Core:
        running = self._running
        if running is None:
            raise RuntimeError("the server is not running; call start(), run() or serve() first")
        return running._core

    def room(self, name: str) -> Room:
        """The room called ``name`` (empty until someone joins)."""
        running = self._running
        if running is None:
            raise RuntimeError("the server is not running; call start(), run() or serve() first")
        return Room(running._core, name, running._dispatcher.connection)

    @property
    def rooms(self) -> list[Room]:
        """Every room that has members."""
        return [self.room(name) for name in self._core().room_names()]

    def broadcast(self, message: Any, exclude: Exclude = None) -> int:
        """Send ``message`` to every open connection; see ``Room.broadcast``."""
        return self._core().broadcast(None, encode(message), exclude_ids(exclude))

    @property
    def connection_count(self) -> int:
        return self._core().connection_count()

    @property
    def broker_url(self) -> Optional[str]:
        """The broker's URL (``Server(broker=...)``), or None: rooms are this process's own."""
        broker = self._settings.get("broker")
        return None if broker is None else str(broker["url"])

    def stats(self) -> dict[str, Any]:
        """The running server's counters and gauges; see ``RunningServer.stats``."""
        return self._core().stats()

    # -- running -----------------------------------------------------------------------------

    def start(
        self, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False
    ) -> RunningServer:
        """Start serving in background threads and return at once (``port=0`` picks a free
        port: read it from the result). Stop with ``.stop()``, from any thread.

        ``reuse_port`` binds with SO_REUSEPORT, so that several processes can listen on one
        port (the kernel spreads new connections between them); ``run(processes=N)`` uses it.
        """
        return self._start(host, port, None, reuse_port)

    def _start(
        self,
        host: str,
        port: int,
        loop: Optional[asyncio.AbstractEventLoop],
        reuse_port: bool = False,
    ) -> RunningServer:
        with self._lock:
            if self._running is not None:
                raise RuntimeError("this server is already running; stop() it first")
            _logging.start()
            core = Core(host, port, {**self._settings, "reuse_port": reuse_port})
            core.set_routes(*self._routes())
            running = RunningServer(self, core, loop)
            self._running = running
        return running

    def use_tls(self, certfile: Optional[PathLike], keyfile: Optional[PathLike]) -> None:
        """Serve TLS with these PEM files: the same as ``Server(ssl_certfile=...,
        ssl_keyfile=...)``, for code that gets the server made (the CLI's ``--ssl-certfile``,
        Django's ``runws``). Call before starting."""
        if self._running is not None:
            raise RuntimeError("turn TLS on before the server starts")
        self._settings["tls"] = _tls(certfile, keyfile)

    def _stopped(self, running: RunningServer) -> None:
        with self._lock:
            if self._running is running:
                self._running = None

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[RunningServer]:
        """``async with app.serve(host, port) as server:`` serves while the block runs, with
        async hooks on the caller's loop; leaving the block stops it gracefully."""
        running = self._start(host, port, asyncio.get_running_loop())
        try:
            yield running
        finally:
            await running.aclose()

    def run(self, host: str = "127.0.0.1", port: int = 8765, *, processes: int = 1) -> None:
        """Serve until Ctrl-C or SIGTERM, then shut down gracefully.

        ``processes=N`` (above 1) serves from N worker processes sharing the port
        (SO_REUSEPORT; ``roomcast run --workers N`` on the command line) while this process
        supervises them: it restarts a worker that dies and, at Ctrl-C or SIGTERM, stops them
        all gracefully. It needs a broker, so that rooms span the processes, and the app in a
        module-level variable, which each worker imports (so call ``run()`` under
        ``if __name__ == "__main__":``). Not to be confused with ``workers``, the hook threads
        of each process. See ``roomcast.supervisor``.
        """
        from . import supervisor

        if processes != 1:
            supervisor.run_processes(self, host, port, processes)
            return
        worker = supervisor.worker_label()  # "" unless a supervisor started this process
        running = self.start(host, port, reuse_port=bool(worker))
        done = threading.Event()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: done.set())
            # A supervisor passes SIGHUP on to its workers, TLS or not: never let it kill one.
            if self._settings["tls"] is not None or worker:
                previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: _hangup(running))
        stop_hint = "" if worker else " (Ctrl-C to stop)"
        # The newline in the one write: workers share stderr, and their lines must not interleave.
        line = f"roomcast: {worker}serving on {running.url}{stop_hint}\n"
        print(line, end="", file=sys.stderr, flush=True)
        try:
            while not done.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            print(f"roomcast: {worker}shutting down\n", end="", file=sys.stderr, flush=True)
            running.stop()
