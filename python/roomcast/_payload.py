"""Turning what users send into a frame payload: str is text, bytes binary, JSON for the rest."""

from __future__ import annotations

import json
from typing import Any, Union

Payload = Union[str, bytes]


def encode(message: Any) -> Payload:
    """``str`` → text frame, bytes-like → binary frame, dict/list/other JSON → text frame."""
    if isinstance(message, (str, bytes)):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"cannot send {type(message).__name__}: send str, bytes, or a JSON-serialisable "
            f"dict/list ({exc})"
        ) from None
