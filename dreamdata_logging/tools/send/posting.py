"""Packing checked messages into requests of ``dreamdata-logging send`` and sending them one at a time."""

from __future__ import annotations

from typing import Optional, TextIO

from dreamdata_logging.errors import DeliveryError
from dreamdata_logging.tools.send.report import Report
from dreamdata_logging.transport.transport import Transport
from dreamdata_logging.wire.rules import MAX_BODY_BYTES, Batch, body_size


class Sender:
    """Packs checked messages into requests within the limits and sends each one (or only counts, dry)."""

    def __init__(self, transport: Optional[Transport], report: Report, err: TextIO) -> None:
        self._transport = transport
        self._err = err
        self._report = report
        self._pending: list[bytes] = []
        self._size = 0
        self._first_line = 0

    def add(self, data: bytes, line: int) -> None:
        if self._pending and body_size(self._size + len(data), len(self._pending) + 1) > MAX_BODY_BYTES:
            self.flush()
        if not self._pending:
            self._first_line = line
        self._pending.append(data)
        self._size += len(data)

    def flush(self) -> None:
        if not self._pending:
            return
        batch = Batch(self._pending, self._size)
        self._pending, self._size = [], 0
        report = self._report
        report.requests += 1
        report.bytes += batch.body_size()
        if self._transport is None:  # dry run
            return
        try:
            self._transport.send(batch)
        except DeliveryError as error:
            report.failed += len(batch)
            if report.first_undelivered_line is None:
                report.first_undelivered_line = self._first_line
            if error.retryable or error.status in (401, 403):
                report.fatal = str(error)  # down, or the key is wrong: the rest would fare no better
            else:
                self._err.write(
                    f"dreamdata-logging send: a request of {len(batch)} message(s) from line {self._first_line}"
                    f" was refused: {error}\n"
                )
        else:
            report.delivered += len(batch)
        finally:
            report.retries = self._transport.retries
