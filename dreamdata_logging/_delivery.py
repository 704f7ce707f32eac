"""The delivery machinery behind one handler, for the process it runs in.

A :class:`Delivery` owns the worker (buffer, dispatcher, thread), the counters and the reports of what
goes wrong. In a new process it starts over from nothing (the parent's events are the parent's);
after ``close()`` the next event renews it, keeping the counters.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional

from dreamdata_logging import _uwsgi as uwsgi_master

from . import _lifecycle as lifecycle
from ._budget import Deadlines
from ._buffer import Buffer
from ._dispatch import Dispatcher
from ._outage import SpoolDrain
from ._problems import Counters, OnError, Problems
from ._spool import Spool, SpoolUnavailable
from ._transport import Transport
from ._wire import MAX_BODY_BYTES, body_size
from ._worker import Worker

#: Bytes of messages one request body holds, besides the envelope.
BODY_ROOM = MAX_BODY_BYTES - body_size(0, 0)


@dataclass(frozen=True)
class Limits:
    """The handler's batching and memory settings, and what it does with a problem."""

    flush_at: int
    flush_interval: float
    max_queue_size: int
    max_queue_bytes: int
    shutdown_timeout: float
    on_error: Optional[OnError]
    scrub: Callable[[str], str]  # takes every secret out of a text


class Delivery:
    """Queues message bytes and delivers them from a background thread; counts and reports every loss."""

    def __init__(self, transport: Transport, spool: Optional[Spool], limits: Limits) -> None:
        self.transport = transport
        self.spool = spool
        self.limits = limits
        self._on_error = limits.on_error
        self._scrub = limits.scrub
        self.renewed = False
        self.worker = self._new_worker(Counters())

    def _new_worker(self, counters: Counters) -> Worker:
        self.counters = counters
        self.forking_master = lifecycle.in_uwsgi_master()
        self.problems = Problems(counters, self._on_error, self._scrub)
        deadlines = Deadlines()
        dispatcher = Dispatcher(self.transport, self.problems, deadlines, spool=self.spool)
        limits = self.limits
        drain = None
        if self.spool is not None:
            drain = SpoolDrain(self.spool, dispatcher.outage, dispatcher.send_claim, limits.flush_at, BODY_ROOM)
            drain.set_request_timeout(self.transport.timeout)
        buffer = Buffer(
            max_events=limits.max_queue_size,
            max_bytes=limits.max_queue_bytes,
            batch_events=limits.flush_at,
            body_room=BODY_ROOM,
        )
        return Worker(buffer, dispatcher, deadlines, flush_interval=limits.flush_interval, drain=drain)

    # -- the process this runs in ---------------------------------------------------------------

    def current(self) -> Worker:
        """This process's worker: a new process (forked without hooks, e.g. by uWSGI) starts clean."""
        if self.worker.pid != os.getpid():
            lifecycle.in_new_process()
        return self.worker

    def start_fresh_if_forked(self) -> None:
        """In a new process: the parent's queue, thread, connections and counters are the parent's."""
        if self.worker.pid == os.getpid():
            return
        self.transport.reset_after_fork()
        if self.spool is not None:
            self.spool.reset_after_fork()
        self.worker = self._new_worker(Counters())
        self.resume_spool()

    def renew(self) -> Worker:
        """A fresh worker after close(), keeping the totals (the old one may still be finishing)."""
        old = self.worker.buffer
        counters = self.counters
        counters.retired_offered += old.accepted + old.dropped_full + old.dropped_closed
        counters.retired_dropped_full += old.dropped_full
        counters.retired_dropped_closed += old.dropped_closed
        self.worker = self._new_worker(counters)
        self.renewed = True
        return self.worker

    def resume_spool(self) -> None:
        """Start the thread now when the spool holds events (from an earlier outage or process)."""
        if self.spool is None or lifecycle.exiting() or self.forking_master:
            return  # (a uWSGI master's workers drain the spool, each in its own process)
        try:
            rows = self.spool.pending()[0]
        except SpoolUnavailable:
            return
        if rows:
            self.worker.start()

    def from_forking_master(self, data: bytes) -> None:
        """An event logged in a uWSGI master (say, at import): no thread there; spooled, or sent now."""
        limits = self.limits
        uwsgi_master.from_master(self.worker, self.transport, self.spool, self.problems, limits.shutdown_timeout, data)

    # -- flush and close ------------------------------------------------------------------------

    def flush(self, timeout: Optional[float]) -> bool:
        worker = self.worker
        if worker.buffer.idle or worker.pid != os.getpid():
            return True  # nothing held (or nothing of this process's: that worker is the parent's)
        if lifecycle.logging_lock_held():
            return worker.buffer.empty  # inside dictConfig: the worker may need logging's lock
        return worker.flush(timeout)

    def close(self) -> None:
        """Deliver what is held within ``shutdown_timeout``; with logging's lock held, only begin."""
        worker = self.worker
        if worker.pid != os.getpid() or worker.closing:
            return
        wait = not lifecycle.logging_lock_held()
        failed, spooled = self.counters.failed, self.counters.spool_written
        worker.close(self.limits.shutdown_timeout, wait=wait)
        if wait:
            counters = self.counters
            self._tell_undelivered(worker.buffer.held + counters.failed - failed, counters.spool_written - spooled)

    def begin_shutdown(self) -> None:
        """Ask this process's worker to deliver and stop, taking no lock (safe in a signal handler)."""
        if self.worker.pid == os.getpid():
            self.worker.close(self.limits.shutdown_timeout, wait=False)

    def finish_shutdown(self) -> None:
        if self.worker.pid == os.getpid():
            self.worker.join()

    def _tell_undelivered(self, undelivered: int, spooled: int) -> None:
        endpoint = self.transport.endpoint
        if spooled and self.spool is not None:
            self._stderr(
                f"dreamdata-logging: {spooled} event(s) could not be delivered to {endpoint} before close; "
                f"they were kept in the spool {self.spool.path} for later delivery (not lost)\n"
            )
        if undelivered:
            self._stderr(
                f"dreamdata-logging: {undelivered} event(s) were not delivered to {endpoint} "
                f"before close (shutdown_timeout={self.limits.shutdown_timeout:g}s)\n"
            )

    def _stderr(self, text: str) -> None:
        try:
            sys.stderr.write(self._scrub(text))
            sys.stderr.flush()
        except Exception:  # stderr may be closed during exit
            pass

    def report(self, kind: str, text: str, level: int = logging.WARNING) -> None:
        self.problems.report(kind, text, level)

    # -- counters -------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters since this process started using the handler (a new process starts at zero)."""
        self.current()
        counters, buffer, transport = self.counters, self.worker.buffer, self.transport
        return {
            "emitted": counters.retired_offered + buffer.accepted + buffer.dropped_full + buffer.dropped_closed
            + counters.unsent,
            "skipped": counters.skipped,
            "invalid": counters.invalid,
            "dropped_queue_full": counters.retired_dropped_full + buffer.dropped_full,
            "dropped_closed": counters.retired_dropped_closed + buffer.dropped_closed,
            "delivered": counters.delivered,
            "failed": counters.failed,
            "retries": transport.retries,
            "batches": counters.batches,
            "requests": transport.requests_sent,
            "bytes_sent": transport.bytes_sent,
            "queued": buffer.held,
            "spooled": self._spooled_now(),
            "spool_written": counters.spool_written,
            "spool_delivered": counters.spool_delivered,
            "spool_dropped": counters.spool_dropped,
        }

    def _spooled_now(self) -> int:
        """Events in the spool file now, every process's included (0 without a spool)."""
        if self.spool is None:
            return 0
        try:
            return self.spool.pending()[0]
        except SpoolUnavailable:
            return 0
