"""An event that finds the queue full: the caller may wait for room (``block_on_full``), else it is dropped,
counted, and handed to ``on_error`` from the worker thread.

``emit()`` never waits for ``on_error``: a dropped message's bytes are only appended to a bounded list (a
plain ``deque`` append, safe from any thread and from a signal handler). The worker thread hands them over,
between sends, in one ``on_error`` call at most every :data:`HAND_OVER_INTERVAL` seconds (and once more when
the handler closes). At most :data:`MAX_KEPT` events (:data:`MAX_KEPT_BYTES` bytes) wait for a hand-over;
the others are counted (``stats()["dropped_queue_full"]``) and the error says how many there were.

With ``block_on_full=SECONDS`` a caller whose event finds the queue full first waits up to that long for
room, asking the worker to send what is queued now. Never in the worker thread (it makes the room), in a
call that re-entered the handler on its own thread (a signal handler, a garbage-collector hook), with
``logging``'s module lock held (the worker may need it), during interpreter exit, or once the handler is
closing: there the event is dropped at once, as without the option.
"""

from __future__ import annotations

import time
from collections import deque

from dreamdata_logging.delivery.buffer import Buffer
from dreamdata_logging.delivery.problems import Problems
from dreamdata_logging.errors import QueueFullError

#: Most dropped events kept for the next hand-over to ``on_error``, and their most bytes; more are counted.
MAX_KEPT = 1000
MAX_KEPT_BYTES = 5_000_000
#: Seconds between two ``on_error`` calls about dropped events.
HAND_OVER_INTERVAL = 1.0


class FullQueue:
    """Waits for room (``block_on_full``) and keeps dropped events for ``on_error``, for one worker."""

    def __init__(self, buffer: Buffer, problems: Problems, *, block_on_full: float) -> None:
        self._buffer = buffer
        self._problems = problems
        self.block_on_full = block_on_full
        self._kept: deque[bytes] = deque()
        self._kept_bytes = 0  # approximate under contention: a bound, not a count
        self._reported_drops = 0  # buffer.dropped_full at the last hand-over
        self._next_hand_over = 0.0

    # -- the callers' side ----------------------------------------------------------------------

    def dropped(self, data: bytes) -> None:
        """Keep a dropped message for ``on_error`` while the bounds allow: never waits, never raises."""
        if self._problems.on_error is None:
            return
        if len(self._kept) >= MAX_KEPT or self._kept_bytes + len(data) > MAX_KEPT_BYTES:
            return
        self._kept_bytes += len(data)
        self._kept.append(data)

    # -- the worker's side ----------------------------------------------------------------------

    def hand_over(self, closing: bool) -> None:
        """Pass the kept events to ``on_error`` in one call, at most every HAND_OVER_INTERVAL seconds."""
        if not self._kept:
            return
        now = time.monotonic()
        if now < self._next_hand_over and not closing:
            return
        self._next_hand_over = now + HAND_OVER_INTERVAL
        kept = self._kept
        items = [kept.popleft() for _ in range(len(kept))]  # callers may append meanwhile: those wait
        self._kept_bytes = sum(map(len, kept))
        total = self._buffer.dropped_full
        dropped, self._reported_drops = max(total - self._reported_drops, len(items)), total
        buffer = self._buffer
        error = QueueFullError(
            f"the queue was full ({buffer.max_events:,} events or {buffer.max_bytes:,} bytes): {dropped} event(s) "
            f"dropped since the last report, {len(items)} of them passed here (is the endpoint down or slow?)",
            dropped=dropped,
        )
        self._problems.call_on_error(error, items)

