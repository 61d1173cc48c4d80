"""More dwebsocket-style views: a WebSocket-only clock (seed 001's timed push) and a view that
greets the logged-in user from the session."""

import time

from roomcast.django.decorators import accept_websocket, require_websocket


@require_websocket
def clock(request):
    # Plain HTTP gets 400 here; a WebSocket gets the time every second until it closes.
    while not request.websocket.is_closed():
        request.websocket.send(time.strftime("%H:%M:%S"))
        request.websocket.wait(timeout=1.0)


@accept_websocket
def whoami(request):
    if not request.is_websocket():
        return render_name(request)
    request.websocket.send(request.user.get_username() or "anonymous")
    for message in request.websocket:
        if message == b"again":
            request.websocket.send(request.user.get_username() or "anonymous")


@accept_websocket
def fail(request):
    # A bug after the socket opened: the client gets 1011, Django logs the error as a 500.
    request.websocket.wait()
    raise RuntimeError("a bug in a WebSocket view")


def render_name(request):
    from django.http import HttpResponse

    return HttpResponse(request.user.get_username() or "anonymous")
