"""roomcast: a WebSocket server for Python with a Rust core.

Rooms, broadcast, heartbeats and backpressure run in Rust; your hooks run in Python::

    import roomcast

    app = roomcast.Server()

    @app.on_message
    def echo(conn, message):
        conn.send(message)

    app.run(port=8765)
"""

from .connection import Connection, Request
from .exceptions import ConnectionClosed, Reject, RoomcastError
from .rooms import Room
from .running import RunningServer
from .server import Server

__version__ = "0.1.0"

__all__ = [
    "Connection",
    "ConnectionClosed",
    "Reject",
    "Request",
    "Room",
    "RoomcastError",
    "RunningServer",
    "Server",
    "__version__",
]
