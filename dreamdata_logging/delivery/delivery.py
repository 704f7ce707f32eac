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
from dataclasses import dataclass
from typing import Callable, Optional

from dreamdata_logging._diagnostics import Report
from dreamdata_logging.delivery import flushing, lifecycle
from dreamdata_logging.delivery import uwsgi as uwsgi_master
from dreamdata_logging.delivery.buffer import CLOSED, Buffer, Put
from dreamdata_logging.delivery.deadlines import Deadlines
from dreamdata_logging.delivery.dispatch import Dispatcher
from dreamdata_logging.delivery.full import FullQueue
from dreamdata_logging.delivery.ledger import Ledger
from dreamdata_logging.delivery.outage import DEFAULT_SPOOL_TIMING, OutageState, SpoolDrain, SpoolTiming
from dreamdata_logging.delivery.problems import OnError, Problems
from dreamdata_logging.delivery.sink import QueueSink, Sink
from dreamdata_logging.delivery.worker import Worker
from dreamdata_logging.spool.spool import Spool, SpoolUnavailable
from dreamdata_logging.transport.transport import Transport
from dreamdata_logging.wire.rules import MAX_BODY_BYTES, body_size

#: Bytes of messages one request body holds, besides the envelope.
BODY_ROOM = MAX_BODY_BYTES - body_size(0, 0)




@dataclass
class Settings:
    """The handler's batching, memory and shutdown settings, read where they are used (so a change applies)."""

    flush_at: int
    flush_interval: float
    max_queue_size: int
    max_queue_bytes: int
    shutdown_timeout: float
    block_on_full: float  # seconds a caller may wait for room in a full queue


#: Most times one event goes to a renewed worker because the one it found had just closed.
MAX_REOPENS_PER_EVENT = 8


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
        spool_timing: SpoolTiming = DEFAULT_SPOOL_TIMING,
    ) -> None:
        self.transport, self.spool, self.settings = transport, spool, settings
        self._on_error, self._scrub = on_error, scrub
        self.spool_timing = spool_timing  # a process's outage state starts with it
        self.renewed = False
        #: The default sink: this delivery's queue. ``sink`` is where built messages go (a test's capture swaps it).
        self.queue = QueueSink(self)
        self.sink: Sink = self.queue
        self._renew_lock = threading.RLock()  # re-entrant: a signal handler may log while its thread renews
        self._start_process()

    def _start_process(self) -> None:
        """What belongs to one process: the ledger, the reports, the outage state and a first worker."""
        self.ledger = Ledger()
        self.problems = Problems(self.ledger, self._on_error, self._scrub)
        self.outage = OutageState(self.spool_timing)
        self.forking_master = lifecycle.in_uwsgi_master()
        self._retiring: list[Worker] = []  # closed workers still finishing their last batches
        self.worker = self._new_worker()

    def scrub(self, text: str) -> str:
        """``text`` without any secret (the write key in any encoding, the endpoint's credentials)."""
        return self._scrub(text)

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
        return Worker(
            buffer, dispatcher, deadlines,
            flush_interval=settings.flush_interval, drain=drain, full=full, on_stop=self._worker_stopped,
        )  # fmt: skip

    def _worker_stopped(self) -> None:
        """A worker's thread ended after close(): once none is left, let the connections, the spool's and the
        deadline thread go too (a handler closed for good holds nothing open; a reopen opens them again)."""
        worker = self.worker
        if not worker.closing or worker.pid != os.getpid():
            return  # reopened meanwhile (its worker sends), or a parent's worker
        if all(w.stopped or w.is_worker_thread() for w in self.workers()):
            self.transport.close()
            if self.spool is not None:
                self.spool.close()  # its SQLite connection and page cache; the next use opens it again

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

    def put_after_closed(self, data: bytes, worker: Worker) -> Put:
        """Queue a message ``worker`` refused because it closed meanwhile: the renewed worker takes it (not
        at exit). The common case never comes here: the sink puts to the current worker directly."""
        for _ in range(MAX_REOPENS_PER_EVENT - 1):
            if lifecycle.exiting():
                break
            worker = self.renew(worker)
            status = worker.put(data)
            if status is not CLOSED:
                return status
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

    def from_forking_master(self, data: bytes) -> None:
        """An event logged in a uWSGI master (say, at import): no thread there; spooled, or sent now."""
        uwsgi_master.from_master(
            self.worker, self.transport, self.spool, self.problems, self.settings.shutdown_timeout, data
        )

    def workers(self) -> list[Worker]:
        """This process's workers that may hold events: those still finishing, then the current one."""
        if self.worker.pid != os.getpid():
            return []
        return [*(w for w in self._retiring if not w.finished), self.worker]

    # -- flush and close ------------------------------------------------------------------------

    def flush(self, timeout: Optional[float]) -> bool:
        """True when every event emitted before the call was delivered (one kept in the spool was not)."""
        return flushing.flush(self, timeout)

    def spool_rows(self) -> int:
        """Events in the spool file now, every process's included (0 without a spool, or if unreadable)."""
        if self.spool is None:
            return 0
        try:
            return self.spool.pending()[0]
        except SpoolUnavailable:
            return 0

    def close(self) -> None:
        """Deliver what is held within ``shutdown_timeout``; with logging's lock held, only begin."""
        worker = self.worker
        wait = not lifecycle.logging_lock_held()
        if worker.pid != os.getpid():
            return
        if worker.closing:  # closed before (inside dictConfig, say): wait for that close to end, now we may
            if wait:
                for closing in self.workers():
                    closing.join()
            return
        ledger = self.ledger
        failed, spooled = ledger.failed, ledger.spool_written
        worker.close(self.settings.shutdown_timeout, wait=wait)
        if wait:
            for retiring in self._retiring:
                retiring.join()
            _tell_undelivered(self, ledger.queued + ledger.failed - failed, ledger.spool_written - spooled)

    def begin_shutdown(self) -> None:
        """Ask this process's workers to deliver and stop, taking no lock (safe in a signal handler)."""
        for worker in self.workers():
            worker.close(self.settings.shutdown_timeout, wait=False)

    def finish_shutdown(self) -> None:
        for worker in self.workers():
            worker.join()

    def report(self, kind: Report, text: str, level: int = logging.WARNING, detail: str = "") -> None:
        self.problems.report(kind, text, level, detail)

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
            spooled=self.spool_rows(),
        )
        return counts


def _tell_undelivered(delivery: Delivery, undelivered: int, spooled: int) -> None:
    """What close() could not deliver, on stderr (scrubbed): kept in the spool, or not delivered."""
    endpoint, spool = delivery.transport.endpoint, delivery.spool
    if spooled and spool is not None:
        _stderr(
            delivery,
            f"dreamdata-logging: {spooled} event(s) could not be delivered to {endpoint} before close; "
            f"they were kept in the spool {spool.path} for later delivery (not lost)\n",
        )
    if undelivered:
        _stderr(
            delivery,
            f"dreamdata-logging: {undelivered} event(s) were not delivered to {endpoint} "
            f"before close (shutdown_timeout={delivery.settings.shutdown_timeout:g}s)\n",
        )


def _stderr(delivery: Delivery, text: str) -> None:
    try:
        sys.stderr.write(delivery.scrub(text))
        sys.stderr.flush()
    except Exception:  # stderr may be closed during exit
        pass
