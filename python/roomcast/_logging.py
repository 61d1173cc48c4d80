"""Moves the Rust core's log records into Python's ``logging`` (logger ``roomcast``).

The core queues records without touching Python; one daemon thread emits them here.
"""

from __future__ import annotations

import logging
import threading

from . import _roomcast

logger = logging.getLogger("roomcast")

_lock = threading.Lock()
_pump: threading.Thread | None = None


def _emit(timeout: float) -> int:
    records, dropped = _roomcast.next_log_records(timeout)
    for level, message in records:
        logger.log(level, message)
    if dropped:
        logger.warning(
            "%d log record(s) from the server core were dropped (logging too slow)", dropped
        )
    return len(records)


def _run() -> None:
    while True:
        _emit(0.05)


def start() -> None:
    """Start the pump once per process, and forward records at the logger's current level."""
    global _pump
    _roomcast.set_log_level(logger.getEffectiveLevel())
    with _lock:
        if _pump is None:
            _pump = threading.Thread(target=_run, name="roomcast-log", daemon=True)
            _pump.start()


def flush() -> None:
    """Emit every record queued so far (used when a server stops)."""
    while _emit(0.0):
        pass
