"""``DreamdataHandler``: the ``logging.Handler`` that turns event records into messages and queues them."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

from . import _lifecycle, _record
from . import _message as wire
from . import testing as _testing
from ._context import current as _current_bindings
from ._diagnostics import RateLimitedReporter
from ._spool import DEFAULT_MAX_BYTES as DEFAULT_SPOOL_MAX_BYTES
from ._spool import Spool, SpoolUnavailable, worth_spooling
from ._transport import DEFAULT_ENDPOINT, Transport
from ._wire import MAX_MESSAGE_BYTES
from ._worker import Worker, interpreter_exiting
from .errors import DeliveryError, InvalidEventError

OnError = Callable[[BaseException, list[Any]], Any]

DEFAULT_FLUSH_AT = 2000
DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_MAX_QUEUE_SIZE = 100_000
DEFAULT_MAX_QUEUE_BYTES = 50_000_000
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 8
DEFAULT_SHUTDOWN_TIMEOUT = 5.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", "", "none"}


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _as_number(name: str, value: Any, kind: Callable[[Any], Any], minimum: float) -> Any:
    try:
        number = kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}")
    return number


def _as_verify(value: Any) -> Union[bool, str]:
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return _as_bool("verify", value)
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return bool(value)


def _as_path(name: str, value: Any) -> Optional[str]:
    """A file path, or None for None / "" / "none" (from a config file)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise ValueError(f"{name} must be a file path, got {type(value).__name__}")


def _as_proxies(value: Any) -> Optional[dict[str, str]]:
    if value is None or value == "":
        return None
    if isinstance(value, str):  # one proxy URL for both schemes, or a JSON object
        text = value.strip()
        return (
            {str(k): str(v) for k, v in json.loads(text).items()}
            if text.startswith("{")
            else {"http": text, "https": text}
        )
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    raise ValueError(f"proxies must be a mapping like {{'https': 'http://proxy:3128'}}, got {type(value).__name__}")


def _as_callable(name: str, value: Any) -> Optional[OnError]:
    """A callable, or its import path as text (``"package.module:function"``) from a config file."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        module_name, _, attribute = value.replace(":", ".").rpartition(".")
        try:
            value = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"{name}: cannot import {value!r}: {exc}") from None
    if not callable(value):
        raise ValueError(f"{name} must be callable")
    return value  # type: ignore[no-any-return]


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
        level: Union[int, str] = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        key = write_key or os.environ.get("DREAMDATA_WRITE_KEY")
        if not key or not isinstance(key, str):
            raise ValueError("DreamdataHandler needs a write key: pass write_key=... or set DREAMDATA_WRITE_KEY")
        self.flush_at = _as_number("flush_at", flush_at, int, 1)
        self.flush_interval = _as_number("flush_interval", flush_interval, float, 0.001)
        self.max_queue_size = _as_number("max_queue_size", max_queue_size, int, 1)
        self.max_queue_bytes = _as_number("max_queue_bytes", max_queue_bytes, int, MAX_MESSAGE_BYTES)
        self.shutdown_timeout = _as_number("shutdown_timeout", shutdown_timeout, float, 0)
        self.send = _as_bool("send", send)
        self.on_error = _as_callable("on_error", on_error)
        self.include_extra = _as_bool("include_extra", include_extra)
        self._transport = Transport(
            endpoint or os.environ.get("DREAMDATA_ENDPOINT") or DEFAULT_ENDPOINT,
            key,
            timeout=_as_number("timeout", timeout, float, 0.001),
            max_retries=_as_number("max_retries", max_retries, int, 0),
            gzip=_as_bool("gzip", gzip),
            verify=_as_verify(verify),
            proxies=_as_proxies(proxies),
        )
        spool_path = _as_path("spool", spool)
        self.spool_max_bytes = _as_number("spool_max_bytes", spool_max_bytes, int, MAX_MESSAGE_BYTES)
        self._spool = Spool(spool_path, self.spool_max_bytes) if spool_path else None
        self._worker = Worker(
            self._transport,
            flush_at=self.flush_at,
            flush_interval=self.flush_interval,
            max_queue_size=self.max_queue_size,
            max_queue_bytes=self.max_queue_bytes,
            on_give_up=self._give_up,
            spool=self._spool,
        )
        self._worker.close_at_exit = self.close  # a multiprocessing child skips atexit; see worker.py
        self._reporter = RateLimitedReporter()
        self._closed = False
        self._close_lock = threading.Lock()
        _lifecycle.register(self)
        if self._spool is not None and self.send:
            self._worker.resume_spool()  # events left by an earlier outage or process: send them now

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
        # Our own diagnostics and whatever is logged while we send (requests, urllib3) never feed us.
        if event is None or record.name.startswith("dreamdata_logging") or self._worker.is_worker_thread():
            self._worker.tally("skipped")
            return
        try:
            data = wire.build_message(
                event, record, _current_bindings(), extra if self.include_extra else None, name
            )
        except InvalidEventError as error:
            self._invalid(error, event)
            return
        except Exception as error:  # e.g. a __str__ that raises on both encoder paths
            self._invalid(InvalidEventError(f"could not be serialised ({_safe_text(error)})"), event)
            return
        if _testing.active:  # a test is capturing (the dreamdata_events fixture): hand it over, send nothing
            _testing.feed(data)
            self._worker.tally("unsent")
            return
        if not self.send:
            self._worker.tally("unsent")
            return
        dropped = self._worker.put(data)
        if dropped == "full":
            self._reporter.report(
                "queue_full",
                f"queue full ({self.max_queue_size:,} events or {self.max_queue_bytes:,} bytes): "
                "new events are dropped until it drains (is the endpoint down or slow?)",
            )
        elif dropped == "closed":
            self._reporter.report("closed", "an event was emitted after the handler was closed; it was dropped")

    def flush(self, timeout: Optional[float] = None) -> bool:  # type: ignore[override]
        """Wait until every event emitted before the call is delivered or given up on.

        Returns True when all of them were delivered. During interpreter exit (``logging.shutdown``)
        this closes the handler instead, so exit never waits longer than ``shutdown_timeout``.
        """
        if interpreter_exiting() and timeout is None:
            self.close()
            return self._worker.queued == 0
        return self._worker.flush(timeout)

    def close(self) -> None:
        """Deliver what is queued within ``shutdown_timeout``, then stop. Safe to call twice."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            spooled_before = self._worker.tallies.get("spool_written", 0)
            undelivered = self._worker.close(self.shutdown_timeout)
            spooled = self._worker.tallies.get("spool_written", 0) - spooled_before
            undelivered = max(0, undelivered - spooled)
            if spooled and self._spool is not None:
                _write_stderr(
                    f"dreamdata-logging: {spooled} event(s) could not be delivered to {self.endpoint} before close; "
                    f"they were kept in the spool {self._spool.path} for later delivery (not lost)\n"
                )
            if undelivered:
                _write_stderr(
                    f"dreamdata-logging: {undelivered} event(s) were not delivered to {self.endpoint} "
                    f"before close (shutdown_timeout={self.shutdown_timeout:g}s)\n"
                )
        finally:
            super().close()

    def stats(self) -> dict[str, int]:
        """Counters since this process started using the handler (a forked child starts at zero)."""
        worker, transport = self._worker, self._transport
        return {
            "emitted": worker.offered + worker.tallies.get("unsent", 0),
            "skipped": worker.tallies.get("skipped", 0),
            "invalid": worker.tallies.get("invalid", 0),
            "dropped_queue_full": worker.dropped_queue_full,
            "dropped_closed": worker.dropped_closed,
            "delivered": worker.delivered,
            "failed": worker.tallies.get("failed", 0),
            "retries": transport.retries,
            "batches": worker.batches,
            "requests": transport.requests_sent,
            "bytes_sent": transport.bytes_sent,
            "queued": worker.queued,
            "spooled": self._spooled_now(),
            "spool_written": worker.tallies.get("spool_written", 0),
            "spool_delivered": worker.spool_delivered,
            "spool_dropped": worker.tallies.get("spool_dropped", 0),
        }

    def _spooled_now(self) -> int:
        """Events in the spool file now, every process's included (0 without a spool)."""
        if self._spool is None:
            return 0
        try:
            return self._spool.pending()[0]
        except SpoolUnavailable:
            return 0

    # -- problems --------------------------------------------------------------------------------

    def _invalid(self, error: InvalidEventError, event: Any) -> None:
        if _testing.active:
            _testing.feed_invalid(error)
        self._worker.tally("invalid")
        self._reporter.report("invalid:" + error.reason.split(" ", 1)[0], f"invalid event: {error}")
        try:
            snapshot = [dict(event)] if isinstance(event, Mapping) else []
        except Exception:  # a mapping that cannot be read: report the error without it
            snapshot = []
        self._call_on_error(error, snapshot)

    def _give_up(self, items: list[bytes], error: DeliveryError) -> None:
        if self._spool is not None and worth_spooling(error) and self._spool_put(items, error):
            return
        self._worker.tally("failed", len(items))
        self._reporter.report(
            f"delivery:{error.status}", f"{len(items)} event(s) could not be delivered: {error}", logging.ERROR
        )
        if self.on_error is not None:
            self._call_on_error(error, [json.loads(item) for item in items])

    def _spool_put(self, items: list[bytes], error: DeliveryError) -> bool:
        """Keep undelivered events in the spool; False when the spool cannot take them just now."""
        assert self._spool is not None
        try:
            dropped = self._spool.put(items)
        except SpoolUnavailable:  # reported by the spool; the events fail as without one
            return False
        self._worker.tally("spool_written", len(items))
        self._reporter.report(
            "spooled",
            f"{len(items)} event(s) not delivered yet ({error}); kept in the spool {self._spool.path} "
            "for later delivery",
            logging.ERROR if error.status in (401, 403) else logging.WARNING,
        )
        if dropped:
            self._worker.tally("spool_dropped", len(dropped))
            full = DeliveryError(
                f"the spool {self._spool.path} is full (spool_max_bytes={self.spool_max_bytes:,}): "
                f"its {len(dropped)} oldest event(s) were dropped"
            )
            self._reporter.report("spool_full", str(full), logging.ERROR)
            if self.on_error is not None:
                self._call_on_error(full, [json.loads(item) for item in dropped])
        return True

    def _call_on_error(self, error: BaseException, messages: list[Any]) -> None:
        if self.on_error is None:
            return
        try:
            self.on_error(error, messages)
        except Exception as exc:
            self._reporter.report("on_error", f"on_error raised {_safe_text(exc)}")


def _safe_text(error: BaseException) -> str:
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:
        return type(error).__name__


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:  # stderr may be closed during exit
        pass
