"""The frames a test client holds, and the words of its failures; no I/O here.

``Client`` and ``AsyncClient`` read frames their own way (a thread, a coroutine) and hand each
one to an ``Inbox``: it keeps the frames ``expect()`` skipped, in arrival order, for later
receives, matches JSON frames against an expectation, and writes the failure messages, so
both clients say the same thing when a frame does not come.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Optional, Union

from .errors import ReceiveClosed, ReceiveError, ReceiveTimeout

Frame = Union[str, bytes]

# How much of the held frames a failure message shows.
SHOWN_FRAMES = 20
SHOWN_CHARS = 200

_NO_MATCH = object()


def match(frame: Frame, event: Optional[str], fields: dict[str, Any]) -> Any:
    """The decoded JSON of ``frame`` if it matches (``_NO_MATCH`` otherwise): a text frame
    holding JSON; with ``event`` or ``fields``, an object whose ``"event"`` is ``event`` and
    whose ``fields`` have those values."""
    if not isinstance(frame, str):
        return _NO_MATCH
    try:
        data = json.loads(frame)
    except ValueError:
        return _NO_MATCH
    if event is None and not fields:
        return data
    if not isinstance(data, dict):
        return _NO_MATCH
    if event is not None and data.get("event") != event:
        return _NO_MATCH
    for name, value in fields.items():
        if name not in data or data[name] != value:
            return _NO_MATCH
    return data


def expectation(event: Optional[str], fields: dict[str, Any]) -> str:
    """``a JSON object with event="said", text="hi"``: what ``expect()`` waits for, in words."""
    wanted = {"event": event, **fields} if event is not None else fields
    if not wanted:
        return "a JSON frame"
    shown = ", ".join(f"{name}={json.dumps(value, default=repr)}" for name, value in wanted.items())
    return f"a JSON object with {shown}"


def show(frame: Frame) -> str:
    """One frame as a failure message lists it: text as it came (quoted unless JSON), binary as
    ``bytes``; long ones cut."""
    if isinstance(frame, bytes):
        text = f"binary {frame!r}"
    else:
        try:
            json.loads(frame)
            text = frame
        except ValueError:
            text = f"text {frame!r}"
    if len(text) > SHOWN_CHARS:
        text = f"{text[:SHOWN_CHARS]}... ({len(frame)} {_unit(frame)})"
    return text


def _unit(frame: Frame) -> str:
    return "bytes" if isinstance(frame, bytes) else "characters"


class Inbox:
    """Frames received and not consumed yet, oldest first."""

    def __init__(self) -> None:
        self.held: deque[Frame] = deque()

    def take(self) -> Optional[Frame]:
        """The oldest held frame, or None."""
        return self.held.popleft() if self.held else None

    def take_match(self, event: Optional[str], fields: dict[str, Any]) -> Any:
        """The first held frame matching (decoded), removed from the inbox; ``_NO_MATCH``."""
        for i, frame in enumerate(self.held):
            data = match(frame, event, fields)
            if data is not _NO_MATCH:
                del self.held[i]
                return data
        return _NO_MATCH

    def keep(self, frame: Frame) -> None:
        self.held.append(frame)

    def listing(self, instead: str = " instead") -> str:
        """``; nothing arrived`` or ``; 2 frames arrived instead ...`` and the frames."""
        if not self.held:
            return "; nothing arrived"
        count = len(self.held)
        noun = "frame" if count == 1 else "frames"
        lines = [f"; {count} {noun} arrived{instead} (kept for the next receive):"]
        lines += [f"  {show(frame)}" for frame in list(self.held)[:SHOWN_FRAMES]]
        if count > SHOWN_FRAMES:
            lines.append(f"  ... and {count - SHOWN_FRAMES} more")
        return "\n".join(lines)

    # -- failures ----------------------------------------------------------------------------

    def timed_out(self, wanted: str, timeout: float) -> ReceiveTimeout:
        return ReceiveTimeout(f"timed out after {timeout:g} s waiting for {wanted}{self.listing()}")

    def closed(self, wanted: str, code: Optional[int], reason: Optional[str]) -> ReceiveClosed:
        how = f"code {code}" + (f", reason {reason!r}" if reason else "")
        return ReceiveClosed(
            f"the connection closed ({how}) while waiting for {wanted}{self.listing()}",
            code,
            reason,
        )

    def unwanted(self, within: float) -> ReceiveError:
        return ReceiveError(f"expected nothing within {within:g} s{self.listing(instead='')}")


def not_json(frame: Frame) -> ReceiveError:
    return ReceiveError(f"expected a JSON frame, received {show(frame)}")


def decode_json(frame: Frame) -> Any:
    """``receive_json()``: the frame's JSON, or a ``ReceiveError`` naming what came instead."""
    if isinstance(frame, bytes):
        raise not_json(frame)
    try:
        return json.loads(frame)
    except ValueError:
        raise not_json(frame) from None


def is_match(data: Any) -> bool:
    return data is not _NO_MATCH
