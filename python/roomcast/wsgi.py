"""Plain HTTP on the WebSocket port, answered by a WSGI application (``Server.wsgi``).

The Rust core reads each plain HTTP request (head and body, within limits) and queues it; a
small pool of threads here takes requests, runs the WSGI application and hands the answer
back. One request per connection (``Connection: close``): this serves pages beside the
WebSockets (Django's pages under ``runws``, a Flask app, a health check), not a CDN.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import unquote_to_bytes

from . import _roomcast

if TYPE_CHECKING:
    from ._roomcast import Core

logger = logging.getLogger("roomcast")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: How long a thread waits for a request before it checks whether the server stopped.
POLL = 0.5


def environ(request: tuple[Any, ...], server_name: str = "roomcast") -> dict[str, Any]:
    """The PEP 3333 environ of one request tuple from the core."""
    _id, method, path, query, headers, body, remote, local, scheme = request
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        # PEP 3333: PATH_INFO is the decoded path, bytes as latin-1 ("bytes-as-unicode").
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": local[0] if local else server_name,
        "SERVER_PORT": str(local[1]) if local else "0",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": remote[0],
        "REMOTE_PORT": str(remote[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        if "_" in name:
            # As Django's runserver and gunicorn do: "x_user" could pose as "x-user".
            continue
        if name == "content-type":
            env["CONTENT_TYPE"] = value
        elif name == "content-length":
            env["CONTENT_LENGTH"] = value
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
            env[key] = f"{env[key]},{value}" if key in env else value
    return env


def call(app: WSGIApp, env: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Runs the application for one request; its status, headers and whole body."""
    started: list[Any] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return written.append  # the legacy write() callable

    result = app(env, start_response)
    try:
        body = b"".join([*written, *result])
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the WSGI application returned without calling start_response")
    status, headers = started
    return int(status.split(" ", 1)[0]), list(headers), body


class WSGIThreads:
    """The threads that answer plain HTTP requests for one running server."""

    def __init__(self, core: Core, app: WSGIApp, threads: int) -> None:
        self._core = core
        self._app = app
        self._threads = [
            threading.Thread(target=self._work, name=f"roomcast-http-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout)

    def _work(self) -> None:
        core = self._core
        while True:
            request = _roomcast.http_next(core, POLL)
            if request is None:
                if not core.running:
                    return
                continue
            status, headers, body = self._answer(request)
            _roomcast.http_respond(core, request[0], status, headers, body)

    def _answer(self, request: tuple[Any, ...]) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            return call(self._app, environ(request))
        except Exception:
            logger.exception("WSGI application raised for %s %s; 500", request[1], request[2])
            return 500, [("Content-Type", "text/plain; charset=utf-8")], b"Internal Server Error\n"


def settings(
    threads: int, max_body_size: int, queue: int, timeout: Optional[float]
) -> dict[str, Any]:
    """The core settings ``Server.wsgi`` turns on."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1 (got {threads})")
    return {
        "http_app": True,
        "max_body_size": max_body_size,
        "http_queue": queue,
        "http_timeout": timeout,
    }
