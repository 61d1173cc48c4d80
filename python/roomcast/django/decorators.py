"""dwebsocket's decorators: ``@accept_websocket`` and ``@require_websocket``.

They work alone (no middleware needed) and accept the handshake at the innermost point, just
before your view runs: outer decorators (``@login_required``) and middleware have answered by
then, and their answer (a redirect, a 403) refuses the handshake instead of following it.
"""

from __future__ import annotations

from functools import wraps
from typing import Any, Callable, TypeVar

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

__all__ = ["accept_websocket", "require_websocket"]

V = TypeVar("V", bound=Callable[..., Any])


def mark_plain_http(request: HttpRequest) -> None:
    """Give a plain HTTP request dwebsocket's attributes (``is_websocket()`` False)."""
    if not hasattr(request, "is_websocket"):
        request.is_websocket = lambda: False  # type: ignore[attr-defined]
        request.websocket = None  # type: ignore[attr-defined]


def _setup(func: V) -> V:
    @wraps(func)
    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        mark_plain_http(request)
        if not request.is_websocket():  # type: ignore[attr-defined]
            if getattr(view, "require_websocket", False):
                return HttpResponseBadRequest("this URL only speaks WebSocket\n")
            return func(request, *args, **kwargs)
        ws = request.websocket  # type: ignore[attr-defined]
        ws.accept_connection()
        failed = True
        try:
            func(request, *args, **kwargs)
            failed = False
        finally:
            # Returning from the view ends the socket, as with dwebsocket; an exception
            # ends it with 1011 (internal error), and Django logs it as a 500.
            ws.close(1011 if failed else 1000)
        # Never sent (the socket was upgraded); Django's request cycle wants a response.
        return HttpResponse()

    view._roomcast_websocket = True  # type: ignore[attr-defined]
    return view  # type: ignore[return-value]


def accept_websocket(func: V) -> V:
    """The view answers both plain HTTP and WebSocket requests; ``request.is_websocket()``
    tells which. For a WebSocket, ``request.websocket`` is open when the view runs, and is
    closed when it returns."""
    func.accept_websocket = True  # type: ignore[attr-defined]
    func.require_websocket = getattr(func, "require_websocket", False)  # type: ignore[attr-defined]
    return _setup(func)


def require_websocket(func: V) -> V:
    """Like ``accept_websocket``, but plain HTTP requests get 400."""
    func.accept_websocket = True  # type: ignore[attr-defined]
    func.require_websocket = True  # type: ignore[attr-defined]
    return _setup(func)
