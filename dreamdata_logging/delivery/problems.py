"""One place for what goes wrong: every refused or lost event is counted, reported and passed to ``on_error``.

Reports go to the ``dreamdata_logging`` logger, rate-limited by kind and detail (see ``_diagnostics.Report``),
with any secret scrubbed from their text.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Callable, Optional

from dreamdata_logging._diagnostics import RateLimitedReporter, Report
from dreamdata_logging.delivery.ledger import Ledger
from dreamdata_logging.errors import DeliveryError, InvalidEventError

OnError = Callable[[BaseException, list[Any]], Any]

#: Distinct reasons of invalid events reported separately; past this, one detail "other" holds the rest.
MAX_INVALID_KINDS = 32
# What makes two reasons of one kind differ: quoted values, numbers and byte counts.
_DETAILS = re.compile(r"'[^']*'|\"[^\"]*\"|<[^>]*>|[0-9][0-9,._]*")


def safe_text(error: BaseException) -> str:
    """``Type: message`` of an exception whose ``__str__`` may itself raise."""
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:
        return type(error).__name__


class Problems:
    """Counts, reports and hands to ``on_error`` every event that is refused or cannot be delivered."""

    def __init__(self, ledger: Ledger, on_error: Optional[OnError], scrub: Callable[[str], str]) -> None:
        self.ledger = ledger
        self.on_error = on_error
        self._scrub = scrub
        self._reporter = RateLimitedReporter()
        self._invalid_details: set[str] = set()

    def scrub(self, text: str) -> str:
        """``text`` without any secret (the write key in any encoding, the endpoint's credentials or query)."""
        return self._scrub(text)

    def report(self, kind: Report, text: str, level: int = logging.WARNING, detail: str = "") -> None:
        """Log ``text`` (scrubbed), rate-limited per ``kind`` and ``detail``."""
        self._reporter.report(kind, self._scrub(text), level, detail)

    def invalid(self, error: InvalidEventError, event: Any) -> None:
        """An event that cannot become a valid message: dropped on its own."""
        self.ledger.add("invalid")
        self.report(Report.INVALID, f"invalid event: {error}", detail=self._invalid_detail(error.reason))
        try:
            snapshot = [dict(event)] if isinstance(event, Mapping) else []
        except Exception:  # a mapping that cannot be read: report the error without it
            snapshot = []
        self.call_on_error(error, snapshot)

    def _invalid_detail(self, reason: str) -> str:
        detail = _DETAILS.sub("#", reason)[:80]
        if detail not in self._invalid_details:
            if len(self._invalid_details) >= MAX_INVALID_KINDS:
                return "other"
            self._invalid_details.add(detail)
        return detail

    def failed(self, items: list[bytes], error: DeliveryError) -> None:
        """Events given up on for good."""
        self.ledger.add("failed", len(items))
        text = f"{len(items)} event(s) could not be delivered: {error}"
        self.report(Report.DELIVERY_FAILED, text, logging.ERROR, detail=str(error.status or 0))
        self.call_on_error(error, items)

    def spooled(self, count: int, error: DeliveryError, where: str) -> None:
        self.ledger.add("spool_written", count)
        self.report(
            Report.SPOOLED,
            f"{count} event(s) not delivered yet ({error}); kept in the spool {where} for later delivery",
            logging.ERROR if error.status in (401, 403) else logging.WARNING,
        )

    def spool_dropped(self, items: list[bytes], error: DeliveryError) -> None:
        self.ledger.add("spool_dropped", len(items))
        self.report(Report.SPOOL_OVERFLOW, str(error), logging.ERROR)
        self.call_on_error(error, items)

    def call_on_error(self, error: BaseException, messages: list[Any]) -> None:
        """Hand ``error`` and the messages (bytes are decoded) to ``on_error``; its failures are reported."""
        if self.on_error is None:
            return
        try:
            decoded = [json.loads(m) if isinstance(m, (bytes, str)) else m for m in messages]
            self.on_error(error, decoded)
        except Exception as exc:
            self.report(Report.ON_ERROR_RAISED, f"on_error raised {safe_text(exc)}")
