"""Rooms: named groups of connections that receive broadcasts together."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ._payload import encode
from ._roomcast import room_drain as _room_drain
from .connection import Connection

if TYPE_CHECKING:
    from ._roomcast import Core

Exclude = Union[Connection, Iterable[Connection], None]


def exclude_ids(exclude: Exclude) -> list[int]:
    if exclude is None:
        return []
    if isinstance(exclude, Connection):
        return [exclude.id]
    return [c.id for c in exclude]


class Room:
    """A handle on one room of a running server. Cheap to create; holds no state itself.

    A room exists while it has members. Every method may be called from any thread.
    """

    __slots__ = ("_core", "_lookup", "name")

    def __init__(self, core: Core, name: str, lookup: Callable[[int], Optional[Connection]]):
        self._core = core
        self._lookup = lookup
        self.name = name

    def broadcast(self, message: Any, exclude: Exclude = None) -> int:
        """Send ``message`` to every member but ``exclude`` (a connection or several).

        The message is serialised once and its bytes shared by every member; the call
        returns at once with the number of members it is addressed to (the members at the
        time of the call). Each member's queue bound applies to it alone: a slow member
        never delays the others.

        Called from a hook, the frames leave when the hook's batch of events is done (at
        most about a millisecond later), in the order the hook sent them: one hand-over to
        the I/O thread per batch instead of one per message.

        With a broker (``Server(broker=...)``) the message also reaches the room's members on
        every other node, exactly once and in the order sent; ``exclude`` and the returned
        count concern this node's members.
        """
        return self._core.broadcast(self.name, encode(message), exclude_ids(exclude))

    async def drain(self, timeout: Optional[float] = None) -> list[Connection]:
        """Wait until every member of this process has room in its queue.

        ``Connection.drain`` for the whole room in one wait: returns once every local member
        (those at the time of the call) is at or below its low-water mark (half its queue
        bounds) or has closed, or when ``timeout`` seconds (``None``: no limit) pass. Returns
        the members still above the mark: an empty list when all drained, else the slow
        ones, to wait for again, or to close. ``[]`` at once when nobody is behind::

            room.broadcast(frame)
            if slow := await room.drain(timeout=1.0):
                for conn in slow:
                    conn.close(1013, "too slow")

        Members on other nodes (with a broker) are not waited for.
        """
        waiting = _room_drain(self._core, self.name, timeout)
        if waiting is None:
            return []
        found = (self._lookup(i) for i in await waiting)
        return [c for c in found if c is not None]

    @property
    def count(self) -> int:
        """Members of the room: on every live node with a broker, else in this process."""
        return self._core.room_count(self.name)

    def __len__(self) -> int:
        return self.count

    @property
    def members(self) -> list[Connection]:
        """This process's members (the connections it can send to and close)."""
        found = (self._lookup(i) for i in self._core.room_members(self.name))
        return [c for c in found if c is not None]

    def __contains__(self, conn: object) -> bool:
        return isinstance(conn, Connection) and conn.id in self._core.room_members(self.name)

    def __repr__(self) -> str:
        return f"<Room {self.name!r} members={self.count}>"
