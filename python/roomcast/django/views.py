"""dwebsocket-style views on roomcast: each open view socket runs its view on a thread of its
own (the view blocks for the socket's life), from a bounded set that is not the hook workers.

The handshake waits for the view: it is accepted when the view's ``@accept_websocket`` lets
it through (after every middleware and outer decorator), and refused with the response they
gave otherwise (a redirect to the login page becomes 403, a 404 stays 404).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Optional

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.core.signals import request_started
from django.db import connections
from django.urls import ResolverMatch, set_script_prefix

from ..connection import Connection
from ..exceptions import Reject
from .websocket import WebSocket

logger = logging.getLogger("roomcast")

#: Longest body of a refusal sent back at the handshake (a DEBUG error page can be huge).
MAX_REFUSAL_BODY = 8192

_stack_lock = threading.Lock()


class ViewSockets:
    """The open view sockets of one server, and the threads that run their views."""

    def __init__(self, max_threads: int, stack_size: int) -> None:
        self.max_threads = max_threads
        self.stack_size = stack_size
        self.handler = WSGIHandler()
        self._lock = threading.Lock()
        self._sockets: dict[int, WebSocket] = {}

    @property
    def open(self) -> int:
        """View sockets whose thread is running."""
        with self._lock:
            return len(self._sockets)

    def get(self, conn_id: int) -> Optional[WebSocket]:
        with self._lock:
            return self._sockets.get(conn_id)

    def connect(self, conn: Connection, environ: dict[str, Any], match: ResolverMatch) -> Any:
        """Starts the view's thread; returns what ``on_connect`` awaits (the view's decision).
        Raises ``Reject`` when the view takes no WebSockets or the thread cap is reached."""
        view = match.func
        if not getattr(view, "accept_websocket", False) and not getattr(
            settings, "WEBSOCKET_ACCEPT_ALL", False
        ):
            raise Reject(
                400,
                f"{environ['PATH_INFO']} does not accept WebSockets (its view needs "
                "@accept_websocket)\n",
            )
        ws = WebSocket(conn)
        with self._lock:
            if len(self._sockets) >= self.max_threads:
                logger.warning(
                    "WebSocket view %s refused with 503: %d view sockets are open "
                    "(ROOMCAST_VIEW_THREADS); each holds a thread",
                    environ["PATH_INFO"],
                    self.max_threads,
                )
                raise Reject(503, "too many open WebSocket views on this server; retry later\n")
            self._sockets[conn.id] = ws
        thread = threading.Thread(
            target=self._run, args=(conn.id, environ, ws), name=f"roomcast-view-{conn.id}"
        )
        thread.daemon = True
        try:
            with _stack_lock:
                previous = threading.stack_size(self.stack_size)
                try:
                    thread.start()
                finally:
                    threading.stack_size(previous)
        except BaseException:
            with self._lock:
                self._sockets.pop(conn.id, None)
            raise
        return _decision(ws)

    def disconnected(self, conn_id: int) -> bool:
        """The client left; False if ``conn_id`` is not a view socket."""
        ws = self.get(conn_id)
        if ws is None:
            return False
        ws._client_gone()
        return True

    def _run(self, conn_id: int, environ: dict[str, Any], ws: WebSocket) -> None:
        try:
            set_script_prefix(environ.get("SCRIPT_NAME") or "/")
            request_started.send(sender=WSGIHandler, environ=environ)
            request = WSGIRequest(environ)
            request.is_websocket = lambda: True  # type: ignore[attr-defined]
            request.websocket = ws  # type: ignore[attr-defined]
            response = self.handler.get_response(request)
            response._handler_class = WSGIHandler  # type: ignore[attr-defined]
            if not ws._accepted.done():
                ws._accepted.set_exception(_refusal(response))
            # request_finished: the database connection is closed or kept per CONN_MAX_AGE.
            response.close()
        except BaseException as exc:
            logger.exception("WebSocket view for connection %s failed", conn_id)
            if not ws._accepted.done():
                ws._accepted.set_exception(Reject(500, "Internal Server Error\n"))
            if not isinstance(exc, Exception):
                raise
        finally:
            if ws.accepted:
                ws.close()
            # The thread ends here: its database connections go with it (as runserver does).
            connections.close_all()
            with self._lock:
                self._sockets.pop(conn_id, None)


def _refusal(response: Any) -> Reject:
    """The handshake's refusal from the response the view or a middleware gave instead."""
    status = response.status_code
    body = b"" if getattr(response, "streaming", False) else bytes(response.content)
    text = body[:MAX_REFUSAL_BODY].decode("utf-8", "replace")
    if 300 <= status < 400:
        where = response.get("Location", "")
        return Reject(403, f"the view redirected to {where} instead of accepting the WebSocket\n")
    if status < 400:
        return Reject(400, f"the view answered {status} without accepting the WebSocket\n")
    return Reject(status, text or f"{status}\n")


async def _decision(ws: WebSocket) -> bool:
    # Waits on the loop, not on a hook worker: a slow middleware holds up nothing else.
    return await asyncio.wrap_future(ws._accepted)


def close_old_connections_around(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Runs a sync hook the way Django runs a request: database connections that are
    unusable or past ``CONN_MAX_AGE`` are closed before and after (hook workers live long)."""
    from django.db import close_old_connections

    def run(*args: Any) -> Any:
        close_old_connections()
        try:
            return hook(*args)
        finally:
            close_old_connections()

    run.__wrapped__ = hook  # type: ignore[attr-defined]
    return run
