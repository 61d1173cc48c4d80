"""TLS (wss://): certificates the tests make with trustme, verified by independent clients
(websockets, the ssl module); reloads, ALPN, plaintext clients, and the log lines."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.sync.client import connect

import roomcast

from conftest import echo_app, log_lines, wait_for
from rawws import RawClient


def issue(ca: trustme.CA, folder: Path) -> tuple[Path, Path]:
    """Writes a certificate for 127.0.0.1 signed by ``ca`` (its chain included) and its key."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    return certfile, keyfile


def trusting(*cas: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    for ca in cas:
        ca.configure_trust(ctx)
    return ctx


def echoes(url: str, ctx: ssl.SSLContext, text: str = "hi") -> bool:
    with connect(url, ssl=ctx, open_timeout=5) as ws:
        ws.send(text)
        return ws.recv(timeout=5) == text


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def test_wss_echo_verified_by_an_independent_client(start, ca, tmp_path):
    certfile, keyfile = issue(ca, tmp_path)
    server = start(echo_app(ssl_certfile=certfile, ssl_keyfile=keyfile))
    assert server.url.startswith("wss://127.0.0.1:")
    assert server.tls
    assert echoes(server.url, trusting(ca))


def test_the_chain_is_sent_so_a_client_trusting_only_the_root_verifies_it(start, ca, tmp_path):
    intermediate = ca.create_child_ca()
    certfile, keyfile = issue(intermediate, tmp_path)
    assert certfile.read_text().count("BEGIN CERTIFICATE") == 2
    server = start(echo_app(ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)))
    assert echoes(server.url, trusting(ca))


def test_alpn_selects_http_1_1(start, ca, tmp_path):
    certfile, keyfile = issue(ca, tmp_path)
    server = start(echo_app(ssl_certfile=certfile, ssl_keyfile=keyfile))
    ctx = trusting(ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"


@pytest.mark.parametrize("closer", ["client", "server"])
def test_after_the_closing_handshake_tls_ends_with_close_notify(start, ca, tmp_path, closer):
    """Whoever starts the close, the server ends TLS properly once the Close frames are
    exchanged, so a strict client sees a clean end, not a truncated stream."""
    certfile, keyfile = issue(ca, tmp_path)
    app = roomcast.Server(ssl_certfile=certfile, ssl_keyfile=keyfile)

    @app.on_message
    def bye(conn: roomcast.Connection, message: str) -> None:
        conn.close(4000, "bye")

    server = start(app)
    client = RawClient(server.port, tls=trusting(ca))
    assert client.handshake().startswith("HTTP/1.1 101")
    if closer == "client":
        client.send(0x8, struct.pack("!H", 1000))
        assert client.recv_close() == (1000, "")
    else:
        client.send(0x1, b"close me")
        assert client.recv_close() == (4000, "bye")
        client.send(0x8, struct.pack("!H", 4000))
    assert client.at_eof()  # ssl.SSLEOFError here if the server skipped its close_notify
    client.close()


def test_a_plaintext_client_on_the_tls_port_gets_a_400_saying_why(start, ca, tmp_path, caplog):
    certfile, keyfile = issue(ca, tmp_path)
    server = start(echo_app(ssl_certfile=certfile, ssl_keyfile=keyfile))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        reply = b""
        while chunk := sock.recv(4096):  # the server closes: no hang
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"wss://" in reply
    wait_for(lambda: any("plaintext HTTP on the TLS port" in m for m in log_lines(caplog)))
    assert server.stats()["connections_refused"]["request"] == {400: 1}


def test_failed_tls_handshakes_are_counted_and_harm_no_one(start, ca, tmp_path, caplog):
    certfile, keyfile = issue(ca, tmp_path)
    server = start(echo_app(ssl_certfile=certfile, ssl_keyfile=keyfile, handshake_timeout=0.5))
    with pytest.raises(ssl.SSLCertVerificationError):
        echoes(server.url, trusting(trustme.CA()))  # trusts another CA
    # A socket that never starts TLS is dropped after handshake_timeout.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        started = time.monotonic()
        assert silent.recv(1) == b""
        assert time.monotonic() - started < 8
    wait_for(lambda: server.stats()["tls_handshake_failures"] >= 2, what="two failures counted")
    timed_out = "TLS handshake did not finish within 0.5 s"
    wait_for(lambda: any(timed_out in m for m in log_lines(caplog)), what="the log line")
    assert echoes(server.url, trusting(ca))


def test_reload_serves_the_new_certificate_to_new_connections_only(start, tmp_path):
    old_ca, new_ca = trustme.CA(), trustme.CA()
    certfile, keyfile = issue(old_ca, tmp_path)
    server = start(echo_app(ssl_certfile=certfile, ssl_keyfile=keyfile))
    with connect(server.url, ssl=trusting(old_ca), open_timeout=5) as before:
        issue(new_ca, tmp_path)  # the renewed certificate, in the same files
        server.reload_tls()
        assert echoes(server.url, trusting(new_ca))
        with pytest.raises(ssl.SSLCertVerificationError):
            echoes(server.url, trusting(old_ca))
        before.send("still here")
        assert before.recv(timeout=5) == "still here"


def test_a_broken_reload_keeps_the_old_certificate(start, ca, tmp_path, caplog):
    certfile, keyfile = issue(ca, tmp_path)
    server = start(echo_app(ssl_certfile=certfile, ssl_keyfile=keyfile))
    certfile.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"ssl_certfile .*cert\.pem"):
        server.reload_tls()
    assert server.reload_tls(raise_errors=False) is False
    wait_for(lambda: any("TLS reload failed" in m for m in log_lines(caplog)), what="the log line")
    assert echoes(server.url, trusting(ca))


def test_unusable_tls_settings_are_refused_naming_the_file(ca, tmp_path):
    certfile, keyfile = issue(ca, tmp_path)
    with pytest.raises(ValueError, match="ssl_certfile was given without ssl_keyfile"):
        roomcast.Server(ssl_certfile=certfile)
    with pytest.raises(ValueError, match="ssl_keyfile was given without ssl_certfile"):
        roomcast.Server(ssl_keyfile=keyfile)
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match=r"ssl_certfile .*missing\.pem"):
        roomcast.Server(ssl_certfile=missing, ssl_keyfile=keyfile).start()
    with pytest.raises(ValueError, match=r"ssl_keyfile .*cert\.pem"):
        roomcast.Server(ssl_certfile=certfile, ssl_keyfile=certfile).start()
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = issue(ca, other)
    with pytest.raises(ValueError, match="do not fit together"):
        roomcast.Server(ssl_certfile=certfile, ssl_keyfile=other_key).start()


def test_tls_with_any_origin_warns_at_start(start, ca, tmp_path, caplog):
    certfile, keyfile = issue(ca, tmp_path)
    start(echo_app(ssl_certfile=certfile, ssl_keyfile=keyfile))
    warning = "TLS is on and allowed_origins is None"
    wait_for(lambda: any(warning in m for m in log_lines(caplog)), what="the warning")
    caplog.clear()
    app = echo_app(ssl_certfile=certfile, ssl_keyfile=keyfile, allowed_origins=["example.com"])
    server = start(app)
    assert echoes(server.url, trusting(ca))
    assert not any(warning in m for m in log_lines(caplog))


def test_cookies_without_an_origin_allow_list_are_warned_about_once(start, caplog):
    server = start(echo_app())
    for _ in range(2):
        with connect(server.url, additional_headers={"Cookie": "session=1"}) as ws:
            ws.send("x")
            ws.recv(timeout=5)
    lines = [m for m in log_lines(caplog) if "carried cookies" in m]
    assert len(lines) == 1
    assert "allowed_origins" in lines[0]


def test_wsgi_sees_https_over_tls(start, ca, tmp_path):
    certfile, keyfile = issue(ca, tmp_path)
    app = roomcast.Server(ssl_certfile=certfile, ssl_keyfile=keyfile)

    def scheme(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.url_scheme"].encode()]

    app.wsgi(scheme)
    server = start(app)
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=trusting(ca), timeout=5)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"https"
    conn.close()


def secure_app(**settings: Any) -> roomcast.Server:
    """A server that tells each client whether its handshake request was ``secure``."""
    app = roomcast.Server(**settings)

    @app.on_connect
    def tell(conn: roomcast.Connection, request: roomcast.Request) -> None:
        conn.send(f"secure={request.secure}")

    return app


def test_the_handshake_request_says_whether_it_came_over_tls(start, ca, tmp_path):
    certfile, keyfile = issue(ca, tmp_path)
    tls = start(secure_app(ssl_certfile=certfile, ssl_keyfile=keyfile))
    plain = start(secure_app())
    with connect(tls.url, ssl=trusting(ca), open_timeout=5) as ws:
        assert ws.recv(timeout=5) == "secure=True"
    with connect(plain.url, open_timeout=5) as ws:
        assert ws.recv(timeout=5) == "secure=False"


APP = """
import roomcast

app = roomcast.Server()

@app.on_message
def echo(conn, message):
    conn.send(message)
"""


def test_cli_serves_tls_and_sighup_reloads_the_certificate(tmp_path):
    old_ca, new_ca = trustme.CA(), trustme.CA()
    certfile, keyfile = issue(old_ca, tmp_path)
    (tmp_path / "tlsapp.py").write_text(textwrap.dedent(APP))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "roomcast", "run", "tlsapp:app", "--port", str(port)]
    command += ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)]
    proc = subprocess.Popen(
        command, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env={**os.environ}
    )
    try:
        assert proc.stderr is not None
        lines = iter(proc.stderr.readline, "")
        assert any(f"serving on wss://127.0.0.1:{port}" in line for line in lines)
        url = f"wss://127.0.0.1:{port}"
        assert echoes(url, trusting(old_ca))
        issue(new_ca, tmp_path)
        proc.send_signal(signal.SIGHUP)

        def renewed() -> bool:
            try:
                return echoes(url, trusting(new_ca))
            except ssl.SSLCertVerificationError:
                return False

        wait_for(renewed, timeout=10, what="the new certificate after SIGHUP")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        rest = proc.stderr.read() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        assert code == 0, rest


def test_a_wss_chat_behind_an_origin_allow_list_survives_a_flooding_client(start, ca, tmp_path):
    from chatclient import ChatClient
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    from roomcast import presets

    certfile, keyfile = issue(ca, tmp_path)
    app = presets.chat(
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        allowed_origins=["https://chat.example.com"],
        rate_limit_messages=20,
        compression="deflate",
    )
    server = start(app)
    page = {"ssl": trusting(ca), "origin": "https://chat.example.com"}
    with pytest.raises(InvalidStatus) as refused:
        connect(server.url, ssl=trusting(ca), origin="https://evil.example.net", open_timeout=5)
    assert refused.value.response.status_code == 403
    with ChatClient(server.url, **page) as ann, ChatClient(server.url, **page) as flood:
        ann.enter("lobby", "ann", "Ann")
        flood.enter("lobby", "bob", "Bob")
        ann.expect("enter")  # Bob's arrival
        with pytest.raises(ConnectionClosed) as closed:
            for i in range(1000):
                flood.say(f"spam {i}")
            flood.recv_json(timeout=10)
            flood.recv_json(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        # Ann still chats, over TLS, with whatever of the flood came before its limit.
        ann.say("still here " * 30)  # long enough to go out compressed
        deadline = time.monotonic() + 10
        while True:
            frame = ann.recv_json(timeout=max(0.1, deadline - time.monotonic()))
            if frame.get("event") == "message" and frame["message"].startswith("still here"):
                break
    assert server.stats()["rate_limited"] >= 1
