"""One place for what goes wrong: every refused or lost event is counted, reported and passed to ``on_error``.

Reports go to the ``dreamdata_logging`` logger, rate-limited by kind (see ``_diagnostics``), with any
secret scrubbed from their text.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any, Callable, Optional

from ._diagnostics import RateLimitedReporter
from .errors import DeliveryError, InvalidEventError

OnError = Callable[[BaseException, list[Any]], Any]

#: Distinct kinds of invalid events reported separately; past this, one kind "other" holds the rest.
MAX_INVALID_KINDS = 32
# What makes two reasons of one kind differ: quoted values, numbers and byte counts.
_DETAILS = re.compile(r"'[^']*'|\"[^\"]*\"|<[^>]*>|[0-9][0-9,._]*")


class Counters:
    """The handler's counters. Callers' threads add under a re-entrant lock (a signal handler may
    interrupt an addition on its own thread); the worker's counters are its own plain ints."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.skipped = 0
        self.invalid = 0
        self.unsent = 0  # valid events not queued: send=False, or captured by a test
        self.filtered = 0  # dropped on purpose: before_send returned None, or the plan's "drop" policy
        self.plan_violations = 0  # events that break the tracking plan (sent or not), each once
        self.delivered = 0
        self.failed = 0
        self.batches = 0
        self.spool_written = 0
        self.spool_delivered = 0
        self.spool_dropped = 0
        # Of buffers this handler no longer uses (it reopened after close): kept in its totals.
        self.retired_offered = 0
        self.retired_dropped_full = 0
        self.retired_dropped_closed = 0

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + count)


def safe_text(error: BaseException) -> str:
    """``Type: message`` of an exception whose ``__str__`` may itself raise."""
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:
        return type(error).__name__


class Problems:
    """Counts, reports and hands to ``on_error`` every event that is refused or cannot be delivered."""

    def __init__(self, counters: Counters, on_error: Optional[OnError], scrub: Callable[[str], str]) -> None:
        self.counters = counters
        self.on_error = on_error
        self._scrub = scrub
        self._reporter = RateLimitedReporter()
        self._invalid_kinds: set[str] = set()

    def scrub(self, text: str) -> str:
        """``text`` without any secret (the write key in any encoding, the endpoint's credentials or query)."""
        return self._scrub(text)

    def report(self, kind: str, text: str, level: int = logging.WARNING) -> None:
        self._reporter.report(kind, self._scrub(text), level)

    def invalid(self, error: InvalidEventError, event: Any) -> None:
        """An event that cannot become a valid message: dropped on its own."""
        self.counters.add("invalid")
        self.report(self._invalid_kind(error.reason), f"invalid event: {error}")
        try:
            snapshot = [dict(event)] if isinstance(event, Mapping) else []
        except Exception:  # a mapping that cannot be read: report the error without it
            snapshot = []
        self.call_on_error(error, snapshot)

    def _invalid_kind(self, reason: str) -> str:
        kind = "invalid:" + _DETAILS.sub("#", reason)[:80]
        if kind not in self._invalid_kinds:
            if len(self._invalid_kinds) >= MAX_INVALID_KINDS:
                return "invalid:other"
            self._invalid_kinds.add(kind)
        return kind

    def failed(self, items: list[bytes], error: DeliveryError) -> None:
        """Events given up on for good."""
        self.counters.failed += len(items)
        self.report(
            f"delivery:{error.status}", f"{len(items)} event(s) could not be delivered: {error}", logging.ERROR
        )
        self.call_on_error(error, items)

    def spooled(self, count: int, error: DeliveryError, where: str) -> None:
        self.counters.spool_written += count
        self.report(
            "spooled",
            f"{count} event(s) not delivered yet ({error}); kept in the spool {where} for later delivery",
            logging.ERROR if error.status in (401, 403) else logging.WARNING,
        )

    def spool_dropped(self, items: list[bytes], error: DeliveryError) -> None:
        self.counters.spool_dropped += len(items)
        self.report("spool_full", str(error), logging.ERROR)
        self.call_on_error(error, items)

    def call_on_error(self, error: BaseException, messages: list[Any]) -> None:
        """Hand ``error`` and the messages (bytes are decoded) to ``on_error``; its failures are reported."""
        if self.on_error is None:
            return
        try:
            decoded = [json.loads(m) if isinstance(m, (bytes, str)) else m for m in messages]
            self.on_error(error, decoded)
        except Exception as exc:
            self.report("on_error", f"on_error raised {safe_text(exc)}")
