"""``DreamdataHandler``: the ``logging.Handler`` that turns event records into messages and queues them."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, Optional, Union

from . import _lifecycle as lifecycle
from . import _message as wire
from . import _options as options
from . import _record
from . import testing as _testing
from ._budget import Deadlines
from ._buffer import CLOSED, FULL, Buffer
from ._context import current as _current_bindings
from ._dispatch import Dispatcher
from ._outage import SpoolDrain
from ._problems import Counters, OnError, Problems, safe_text
from ._spool import DEFAULT_MAX_BYTES as DEFAULT_SPOOL_MAX_BYTES
from ._spool import Spool, SpoolUnavailable
from ._transport import DEFAULT_ENDPOINT, Transport
from ._wire import MAX_BODY_BYTES, MAX_MESSAGE_BYTES, body_size
from ._worker import Worker
from .errors import InvalidEventError

DEFAULT_FLUSH_AT = 2000
DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_MAX_QUEUE_SIZE = 100_000
DEFAULT_MAX_QUEUE_BYTES = 50_000_000
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 8
DEFAULT_SHUTDOWN_TIMEOUT = 5.0


class DreamdataHandler(logging.Handler):
    """Sends records that carry event data (the ``dreamdata`` attribute) to Dreamdata's batch endpoint.

    Records without it are ignored, so the handler can sit on the root logger. ``emit()`` turns the
    record into message bytes in the caller's thread and queues them; a background thread ships them
    in batches. It never blocks on the network and never raises into the caller.
    """

    def __init__(
        self,
        write_key: Optional[str] = None,
        *,
        endpoint: Optional[str] = None,
        flush_at: int = DEFAULT_FLUSH_AT,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        gzip: bool = False,
        send: bool = True,
        on_error: Optional[OnError] = None,
        verify: Union[bool, str] = True,
        proxies: Optional[Mapping[str, str]] = None,
        include_extra: bool = False,
        spool: Union[None, str, os.PathLike[str]] = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        handle_sigterm: bool = True,
        level: Union[int, str] = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        key = write_key or os.environ.get("DREAMDATA_WRITE_KEY")
        if not key or not isinstance(key, str):
            raise ValueError("DreamdataHandler needs a write key: pass write_key=... or set DREAMDATA_WRITE_KEY")
        self.flush_at = options.as_number("flush_at", flush_at, int, 1)
        self.flush_interval = options.as_number("flush_interval", flush_interval, float, 0.001)
        self.max_queue_size = options.as_number("max_queue_size", max_queue_size, int, 1)
        self.max_queue_bytes = options.as_number("max_queue_bytes", max_queue_bytes, int, MAX_MESSAGE_BYTES)
        self.shutdown_timeout = options.as_number("shutdown_timeout", shutdown_timeout, float, 0)
        self.send = options.as_bool("send", send)
        self.on_error = options.as_callable("on_error", on_error)
        self.include_extra = options.as_bool("include_extra", include_extra)
        self.handle_sigterm = options.as_bool("handle_sigterm", handle_sigterm)
        self._transport = Transport(
            endpoint or os.environ.get("DREAMDATA_ENDPOINT") or DEFAULT_ENDPOINT,
            key,
            timeout=options.as_number("timeout", timeout, float, 0.001),
            max_retries=options.as_number("max_retries", max_retries, int, 0),
            gzip=options.as_bool("gzip", gzip),
            verify=options.as_verify(verify),
            proxies=options.as_proxies(proxies),
        )
        redactor = getattr(self._transport, "redactor", None)
        self._scrub = redactor.scrub if redactor is not None else _unchanged
        spool_path = options.as_path("spool", spool)
        self.spool_max_bytes = options.as_number("spool_max_bytes", spool_max_bytes, int, MAX_MESSAGE_BYTES)
        self._spool = Spool(spool_path, self.spool_max_bytes) if spool_path else None
        self.reopened = False
        self._worker = self._new_worker(Counters())
        lifecycle.register(self)
        no_threads = lifecycle.threads_unavailable()
        if no_threads is not None and self.send:
            self._problems.report("no_threads", no_threads, logging.ERROR)
        if self.handle_sigterm:
            lifecycle.install_sigterm()
        if self._spool is not None and self.send:
            self._resume_spool()  # events left by an earlier outage or process: send them now

    def _new_worker(self, counters: Counters) -> Worker:
        """The delivery machinery of this process: buffer, dispatcher, thread (and the spool's drain)."""
        self._counters = counters
        self._problems = Problems(counters, self.on_error, self._scrub)
        deadlines = Deadlines()
        dispatcher = Dispatcher(self._transport, self._problems, deadlines, spool=self._spool)
        body_room = MAX_BODY_BYTES - body_size(0, 0)
        drain = None
        if self._spool is not None:
            drain = SpoolDrain(self._spool, dispatcher.outage, dispatcher.send_claim, self.flush_at, body_room)
            drain.set_request_timeout(self._transport.timeout)
        buffer = Buffer(
            max_events=self.max_queue_size,
            max_bytes=self.max_queue_bytes,
            batch_events=self.flush_at,
            body_room=body_room,
        )
        return Worker(buffer, dispatcher, deadlines, flush_interval=self.flush_interval, drain=drain)

    @property
    def endpoint(self) -> str:
        return self._transport.endpoint

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint} ({logging.getLevelName(self.level)})>"

    # -- logging.Handler -----------------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> Any:
        """As ``logging.Handler.handle`` but without the handler lock: ``emit`` is thread-safe on its own,
        and the lock would make every logging thread wait on each other."""
        result = self.filter(record)
        if isinstance(result, logging.LogRecord):  # Python 3.12+: a filter may return a new record
            record = result
        if result:
            self.emit(record)
        return result

    def emit(self, record: logging.LogRecord) -> None:
        event = record.__dict__.get("dreamdata")  # where extra= puts it; cheaper than getattr for plain logs
        name = None
        extra = None
        if event is None:
            found = _record.elsewhere(record)  # structlog's event dict, loguru's record.extra
            if found is not None:
                event, name, extra = found
        elif self.include_extra:
            extra = _record.extra_fields(record)
        worker = self._worker
        if worker.pid != os.getpid():  # a new process, made without fork hooks (e.g. uWSGI)
            lifecycle.in_new_process()
            worker = self._worker
        # Our own diagnostics and whatever is logged while we send (requests, urllib3) never feed us.
        if event is None or record.name.startswith("dreamdata_logging") or worker.is_worker_thread():
            self._counters.add("skipped")
            return
        try:
            data = wire.build_message(event, record, _current_bindings(), extra if self.include_extra else None, name)
        except InvalidEventError as error:
            self._invalid(error, event)
            return
        except Exception as error:  # e.g. a __str__ that raises on both encoder paths
            self._invalid(InvalidEventError(f"could not be serialised ({safe_text(error)})"), event)
            return
        if _testing.active or not self.send:  # a test is capturing (the dreamdata_events fixture), or send=False
            if _testing.active:
                _testing.feed(data)
            self._counters.add("unsent")
            return
        if worker.closing and not lifecycle.exiting():
            worker = self._reopen()
        status = worker.put(data)
        if status == FULL:
            self._problems.report(
                "queue_full",
                f"queue full ({self.max_queue_size:,} events or {self.max_queue_bytes:,} bytes): "
                "new events are dropped until it drains (is the endpoint down or slow?)",
            )
        elif status == CLOSED:
            self._problems.report("closed", "an event was emitted after the handler was closed; it was dropped")

    def flush(self, timeout: Optional[float] = None) -> bool:  # type: ignore[override]
        """Wait until every event emitted before the call is delivered or given up on.

        Returns True when all of them were delivered. During interpreter exit (``logging.shutdown``)
        this closes the handler instead, so exit never waits longer than ``shutdown_timeout``. Called
        with logging's own lock held (``dictConfig``, ``fileConfig``) or from the worker thread (an
        ``on_error`` callback), it does not wait: the worker may need that lock, or is the caller.
        """
        worker = self._worker
        if worker.buffer.idle or worker.pid != os.getpid():
            return True  # nothing held (or nothing of this process's: that worker is the parent's)
        if lifecycle.exiting() and timeout is None:
            self.close()
            return worker.buffer.empty
        if lifecycle.logging_lock_held():
            return worker.buffer.empty
        return worker.flush(timeout)

    def close(self) -> None:
        """Deliver what is queued within ``shutdown_timeout``, then stop. Safe to call twice.

        A handler closed by a reconfiguration but still attached to a logger reopens on its next event,
        as ``logging.FileHandler`` does. Called with logging's lock held, it begins closing and returns;
        the thread finishes delivering on its own within ``shutdown_timeout``.
        """
        worker = self._worker
        try:
            if worker.pid == os.getpid() and not worker.closing:
                wait = not lifecycle.logging_lock_held()
                failed, spooled = self._counters.failed, self._counters.spool_written
                worker.close(self.shutdown_timeout, wait=wait)
                if wait:
                    self._tell_undelivered(
                        worker.buffer.held + self._counters.failed - failed, self._counters.spool_written - spooled
                    )
        finally:
            super().close()

    def _tell_undelivered(self, undelivered: int, spooled: int) -> None:
        if spooled and self._spool is not None:
            self._stderr(
                f"dreamdata-logging: {spooled} event(s) could not be delivered to {self.endpoint} before close; "
                f"they were kept in the spool {self._spool.path} for later delivery (not lost)\n"
            )
        if undelivered:
            self._stderr(
                f"dreamdata-logging: {undelivered} event(s) were not delivered to {self.endpoint} "
                f"before close (shutdown_timeout={self.shutdown_timeout:g}s)\n"
            )

    def stats(self) -> dict[str, int]:
        """Counters since this process started using the handler (a forked child starts at zero)."""
        counters, buffer, transport = self._counters, self._worker.buffer, self._transport
        if self._worker.pid != os.getpid():
            lifecycle.in_new_process()
            counters, buffer = self._counters, self._worker.buffer
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

    # -- lifecycle (called by _lifecycle) --------------------------------------------------------

    def start_fresh_if_forked(self) -> None:
        """In a new process: the parent's queue, thread, connections and counters are the parent's."""
        if self._worker.pid == os.getpid():
            return
        self._transport.reset_after_fork()
        if self._spool is not None:
            self._spool.reset_after_fork()
        self._worker = self._new_worker(Counters())
        if self._spool is not None and self.send:
            self._resume_spool()

    def _reopen(self) -> Worker:
        """A fresh worker after close(), keeping the totals (the old one may still be finishing)."""
        old = self._worker.buffer
        counters = self._counters
        counters.retired_offered += old.accepted + old.dropped_full + old.dropped_closed
        counters.retired_dropped_full += old.dropped_full
        counters.retired_dropped_closed += old.dropped_closed
        self._worker = self._new_worker(counters)
        self.reopened = True
        return self._worker

    def begin_shutdown(self) -> None:
        """Ask this process's worker to deliver and stop, taking no lock (safe in a signal handler)."""
        if self._worker.pid == os.getpid():
            self._worker.close(self.shutdown_timeout, wait=False)

    def finish_shutdown(self) -> None:
        if self._worker.pid == os.getpid():
            self._worker.join()

    # -- helpers -------------------------------------------------------------------------------

    def _resume_spool(self) -> None:
        """Start the thread now when the spool holds events (from an earlier outage or process)."""
        if self._spool is None or lifecycle.exiting():
            return
        try:
            rows = self._spool.pending()[0]
        except SpoolUnavailable:
            return
        if rows:
            self._worker.start()

    def _spooled_now(self) -> int:
        """Events in the spool file now, every process's included (0 without a spool)."""
        if self._spool is None:
            return 0
        try:
            return self._spool.pending()[0]
        except SpoolUnavailable:
            return 0

    def _stderr(self, text: str) -> None:
        _write_stderr(self._scrub(text))

    def _invalid(self, error: InvalidEventError, event: Any) -> None:
        if _testing.active:
            _testing.feed_invalid(error)
        self._problems.invalid(error, event)


def _unchanged(text: str) -> str:
    return text


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:  # stderr may be closed during exit
        pass
