"""``from dwebsocket.backends.default.websocket import DefaultWebSocket``, kept."""

from ...websocket import WebSocket as DefaultWebSocket

__all__ = ["DefaultWebSocket"]
