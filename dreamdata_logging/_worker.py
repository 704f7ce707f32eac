"""The worker thread: takes batches off the buffer and hands them to the dispatcher.

It is started lazily by the first event, checked by process id (a process forked by any means starts
its own), woken when a batch is ready or a flush wants one, and stopped by ``close()`` within a
deadline. When no thread can run (the interpreter is exiting), the caller's thread ships instead.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Optional

from . import _lifecycle as lifecycle
from ._budget import Deadlines, set_unless_busy
from ._buffer import READY, Buffer
from ._dispatch import Dispatcher
from ._outage import SpoolDrain

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
    ) -> None:
        self.buffer = buffer
        self.dispatcher = dispatcher
        self._deadlines = deadlines
        self._flush_interval = flush_interval
        self._drain = drain
        self.pid = os.getpid()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.closing = False

    # -- the callers' side ----------------------------------------------------------------------

    def put(self, data: bytes) -> int:
        """Queue one message (see :mod:`._buffer` for the result). Never blocks on the network."""
        status = self.buffer.put(data)
        if self._thread is None:
            self.start()
        if status == READY and not self._wake.is_set() and not self.buffer.entered_here():
            self._wake.set()
        if self._drain is not None and self.buffer.over_high_water():
            self.dispatcher.spill()  # the endpoint is slow to take a batch: spool rather than drop
        return status

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every message accepted before the call is delivered or given up on."""
        if self.is_worker_thread():  # e.g. on_error calling flush(): waiting on ourselves never ends
            return self.buffer.empty
        marked = self.buffer.request_flush()
        if marked is None:
            return True
        target, start = marked
        if not self._thread_running():
            self._ship_inline(timeout)
        self._wake.set()
        return self.buffer.wait_finished(target, start, timeout)

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
        return threading.get_ident() in self.dispatcher.own_threads

    def _run(self) -> None:
        self.dispatcher.own_threads.add(threading.get_ident())
        while True:
            woken = self._wake.wait(self._flush_interval)
            self._wake.clear()
            if not self._ship(force=not woken):
                return
            if self._drain is not None:
                self._drain.run(self.buffer.live_waiting, self._is_closing)

    def _is_closing(self) -> bool:
        return self.closing

    def _ship(self, force: bool) -> bool:
        """Send batches while there is a full one (or any, when forced). False once closing and empty."""
        buffer = self.buffer
        while True:
            batch = buffer.next_batch(force or self.closing)
            if batch is None:
                return not (self.closing and buffer.held == 0)
            items, size = batch
            delivered = self.dispatcher.deliver(items, size)
            buffer.finish(len(items), size, delivered)

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
