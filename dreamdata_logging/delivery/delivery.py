"""The delivery machinery behind one handler, for the process it runs in.

A :class:`Delivery` owns the worker (buffer, dispatcher, thread), the ledger and the reports of what
goes wrong. In a new process it starts over from nothing (the parent's events are the parent's).
After ``close()`` the next event renews the worker, keeping the ledger and the endpoint's outage state;
a worker still finishing its last batches goes on to the end (sending through the one transport, one
request at a time), so no event is sent by two workers or left behind.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from dreamdata_logging.delivery import lifecycle
from dreamdata_logging.delivery.buffer import CLOSED, Buffer
from dreamdata_logging.delivery.deadlines import Deadlines
from dreamdata_logging.delivery.dispatch import Dispatcher
from dreamdata_logging.delivery.full import FullQueue
from dreamdata_logging.delivery.ledger import Ledger
from dreamdata_logging.delivery.outage import OutageState, SpoolDrain
from dreamdata_logging.delivery.problems import OnError, Problems
from dreamdata_logging.delivery.worker import Worker
from dreamdata_logging.errors import DeliveryError
from dreamdata_logging.spool.spool import Spool, SpoolUnavailable
from dreamdata_logging.transport.transport import Transport
from dreamdata_logging.wire.rules import MAX_BODY_BYTES, body_size

#: Bytes of messages one request body holds, besides the envelope.
BODY_ROOM = MAX_BODY_BYTES - body_size(0, 0)


_IN_UWSGI_MASTER = DeliveryError(
    "an event logged in the uWSGI master process cannot be delivered: the master runs no Python exit hooks, "
    "and a sending thread there could be forked into a worker mid-request. Log events in the workers "
    "(not at import), or run uWSGI with --lazy-apps"
)


@dataclass
class Settings:
    """The handler's batching, memory and shutdown settings, read where they are used (so a change applies)."""

    flush_at: int
    flush_interval: float
    max_queue_size: int
    max_queue_bytes: int
    shutdown_timeout: float
    block_on_full: float = 0.0  # seconds a caller may wait for room in a full queue


#: Most times one event goes to a renewed worker because the one it found had just closed.
MAX_REOPENS_PER_EVENT = 8
#: Seconds between two looks at the spool while flush() waits for it to drain.
SPOOL_FLUSH_POLL = 0.05


class Delivery:
    """Queues message bytes and delivers them from a background thread; counts and reports every loss."""

    def __init__(
        self,
        transport: Transport,
        spool: Optional[Spool],
        settings: Settings,
        *,
        on_error: Optional[OnError],
        scrub: Callable[[str], str],
    ) -> None:
        self.transport = transport
        self.spool = spool
        self.settings = settings
        self._on_error = on_error
        self._scrub = scrub
        self.renewed = False
        self._renew_lock = threading.RLock()  # re-entrant: a signal handler may log while its thread renews
        self._start_process()

    def _start_process(self) -> None:
        """What belongs to one process: the ledger, the reports, the outage state and a first worker."""
        self.ledger = Ledger()
        self.problems = Problems(self.ledger, self._on_error, self._scrub)
        self.outage = OutageState()
        self.forking_master = lifecycle.in_uwsgi_master()
        self._retiring: list[Worker] = []  # closed workers still finishing their last batches
        self.worker = self._new_worker()

    @property
    def on_error(self) -> Optional[OnError]:
        return self._on_error

    @on_error.setter
    def on_error(self, value: Optional[OnError]) -> None:
        self._on_error = value
        self.problems.on_error = value

    def apply(self, name: str, value: float) -> None:
        """A changed setting: kept for workers to come, and applied to the current one now."""
        setattr(self.settings, name, value)
        worker = self.worker
        if name == "flush_at":
            worker.buffer.batch_events = int(value)
        elif name == "flush_interval":
            worker.flush_interval = float(value)
        elif name == "max_queue_size":
            worker.buffer.max_events = int(value)
        elif name == "max_queue_bytes":
            worker.buffer.max_bytes = int(value)
        elif name == "block_on_full" and worker.full is not None:
            worker.full.block_on_full = float(value)
        # shutdown_timeout is read when closing

    def _new_worker(self) -> Worker:
        settings = self.settings
        deadlines = Deadlines()
        dispatcher = Dispatcher(self.transport, self.problems, deadlines, spool=self.spool, outage=self.outage)
        drain = None
        if self.spool is not None:
            drain = SpoolDrain(self.spool, self.outage, dispatcher.send_claim, settings.flush_at, BODY_ROOM)
            drain.set_request_timeout(self.transport.timeout)
        buffer = Buffer(
            max_events=settings.max_queue_size,
            max_bytes=settings.max_queue_bytes,
            batch_events=settings.flush_at,
            body_room=BODY_ROOM,
        )
        self.ledger.attach(buffer)
        full = FullQueue(buffer, self.problems, block_on_full=settings.block_on_full)
        return Worker(buffer, dispatcher, deadlines, flush_interval=settings.flush_interval, drain=drain, full=full)

    # -- the process this runs in ---------------------------------------------------------------

    def worker_for_this_process(self) -> Worker:
        """This process's worker: in a new process (forked without hooks, e.g. by uWSGI) everything starts over."""
        if self.worker.pid != os.getpid():
            lifecycle.in_new_process()
        return self.worker

    def start_fresh_if_forked(self) -> None:
        """In a new process: the parent's queue, thread, connections and counts are the parent's."""
        if self.worker.pid == os.getpid():
            return
        was_closed = self.worker.closing
        self.transport.reset_after_fork()
        if self.spool is not None:
            self.spool.reset_after_fork()
        self._start_process()
        if was_closed:  # closed in the parent: closed here too (its next event reopens it, as there)
            self.worker.close(0.0, wait=False)
            return
        self.resume_spool()

    def renew(self, stale: Worker) -> Worker:
        """A fresh worker in place of ``stale`` (closed), keeping the ledger; one, however many threads ask."""
        with self._renew_lock:
            if self.worker is stale and stale.closing:
                self._retiring = [w for w in self._retiring if not w.finished] + [stale]
                self.worker = self._new_worker()
                self.renewed = True
                self.resume_spool()
            return self.worker

    def put(self, data: bytes, worker: Worker) -> int:
        """Queue one message; a worker that closed meanwhile hands it to the renewed one (not at exit)."""
        status = worker.put(data)  # the common case: accepted (or full) at the first try
        if status != CLOSED:
            return status
        for attempt in range(MAX_REOPENS_PER_EVENT):
            if attempt:
                status = worker.put(data)
                if status != CLOSED:
                    return status
            if lifecycle.exiting():
                break
            worker = self.renew(worker)
        self.ledger.add("dropped_closed")
        return CLOSED

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

    def refuse_in_forking_master(self, data: bytes) -> None:
        """An event logged in a uWSGI master (say, at import): it cannot be delivered from there."""
        self.problems.failed([data], _IN_UWSGI_MASTER)

    def _workers(self) -> list[Worker]:
        """This process's workers that may hold events: those still finishing, then the current one."""
        if self.worker.pid != os.getpid():
            return []
        return [*(w for w in self._retiring if not w.finished), self.worker]

    # -- flush and close ------------------------------------------------------------------------

    def flush(self, timeout: Optional[float]) -> bool:
        """True when every event emitted before the call was delivered (one kept in the spool was not)."""
        workers = self._workers()
        if not workers:
            return True  # nothing of this process's: that worker is the parent's
        if lifecycle.logging_lock_held():  # inside dictConfig: the worker may need logging's lock
            return all(worker.buffer.empty for worker in workers) and not self._spool_rows()
        deadline = None if timeout is None else time.monotonic() + timeout
        lost = self._lost()
        delivered = True
        for worker in workers:
            if not worker.buffer.idle:
                delivered = worker.flush(_remaining(deadline)) and delivered
        if self.spool is None:
            return delivered
        # Batches that went to the spool (an outage) are delivered once it drains, if none was lost meanwhile.
        return self._drain_spool(deadline) and (delivered or self._lost() == lost)

    def _lost(self) -> int:
        ledger = self.ledger
        return ledger.failed + ledger.dropped_queue_full + ledger.dropped_closed + ledger.spool_dropped

    def _spool_rows(self) -> int:
        if self.spool is None:
            return 0
        try:
            return self.spool.pending()[0]
        except SpoolUnavailable:
            return 0

    def _drain_spool(self, deadline: Optional[float]) -> bool:
        """Wait for the spool to empty: True once it has; False when the endpoint still fails, or on time."""
        if not self._spool_rows():
            return True
        worker = self.worker
        if worker.closing or self.forking_master or worker.is_worker_thread():
            return False  # nothing here drains it now
        failures = self.outage.failures
        self.outage.due = 0.0  # look now: a probe if in an outage, else a drain
        worker.wake()
        while True:
            if not self._spool_rows():
                return True
            if self.outage.failures != failures or worker.closing:
                return False  # the probe failed: the endpoint is still down
            left = _remaining(deadline)
            if left is not None and left <= 0:
                return False
            time.sleep(SPOOL_FLUSH_POLL if left is None else min(SPOOL_FLUSH_POLL, left))

    def close(self) -> None:
        """Deliver what is held within ``shutdown_timeout``; with logging's lock held, only begin."""
        worker = self.worker
        wait = not lifecycle.logging_lock_held()
        if worker.pid != os.getpid():
            return
        if worker.closing:  # closed before (inside dictConfig, say): wait for that close to end, now we may
            if wait:
                for closing in self._workers():
                    closing.join()
            return
        ledger = self.ledger
        failed, spooled = ledger.failed, ledger.spool_written
        worker.close(self.settings.shutdown_timeout, wait=wait)
        if wait:
            for retiring in self._retiring:
                retiring.join()
            self._tell_undelivered(ledger.queued + ledger.failed - failed, ledger.spool_written - spooled)

    def begin_shutdown(self) -> None:
        """Ask this process's workers to deliver and stop, taking no lock (safe in a signal handler)."""
        for worker in self._workers():
            worker.close(self.settings.shutdown_timeout, wait=False)

    def finish_shutdown(self) -> None:
        for worker in self._workers():
            worker.join()

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
                f"before close (shutdown_timeout={self.settings.shutdown_timeout:g}s)\n"
            )

    def _stderr(self, text: str) -> None:
        try:
            sys.stderr.write(self._scrub(text))
            sys.stderr.flush()
        except Exception:  # stderr may be closed during exit
            pass

    def report(self, kind: str, text: str, level: int = logging.WARNING) -> None:
        self.problems.report(kind, text, level)

    # -- counts ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counts since this process started using the handler (a new process starts at zero)."""
        self.worker_for_this_process()
        transport = self.transport
        counts = self.ledger.counts()
        counts.update(
            retries=transport.retries,
            requests=transport.requests_sent,
            bytes_sent=transport.bytes_sent,
            spooled=self._spool_rows(),
        )
        return counts


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
