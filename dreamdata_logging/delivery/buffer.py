"""The bounded buffer between the callers' threads and the worker thread.

Callers append serialised messages under a short lock; the worker takes them off in request-sized
batches. Memory is bounded by an event count and a byte count, batches in flight included. Events
carry sequence numbers (accepted, batched, finished in order), which is all ``flush()`` needs.
"""

from __future__ import annotations

import enum
import threading
from bisect import bisect_right
from collections import deque
from itertools import accumulate, count
from operator import add
from typing import Callable, Optional

_get_ident = threading.get_ident

class Put(enum.Enum):
    """What :meth:`Buffer.put` did with a message."""

    ACCEPTED = "accepted"  # queued
    READY = "ready"  # queued, and a batch is ready: wake the worker
    FULL = "full"  # not queued: no room (counted in dropped_queue_full)
    CLOSED = "closed"  # not queued: the buffer is closed (not counted here: the caller decides)


ACCEPTED, READY, FULL, CLOSED = Put.ACCEPTED, Put.READY, Put.FULL, Put.CLOSED


class Buffer:
    """Holds up to ``max_events`` messages / ``max_bytes`` bytes; cuts batches of ``batch_events`` / ``body_room``."""

    def __init__(self, *, max_events: int, max_bytes: int, batch_events: int, body_room: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.batch_events = batch_events
        self._body_room = body_room  # bytes of messages one body holds, besides the envelope and commas
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[bytes] = deque()  # appended by callers since the worker last looked
        self._queued_bytes = 0
        # A put() that interrupts a put() on the same thread (a signal handler, or __del__ run by the
        # garbage collector) cannot take the lock its own thread holds: it leaves the message here.
        self._side: deque[bytes] = deque()
        self._inside: set[int] = set()  # threads between entering put()/flush() and leaving them
        # The worker's side: taken off _queue in one swap, cut into batches without the lock.
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.held = 0  # messages in memory: waiting plus in flight
        self.held_bytes = 0
        self.accepted = 0
        self._batched = 0
        self.finished = 0
        self._last_failed = 0  # the sequence number of the last message given up on
        self._flush_upto = 0  # messages up to here are wanted now, full batch or not
        self.closed = False  # no new message from put(); those held still go out
        self.sealed = False  # closed and empty, checked under the lock: no message can ever enter again
        self.dropped_full = 0

    # -- the callers' side ----------------------------------------------------------------------

    def put(self, data: bytes) -> Put:
        """Queue one message: ACCEPTED, READY (a batch is ready: wake the worker), FULL or CLOSED.

        CLOSED is not counted here: the caller decides (a reopened handler puts it in its new buffer)."""
        if self.closed:
            return CLOSED
        ident = _get_ident()
        inside = self._inside
        if ident in inside:  # re-entered on this thread: never wait on our own lock
            return self._put_aside(data)
        inside.add(ident)
        try:
            with self._lock:
                if self.closed:
                    return CLOSED
                return self._accept(data)
        finally:
            inside.discard(ident)

    def _put_aside(self, data: bytes) -> Put:
        """A put() re-entered on its own thread: the worker accepts the message before it may seal the buffer."""
        self._side.append(data)
        if self.sealed:  # sealed in between: take it back (deque.remove is atomic) and say so
            try:
                self._side.remove(data)
            except ValueError:
                return READY
            return CLOSED
        return READY

    def _accept(self, data: bytes) -> Put:
        size = len(data)
        held = self.held
        if held >= self.max_events or self.held_bytes + size > self.max_bytes:
            self.dropped_full += 1
            return FULL
        queue = self._queue
        queue.append(data)
        self.accepted += 1
        self.held = held + 1
        self.held_bytes += size
        queued = self._queued_bytes = self._queued_bytes + size
        return READY if queued >= self._body_room or len(queue) >= self.batch_events else ACCEPTED

    def seal(self) -> bool:
        """After close: True (and no message can enter again) when nothing is held or waiting.

        Taken under the lock, so a put() that got in just before close() was seen is shipped, not stranded."""
        with self._lock:
            if self.held or self._side or not self.closed:
                return False
            self.sealed = True
            return True

    def has_room(self, size: int) -> bool:
        """A message of ``size`` bytes fits now (plain ints: read without the lock)."""
        return self.held < self.max_events and self.held_bytes + size <= self.max_bytes

    def put_waiting(self, data: bytes, timeout: float, full: Callable[[], None]) -> Put:
        """As :meth:`put`, but a message that does not fit first waits up to ``timeout`` seconds for room,
        after ``full()`` (called once, with the lock held) asked the worker to send now. Only for callers
        that may wait: not the worker, not with a lock the worker may need."""
        if self.closed:
            return CLOSED
        ident = threading.get_ident()
        inside = self._inside
        if ident in inside:  # re-entered on this thread: never wait
            return self.put(data)
        inside.add(ident)  # a signal handler that logs while this waits leaves its message aside
        try:
            with self._changed:
                size = len(data)
                if not self.closed and not self.has_room(size):
                    self._flush_upto = max(self._flush_upto, self.accepted)
                    full()
                    self._changed.wait_for(lambda: self.closed or self.has_room(size), timeout)
                if self.closed:
                    return CLOSED
                return self._accept(data)
        finally:
            inside.discard(ident)

    def entered_here(self) -> bool:
        """True when this thread was interrupted inside put() or flush() (e.g. by a signal handler)."""
        return threading.get_ident() in self._inside

    def request_flush(self) -> Optional[tuple[int, int]]:
        """Mark everything accepted so far as wanted now: (target, finished at the start), or None if done."""
        ident = threading.get_ident()
        if ident in self._inside:
            return None
        self._inside.add(ident)
        try:
            with self._lock:
                if self.finished >= self.accepted:
                    return None
                self._flush_upto = max(self._flush_upto, self.accepted)
                return self.accepted, self.finished
        finally:
            self._inside.discard(ident)

    def wait_finished(self, target: int, start: int, timeout: Optional[float]) -> Optional[bool]:
        """Wait until ``target`` messages have finished: True when none failed since ``start``, False when
        some did (given up on, or spooled), None when ``timeout`` ran out first."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.finished >= target, timeout):
                return None
            return self._last_failed <= start

    def close(self) -> None:
        """Refuse new messages and want every held one now. A plain store: safe from a signal handler."""
        self.closed = True
        self._flush_upto = 1 << 62

    # -- the worker's side ----------------------------------------------------------------------

    def next_batch(self, force: bool) -> Optional[tuple[list[bytes], int]]:
        """The next request's messages and their bytes: a full batch, or any when forced, flushed or closed."""
        with self._lock:
            while self._side:  # left by re-entered puts: accounted now, like any other
                self._accept(self._side.popleft())  # FULL is counted there
            arrived, self._queue = self._queue, deque()
            arrived_bytes, self._queued_bytes = self._queued_bytes, 0  # summed by the callers as they put
            wanted = force or self.closed or self._flush_upto > self._batched
        if arrived:
            self._pending.extend(arrived)
            self._pending_bytes += arrived_bytes
        if not self._pending or (not wanted and not self._full_batch_pending()):
            return None
        return self._cut()

    def _full_batch_pending(self) -> bool:
        count = len(self._pending)
        return count >= self.batch_events or self._pending_bytes + count - 1 > self._body_room

    def _cut(self) -> tuple[list[bytes], int]:
        """The longest run from the head that fits one body: found with C-level sums, not a loop per message."""
        pending = self._pending
        room = self._body_room
        # Look only as far as a body can reach at the pending messages' mean size (a quarter more, for
        # spread): at most one more look when that run fits whole and more are waiting.
        reach = min(self.batch_events, len(pending))
        if self._pending_bytes + reach - 1 > room:
            reach = min(reach, (room * 5 // 4) * len(pending) // max(1, self._pending_bytes) + 1)
        head = pending[:reach]
        # With n messages a body holds their bytes plus n - 1 commas: keep the n whose total fits the room.
        totals = list(map(add, accumulate(map(len, head)), count()))
        if totals[-1] <= room and reach < min(self.batch_events, len(pending)):
            head = pending[: self.batch_events]
            totals = list(map(add, accumulate(map(len, head)), count()))
        n = max(1, bisect_right(totals, room))  # one message always goes (each fits on its own)
        items = head if n == len(head) else head[:n]
        del pending[:n]  # what is sent is referenced by the batch alone, so memory follows the queue
        size = totals[n - 1] - (n - 1)
        self._pending_bytes -= size
        self._batched += n
        return items, size

    def finish(self, count: int, size: int, delivered: bool) -> None:
        """A batch taken by :meth:`next_batch` is done with: delivered, spooled or given up on."""
        with self._lock:
            self.held -= count
            self.held_bytes -= size
            self.finished += count
            if not delivered:
                self._last_failed = self.finished
            self._changed.notify_all()

    def live_waiting(self) -> bool:
        """Messages that should go out now (a full batch, or a flush or close wants them)."""
        with self._lock:
            queued = len(self._queue) + len(self._pending)
            if not queued:
                return False
            full = queued >= self.batch_events or self._queued_bytes + self._pending_bytes >= self._body_room
            return full or self.closed or self._flush_upto > self._batched

    def over_high_water(self) -> bool:
        """Half the memory bound is in use (plain ints: read without the lock)."""
        return self.held * 2 >= self.max_events or self.held_bytes * 2 >= self.max_bytes

    @property
    def idle(self) -> bool:
        """Every accepted message has finished (plain ints: read without the lock; a flush fast path)."""
        return self.finished >= self.accepted and not self._side

    @property
    def empty(self) -> bool:
        return self.held == 0 and not self._side
