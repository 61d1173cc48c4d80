"""What a test client raises when a frame it waited for did not come.

The hierarchy::

    AssertionError
     └── ReceiveError         receive/expect/assert_nothing failed; the message says what was
          │                   expected and lists the frames that arrived instead
          ├── ReceiveTimeout  nothing (or nothing matching) arrived in time; also a TimeoutError
          └── ReceiveClosed   the connection closed first; ``code`` and ``reason`` say how

They are ``AssertionError`` so that pytest reports them as a failed expectation, not as a crash.
"""

from __future__ import annotations

from typing import Optional


class ReceiveError(AssertionError):
    """A frame the test waited for did not come, or one came that should not have."""


class ReceiveTimeout(ReceiveError, TimeoutError):
    """Nothing, or nothing matching, arrived before the timeout."""


class ReceiveClosed(ReceiveError):
    """The connection closed before the frame the test waited for arrived."""

    def __init__(self, message: str, code: Optional[int], reason: Optional[str]) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


# Tracebacks name them where users import them from.
for _cls in (ReceiveError, ReceiveTimeout, ReceiveClosed):
    _cls.__module__ = "roomcast.testing"
del _cls
