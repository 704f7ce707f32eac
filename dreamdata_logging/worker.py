"""The batching worker: a bounded in-memory queue of serialised messages and the one thread that ships them.

Callers only append bytes under a short lock. The thread takes messages off the head, as many as fit
in one request body (at most ``flush_at`` and 500,000 bytes with the envelope), and hands them to the
transport. Memory is bounded by both an event count and a byte count, in-flight batches included.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import deque
from typing import Callable, Optional

from .errors import DeliveryError, PayloadTooLargeError
from .message import MAX_BODY_BYTES, Batch, body_size
from .transport import Transport

#: Seconds ``close()`` waits beyond its deadline for the thread's last request to end.
JOIN_MARGIN = 1.0

GiveUp = Callable[[list[bytes], DeliveryError], None]

_exiting = False


def interpreter_exiting() -> bool:
    """True once the interpreter has begun exiting (our atexit hook ran, before ``logging.shutdown``)."""
    return _exiting


def _mark_exiting() -> None:
    global _exiting
    _exiting = True


# atexit runs hooks last-in first-out; logging registered its shutdown when it was imported (before
# us), so this runs first and lets flush()/close() during exit keep to shutdown_timeout.
atexit.register(_mark_exiting)

_live_workers: weakref.WeakSet[Worker] = weakref.WeakSet()


def _reset_workers_in_child() -> None:
    for worker in list(_live_workers):
        worker.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_workers_in_child)


class Worker:
    """Holds up to ``max_queue_size`` events / ``max_queue_bytes`` bytes and ships them from one thread."""

    def __init__(
        self,
        transport: Transport,
        *,
        flush_at: int,
        flush_interval: float,
        max_queue_size: int,
        max_queue_bytes: int,
        on_give_up: GiveUp,
    ) -> None:
        self._transport = transport
        self._flush_at = flush_at
        self._flush_interval = flush_interval
        self._max_events = max_queue_size
        self._max_bytes = max_queue_bytes
        self._on_give_up = on_give_up
        # What fits in one body besides the envelope; each message after the first adds a comma.
        self._body_room = MAX_BODY_BYTES - body_size(0, 0)
        self._closing = False
        self._init_state()
        _live_workers.add(self)

    def _init_state(self) -> None:
        """Fresh locks, queue, counters and no thread: at construction and in a forked child."""
        self._lock = threading.Lock()
        self._finished_changed = threading.Condition(self._lock)
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._cancel = threading.Event()
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0  # bytes waiting in _queue
        self._held = 0  # events in memory: waiting plus in flight
        self._held_bytes = 0
        # Sequence numbers: events are accepted, taken and finished in order.
        self._accepted = 0
        self._taken = 0
        self._finished = 0
        self._last_failed = 0
        self._flush_upto = 0
        self._deadline: Optional[float] = None
        self._thread: Optional[threading.Thread] = None
        self.offered = 0
        self.dropped_queue_full = 0
        self.dropped_closed = 0
        self.delivered = 0
        self.given_up = 0
        self.batches = 0
        self.tallies: dict[str, int] = {}  # the handler's own counters (skipped, invalid, failed, ...)

    # -- the caller's side -------------------------------------------------------------------

    def put(self, data: bytes) -> Optional[str]:
        """Queue one serialised message. Never blocks on the network; returns why it was dropped, or None."""
        size = len(data)
        with self._lock:
            self.offered += 1
            if self._closing:
                self.dropped_closed += 1
                return "closed"
            if self._held >= self._max_events or self._held_bytes + size > self._max_bytes:
                self.dropped_queue_full += 1
                return "full"
            self._queue.append(data)
            self._accepted += 1
            self._held += 1
            self._held_bytes += size
            self._queued_bytes += size
            batch_ready = len(self._queue) >= self._flush_at or self._queued_bytes >= self._body_room
        if self._thread is None:
            self._start()
        if batch_ready and not self._wake.is_set():
            self._wake.set()
        return None

    def tally(self, name: str, count: int = 1) -> None:
        """Add to one of the handler's counters; kept here so a fork resets them with the rest."""
        with self._lock:
            self.tallies[name] = self.tallies.get(name, 0) + count

    @property
    def queued(self) -> int:
        """Events held in memory: waiting or being sent."""
        return self._held

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every event accepted before the call is delivered or given up on."""
        with self._lock:
            target = self._accepted
            start = self._finished
            if start >= target:
                return True
            self._flush_upto = max(self._flush_upto, target)
        if not self._ensure_thread():
            self._ship_inline()
        self._wake.set()
        with self._finished_changed:
            done = self._finished_changed.wait_for(lambda: self._finished >= target, timeout)
            return done and self._last_failed <= start

    def close(self, timeout: float) -> int:
        """Deliver what is queued within ``timeout`` seconds, then stop. Returns how many events were not delivered."""
        with self._lock:
            if self._closing:
                return 0
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._flush_upto = self._accepted
            given_up_before = self.given_up
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(max(0.0, self._deadline - time.monotonic()) + JOIN_MARGIN)
            if thread.is_alive():  # still inside a request: stop waiting for it
                self._cancel.set()
        else:
            self._ship_inline()
        self._transport_close_if_idle(thread)
        with self._lock:
            return self._held + (self.given_up - given_up_before)

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's queue, thread and connections are the parent's, not ours."""
        self._init_state()
        self._transport.reset_after_fork()

    # -- the thread ----------------------------------------------------------------------------

    def _ensure_thread(self) -> bool:
        if self._thread is None:
            self._start()
        return self._thread is not None and self._thread.is_alive()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closing or interpreter_exiting():
                return  # never start a thread while the interpreter exits; close() ships inline
            thread = threading.Thread(target=self._run, name="dreamdata-logging-worker", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down
                return
            self._thread = thread

    def _ship_inline(self) -> None:
        """Ship from the calling thread: only when no worker thread can run (e.g. during exit)."""
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._ship(force=True)

    def _run(self) -> None:
        while True:
            woken = self._wake.wait(self._flush_interval)
            self._wake.clear()
            if not self._ship(force=not woken):
                return

    def is_worker_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _ship(self, force: bool) -> bool:
        """Send batches while there is a full one (or any, when forced). False once closing and empty."""
        while True:
            with self._lock:
                if not self._queue:
                    return not self._closing
                wanted = force or self._closing or self._flush_upto > self._taken
                if not wanted and not self._full_batch_waiting():
                    return True
                items, size = self._take_batch()
            self._deliver(items, size)

    def _full_batch_waiting(self) -> bool:
        count = len(self._queue)
        return count >= self._flush_at or self._queued_bytes + count - 1 > self._body_room

    def _take_batch(self) -> tuple[list[bytes], int]:
        queue, room, limit = self._queue, self._body_room, self._flush_at
        items: list[bytes] = []
        size = 0
        while queue and len(items) < limit:
            length = len(queue[0])
            if items and size + length + len(items) > room:
                break
            items.append(queue.popleft())
            size += length
        self._queued_bytes -= size
        self._taken += len(items)
        return items, size

    def _deliver(self, items: list[bytes], size: int) -> None:
        try:
            self._transport.send(Batch(items, size), deadline=self._deadline, cancel=self._cancel)
        except PayloadTooLargeError as error:
            if len(items) > 1:  # the endpoint's limit is lower than ours: halve and resend
                half = len(items) // 2
                self._deliver(items[:half], sum(map(len, items[:half])))
                self._deliver(items[half:], sum(map(len, items[half:])))
                return
            self._finish(items, size, error)
        except DeliveryError as error:
            self._finish(items, size, error)
        except Exception as error:  # a bug or an unexpected library error must not kill the thread
            self._finish(items, size, DeliveryError(f"unexpected error while sending: {error!r}"))
        else:
            self._finish(items, size, None)

    def _finish(self, items: list[bytes], size: int, error: Optional[DeliveryError]) -> None:
        if error is not None:
            try:
                self._on_give_up(items, error)
            except Exception:  # the handler reports its own failures; the worker must go on
                pass
        with self._lock:
            count = len(items)
            self._held -= count
            self._held_bytes -= size
            self._finished += count
            if error is None:
                self.delivered += count
                self.batches += 1
            else:
                self.given_up += count
                self._last_failed = self._finished
            self._finished_changed.notify_all()

    def _transport_close_if_idle(self, thread: Optional[threading.Thread]) -> None:
        if thread is None or not thread.is_alive():
            self._transport.close()
