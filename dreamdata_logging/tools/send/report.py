"""What ``dreamdata-logging send`` tells its user: the report of a run, progress lines, the summaries.

Everything goes through :class:`Scrubbed`, so no text shows the write key (in any encoding) nor the
endpoint's credentials, query string or fragment.
"""

from __future__ import annotations

import io
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Optional, TextIO

from dreamdata_logging.transport.redact import Redactor
from dreamdata_logging.wire.rules import MAX_BODY_BYTES

if TYPE_CHECKING:
    from dreamdata_logging.tools.send.files import FileFormatError

#: How many invalid messages are listed one by one (all are counted).
MAX_LISTED_PROBLEMS = 100
#: Seconds between progress lines on stderr (the first comes after this long, so small files print none).
PROGRESS_EVERY = 1.0


@dataclass
class Report:
    """What a run found and did."""

    format: str = ""
    valid: Counter[str] = field(default_factory=Counter)  # per type
    invalid: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # the first MAX_LISTED_PROBLEMS
    requests: int = 0
    bytes: int = 0  # request bodies, as built
    delivered: int = 0
    failed: int = 0  # valid messages that were not delivered (refused, or never sent after a fatal error)
    fatal: Optional[str] = None  # why sending stopped early
    first_undelivered_line: Optional[int] = None
    retries: int = 0

    @property
    def valid_total(self) -> int:
        return sum(self.valid.values())

    def note_problem(self, line: int, reason: str) -> None:
        self.invalid += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append((line, reason))


class Progress:
    def __init__(self, out: Optional[TextIO], stream: IO[bytes], report: Report) -> None:
        self._out = out
        self._stream = stream
        self._report = report
        self._started = time.monotonic()
        self._next = self._started + PROGRESS_EVERY
        try:
            self._total: Optional[int] = os.fstat(stream.fileno()).st_size or None
        except (OSError, AttributeError, io.UnsupportedOperation):
            self._total = None

    def tick(self, force: bool = False) -> None:
        if self._out is None:
            return
        now = time.monotonic()
        if now < self._next and not force:
            return
        self._next = now + PROGRESS_EVERY
        report = self._report
        share = ""
        if self._total:
            try:
                share = f"{min(self._stream.tell() / self._total, 1.0):4.0%} read, "
            except (OSError, ValueError):
                share = ""
        elapsed = now - self._started
        rate = report.delivered / elapsed if elapsed > 0 else 0.0
        self._out.write(
            f"dreamdata-logging send: {share}{report.delivered:,} delivered, {report.invalid:,} invalid, "
            f"{report.requests:,} requests, {rate:,.0f} messages/s\n"
        )
        self._out.flush()


class Scrubbed(io.TextIOBase):
    """A text stream that writes through to another with every form of the secrets replaced."""

    def __init__(self, stream: TextIO, write_key: str, endpoint: str) -> None:
        super().__init__()
        self._stream = stream
        self._scrub = Redactor(write_key, endpoint).scrub

    def write(self, text: str) -> int:
        self._stream.write(self._scrub(text))
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (ValueError, OSError):  # the stream underneath was closed first (io closes this one on collection)
            pass


def print_dry_run(report: Report, path: str, broken: Optional[FileFormatError], out: TextIO) -> None:
    kinds = ", ".join(f"{count:,} {kind}" for kind, count in sorted(report.valid.items())) or "none"
    out.write(f"{path}: {report.format}\n")
    out.write(f"  valid messages:   {report.valid_total:,} ({kinds})\n")
    out.write(f"  invalid messages: {report.invalid:,}\n")
    for line, reason in report.problems:
        out.write(f"    line {line}: message {reason}\n")
    if report.invalid > len(report.problems):
        out.write(f"    ... and {report.invalid - len(report.problems):,} more\n")
    if broken is not None:
        out.write(f"  the file breaks off at line {broken.line}: {broken.reason}\n")
    out.write(
        f"  would send {report.valid_total:,} message(s) in {report.requests:,} request(s), "
        f"{report.bytes:,} bytes (each request at most {MAX_BODY_BYTES:,})\n"
    )
    verdict = "OK" if report.invalid == 0 and broken is None else "NOT OK: fix the lines above"
    out.write(f"  {verdict}; nothing was sent (--dry-run)\n")
    out.flush()


def summarise(report: Report, path: str, endpoint: str, broken: Optional[FileFormatError], err: TextIO) -> bool:
    valid = report.valid_total
    never_sent = valid - report.delivered - report.failed  # left unread or unsent after a fatal error
    lines = [
        f"dreamdata-logging send: {path} ({report.format}): {report.delivered:,} of {valid:,} valid message(s) "
        f"delivered to {endpoint} in {report.requests:,} request(s), {report.bytes:,} bytes, "
        f"{report.retries:,} retries; {report.invalid:,} invalid skipped"
    ]
    if broken is not None:
        lines.append(f"stopped reading at line {broken.line}: {broken.reason}")
    if report.fatal:
        lines.append(f"stopped sending: {report.fatal}")
    if report.failed or never_sent:
        lines.append(
            f"{report.failed + never_sent:,} valid message(s) were not delivered"
            + (f"; the first at line {report.first_undelivered_line}" if report.first_undelivered_line else "")
            + (
                " and the rest of the file was not read (a message keeps its messageId when the file is sent again)"
                if report.fatal
                else ""
            )
        )
    ok = report.invalid == 0 and broken is None and not report.failed and not report.fatal
    lines.append("all messages arrived" if ok else "NOT everything arrived (exit code 1)")
    err.write("\n".join(lines) + "\n")
    err.flush()
    return ok
