"""``DreamdataHandler``: the ``logging.Handler`` that turns event records into messages and queues them."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Optional, Union

from dreamdata_logging import _aflush
from dreamdata_logging import _options as options
from dreamdata_logging._diagnostics import Report
from dreamdata_logging._handler_settings import HandlerSettings, check_number
from dreamdata_logging._shaping import BeforeSend, make_shaper
from dreamdata_logging.delivery import lifecycle
from dreamdata_logging.delivery.delivery import Delivery, Settings
from dreamdata_logging.delivery.problems import OnError, safe_text
from dreamdata_logging.errors import InvalidEventError
from dreamdata_logging.events import message
from dreamdata_logging.events import record as _record
from dreamdata_logging.events.bind import current as _current_bindings
from dreamdata_logging.spool.spool import DEFAULT_MAX_BYTES as DEFAULT_SPOOL_MAX_BYTES
from dreamdata_logging.spool.spool import Spool
from dreamdata_logging.transport.transport import DEFAULT_ENDPOINT, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Transport
from dreamdata_logging.wire.plan import TrackingPlan
from dreamdata_logging.wire.rules import MAX_MESSAGE_BYTES

# The handler's own defaults; the transport's (endpoint, timeout, retries) and the spool's are where those live.
DEFAULT_FLUSH_AT = 2000
DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_MAX_QUEUE_SIZE = 100_000
_getpid = os.getpid
_get_ident = threading.get_ident
DEFAULT_MAX_QUEUE_BYTES = 50_000_000
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
DEFAULT_BLOCK_ON_FULL = 0.0


def _make_transport(
    write_key: Optional[str],
    endpoint: Optional[str],
    timeout: Any,
    max_retries: Any,
    gzip: Any,
    verify: Any,
    proxies: Optional[Mapping[str, str]],
) -> Transport:
    """A new handler's transport: the write key and endpoint given or from the environment, its options checked."""
    key = write_key or os.environ.get("DREAMDATA_WRITE_KEY")
    if not key or not isinstance(key, str):
        raise ValueError("DreamdataHandler needs a write key: pass write_key=... or set DREAMDATA_WRITE_KEY")
    return Transport(
        endpoint or os.environ.get("DREAMDATA_ENDPOINT") or DEFAULT_ENDPOINT,
        key,
        timeout=options.as_number("timeout", timeout, float, 0.001),
        max_retries=options.as_number("max_retries", max_retries, int, 0),
        gzip=options.as_bool("gzip", gzip),
        verify=options.as_verify(verify),
        proxies=options.as_proxies(proxies),
    )


class DreamdataHandler(HandlerSettings, logging.Handler):
    """Sends records that carry event data (the ``dreamdata`` attribute) to Dreamdata's batch endpoint.

    Records without it are ignored, so the handler can sit on the root logger. ``emit()`` turns the
    record into message bytes in the caller's thread and queues them; a background thread ships them
    in batches. It never blocks on the network and never raises into the caller.

    Args:
        write_key: the source's write key (HTTP Basic username). Default None: ``DREAMDATA_WRITE_KEY`` from the
            environment; neither is a ValueError.
        endpoint: URL of the batch endpoint; ``http://host:port`` means ``.../v1/batch``. Default None:
            ``DREAMDATA_ENDPOINT`` from the environment, else ``https://api.dreamdata.cloud/v1/batch``.
        flush_at: most messages in one request (which also stays within 500,000 bytes). Default 2,000.
        flush_interval: seconds a message may wait before its (partial) batch is sent. Default 1.0.
        max_queue_size: events held in memory, in flight included; past it new events are dropped and
            counted. Default 100,000.
        max_queue_bytes: the same bound in bytes of serialised messages. Default 50,000,000.
        timeout: seconds one HTTP request may take. Default 10.0.
        max_retries: retries of one batch after network errors, 408, 429 and 5xx. Default 8.
        shutdown_timeout: seconds ``close()`` or interpreter exit may spend delivering. Default 5.0.
        gzip: compress request bodies (``Content-Encoding: gzip``). Default False.
        send: False builds, checks and counts each event but sends nothing. Default True.
        on_error: ``on_error(exception, messages)``, called for events refused, not delivered or dropped by
            a full queue (from the worker thread); an import path ``"pkg.module:name"`` in a config file.
            Default None.
        verify: TLS verification: True, False or the path of a CA bundle. Default True.
        proxies: a ``requests`` proxies mapping (``HTTPS_PROXY`` and the like work too). Default None.
        include_extra: the record's other ``extra`` keys become properties (traits for identify and group).
            Default False.
        spool: path of an SQLite file keeping what cannot be delivered yet, for later or for the next
            process. Default None: no spool.
        spool_max_bytes: bytes of messages the spool may hold; past it the oldest are dropped and counted.
            Default 100,000,000.
        handle_sigterm: on SIGTERM, deliver what is queued (within ``shutdown_timeout``) before the process
            ends. Default True.
        block_on_full: seconds a caller may wait for room in a full queue before its event is dropped.
            Default 0.0: dropped at once.
        level: the handler's logging level. Default ``logging.NOTSET`` (0).
        before_send: ``before_send(message)``, run in the logging thread on each complete message; what it
            returns is sent, None drops the event (counted as filtered). Default None.
        tracking_plan: a tracking plan (a YAML or JSON file, or a ``TrackingPlan``) each event is checked
            against in the logging thread; needs the ``plan`` extra. Default None.
        plan_policy: what to do with an event that breaks the plan: ``"report"`` sends and reports it,
            ``"drop"`` drops it (counted as filtered). Default ``"report"``.
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
        block_on_full: float = DEFAULT_BLOCK_ON_FULL,
        level: Union[int, str] = logging.NOTSET,
        before_send: Optional[BeforeSend] = None,
        tracking_plan: Union[None, str, os.PathLike[str], TrackingPlan] = None,
        plan_policy: str = "report",
    ) -> None:
        super().__init__(level)
        settings = Settings(
            flush_at=check_number("flush_at", flush_at),
            flush_interval=check_number("flush_interval", flush_interval),
            max_queue_size=check_number("max_queue_size", max_queue_size),
            max_queue_bytes=check_number("max_queue_bytes", max_queue_bytes),
            shutdown_timeout=check_number("shutdown_timeout", shutdown_timeout),
            block_on_full=check_number("block_on_full", block_on_full),
        )
        self.include_extra = options.as_bool("include_extra", include_extra)
        self._handle_sigterm = options.as_bool("handle_sigterm", handle_sigterm)
        self._transport = _make_transport(write_key, endpoint, timeout, max_retries, gzip, verify, proxies)
        spool_path = options.as_path("spool", spool)
        self._spool_max_bytes = options.as_number("spool_max_bytes", spool_max_bytes, int, MAX_MESSAGE_BYTES)
        self._spool = Spool(spool_path, self._spool_max_bytes) if spool_path else None
        self._delivery = Delivery(
            self._transport,
            self._spool,
            settings,
            on_error=options.as_callable("on_error", on_error),
            scrub=self._transport.redactor.scrub,
        )
        self.send = send
        self.before_send = options.as_callable("before_send", before_send)
        self._shaper = make_shaper(self._delivery, self.before_send, tracking_plan, plan_policy)
        _started(self)

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
        """Turn the record into message bytes and queue them. Never raises: whatever goes wrong is counted
        and reported (a record without event data is only counted as skipped)."""
        event = record.__dict__.get("dreamdata")  # where extra= puts it; cheaper than getattr for plain logs
        try:
            self._emit(record, event)
        except Exception as error:  # the one guard: nothing we call may raise into the caller
            try:
                self._invalid(InvalidEventError(f"could not be handled ({safe_text(error)})"), event)
            except Exception:
                pass

    def _emit(self, record: logging.LogRecord, event: Any) -> None:
        name = None
        extra = None
        if event is None:
            found = _record.found_in_structlog_or_loguru(record)  # structlog's event dict, loguru's record.extra
            if found is not None:
                event, name, extra = found
        elif self.include_extra:
            extra = _record.extra_fields(record)
        delivery = self._delivery
        worker = delivery.worker
        # A new process (forked without hooks, as by uWSGI) starts clean. The record carries the process id
        # logging read for it: no system call of ours per event (and a record from another process, say
        # through a QueueListener, only costs the check that this is still the same process).
        if worker.pid != (record.process or _getpid()):
            worker = delivery.worker_for_this_process()
        # Our own diagnostics and whatever is logged while we send (requests, urllib3) never feed us.
        if event is None or record.name.startswith("dreamdata_logging") or _get_ident() in worker.own_threads:
            delivery.ledger.add("skipped")
            return
        extra_fields = extra if self.include_extra else None
        try:
            if self._shaper is None:
                data = message.build_message(event, record, _current_bindings(), extra_fields, name)
            else:  # before_send or a tracking plan; None: the event was filtered (and counted)
                shaped = self._shaper.build(event, record, _current_bindings(), extra_fields, name)
                if shaped is None:
                    return
                data = shaped
        except InvalidEventError as error:
            self._invalid(error, event)
            return
        except Exception as error:  # e.g. a __str__ that raises on both encoder paths
            self._invalid(InvalidEventError(f"could not be serialised ({safe_text(error)})"), event)
            return
        delivery.sink.message(data, worker)  # the queue, or a test's capture (dreamdata_logging.testing)

    def flush(self, timeout: Optional[float] = None) -> bool:  # type: ignore[override]
        """Wait until every event emitted before the call is delivered or given up on.

        Returns True when all of them were delivered. During interpreter exit (``logging.shutdown``)
        this closes the handler instead, so exit never waits longer than ``shutdown_timeout``. Called
        with logging's own lock held (``dictConfig``, ``fileConfig``) or from the worker thread (an
        ``on_error`` callback), it does not wait: the worker may need that lock, or is the caller.
        """
        if lifecycle.exiting() and timeout is None and not self._worker.buffer.idle:
            self.close()
            return self._worker.buffer.empty
        return self._delivery.flush(timeout)

    async def aflush(self, timeout: Optional[float] = None) -> bool:
        """As :meth:`flush`, awaited without blocking the event loop (see ``dreamdata_logging.aflush``)."""
        return await _aflush.flush_delivery(self._delivery, timeout)

    def close(self) -> None:
        """Deliver what is queued within ``shutdown_timeout``, then stop. Safe to call twice.

        A handler closed by a reconfiguration but still attached to a logger reopens on its next event,
        as ``logging.FileHandler`` does. Called with logging's lock held, it begins closing and returns;
        the thread finishes delivering on its own within ``shutdown_timeout``.
        """
        try:
            self._delivery.close()
        finally:
            super().close()

    def stats(self) -> dict[str, int]:
        """Counters since this process started using the handler (a forked child starts at zero)."""
        return self._delivery.stats()

    # -- called by _lifecycle --------------------------------------------------------------------

    def start_fresh_if_forked(self) -> None:
        self._delivery.start_fresh_if_forked()

    def begin_shutdown(self) -> None:
        self._delivery.begin_shutdown()

    def finish_shutdown(self) -> None:
        self._delivery.finish_shutdown()

    def _invalid(self, error: InvalidEventError, event: Any) -> None:
        self._delivery.sink.invalid(error)
        self._delivery.problems.invalid(error, event)


def _started(handler: DreamdataHandler) -> None:
    """A new handler's process-wide wiring: the registry, a warning where threads cannot run, SIGTERM, the spool."""
    lifecycle.register(handler)
    no_threads = lifecycle.threads_unavailable()
    if no_threads is not None and handler.send:
        handler._delivery.report(Report.NO_THREADS, no_threads, logging.ERROR)
    if handler.handle_sigterm:
        lifecycle.install_sigterm()
    if handler.send:
        handler._delivery.resume_spool()  # events left by an earlier outage or process: send them now
