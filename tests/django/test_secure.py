"""Django sees the scheme the client used: over wss:// a WebSocket's request is secure, as a
page's over https:// is, both for dwebsocket-style views and for ROOMCAST_APP's middleware."""

from __future__ import annotations

import http.client

import pytest
from django.http import HttpResponse
from django.urls import path
from django_chat.urls import urlpatterns as project_urls
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import roomcast
from roomcast.django.decorators import accept_websocket

# The project's URLs and one view that says what Django makes of the request's scheme.
pytestmark = pytest.mark.urls(__name__)


def describe(request) -> str:  # type: ignore[no-untyped-def]
    return f"{request.scheme} is_secure={request.is_secure()}"


@accept_websocket
def scheme(request):  # type: ignore[no-untyped-def]
    if not request.is_websocket():
        return HttpResponse(describe(request))
    request.websocket.send(describe(request))
    return None


urlpatterns = [*project_urls, path("scheme", scheme)]


def test_a_websocket_view_over_wss_sees_https(runws, certificate):
    files, ctx = certificate
    server = runws(tls=files)
    with connect(f"wss://127.0.0.1:{server.port}/scheme", ssl=ctx) as ws:
        assert ws.recv(timeout=5) == "https is_secure=True"
    page = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=10)
    page.request("GET", "/scheme")
    assert page.getresponse().read() == b"https is_secure=True"  # the same as a page's
    page.close()


def test_a_websocket_view_over_ws_sees_http(runws):
    server = runws()
    with connect(f"ws://127.0.0.1:{server.port}/scheme") as ws:
        assert ws.recv(timeout=5) == "http is_secure=False"


def told_app() -> roomcast.Server:
    """A ROOMCAST_APP whose ``on_connect`` sends what its request (and Django's) says."""
    app = roomcast.Server()

    @app.on_connect
    def tell(conn, request) -> None:  # type: ignore[no-untyped-def]
        conn.send(f"secure={request.secure} {describe(request.django)}")

    return app


def test_roomcast_app_handshakes_over_wss_are_secure_through_the_middleware(runws, certificate):
    files, ctx = certificate
    server = runws(app=told_app(), tls=files)
    with connect(f"wss://127.0.0.1:{server.port}/live/socket", ssl=ctx) as ws:
        assert ws.recv(timeout=5) == "secure=True https is_secure=True"
    plain = runws(app=told_app())
    with connect(f"ws://127.0.0.1:{plain.port}/live/socket") as ws:
        assert ws.recv(timeout=5) == "secure=False http is_secure=False"


def test_secure_ssl_redirect_lets_a_wss_view_through(runws, certificate, settings):
    settings.SECURE_SSL_REDIRECT = True  # SecurityMiddleware redirects what is not https
    files, ctx = certificate
    server = runws(tls=files)
    with connect(f"wss://127.0.0.1:{server.port}/scheme", ssl=ctx) as ws:
        assert ws.recv(timeout=5) == "https is_secure=True"


def test_secure_ssl_redirect_refuses_a_plain_ws_view(runws, settings):
    settings.SECURE_SSL_REDIRECT = True
    server = runws()
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server.port}/scheme")
    assert refused.value.response.status_code == 403  # the redirect to https, refused
