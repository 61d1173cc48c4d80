"""The chat preset: the multi-room chat protocol of the seed's Node + Redis server, in Rust."""

from __future__ import annotations

from importlib import resources
from typing import Any, Optional

from ..server import Server


def static_file(name: str) -> str:
    """A file shipped in ``roomcast/static/`` (the JS client, the demo page)."""
    return resources.files("roomcast").joinpath("static", *name.split("/")).read_text("utf-8")


def chat(
    *,
    jwt_secret: Optional[str] = None,
    offline_limit: int = 100,
    offline_ttl: float = 7 * 24 * 3600.0,
    heartbeat_interval: Optional[float] = 30.0,
    **settings: Any,
) -> Server:
    """A ``Server`` that speaks the chat protocol (docs/chat.md) with no Python per frame.

    Clients ``enter`` a room (``{"event":"enter","message":NAME,"roomid":ROOM,"uid":UID}``)
    and send ``message`` events; the server stamps the sender's ``name`` and the room's
    ``num`` (distinct users online) on every broadcast, sends ``out`` when a user's last
    connection leaves, pings every connection with ``{"event":"heartbeat","message":"ping",
    "num":N}`` each ``heartbeat_interval`` (closing those that answered nothing since the
    last one), and answers the text ``ping`` with ``pong``. The WebSocket is served on every
    path (the seed's client uses ``/``); ``GET /roomcast.js`` serves the JavaScript client.

    - ``offline_limit`` (100) messages per user per room are kept while a member is away and
      delivered first, once, when they enter again; the oldest beyond it are dropped and
      counted (``app.chat.stats()``). ``offline_ttl`` (7 days) bounds a kept message's age
      and how long an away user stays a member.
    - ``jwt_secret`` turns auth on: HS256 tokens (``exp`` honoured) in ``?token=`` or an
      ``{"event":"auth","message":TOKEN}`` frame; until then frames get ``noauth``.

    Every other ``Server`` setting applies, and so do hooks: ``@app.on("message")`` receives
    those events instead of the preset, and ``app.chat.handle(conn, data)`` hands one back;
    ``on_connect`` can still refuse a connection.
    """
    app = Server(heartbeat_interval=heartbeat_interval, app_heartbeat=True, **settings)
    app._settings["chat"] = {
        "jwt_secret": jwt_secret,
        "offline_limit": offline_limit,
        "offline_ttl": offline_ttl,
    }
    app.page("/roomcast.js", static_file("roomcast.js"), "text/javascript; charset=utf-8")
    return app
