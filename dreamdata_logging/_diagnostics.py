"""The library's own warnings: one per kind of problem at first, then at most one a minute with a count.

They go to the ``dreamdata_logging`` logger. A DreamdataHandler that receives them (say, on the root
logger) ignores them, as records without event data, so they can never loop back into a send.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
import weakref

logger = logging.getLogger("dreamdata_logging")

#: Seconds between two reports of the same kind of problem.
REPORT_INTERVAL = 60.0


class Report(enum.Enum):
    """What a report is about: one meaning per kind. Reports are rate-limited per kind and detail."""

    NO_THREADS = "no_threads"  # no background thread can run in this process: events would wait for exit
    INVALID = "invalid"  # an event was refused (detail: the reason, its values left out)
    PLAN_VIOLATION = "plan"  # an event broke the tracking plan (detail: event name and field)
    QUEUE_FULL = "queue_full"  # the in-memory queue was full: a new event was dropped
    CLOSED = "closed"  # an event came after the handler closed for good (at exit): dropped
    ON_ERROR_RAISED = "on_error"  # the on_error callback raised
    DELIVERY_FAILED = "delivery"  # events were given up on (detail: the HTTP status, 0 for none)
    SPOOLED = "spooled"  # events not delivered yet were kept in the spool
    SPOOL_OVERFLOW = "spool_overflow"  # the spool passed spool_max_bytes: its oldest events were dropped
    SPOOL_NO_ROOM = "spool_no_room"  # the spool's disk is full: new events are not kept
    SPOOL_ROOM_AGAIN = "spool_room"  # the spool's disk has room again
    SPOOL_UNAVAILABLE = "spool_unavailable"  # the spool could not be used just now (permission, lock, ...)
    SPOOL_UNUSABLE = "spool_unusable"  # the spool file was damaged or foreign: moved aside, or could not be
    SPOOL_REPLACED = "spool_replaced"  # the spool file was removed or replaced while in use
    SPOOL_NO_WAL = "spool_wal"  # the spool's file system has no WAL mode


class RateLimitedReporter:
    """Reports the first problem of each kind at once and then summarises, at most once per interval."""

    def __init__(self, interval: float = REPORT_INTERVAL) -> None:
        self._interval = interval
        self._lock = threading.RLock()  # re-entrant: a signal handler may report while its thread does
        _reporters.add(self)
        self._last: dict[tuple[Report, str], float] = {}
        self._suppressed: dict[tuple[Report, str], int] = {}

    def report(self, kind: Report, message: str, level: int = logging.WARNING, detail: str = "") -> None:
        """Log ``message`` unless a report of the same kind and detail was logged within the interval."""
        key = (kind, detail)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" ({suppressed} more like this since the last report)"
        logger.log(level, "dreamdata-logging: %s", message)


_reporters: weakref.WeakSet[RateLimitedReporter] = weakref.WeakSet()


def _new_locks_in_child() -> None:
    # Another thread may have held a reporter's lock at fork(); the child's copy would stay locked.
    for reporter in list(_reporters):
        reporter._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_in_child)
