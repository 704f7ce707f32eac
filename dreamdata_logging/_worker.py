"""The batching worker: a bounded in-memory queue of serialised messages and the one thread that ships them.

Callers only append bytes under a short lock. The thread takes messages off the head, as many as fit
in one request body (at most ``flush_at`` and 500,000 bytes with the envelope), and hands them to the
transport. Memory is bounded by both an event count and a byte count, in-flight batches included.
"""

from __future__ import annotations

import atexit
import os
import random
import sys
import threading
import time
import weakref
from collections import deque
from typing import Callable, Optional

from ._spool import Claim, Spool, SpoolUnavailable, worth_spooling
from ._transport import Transport
from ._wire import MAX_BODY_BYTES, Batch, body_size
from .errors import DeliveryError, PayloadTooLargeError

#: Seconds ``close()`` waits beyond its deadline for the thread's last request to end.
JOIN_MARGIN = 1.0

# With a spool (see ``_drain_spool``): a batch not delivered within SPOOL_AFTER seconds goes to the
# spool instead of being retried for the whole retry budget, and the worker enters "outage mode":
# batches go to the spool, not the network, while the oldest spooled batch probes the endpoint after
# SPOOL_RETRY_BASE, doubling up to SPOOL_RETRY_CAP seconds. A 2xx ends it and the spool drains while
# no live batch is waiting. close() keeps SPOOL_RESERVE seconds of its deadline for writing the spool.
SPOOL_AFTER = 15.0
SPOOL_RETRY_BASE = 1.0
SPOOL_RETRY_CAP = 60.0
SPOOL_RESERVE = 0.5
#: Seconds between looks at a spool that was empty (other processes, expired leases).
SPOOL_POLL_INTERVAL = 30.0

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
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _live_workers:
        # A multiprocessing child ends with os._exit(): no atexit, so no logging.shutdown(). Its own
        # exit hook runs finalizers, but it clears the parent's first: register ours from its after-fork hook.
        util.register_after_fork(_close_at_child_exit, _register_child_exit)


def _register_child_exit(_: object) -> None:
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.Finalize(None, _close_at_child_exit, exitpriority=10)


def _close_at_child_exit() -> None:
    """Close every handler in a multiprocessing child as it ends, as logging.shutdown() would at exit."""
    for worker in list(_live_workers):
        if worker.close_at_exit is not None:
            try:
                worker.close_at_exit()
            except Exception:  # one handler's failure must not stop the others
                pass


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
        spool: Optional[Spool] = None,
    ) -> None:
        self._transport = transport
        self._spool = spool
        self._flush_at = flush_at
        self._flush_interval = flush_interval
        self._max_events = max_queue_size
        self._max_bytes = max_queue_bytes
        self._on_give_up = on_give_up
        # What fits in one body besides the envelope; each message after the first adds a comma.
        self._body_room = MAX_BODY_BYTES - body_size(0, 0)
        self._closing = False
        #: What closes the owner (the handler) when a multiprocessing child ends; set by the owner.
        self.close_at_exit: Optional[Callable[[], None]] = None
        self._init_state()
        _live_workers.add(self)

    def _init_state(self) -> None:
        """Fresh locks, queue, counters and no thread: at construction and in a forked child."""
        self._lock = threading.Lock()
        self._finished_changed = threading.Condition(self._lock)
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._cancel = threading.Event()
        self._queue: deque[bytes] = deque()  # what callers appended since the thread last looked
        self._queued_bytes = 0  # bytes waiting in _queue
        # The thread's own side: taken off _queue in one O(1) swap, then cut into batches without the
        # lock, so a caller never waits behind a long hold (which, with the GIL, stalls it for ms).
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._held = 0  # events in memory: waiting plus in flight
        self._held_bytes = 0
        # Sequence numbers: events are accepted, taken and finished in order.
        self._accepted = 0
        self._batched = 0
        self._finished = 0
        self._last_failed = 0
        self._flush_upto = 0
        self._deadline: Optional[float] = None
        self._inline_deadline: Optional[float] = None  # flush(timeout) shipping from the caller's thread
        # Threads whose records are ours: the worker thread, and any thread while it sends for us.
        self._own_threads: set[int] = set()
        self._thread: Optional[threading.Thread] = None
        # Spool state (see SPOOL_AFTER): outage mode, when to look at the spool next, failed probes in a row.
        self._outage = False
        self._spool_due = 0.0
        self._spool_failures = 0
        self._spool_claim_limit = self._flush_at
        self._send_until: Optional[float] = None  # this send's own limit (spool mode), besides close()'s
        self._live_send = False  # the thread is sending (a batch from the queue, or one from the spool)
        self._spilling = False  # ... and put() set _cancel because the queue passed its high-water mark
        self._cut_short = False  # the last send was ended because of the high-water mark
        self._deadline_reads = 0  # the transport reads the deadline before each attempt and each wait
        self.spool_delivered = 0
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
            if self._live_send and not self._spilling and self._spool is not None and self._over_high_water():
                # The endpoint is slow to take a batch while the queue fills: spool instead of dropping.
                # Under the lock, so the send cannot end in between (it clears both when it ends).
                self._spilling = True
                self._cancel.set()  # ends a backoff wait now; _send_deadline then ends the send
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
            self._ship_inline(timeout)
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
        self._cancel.set()  # cuts a backoff wait short: the transport retries now, within the deadline
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
        if self._spool is not None:
            self._spool.reset_after_fork()

    # -- the thread ----------------------------------------------------------------------------

    def _ensure_thread(self) -> bool:
        if self._thread is None:
            self._start()
        return self._thread is not None and self._thread.is_alive()

    def _start(self) -> None:
        if interpreter_exiting():  # checked before the lock too: an inline ship may hold it (emit never waits)
            return
        with self._start_lock:
            if self._thread is not None or self._closing or interpreter_exiting():
                return  # never start a thread while the interpreter exits; close() ships inline
            thread = threading.Thread(target=self._run, name="dreamdata-logging-worker", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down
                return
            self._thread = thread

    def _ship_inline(self, timeout: Optional[float] = None) -> None:
        """Ship from the calling thread: only when no worker thread can run (e.g. during exit)."""
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._inline_deadline = None if timeout is None else time.monotonic() + timeout
                try:
                    self._ship(force=True)
                finally:
                    self._inline_deadline = None

    def _current_deadline(self) -> Optional[float]:
        """The earliest of close()'s deadline and an inline flush's, read by the transport before each step."""
        deadlines = [d for d in (self._deadline, self._inline_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def _run(self) -> None:
        self._own_threads.add(threading.get_ident())
        while True:
            woken = self._wake.wait(self._flush_interval)
            self._wake.clear()
            if not self._ship(force=not woken):
                return
            if self._spool is not None:
                self._drain_spool(self._spool)

    def is_worker_thread(self) -> bool:
        """True in the worker thread, and in any thread while it sends for us (an inline ship at exit)."""
        return threading.get_ident() in self._own_threads

    def _ship(self, force: bool) -> bool:
        """Send batches while there is a full one (or any, when forced). False once closing and empty."""
        while True:
            with self._lock:
                arrived, self._queue = self._queue, deque()
                self._queued_bytes = 0
                closing = self._closing
                wanted = force or closing or self._flush_upto > self._batched
            if arrived:
                self._pending.extend(arrived)
                self._pending_bytes += sum(map(len, arrived))
            if not self._pending:
                return not closing
            if not wanted and not self._full_batch_pending():
                return True
            items, size = self._take_batch()
            self._deliver(items, size)

    def _full_batch_queued(self) -> bool:
        count = len(self._queue)
        return count >= self._flush_at or self._queued_bytes + count - 1 > self._body_room

    def _full_batch_pending(self) -> bool:
        count = len(self._pending)
        return count >= self._flush_at or self._pending_bytes + count - 1 > self._body_room

    def _take_batch(self) -> tuple[list[bytes], int]:
        pending, room, limit = self._pending, self._body_room, self._flush_at
        items: list[bytes] = []
        size = 0
        while pending and len(items) < limit:
            length = len(pending[0])
            if items and size + length + len(items) > room:
                break
            items.append(pending.popleft())
            size += length
        self._pending_bytes -= size
        self._batched += len(items)
        return items, size

    def _deliver(self, items: list[bytes], size: int) -> None:
        if self._outage and self._spool is not None:  # the endpoint is failing: straight to the spool
            self._finish(items, size, DeliveryError("the endpoint is unavailable (outage mode)", retryable=True))
            return
        self._send_until = time.monotonic() + SPOOL_AFTER if self._spool is not None else None
        try:
            self._send_live(Batch(items, size))
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

    def _send(self, batch: Batch) -> None:
        ident = threading.get_ident()
        worker_thread = ident in self._own_threads
        self._own_threads.add(ident)  # what requests/urllib3 log from here on is about our send
        try:
            self._transport.send(batch, deadline=self._send_deadline, cancel=self._cancel)
        finally:
            if not worker_thread:
                self._own_threads.discard(ident)

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
        if self._spool is not None:
            if error is None:
                if self._outage or self._spool_failures:
                    self._spool_failures = 0
                    self._spool_due = 0.0  # the endpoint answers again: drain the spool now
                self._outage = False
            elif worth_spooling(error) and not self._outage:
                self._spool_failed()

    def _transport_close_if_idle(self, thread: Optional[threading.Thread]) -> None:
        if thread is None or not thread.is_alive():
            self._transport.close()
            if self._spool is not None:
                self._spool.close()

    # -- the spool (optional) ------------------------------------------------------------------

    def resume_spool(self) -> None:
        """Start the thread now when the spool holds events (from an earlier outage or process)."""
        if self._spool is None or interpreter_exiting():
            return
        try:
            rows = self._spool.pending()[0]
        except SpoolUnavailable:
            return
        if rows:
            self._start()

    def _over_high_water(self) -> bool:
        """Half the memory bound is in use (plain ints: also read without the lock)."""
        return self._held * 2 >= self._max_events or self._held_bytes * 2 >= self._max_bytes

    def _send_live(self, batch: Batch) -> None:
        with self._lock:
            self._live_send = True
            self._cut_short = False
            self._deadline_reads = 0
        try:
            self._send(batch)
        finally:
            with self._lock:
                self._live_send = False
                if self._spilling:
                    self._spilling = False
                    if not self._closing:  # close() sets the event after setting _closing
                        self._cancel.clear()

    def _send_deadline(self) -> Optional[float]:
        """What bounds a send: close()'s and an inline flush's deadline; with a spool also the send's
        own limit (SPOOL_AFTER), and close() keeps SPOOL_RESERVE for writing the rest to the spool.
        Once an attempt has failed while the queue is past its high-water mark: now (the batch goes
        to the spool at once rather than waiting out retries while new events have no room)."""
        limit = self._current_deadline()
        if self._spool is None:
            return limit
        self._deadline_reads += 1
        if self._live_send and self._deadline_reads > 1 and self._over_high_water():
            self._cut_short = True
            return time.monotonic()
        if limit is not None:
            limit -= SPOOL_RESERVE
        own = self._send_until
        if own is None:
            return limit
        return own if limit is None else min(own, limit)

    def _spool_failed(self) -> None:
        """The endpoint failed: outage mode, and the next look at the spool after a growing backoff."""
        self._outage = True
        delay = min(SPOOL_RETRY_CAP, SPOOL_RETRY_BASE * 2 ** min(self._spool_failures, 30))
        self._spool_failures += 1
        self._spool_due = time.monotonic() + random.uniform(delay / 2, delay)

    def _drain_spool(self, spool: Spool) -> None:
        """Send spooled batches while no live batch waits; ack on a 2xx, release (and back off) otherwise."""
        while not self._closing and time.monotonic() >= self._spool_due:
            with self._lock:
                if (self._queue or self._pending) and (
                    self._full_batch_pending() or self._full_batch_queued() or self._flush_upto > self._batched
                ):
                    return  # live events first; the next wake comes back here
            try:
                claim = spool.claim(self._spool_claim_limit, self._body_room)
            except SpoolUnavailable:  # reported by the spool
                claim = None
            if claim is None:
                self._outage = False  # nothing to probe with: live batches find out for themselves
                self._spool_due = time.monotonic() + SPOOL_POLL_INTERVAL
                return
            if not self._send_claim(spool, claim):
                return

    def _send_claim(self, spool: Spool, claim: Claim) -> bool:
        # In outage mode this is a probe: one request's time, then back off (the worker's backoff, not
        # the transport's retries, paces probes). The high-water mark cuts it short like a live send.
        limit = min(SPOOL_AFTER, self._transport.timeout) if self._outage else SPOOL_AFTER
        self._send_until = time.monotonic() + limit
        try:
            self._send_live(Batch(claim.messages, claim.size))
        except DeliveryError as error:
            self._after_failed_claim(spool, claim, error)
            return False
        except Exception as error:  # a bug or an unexpected library error must not kill the thread
            self._after_failed_claim(spool, claim, DeliveryError(f"unexpected error while sending: {error!r}"))
            return False
        finally:
            self._send_until = None
        try:
            spool.ack(claim)
        except SpoolUnavailable:  # the rows stay leased until the lease runs out, then go again
            pass
        with self._lock:
            self.spool_delivered += len(claim)
            self.batches += 1
        self._outage = False
        self._spool_failures = 0
        self._spool_claim_limit = self._flush_at
        return True

    def _after_failed_claim(self, spool: Spool, claim: Claim, error: DeliveryError) -> None:
        try:
            if self._cut_short:  # live events are piling up: they go first; this claim waits its turn
                spool.release(claim)
                return
            if isinstance(error, PayloadTooLargeError) and len(claim) > 1:
                spool.release(claim)  # the endpoint's limit is lower than ours: smaller claims
                self._spool_claim_limit = max(1, len(claim) // 2)
                return
            if worth_spooling(error) or not error.status:
                spool.release(claim)
                self._spool_failed()
                return
            spool.discard(claim)  # refused as invalid: sending them again would fail again
        except SpoolUnavailable:
            return
        try:
            self._on_give_up(claim.messages, error)
        except Exception:
            pass
