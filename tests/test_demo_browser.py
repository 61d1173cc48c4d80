"""The chat demo page and roomcast.js in real Chromium.

Two users chat in one room while a third room hears nothing of it; one user closes the page,
comes back with the same browser storage (so the same uid) and gets the lines sent while away,
once; the server restarts on the same port and both pages reconnect and re-enter by
themselves. Two shorter tests: with auth on, the page gets in with the token the demo server
put in it; and roomcast.js against a server that answers one heartbeat and then goes silent.

Needs Debian's ``chromium`` (``apt-get install chromium``) and the ``playwright`` package
(``pip install playwright``), whose driver ships in its wheel: no browser is downloaded.
Without them the tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from roomcast import demo

from conftest import wait_for

try:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Locator,
        Page,
        expect,
        sync_playwright,
    )
except ImportError:  # checked in the `browser` fixture
    sync_playwright = None

CHROMIUM = shutil.which("chromium")
TIMEOUT_MS = 10_000  # every wait on the page is bounded by this
HEARTBEAT = 2.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    missing = [
        what
        for what, ok in [
            ("the `chromium` binary (apt-get install chromium)", CHROMIUM),
            ("the playwright package (pip install playwright)", sync_playwright),
        ]
        if not ok
    ]
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must run it")
        pytest.skip(message)
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        # launch() gives the browser a fresh temporary profile; each new_context() below has
        # its own storage, so every page is a separate user with its own localStorage.
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """``open_page(url, storage_state=None)``: a page in a new context (a separate user with
    its own localStorage). The contexts close after the test, which fails on any script
    error the pages raised."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def _open(url: str, storage_state: Any = None) -> Page:
        context = browser.new_context(storage_state=storage_state)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(url)
        return page

    yield _open
    for context in contexts:
        context.close()
    assert not errors, f"script errors on the page: {errors}"


def enter(page: Page, name: str, roomid: str) -> None:
    page.get_by_test_id("name").fill(name)
    page.get_by_test_id("roomid").fill(roomid)
    page.get_by_test_id("enter").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "open")


def say(page: Page, text: str) -> None:
    page.get_by_test_id("text").fill(text)
    page.get_by_test_id("send").click()


def lines(page: Page, kind: str = "") -> Locator:
    """The text of each message line (optionally of one kind: own, other, enter, out)."""
    selector = f"li[data-kind={kind}]" if kind else "li"
    return page.get_by_test_id("messages").locator(f"{selector} .text")


def count(page: Page) -> Locator:
    return page.get_by_test_id("count")


def test_two_users_chat_leave_return_and_survive_a_restart(open_page):
    server = demo.app(heartbeat_interval=HEARTBEAT).start(port=0)
    port = server.port
    url = f"http://127.0.0.1:{port}/"
    try:
        ann = open_page(url)
        enter(ann, "ann", "room1")
        expect(lines(ann)).to_have_text(["welcome ann"])
        expect(count(ann)).to_have_text("1")

        bob = open_page(url)
        enter(bob, "bob", "room1")
        expect(lines(bob)).to_have_text(["welcome bob"])
        expect(lines(ann)).to_have_text(["welcome ann", "welcome bob"])
        expect(count(ann)).to_have_text("2")
        expect(count(bob)).to_have_text("2")

        carol = open_page(url)
        enter(carol, "carol", "room2")
        say(carol, "carol alone")
        expect(lines(carol)).to_have_text(["welcome carol", "carol alone"])
        expect(count(carol)).to_have_text("1")

        # Each sees the other's line, and its own once (from the server's echo), styled as own.
        say(ann, "hi from ann")
        expect(lines(bob)).to_have_text(["welcome bob", "hi from ann"])
        say(bob, "hi from bob")
        expect(lines(ann)).to_have_text(
            ["welcome ann", "welcome bob", "hi from ann", "hi from bob"]
        )
        expect(lines(bob)).to_have_text(["welcome bob", "hi from ann", "hi from bob"])
        expect(lines(ann, "own")).to_have_text(["hi from ann"])
        expect(lines(ann, "other")).to_have_text(["hi from bob"])
        expect(ann.get_by_test_id("messages").locator("li[data-kind=other] .who")).to_have_text(
            ["bob"]
        )
        expect(lines(bob, "own")).to_have_text(["hi from bob"])

        # Bob closes his page: ann sees him leave and the count drop.
        bob_uid = bob.get_by_test_id("uid").input_value()
        assert bob_uid.startswith("u-")
        bob_storage = bob.context.storage_state()
        bob.context.close()
        expect(lines(ann).last).to_have_text("bob left")
        expect(count(ann)).to_have_text("1")
        say(ann, "while away 1")
        say(ann, "while away 2")
        expect(lines(ann, "own")).to_have_text(["hi from ann", "while away 1", "while away 2"])

        # Bob comes back in a new page with his browser storage: the same uid for his name,
        # and the lines kept for him arrive first, once.
        bob = open_page(url, storage_state=bob_storage)
        bob.get_by_test_id("name").fill("bob")
        expect(bob.get_by_test_id("uid")).to_have_value(bob_uid)
        enter(bob, "bob", "room1")
        expect(lines(bob)).to_have_text(["while away 1", "while away 2", "welcome bob"])
        expect(lines(ann).last).to_have_text("welcome bob")
        expect(count(ann)).to_have_text("2")
        expect(count(bob)).to_have_text("2")
        say(bob, "back again")
        expect(lines(ann).last).to_have_text("back again")
        expect(lines(bob)).to_have_text(
            ["while away 1", "while away 2", "welcome bob", "back again"]
        )

        # Room 2 heard nothing of room 1, and room 1 nothing of room 2.
        expect(lines(carol)).to_have_text(["welcome carol", "carol alone"])
        expect(ann.get_by_test_id("messages")).not_to_contain_text("carol")

        # The server stops: both pages notice and keep trying ...
        server.stop(timeout=2.0)
        for page in (ann, bob):
            expect(page.get_by_test_id("status")).to_have_attribute("data-state", "reconnecting")
        # ... until a new server on the same port takes them back, into their room.
        server = demo.app(heartbeat_interval=HEARTBEAT).start(port=port)
        for page in (ann, bob):
            expect(page.get_by_test_id("status")).to_have_attribute("data-state", "open")
            expect(page.get_by_test_id("status")).to_have_text("connected")
            expect(count(page)).to_have_text("2")
        say(ann, "after the restart")
        expect(lines(bob).last).to_have_text("after the restart")
        say(bob, "bob after the restart")
        expect(lines(ann).last).to_have_text("bob after the restart")
        expect(lines(ann, "own").last).to_have_text("after the restart")
    finally:
        server.stop(timeout=2.0)


def test_with_auth_on_the_page_uses_the_token_the_demo_put_in_it(open_page, start):
    server = start(demo.app(jwt_secret="s" * 32, heartbeat_interval=HEARTBEAT))
    page = open_page(f"http://127.0.0.1:{server.port}/")
    token = page.locator("meta[name=roomcast-token]").get_attribute("content")
    assert token.count(".") == 2  # a JWT, filled in by the demo server
    enter(page, "ann", "room1")
    say(page, "signed in")
    expect(lines(page)).to_have_text(["welcome ann", "signed in"])

    # The token is what let it in: a client on the same page without it is refused.
    first_answer = page.evaluate(
        """() => new Promise((resolve, reject) => {
            import("/roomcast.js").then(({ RoomcastChat }) => {
                const chat = new RoomcastChat();
                for (const name of ["noauth", "enter"]) chat.on(name, (f) => resolve(f));
                chat.enter({ name: "eve", roomid: "room1", uid: "u-eve" });
                setTimeout(() => reject(new Error("no answer to enter")), 5000);
            });
        })"""
    )
    assert first_answer == {"event": "noauth", "message": "please auth again"}
    expect(lines(page)).to_have_text(["welcome ann", "signed in"])


class SilentServer:
    """A WebSocket server that says one heartbeat ping per connection, answers the text
    ``ping``, and is otherwise silent: what a hung server looks like to a client."""

    def __init__(self) -> None:
        self.connections: list[dict[str, Any]] = []
        self.server = serve(self._handle, "127.0.0.1", 0, ping_interval=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, ws: ServerConnection) -> None:
        conn: dict[str, Any] = {"path": ws.request.path, "frames": [], "code": None}
        conn["opened"] = time.monotonic()
        self.connections.append(conn)
        ws.send(json.dumps({"event": "heartbeat", "message": "ping"}))
        try:
            for frame in ws:
                conn["frames"].append(frame)
                if frame == "ping":
                    ws.send("pong")
        except ConnectionClosed as exc:
            conn["code"] = exc.rcvd.code if exc.rcvd else None
        conn["closed"] = time.monotonic()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


def test_client_answers_heartbeats_and_leaves_a_silent_server(open_page, start):
    # The demo server serves /roomcast.js; the client inside it talks to the silent server.
    served = start(demo.app(heartbeat_interval=HEARTBEAT))
    page = open_page(f"http://127.0.0.1:{served.port}/")
    silent = SilentServer()
    try:
        page.evaluate(
            """async (url) => {
                const { RoomcastChat } = await import("/roomcast.js");
                const chat = new RoomcastChat({
                    url, token: "t0k", heartbeatMs: 600, heartbeatMarginMs: 200,
                    minDelayMs: 50, maxDelayMs: 200,
                });
                window.seen = [];
                for (const name of ["open", "close", "pong"]) {
                    chat.on(name, (e) => window.seen.push([name, e && (e.code ?? e.reconnect)]));
                }
                chat.enter({ name: "dan", roomid: "r", uid: "u-dan" });
                window.chat = chat;
            }""",
            f"ws://127.0.0.1:{silent.port}/",
        )
        conns = silent.connections
        wait_for(lambda: len(conns) >= 2, timeout=5, what="a reconnect after the silence")
        first = conns[0]
        wait_for(lambda: "closed" in first, timeout=5, what="the first connection closed")
        enter = {"event": "enter", "message": "dan", "roomid": "r", "uid": "u-dan"}
        pong = {"event": "heartbeat", "message": "pong"}
        assert [json.loads(f) for f in first["frames"]] == [enter, pong]
        assert first["path"] == "/?token=t0k"
        assert first["code"] == 4000
        # Given up after the heartbeat plus the margin without a frame (0.8 s), not before.
        assert 0.75 <= first["closed"] - first["opened"] < 3

        # The new connection re-entered the room, with the token, first thing.
        second = conns[1]
        wait_for(lambda: len(second["frames"]) >= 2, timeout=5, what="the re-enter")
        assert second["path"] == "/?token=t0k"
        assert json.loads(second["frames"][0]) == enter
        # ping() sends only while connected; the client keeps leaving this silent server.
        wait_for(lambda: page.evaluate("window.chat.ping()"), timeout=5, what="a ping sent")
        seen = wait_for(
            lambda: [e for e in page.evaluate("window.seen") if e[0] == "pong"] or None,
            timeout=5,
            what="the text pong surfaced",
        )
        assert seen == [["pong", None]]
        events = page.evaluate("window.seen")
        assert events[:3] == [["open", False], ["close", 4000], ["open", True]]
    finally:
        page.context.close()  # the client stops dialling before the server goes
        silent.close()
