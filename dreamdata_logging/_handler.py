"""``DreamdataHandler``: the ``logging.Handler`` that turns event records into messages and queues them."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Optional, Union

from dreamdata_logging import _aflush
from dreamdata_logging import _options as options
from dreamdata_logging import testing as _testing
from dreamdata_logging._shaping import BeforeSend, make_shaper
from dreamdata_logging.delivery import lifecycle
from dreamdata_logging.delivery.buffer import CLOSED, FULL
from dreamdata_logging.delivery.delivery import Delivery, Settings
from dreamdata_logging.delivery.problems import OnError, safe_text
from dreamdata_logging.delivery.worker import Worker
from dreamdata_logging.errors import InvalidEventError
from dreamdata_logging.events import message as wire
from dreamdata_logging.events import record as _record
from dreamdata_logging.events.bind import current as _current_bindings
from dreamdata_logging.spool.spool import DEFAULT_MAX_BYTES as DEFAULT_SPOOL_MAX_BYTES
from dreamdata_logging.spool.spool import Spool
from dreamdata_logging.transport.transport import DEFAULT_ENDPOINT, Transport
from dreamdata_logging.wire.plan import TrackingPlan
from dreamdata_logging.wire.rules import MAX_MESSAGE_BYTES

DEFAULT_FLUSH_AT = 2000
DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_MAX_QUEUE_SIZE = 100_000
_getpid = os.getpid
_get_ident = threading.get_ident
DEFAULT_MAX_QUEUE_BYTES = 50_000_000
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 8
DEFAULT_SHUTDOWN_TIMEOUT = 5.0


_NUMBERS: dict[str, tuple[Any, float]] = {  # name: (type, smallest value)
    "flush_at": (int, 1),
    "flush_interval": (float, 0.001),
    "max_queue_size": (int, 1),
    "max_queue_bytes": (int, MAX_MESSAGE_BYTES),
    "shutdown_timeout": (float, 0),
    "block_on_full": (float, 0),
}


def _check(name: str, value: Any) -> Any:
    kind, minimum = _NUMBERS[name]
    return options.as_number(name, value, kind, minimum)


def _setting(name: str, doc: str) -> Any:
    """A handler attribute kept in its delivery's settings: read there, checked and applied when set."""

    def get(self: DreamdataHandler) -> Any:
        return getattr(self._delivery.settings, name)

    def set_(self: DreamdataHandler, value: Any) -> None:
        self._delivery.apply(name, _check(name, value))

    return property(get, set_, doc=doc)


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
        block_on_full: float = 0.0,
        level: Union[int, str] = logging.NOTSET,
        before_send: Optional[BeforeSend] = None,
        tracking_plan: Union[None, str, os.PathLike[str], TrackingPlan] = None,
        plan_policy: str = "report",
    ) -> None:
        super().__init__(level)
        key = write_key or os.environ.get("DREAMDATA_WRITE_KEY")
        if not key or not isinstance(key, str):
            raise ValueError("DreamdataHandler needs a write key: pass write_key=... or set DREAMDATA_WRITE_KEY")
        settings = Settings(
            flush_at=_check("flush_at", flush_at),
            flush_interval=_check("flush_interval", flush_interval),
            max_queue_size=_check("max_queue_size", max_queue_size),
            max_queue_bytes=_check("max_queue_bytes", max_queue_bytes),
            shutdown_timeout=_check("shutdown_timeout", shutdown_timeout),
            block_on_full=_check("block_on_full", block_on_full),
        )
        self.send = options.as_bool("send", send)
        self.include_extra = options.as_bool("include_extra", include_extra)
        self._handle_sigterm = options.as_bool("handle_sigterm", handle_sigterm)
        self._transport = Transport(
            endpoint or os.environ.get("DREAMDATA_ENDPOINT") or DEFAULT_ENDPOINT,
            key,
            timeout=options.as_number("timeout", timeout, float, 0.001),
            max_retries=options.as_number("max_retries", max_retries, int, 0),
            gzip=options.as_bool("gzip", gzip),
            verify=options.as_verify(verify),
            proxies=options.as_proxies(proxies),
        )
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
        self.before_send = options.as_callable("before_send", before_send)
        self._shaper = make_shaper(self._delivery, self.before_send, tracking_plan, plan_policy)
        self._started()

    def _started(self) -> None:
        """Process-wide wiring: the registry, a warning where threads cannot run, SIGTERM, the spool."""
        lifecycle.register(self)
        no_threads = lifecycle.threads_unavailable()
        if no_threads is not None and self.send:
            self._delivery.report("no_threads", no_threads, logging.ERROR)
        if self._handle_sigterm:
            lifecycle.install_sigterm()
        if self.send:
            self._delivery.resume_spool()  # events left by an earlier outage or process: send them now

    # -- settings: each takes effect at once when set ---------------------------------------------

    flush_at = _setting("flush_at", "most messages in one request")
    flush_interval = _setting("flush_interval", "seconds a message may wait before its batch is sent")
    max_queue_size = _setting("max_queue_size", "events held in memory; past it new ones are dropped and counted")
    max_queue_bytes = _setting("max_queue_bytes", "bytes of events held in memory")
    shutdown_timeout = _setting("shutdown_timeout", "seconds close() and interpreter exit may spend delivering")
    block_on_full = _setting("block_on_full", "seconds a caller may wait for room in a full queue (0: drop)")

    @property
    def on_error(self) -> Optional[OnError]:
        """Called as ``on_error(exception, messages)`` for events that are refused or cannot be delivered."""
        return self._delivery.on_error

    @on_error.setter
    def on_error(self, value: Optional[OnError]) -> None:
        self._delivery.on_error = options.as_callable("on_error", value)

    @property
    def spool_max_bytes(self) -> int:
        """Bytes the spool file may hold; past it the oldest spooled events are dropped (counted)."""
        return self._spool.max_bytes if self._spool is not None else self._spool_max_bytes

    @spool_max_bytes.setter
    def spool_max_bytes(self, value: Any) -> None:
        self._spool_max_bytes = options.as_number("spool_max_bytes", value, int, MAX_MESSAGE_BYTES)
        if self._spool is not None:
            self._spool.max_bytes = self._spool_max_bytes

    @property
    def handle_sigterm(self) -> bool:
        """Read-only: whether SIGTERM delivers what is queued (decided when the handler is made)."""
        return self._handle_sigterm

    @property
    def _worker(self) -> Worker:
        return self._delivery.worker

    @property
    def closed(self) -> bool:
        """Closed and not used since (an event reopens it, as ``logging.FileHandler`` reopens its file)."""
        return self._delivery.worker.closing

    @property
    def reopened(self) -> bool:
        """The handler was closed and then used again (logging.shutdown() no longer closes it at exit)."""
        return self._delivery.renewed

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
            found = _record.elsewhere(record)  # structlog's event dict, loguru's record.extra
            if found is not None:
                event, name, extra = found
        elif self.include_extra:
            extra = _record.extra_fields(record)
        delivery = self._delivery
        worker = delivery.worker
        if worker.pid != _getpid():
            worker = delivery.worker_for_this_process()  # a new process (forked without hooks) starts clean
        # Our own diagnostics and whatever is logged while we send (requests, urllib3) never feed us.
        if event is None or record.name.startswith("dreamdata_logging") or _get_ident() in worker.own_threads:
            delivery.ledger.add("skipped")
            return
        extra_fields = extra if self.include_extra else None
        try:
            if self._shaper is None:
                data = wire.build_message(event, record, _current_bindings(), extra_fields, name)
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
        if _testing.active:  # a test is capturing (the dreamdata_events fixture)
            _testing.feed(data)
            delivery.ledger.add("captured")
            return
        if not self.send:
            delivery.ledger.add("unsent")
            return
        if worker.closing and not lifecycle.exiting():
            worker = delivery.renew(worker)  # closed (by a reconfiguration?) but still attached: reopen
        if delivery.forking_master:
            delivery.refuse_in_forking_master(data)
            return
        status = delivery.put(data, worker)
        if status == FULL:
            delivery.report(
                "queue_full",
                f"queue full ({self.max_queue_size:,} events or {self.max_queue_bytes:,} bytes): "
                "new events are dropped until it drains (is the endpoint down or slow?)",
            )
        elif status == CLOSED:
            delivery.report("closed", "an event was emitted after the handler was closed; it was dropped")

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
        return await _aflush.flush_worker(self._worker, timeout)

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
        if _testing.active:
            _testing.feed_invalid(error)
        self._delivery.problems.invalid(error, event)
