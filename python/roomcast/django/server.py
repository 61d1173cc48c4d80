"""A Django project and roomcast on one port: what ``manage.py runws`` serves.

- Plain HTTP goes to the project's WSGI application (pages, the admin, static files in DEBUG
  as runserver serves them).
- A WebSocket whose path resolves in the project's URLconf runs that view, dwebsocket-style
  (``views.py``), through the project's middleware.
- Any other WebSocket goes to the event-driven app named by ``ROOMCAST_APP`` (a
  ``roomcast.Server``), whose ``on_connect`` sees ``request.user`` and ``request.session``.

Settings (all optional): ``ROOMCAST_APP`` ("package.module:app"), ``ROOMCAST_SETTINGS`` (a
dict of ``roomcast.Server`` settings when there is no app), ``ROOMCAST_VIEW_THREADS`` (1000
view sockets at once, then 503), ``ROOMCAST_VIEW_THREAD_STACK`` (512 KiB),
``ROOMCAST_HTTP_THREADS`` (8), ``WEBSOCKET_ACCEPT_ALL``; ``WEBSOCKET_FACTORY_CLASS`` is
accepted and ignored.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from typing import Any, Callable, Optional

from django.conf import settings
from django.core.handlers.base import BaseHandler
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.core.servers.basehttp import get_internal_wsgi_application
from django.core.signals import request_started
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve, set_script_prefix

from .. import wsgi
from ..connection import Connection, Request
from ..exceptions import Reject
from ..server import Server
from .views import ViewSockets, _refusal, close_old_connections_around

logger = logging.getLogger("roomcast")

VIEW_THREADS = 1000
VIEW_THREAD_STACK = 512 * 1024
HTTP_THREADS = 8


class DjangoRequest(Request):
    """The handshake as ``on_connect`` of a ``ROOMCAST_APP`` sees it: a ``roomcast.Request``
    that has been through the project's middleware, with ``user`` and ``session``; the
    ``HttpRequest`` itself is ``django``."""

    __slots__ = ("django",)

    django: Optional[HttpRequest]

    @classmethod
    def _enrich(cls, request: Request, django: HttpRequest) -> DjangoRequest:
        enriched = cls.__new__(cls)
        request._copy_into(enriched)
        object.__setattr__(enriched, "django", django)
        return enriched

    @property
    def user(self) -> Any:
        return getattr(self.django, "user", None)

    @property
    def session(self) -> Any:
        return getattr(self.django, "session", None)


class _ThroughMiddleware(BaseHandler):
    """The project's middleware with no view at the end: a handshake for the event-driven
    app gets sessions, ``request.user`` and every refusal a middleware would give."""

    def __init__(self) -> None:
        super().__init__()
        self.load_middleware()

    def _get_response(self, request: HttpRequest) -> HttpResponse:
        request._roomcast_passed = True  # type: ignore[attr-defined]
        return HttpResponse()


def handshake_environ(request: Request) -> dict[str, Any]:
    """The WSGI environ of a WebSocket handshake: over TLS its scheme is https, as a page's
    is, so ``is_secure()``, secure cookies and the CSRF checks see what the browser used."""
    headers = list(request.headers.items())
    return wsgi.environ(
        (
            0,
            "GET",
            request.path,
            request.query_string,
            headers,
            b"",
            request.remote_addr,
            None,
            "https" if request.secure else "http",
        )
    )


def load_app(spec: str) -> Server:
    """``ROOMCAST_APP``: "package.module:attr" (or "package.module.attr")."""
    module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    module = importlib.import_module(module_name)
    app = getattr(module, attr, None)
    if not isinstance(app, Server):
        raise TypeError(f"ROOMCAST_APP {spec!r} is {type(app).__name__}, not a roomcast.Server")
    return app


def http_application(static: bool = True) -> Callable[..., Any]:
    """The project's WSGI application; in DEBUG with staticfiles installed, static files are
    served first, as runserver does."""
    app = get_internal_wsgi_application()
    if static and settings.DEBUG:
        from django.apps import apps

        if apps.is_installed("django.contrib.staticfiles"):
            from django.contrib.staticfiles.handlers import StaticFilesHandler

            app = StaticFilesHandler(app)
    return app


def build(*, static: bool = True, app: Optional[Server] = None) -> Server:
    """The server for this project: its pages, its WebSocket views and its ``ROOMCAST_APP``
    on one port. Call after ``django.setup()``."""
    if getattr(settings, "WEBSOCKET_FACTORY_CLASS", None):
        warnings.warn(
            "WEBSOCKET_FACTORY_CLASS is ignored: roomcast serves every WebSocket itself",
            stacklevel=2,
        )
    if app is None:
        spec = getattr(settings, "ROOMCAST_APP", None)
        app = load_app(spec) if spec else Server(**getattr(settings, "ROOMCAST_SETTINGS", {}))
    views = ViewSockets(
        max_threads=getattr(settings, "ROOMCAST_VIEW_THREADS", VIEW_THREADS),
        stack_size=getattr(settings, "ROOMCAST_VIEW_THREAD_STACK", VIEW_THREAD_STACK),
    )
    _route(app, views)
    # Unless the app names its own, Django's settings decide (again at every build).
    if app._settings.get("allowed_origins") is None or getattr(app, "_django_origins", False):
        app._settings["allowed_origins"] = django_origins()
        app._django_origins = True  # type: ignore[attr-defined]
    app.wsgi(
        http_application(static), threads=getattr(settings, "ROOMCAST_HTTP_THREADS", HTTP_THREADS)
    )
    app.django_views = views  # type: ignore[attr-defined]
    return app


def django_origins() -> Optional[list[str]]:
    """The pages allowed to open a WebSocket, as Django's own checks allow a request: the hosts
    of ``ALLOWED_HOSTS`` (``.example.com`` also covers its subdomains; ``*`` allows any, so no
    check) and the origins of ``CSRF_TRUSTED_ORIGINS``. With ``DEBUG`` and no
    ``ALLOWED_HOSTS``, Django's own defaults (localhost). ``ROOMCAST_SETTINGS`` or the app's
    ``allowed_origins`` replaces it."""
    hosts = list(getattr(settings, "ALLOWED_HOSTS", []))
    if not hosts and settings.DEBUG:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    if "*" in hosts:
        return None
    origins: list[str] = []
    for host in hosts:
        if host.startswith("."):
            origins += [host[1:], "*" + host]
        else:
            origins.append(host)
    origins += list(getattr(settings, "CSRF_TRUSTED_ORIGINS", []))
    return origins


def _route(app: Server, views: ViewSockets) -> None:
    """Puts the views in front of the app's own hooks."""
    # Built again (a test, a restart), the app is routed from its own hooks, not ours.
    own = getattr(app, "_django_own_hooks", None)
    if own is None:
        own = (app._on_connect, app._on_message, app._on_disconnect, dict(app._events))
        own += (app._settings["paths"],)
        app._django_own_hooks = own  # type: ignore[attr-defined]
    own_connect, own_message, own_disconnect, own_events, own_paths = own
    app._settings["paths"] = None  # the views' paths are served too; routing happens here
    through = _ThroughMiddleware()
    wrap = close_old_connections_around

    def on_connect(conn: Connection, request: Request) -> Any:
        environ = handshake_environ(request)
        try:
            match = resolve(environ["PATH_INFO"])
        except Resolver404:
            match = None
        if match is not None:
            return views.connect(conn, environ, match)
        has_hooks = own_connect or own_message or own_disconnect or own_events
        if not has_hooks or (own_paths is not None and request.path not in own_paths):
            raise Reject(404, f"no WebSocket view or roomcast app at {request.path}\n")
        django_request = _through_middleware(through, environ)
        enriched = DjangoRequest._enrich(request, django_request)
        conn.request = enriched
        if own_connect is None:
            return True
        return wrap(own_connect)(conn, enriched)

    def on_message(conn: Connection, message: Any) -> Any:
        if own_message is not None:
            return wrap(own_message)(conn, message)
        return None

    def on_disconnect(conn: Connection, code: int, reason: str) -> Any:
        if views.disconnected(conn.id):
            return None
        if own_disconnect is not None:
            return wrap(own_disconnect)(conn, code, reason)
        return None

    app._on_connect = on_connect
    app._on_message = on_message
    app._on_disconnect = on_disconnect
    app._events = {name: wrap(hook) for name, hook in own_events.items()}


def _through_middleware(through: _ThroughMiddleware, environ: dict[str, Any]) -> HttpRequest:
    set_script_prefix(environ.get("SCRIPT_NAME") or "/")
    request_started.send(sender=WSGIHandler, environ=environ)
    request = WSGIRequest(environ)
    response = through.get_response(request)
    response._handler_class = WSGIHandler  # type: ignore[attr-defined]
    passed = getattr(request, "_roomcast_passed", False)
    refusal = None if passed else _refusal(response)
    response.close()
    if refusal is not None:
        raise refusal
    return request
