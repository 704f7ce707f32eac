"""The worker thread: takes batches off the buffer and hands them to the dispatcher.

It is started lazily by the first event, checked by process id (a process forked by any means starts
its own), woken when a batch is ready or a flush wants one, and stopped by ``close()`` within a
deadline. When no thread can run (the interpreter is exiting), the caller's thread ships instead.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional

from dreamdata_logging.delivery import lifecycle
from dreamdata_logging.delivery.buffer import ACCEPTED, FULL, READY, Buffer, Put
from dreamdata_logging.delivery.deadlines import Deadlines, set_unless_busy
from dreamdata_logging.delivery.dispatch import Dispatcher, Fate
from dreamdata_logging.delivery.full import FullQueue
from dreamdata_logging.delivery.outage import SpoolDrain

#: Seconds ``close()`` waits beyond its deadline for the thread's last request to end.
JOIN_MARGIN = 1.0


class Worker:
    """One buffer, one thread, one dispatcher: the per-process delivery machinery of a handler."""

    def __init__(
        self,
        buffer: Buffer,
        dispatcher: Dispatcher,
        deadlines: Deadlines,
        *,
        flush_interval: float,
        drain: Optional[SpoolDrain] = None,
        full: Optional[FullQueue] = None,
        on_stop: Optional[Callable[[], None]] = None,
    ) -> None:
        self._on_stop = on_stop  # told when the thread ends after close()
        self.buffer = buffer
        self.dispatcher = dispatcher
        self._deadlines = deadlines
        self.flush_interval = flush_interval
        self._drain = drain
        self.full = full
        self.pid = os.getpid()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.closing = False
        self.own_threads = dispatcher.own_threads  # the threads sending for us (see is_worker_thread)

    # -- the callers' side ----------------------------------------------------------------------

    def put(self, data: bytes) -> Put:
        """Queue one message (see :mod:`._buffer` for the result). Never blocks on the network, except
        up to ``block_on_full`` seconds for room when the queue is full and this caller may wait."""
        full = self.full
        buffer = self.buffer
        if full is not None and full.block_on_full > 0 and self._may_wait():
            status = buffer.put_waiting(data, full.block_on_full, self._send_now)
        else:
            status = buffer.put(data)
        if status is not ACCEPTED:  # not simply accepted: full, ready (wake the thread: once per batch) or closed
            if status is FULL and full is not None:
                full.dropped(data)
            if self._thread is None:
                self.start()
            if status is READY and not self._wake.is_set() and not buffer.entered_here():
                self._wake.set()
        elif self._thread is None:
            self.start()
        if self._drain is not None and buffer.over_high_water():
            self.dispatcher.spill()  # the endpoint is slow to take a batch: spool rather than drop
        return status

    def _may_wait(self) -> bool:
        """Not the worker, not a re-entered call, not with logging's lock held, not while exiting or closing,
        and not once the thread has ended (a thread being started counts: it will make room)."""
        thread = self._thread
        return not (
            self.is_worker_thread() or self.buffer.entered_here() or self.closing or lifecycle.exiting()
            or lifecycle.logging_lock_held() or (thread is not None and not thread.is_alive())
        )

    def _send_now(self) -> None:
        set_unless_busy(self._wake)  # the queue is full: the caller waits for the room this makes

    def flush(self, timeout: Optional[float] = None) -> Optional[bool]:
        """Wait until every message accepted before the call is delivered or given up on: True when all
        were delivered, False when some were not, None when some are still held (time ran out)."""
        if self.is_worker_thread():  # e.g. on_error calling flush(): waiting on ourselves never ends
            return True if self.buffer.empty else None
        marked = self.begin_flush(timeout)
        if marked is None:
            return True
        target, start = marked
        return self.buffer.wait_finished(target, start, timeout)

    def begin_flush(self, timeout: Optional[float]) -> Optional[tuple[int, int]]:
        """Want every accepted message now and wake the thread: (target, finished at the start) to wait
        for, or None when nothing is held. Where no thread can run, ships them inline first."""
        marked = self.buffer.request_flush()
        if marked is None:
            return None
        if not self._thread_running():
            self._ship_inline(timeout)
        self._wake.set()
        return marked

    def close(self, timeout: float, *, wait: bool = True) -> None:
        """Deliver what is held within ``timeout`` seconds, then stop. With ``wait=False``, only begin:
        the thread finishes on its own (when the caller holds a lock the thread may need)."""
        if self.closing:
            if wait:
                self.join()
            return
        self.closing = True
        self._deadlines.closing = time.monotonic() + timeout
        self.buffer.close()
        set_unless_busy(self.dispatcher.cancel)  # cuts a backoff wait short: one immediate last attempt
        set_unless_busy(self._wake)
        if wait:
            self.join()

    def join(self) -> None:
        """Wait (within the close deadline and a margin) for the thread; ship inline if there is none."""
        thread = self._thread
        deadline = self._deadlines.closing or time.monotonic()
        if thread is not None and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()) + JOIN_MARGIN)
        elif not self.buffer.entered_here():
            self._ship_inline()

    def wake(self) -> None:
        """Have the thread look at the buffer and the spool now (starting it if needed)."""
        if self._thread is None:
            self.start()
        self._wake.set()

    @property
    def finished(self) -> bool:
        """Closed, and its last batches are done with: nothing can enter or leave any more."""
        return self.closing and self.buffer.sealed and self.stopped

    @property
    def stopped(self) -> bool:
        """No thread runs for this worker (never started, or finished)."""
        thread = self._thread
        return thread is None or not thread.is_alive()

    # -- the thread -----------------------------------------------------------------------------

    def start(self) -> None:
        # Never wait for the lock: whoever holds it (another thread, an inline ship at exit, or this very
        # thread, interrupted by a signal handler that logs) starts the thread or ships the events itself.
        if lifecycle.exiting() or not self._start_lock.acquire(blocking=False):
            return
        try:
            if self._thread is not None or self.closing or lifecycle.exiting():
                return  # never start a thread while the interpreter exits; close() ships inline
            thread = threading.Thread(target=self._run, name="dreamdata-logging-worker", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down, or threads not allowed here
                return
            self._thread = thread
        finally:
            self._start_lock.release()
        lifecycle.watch_servers()  # the first event: a server (uvicorn) may hold SIGTERM now

    def _thread_running(self) -> bool:
        if self._thread is None:
            self.start()
        return self._thread is not None and self._thread.is_alive()

    def is_worker_thread(self) -> bool:
        """True in the worker thread, and in any thread while it sends for us (an inline ship at exit)."""
        return threading.get_ident() in self.own_threads

    def _run(self) -> None:
        self.dispatcher.own_threads.add(threading.get_ident())
        while True:
            woken = self._wake.wait(self.flush_interval)
            self._wake.clear()
            if not self._ship(force=not woken):
                break
            if self._drain is not None:
                self._drain.run(self.buffer.live_waiting, self._is_closing)
        if self._on_stop is not None:
            try:
                self._on_stop()
            except Exception:  # never a traceback from a thread that is ending
                pass

    def _is_closing(self) -> bool:
        return self.closing

    def _ship(self, force: bool) -> bool:
        """Send batches while there is a full one (or any, when forced). False once closing and empty."""
        buffer = self.buffer
        while True:
            if self.full is not None:
                self.full.hand_over(self.closing)  # events dropped while the queue was full, to on_error
            batch = buffer.next_batch(force or self.closing)
            if batch is None:  # closing and nothing left (sealed: nothing can enter now): stop
                return not (self.closing and buffer.seal())
            items, size = batch
            fate = self.dispatcher.deliver(items, size)
            buffer.finish(len(items), size, delivered=fate is Fate.DELIVERED)

    def ship_here(self, timeout: float) -> None:
        """Send what is held from the calling thread within ``timeout``, starting no thread (a uWSGI master)."""
        self._ship_inline(timeout)

    def _ship_inline(self, timeout: Optional[float] = None) -> None:
        """Ship from the calling thread: only when no worker thread can run (e.g. during exit)."""
        if not self._start_lock.acquire(blocking=False):
            return  # a thread is being started, or this thread was interrupted while shipping
        try:
            if self._thread is not None and self._thread.is_alive():
                return
            self._deadlines.inline = None if timeout is None else time.monotonic() + timeout
            try:
                self._ship(force=True)
            finally:
                self._deadlines.inline = None
        finally:
            self._start_lock.release()
