"""Plain HTTP answered by a WSGI application on the WebSocket's port (``Server.wsgi``)."""

from __future__ import annotations

import http.client
import socket
import threading

from websockets.sync.client import connect

import roomcast

from conftest import log_lines, wait_for


def request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def echo_environ(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    text = "|".join(
        [
            environ["REQUEST_METHOD"],
            environ["PATH_INFO"],
            environ["QUERY_STRING"],
            environ.get("HTTP_X_THING", "-"),
            environ.get("CONTENT_TYPE", "-"),
            body.decode(),
            environ.get("HTTP_X_UNDER", "-"),
        ]
    )
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-App", "yes")])
    return [text.encode()]


def test_requests_reach_the_app_and_websockets_share_the_port(start):
    app = roomcast.Server()
    app.wsgi(echo_environ)
    app.on_message(lambda conn, msg: conn.send(msg))
    server = start(app)
    status, headers, body = request(
        server.port,
        "POST",
        "/a%20b/c?x=1",
        b"payload",
        {"X-Thing": "t", "Content-Type": "text/plain", "X_Under": "smuggled"},
    )
    assert status == 201
    assert headers["X-App"] == "yes" and headers["Content-Length"] == str(len(body))
    # Headers with underscores are dropped, as runserver and gunicorn do.
    assert body == b"POST|/a b/c|x=1|t|text/plain|payload|-"
    status, headers, body = request(server.port, "HEAD", "/")
    assert status == 201 and body == b""
    with connect(server.url + "/a%20b/c") as ws:
        ws.send("same port")
        assert ws.recv(timeout=5) == "same port"


def test_an_app_that_raises_answers_500_and_is_logged(start, caplog):
    def broken(environ, start_response):
        raise RuntimeError("boom")

    app = roomcast.Server()
    app.wsgi(broken)
    server = start(app)
    status, _, body = request(server.port, "GET", "/")
    assert (status, body) == (500, b"Internal Server Error\n")
    wait_for(lambda: any("WSGI application raised" in r.getMessage() for r in caplog.records))
    # The server still answers.
    assert request(server.port, "GET", "/")[0] == 500


def test_limits_body_size_chunked_and_timeout(start, caplog):
    release = threading.Event()

    def slow(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            release.wait(5)
        start_response("200 OK", [])
        return [b"ok"]

    app = roomcast.Server()
    app.wsgi(slow, threads=2, max_body_size=10, timeout=0.5)
    server = start(app)
    status, _, body = request(server.port, "POST", "/", b"x" * 11)
    assert status == 413 and b"max_body_size" in body
    assert request(server.port, "POST", "/", b"x" * 10)[0] == 200
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 411 ")
    status, _, body = request(server.port, "GET", "/slow")
    assert status == 504
    release.set()
    # The core's log lines reach Python's logging through a pump thread: wait for it.
    wait_for(lambda: any("http_timeout" in line for line in log_lines(caplog)), what="log line")


def test_a_full_queue_answers_503(start, caplog):
    entered = threading.Event()
    release = threading.Event()

    def blocked(environ, start_response):
        entered.set()
        release.wait(5)
        start_response("200 OK", [])
        return [b"late"]

    app = roomcast.Server()
    app.wsgi(blocked, threads=1, queue=1)
    server = start(app)
    results: list[int] = []

    def get() -> None:
        results.append(request(server.port, "GET", "/")[0])

    first = threading.Thread(target=get)
    first.start()
    assert entered.wait(5), "the one thread took the first request"
    # The thread is busy: of two more requests one waits in the queue, the other gets 503.
    others = [threading.Thread(target=get) for _ in range(2)]
    for t in others:
        t.start()
    wait_for(lambda: 503 in results, what="a request refused with 503")
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert sorted(results) == [200, 200, 503]
    wait_for(lambda: any("wait for the application; 503" in x for x in log_lines(caplog)))
