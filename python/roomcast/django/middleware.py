"""dwebsocket's ``WebSocketMiddleware``, compatible with modern Django and harmless beside the
decorators: the handshake is accepted once, whoever asks first."""

from __future__ import annotations

from typing import Any, Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from .decorators import mark_plain_http

__all__ = ["WebSocketMiddleware"]


class WebSocketMiddleware:
    """Put it in ``MIDDLEWARE`` as with dwebsocket. It gives every request
    ``is_websocket()``/``websocket``, refuses (400) a WebSocket to a view that does not
    accept one unless ``WEBSOCKET_ACCEPT_ALL`` is set, and a plain request to a
    ``@require_websocket`` view. With ``WEBSOCKET_ACCEPT_ALL``, undecorated views get their
    socket open too."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        mark_plain_http(request)
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: Any,
        view_kwargs: Any,
    ) -> Any:
        mark_plain_http(request)
        accepts = getattr(view_func, "accept_websocket", False)
        if request.is_websocket():  # type: ignore[attr-defined]
            accept_all = getattr(settings, "WEBSOCKET_ACCEPT_ALL", False)
            if not accepts and not accept_all:
                return HttpResponseBadRequest(
                    "this view does not accept WebSockets (decorate it with @accept_websocket)\n"
                )
            if not getattr(view_func, "_roomcast_websocket", False):
                # Undecorated view under WEBSOCKET_ACCEPT_ALL: open it now, as dwebsocket did.
                request.websocket.accept_connection()  # type: ignore[attr-defined]
        elif getattr(view_func, "require_websocket", False):
            return HttpResponseBadRequest("this URL only speaks WebSocket\n")
        return None
