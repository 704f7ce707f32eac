"""``DreamdataHandler``: the ``logging.Handler`` that turns event records into messages and queues them."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Optional, Union

from . import _lifecycle as lifecycle
from . import _message as wire
from . import _options as options
from . import _record
from . import testing as _testing
from ._buffer import CLOSED, FULL
from ._context import current as _current_bindings
from ._delivery import Delivery, Limits
from ._problems import OnError, safe_text
from ._spool import DEFAULT_MAX_BYTES as DEFAULT_SPOOL_MAX_BYTES
from ._spool import Spool
from ._transport import DEFAULT_ENDPOINT, Transport
from ._wire import MAX_MESSAGE_BYTES
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
        spool_path = options.as_path("spool", spool)
        self.spool_max_bytes = options.as_number("spool_max_bytes", spool_max_bytes, int, MAX_MESSAGE_BYTES)
        self._spool = Spool(spool_path, self.spool_max_bytes) if spool_path else None
        limits = Limits(
            self.flush_at,
            self.flush_interval,
            self.max_queue_size,
            self.max_queue_bytes,
            self.shutdown_timeout,
            self.on_error,
            self._transport.redactor.scrub,
        )
        self._delivery = Delivery(self._transport, self._spool, limits)
        self._started()

    def _started(self) -> None:
        """Process-wide wiring: the registry, a warning where threads cannot run, SIGTERM, the spool."""
        lifecycle.register(self)
        no_threads = lifecycle.threads_unavailable()
        if no_threads is not None and self.send:
            self._delivery.report("no_threads", no_threads, logging.ERROR)
        if self.handle_sigterm:
            lifecycle.install_sigterm()
        if self.send:
            self._delivery.resume_spool()  # events left by an earlier outage or process: send them now

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
        event = record.__dict__.get("dreamdata")  # where extra= puts it; cheaper than getattr for plain logs
        name = None
        extra = None
        if event is None:
            found = _record.elsewhere(record)  # structlog's event dict, loguru's record.extra
            if found is not None:
                event, name, extra = found
        elif self.include_extra:
            extra = _record.extra_fields(record)
        delivery = self._delivery
        worker = delivery.current()  # a new process (forked without hooks, e.g. by uWSGI) starts clean
        # Our own diagnostics and whatever is logged while we send (requests, urllib3) never feed us.
        if event is None or record.name.startswith("dreamdata_logging") or worker.is_worker_thread():
            delivery.counters.add("skipped")
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
            delivery.counters.add("unsent")
            return
        if worker.closing and not lifecycle.exiting():
            worker = delivery.renew()  # closed (by a reconfiguration?) but still attached: reopen
        if delivery.forking_master:
            delivery.from_forking_master(data)
            return
        status = worker.put(data)
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
