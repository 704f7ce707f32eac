"""``dreamdata-logging send FILE``: send a file of ready-made messages to the batch endpoint.

The file is a batch document (``{"batch": [message, ...]}``, as in Dreamdata's example) or JSON lines
(one message per line). Both are read as a stream: memory stays bounded by one request body
(500,000 bytes) plus a read buffer, whatever the size of the file. Each message is checked as the
endpoint checks it (the package's wire rules and the 32,000-byte limit), re-serialised compactly,
packed into requests of at most 500,000 bytes and sent one request at a time with the handler's
transport and retry policy. Invalid messages are reported with their line number and skipped.

Exit codes: 0 when every message was valid and arrived (for ``--dry-run``: was valid), 1 when some
were invalid or not delivered, 2 for usage errors (no such file, no write key, not a batch document
or JSON lines), 130 when interrupted.

This module is the command; its parts are beside it: reading the files (``_send_files``), completing and
checking messages (``_send_messages``), packing and sending requests (``_send_requests``) and what is
printed (``_send_report``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import BinaryIO, Optional, TextIO, cast

from dreamdata_logging.tools.send import files as _send_files
from dreamdata_logging.tools.send.files import MAX_VALUE_CHARS, FileFormatError, Item
from dreamdata_logging.tools.send.messages import check, complete
from dreamdata_logging.tools.send.posting import Sender
from dreamdata_logging.tools.send.report import (
    MAX_LISTED_PROBLEMS,
    PROGRESS_EVERY,
    Progress,
    Report,
    Scrubbed,
    print_dry_run,
    summarise,
)
from dreamdata_logging.transport.transport import DEFAULT_ENDPOINT, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Transport
from dreamdata_logging.wire.rules import with_batch_context as with_context

__all__ = [
    "CHUNK_CHARS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_LISTED_PROBLEMS",
    "MAX_VALUE_CHARS",
    "PROGRESS_EVERY",
    "FileFormatError",
    "Item",
    "Report",
    "Sender",
    "check",
    "complete",
    "read_messages",
    "send_file",
    "with_context",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Bytes read from the file at a time when parsing a batch document (read when reading starts).
CHUNK_CHARS = _send_files.CHUNK_CHARS


def read_messages(stream: BinaryIO) -> tuple[str, Iterator[Item]]:
    """The format of ``stream`` and an iterator over its messages, read :data:`CHUNK_CHARS` at a time."""
    return _send_files.read_messages(stream, CHUNK_CHARS)


def send_file(
    path: str,
    *,
    write_key: Optional[str] = None,
    endpoint: Optional[str] = None,
    dry_run: bool = False,
    gzip: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    max_retries: int = DEFAULT_MAX_RETRIES,
    quiet: bool = False,
    out: Optional[TextIO] = None,
    err: Optional[TextIO] = None,
) -> int:
    """Run ``dreamdata-logging send``; returns the exit code. ``path`` ``-`` reads standard input."""
    key = write_key or os.environ.get("DREAMDATA_WRITE_KEY")
    url = endpoint or os.environ.get("DREAMDATA_ENDPOINT") or DEFAULT_ENDPOINT
    # Whatever is printed passes through this: never the write key (in any encoding) nor the endpoint's
    # credentials, query string or fragment.
    out = cast(TextIO, Scrubbed(out if out is not None else sys.stdout, key or "", url))
    err = cast(TextIO, Scrubbed(err if err is not None else sys.stderr, key or "", url))
    transport: Optional[Transport] = None
    if not dry_run:
        if not key:
            err.write("dreamdata-logging send: no write key: pass --write-key KEY or set DREAMDATA_WRITE_KEY\n")
            return EXIT_USAGE
        try:
            transport = Transport(
                url,
                key,
                timeout=timeout,
                max_retries=max_retries,
                gzip=gzip,
            )
        except ValueError as exc:
            err.write(f"dreamdata-logging send: {exc}\n")
            return EXIT_USAGE
    try:
        stream: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        err.write(f"dreamdata-logging send: cannot read {path}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    report = Report()
    try:
        return _run(stream, path, transport, report, dry_run, None if quiet else err, out, err)
    except KeyboardInterrupt:
        err.write(f"\ndreamdata-logging send: interrupted; {report.delivered:,} message(s) delivered\n")
        return EXIT_INTERRUPTED
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
        if transport is not None:
            transport.close()


def _run(
    stream: BinaryIO,
    path: str,
    transport: Optional[Transport],
    report: Report,
    dry_run: bool,
    progress_out: Optional[TextIO],
    out: TextIO,
    err: TextIO,
) -> int:
    sender = Sender(transport, report, err)
    progress = Progress(progress_out, stream, report)
    broken: Optional[FileFormatError] = None
    try:
        report.format, items = read_messages(stream)
        for item in items:
            data, problem = check(item)
            if problem is not None:
                report.note_problem(item.line, problem)
                if not dry_run and report.invalid <= MAX_LISTED_PROBLEMS:
                    err.write(f"dreamdata-logging send: {path}: line {item.line}: skipped: message {problem}\n")
                continue
            assert data is not None
            report.valid[item.value.get("type", "track")] += 1
            sender.add(data, item.line)
            if report.fatal:
                break
            progress.tick()
        else:
            sender.flush()
    except FileFormatError as error:
        if not report.format or (report.valid_total == 0 and report.invalid == 0):
            err.write(f"dreamdata-logging send: {path}: {error}\n")
            return EXIT_USAGE
        broken = error
        sender.flush()  # what was read before the break is fine
    if dry_run:
        print_dry_run(report, path, broken, out)
        return EXIT_OK if report.invalid == 0 and broken is None else EXIT_FAILED
    endpoint = transport.endpoint if transport is not None else ""
    return EXIT_OK if summarise(report, path, endpoint, broken, err) else EXIT_FAILED
