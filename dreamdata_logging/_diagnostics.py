"""The library's own warnings: one per kind of problem at first, then at most one a minute with a count.

They go to the ``dreamdata_logging`` logger. A DreamdataHandler that receives them (say, on the root
logger) ignores them, as records without event data, so they can never loop back into a send.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref

logger = logging.getLogger("dreamdata_logging")

#: Seconds between two reports of the same kind of problem.
REPORT_INTERVAL = 60.0


class RateLimitedReporter:
    """Reports the first problem of each kind at once and then summarises, at most once per interval."""

    def __init__(self, interval: float = REPORT_INTERVAL) -> None:
        self._interval = interval
        self._lock = threading.RLock()  # re-entrant: a signal handler may report while its thread does
        _reporters.add(self)
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def report(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
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
