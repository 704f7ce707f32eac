"""How long one send may go on: read by the transport before every attempt and every backoff wait."""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional


class Deadlines:
    """The deadlines that bound every send of one worker: ``close()``'s and an inline ``flush(timeout)``'s."""

    __slots__ = ("closing", "inline")

    def __init__(self) -> None:
        self.closing: Optional[float] = None  # a time.monotonic() value
        self.inline: Optional[float] = None

    def earliest(self) -> Optional[float]:
        closing, inline = self.closing, self.inline
        if closing is None:
            return inline
        return closing if inline is None else min(closing, inline)


class Budget:
    """One send's time: the worker's deadlines, less ``reserve`` seconds, and the send's own ``limit``.

    ``stop_retrying`` is asked after each attempt (every read but the first follows one): when it says
    yes, the budget ends now, so the transport gives up instead of waiting for another try. That is how
    a probe makes a single attempt, and how a send gives way when the queue fills behind it.
    """

    __slots__ = ("_deadlines", "_reserve", "_until", "_stop_retrying", "_reads", "stopped")

    def __init__(
        self,
        deadlines: Deadlines,
        *,
        limit: Optional[float] = None,
        reserve: float = 0.0,
        stop_retrying: Optional[Callable[[], bool]] = None,
    ) -> None:
        self._deadlines = deadlines
        self._reserve = reserve
        self._until = None if limit is None else time.monotonic() + limit
        self._stop_retrying = stop_retrying
        self._reads = 0
        self.stopped = False  # the send was ended by stop_retrying, not by a deadline

    def __call__(self) -> Optional[float]:
        self._reads += 1
        if self._reads > 1 and self._stop_retrying is not None and self._stop_retrying():
            self.stopped = True
            return time.monotonic()
        limit = self._deadlines.earliest()
        if limit is not None:
            limit -= self._reserve
        own = self._until
        if own is None:
            return limit
        return own if limit is None else min(own, limit)


def set_unless_busy(event: threading.Event) -> None:
    """Set ``event`` unless this thread was interrupted (by a signal handler) while inside one of its
    methods, which would deadlock; the waiting thread then notices within its own wait's timeout."""
    lock = getattr(getattr(event, "_cond", None), "_lock", None)
    if lock is not None:
        if not lock.acquire(blocking=False):
            return
        lock.release()
    event.set()
