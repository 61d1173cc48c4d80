"""``app.chat``: what Python can do with a running chat preset (see ``roomcast.presets.chat``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .connection import Connection

if TYPE_CHECKING:
    from ._roomcast import ChatCore
    from .server import Server


class ChatControl:
    """The chat preset's calls. Every method may be called from any thread while the server
    runs; the ones that touch a room wait for it briefly (the GIL is released meanwhile)."""

    __slots__ = ("_app",)

    def __init__(self, app: Server) -> None:
        self._app = app

    def _core(self) -> ChatCore:
        chat = self._app._core().chat()
        if chat is None:  # pragma: no cover - guarded by Server.chat
            raise RuntimeError("this server does not run the chat preset")
        return chat

    def handle(self, conn: Connection, data: dict[str, Any]) -> None:
        """Hand an event back to the preset, as if ``conn`` had just sent ``data``.

        A hook registered with ``@app.on("message")`` (or any other event) receives those
        events instead of the preset; it may drop them, change them, and pass them on with
        this one call::

            @app.on("message")
            def moderate(conn, data):
                if "spam" not in data.get("message", ""):
                    app.chat.handle(conn, data)

        Raises ``ConnectionClosed`` if the connection has closed.
        """
        self._core().handle(conn.id, _json(data))

    def users(self, room: str) -> dict[str, str]:
        """``{uid: name}`` of the users online in ``room`` (each counted once, however many
        connections they have open)."""
        return dict(self._core().users(room))

    def count(self, room: str) -> int:
        """The number of distinct users online in ``room``: the protocol's ``num``."""
        return self._core().count(room)

    def post(
        self,
        room: str,
        message: str,
        *,
        name: str = "system",
        event: str = "message",
        **fields: Any,
    ) -> int:
        """Post into ``room`` as ``name`` (a bot, a notice). It takes the members' path:
        ``name`` and ``num`` are stamped, and a ``message`` is kept for members who are away.
        Returns how many connections it was queued for (0, and nothing kept, when nobody
        ever entered the room)."""
        data = {"event": event, "message": message, **fields}
        return self._core().post(room, name, _json(data))

    def stats(self) -> dict[str, int]:
        """Offline-message counters: ``offline_kept``, ``offline_delivered``,
        ``offline_dropped`` (``_full`` + ``_expired``), ``offline_waiting``, and
        ``store_failures``: roster calls to Redis that failed (with a broker; always 0
        without). With a broker the offline counters are the whole cluster's, as Redis
        counted them at the last roster tick; ``store_failures`` is this node's."""
        return dict(self._core().stats())


def _json(data: dict[str, Any]) -> str:
    if not isinstance(data, dict):
        raise TypeError(f"a chat event is a dict, not {type(data).__name__}")
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
