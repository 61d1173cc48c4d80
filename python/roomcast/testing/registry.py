"""The open test clients, so that ``reap_silent(server)`` can find the ones of a server.

Module state, but weak: a client a test dropped without closing vanishes from it, and nothing
here keeps a connection or a server alive.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Union

from .address import serves

if TYPE_CHECKING:
    from ..running import RunningServer
    from .async_client import AsyncClient
    from .client import Client

    AnyClient = Union[Client, AsyncClient]

_open: weakref.WeakSet[AnyClient] = weakref.WeakSet()


def track(client: AnyClient) -> None:
    _open.add(client)


def untrack(client: AnyClient) -> None:
    _open.discard(client)


def clients_of(server: RunningServer) -> list[AnyClient]:
    """The open clients connected to ``server``, oldest first is not promised."""
    return [c for c in list(_open) if c.close_code is None and serves(server, c.url)]
