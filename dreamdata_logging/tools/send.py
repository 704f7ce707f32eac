"""``dreamdata-logging send FILE``: send a file of ready-made messages to the batch endpoint.

The file is a batch document (``{"batch": [message, ...]}``, as in Dreamdata's example) or JSON lines
(one message per line). Both are read as a stream: memory stays bounded by one request body
(500,000 bytes) plus a read buffer, whatever the size of the file. Each message is checked as the
endpoint checks it (``message.wire_problem`` and the 32,000-byte limit), re-serialised compactly,
packed into requests of at most 500,000 bytes and sent one request at a time with the handler's
transport and retry policy. Invalid messages are reported with their line number and skipped.

Exit codes: 0 when every message was valid and arrived (for ``--dry-run``: was valid), 1 when some
were invalid or not delivered, 2 for usage errors (no such file, no write key, not a batch document
or JSON lines), 130 when interrupted.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Callable, Optional, TextIO, cast

from .._transport import DEFAULT_ENDPOINT, Transport
from .._wire import (
    ID_FIELDS,
    MAX_BODY_BYTES,
    MAX_MESSAGE_BYTES,
    Batch,
    body_size,
    is_wire_timestamp,
    new_message_id,
    now_timestamp,
    user_timestamp,
    wire_problem,
)
from ..errors import DeliveryError, InvalidEventError

DEFAULT_TIMEOUT = 10.0  # the handler's defaults: the same retry policy
DEFAULT_MAX_RETRIES = 8

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Bytes read from the file at a time when parsing a batch document.
CHUNK_CHARS = 1 << 20
#: A JSON-lines line, or one value of a batch document, may not be longer than this; a message is at
#: most 32,000 bytes, so this only stops a broken file from being read into memory whole.
MAX_VALUE_CHARS = 8 << 20
#: How many invalid messages are listed one by one (all are counted).
MAX_LISTED_PROBLEMS = 100
#: Seconds between progress lines on stderr (the first comes after this long, so small files print none).
PROGRESS_EVERY = 1.0


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class FileFormatError(Exception):
    """The file is not a batch document or JSON lines (or breaks off); names the line."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass
class Item:
    """One message of the file: where it starts, and the message or why it cannot be read."""

    line: int
    value: Any = None
    problem: Optional[str] = None


# -- reading -----------------------------------------------------------------------------------------


def _json_lines(stream: BinaryIO, first_line: int, pending: list[bytes]) -> Iterator[Item]:
    """Each non-blank line as a message; ``pending`` holds lines already read while detecting the format."""
    line = first_line - 1

    def lines() -> Iterator[bytes]:
        yield from pending
        while True:
            raw = stream.readline(MAX_VALUE_CHARS + 1)
            if not raw:
                return
            yield raw

    for raw in lines():
        line += 1
        if len(raw) > MAX_VALUE_CHARS and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line without holding it
                raw = stream.readline(CHUNK_CHARS)
            yield Item(line, problem=f"line is longer than {MAX_VALUE_CHARS:,} bytes")
            continue
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Item(line, problem=f"is not valid UTF-8 (at byte {exc.start})")
            continue
        if line == 1:
            text = text.lstrip("\ufeff")
        try:
            yield Item(line, _DECODER.decode(text))
        except (ValueError, RecursionError) as exc:
            yield Item(line, problem=f"is not valid JSON: {exc}")


class _DocumentReader:
    """Streams the ``batch`` list of ``{"batch": [...], ...}`` out of a text stream, value by value."""

    def __init__(self, read: Callable[[], str], initial: str, first_line: int, skip_batch: bool = False) -> None:
        self._read = read
        self._skip_batch = skip_batch  # only looking for the batch-level context: read past the messages
        #: The document's batch-level ``context`` (merged into each message), once read.
        self.context: Optional[dict[str, Any]] = None
        self._buf = initial
        self._pos = 0
        self._eof = False
        self._counted_pos = 0  # _line is the line number at _counted_pos
        self._line = first_line

    def line(self) -> int:
        self._line += self._buf.count("\n", self._counted_pos, self._pos)
        self._counted_pos = self._pos
        return self._line

    def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            chunk = self._read()
        except UnicodeDecodeError as exc:
            raise FileFormatError(self.line(), f"is not valid UTF-8: {exc.reason}") from None
        if not chunk:
            self._eof = True
            return False
        self.line()  # count what is dropped
        self._buf = self._buf[self._pos :] + chunk
        self._pos = self._counted_pos = 0
        return True

    def _peek(self) -> str:
        """The next non-whitespace character ("" at the end), leaving the position on it."""
        while True:
            match = _WHITESPACE.match(self._buf, self._pos)
            assert match is not None
            self._pos = match.end()
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def _expect(self, chars: str, what: str) -> str:
        char = self._peek()
        if not char or char not in chars:
            found = repr(char) if char else "the end of the file"
            raise FileFormatError(self.line(), f"expected {what}, found {found}")
        self._pos += 1
        return char

    def _value(self) -> Any:
        if not self._peek():
            raise FileFormatError(self.line(), "expected a value, found the end of the file")
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                if len(self._buf) - self._pos <= MAX_VALUE_CHARS and self._fill():
                    continue  # most likely cut off by the end of the buffer
                self._pos = max(self._pos, min(exc.pos, len(self._buf)))  # name the line of the mistake
                raise FileFormatError(self.line(), f"invalid JSON: {exc.msg}") from None
            except (ValueError, RecursionError) as exc:
                raise FileFormatError(self.line(), f"invalid JSON: {exc}") from None
            if end == len(self._buf) and self._fill():
                continue  # a number may go on in the next chunk
            self._pos = end
            return value

    def items(self) -> Iterator[Item]:
        self._expect("{", "a JSON object")
        found = False
        if self._peek() == "}":
            self._pos += 1
        else:
            while True:
                if self._peek() != '"':
                    self._expect('"', "a key")
                key = self._value()
                self._expect(":", "':'")
                if key == "batch":
                    found = True
                    yield from self._batch()
                elif key == "context":
                    context = self._value()
                    if not isinstance(context, dict):
                        raise FileFormatError(self.line(), "the batch's 'context' must be an object")
                    if self.context is None:  # one found by a first look at the whole file is the same
                        self.context = context
                else:
                    self._value()  # the envelope's messageId, sentAt, ...: a new one is made per request
                if self._expect(",}", "',' or '}'") == "}":
                    break
        if self._peek():
            raise FileFormatError(self.line(), "unexpected data after the batch document")
        if not found:
            raise FileFormatError(self.line(), "the document has no 'batch' list")

    def _batch(self) -> Iterator[Item]:
        if self._peek() != "[":
            raise FileFormatError(self.line(), "'batch' must be a list")
        self._pos += 1
        if self._peek() == "]":
            self._pos += 1
            return
        while True:
            self._peek()
            line = self.line()
            value = self._value()
            if not self._skip_batch:
                yield Item(line, with_context(value, self.context))
            if self._expect(",]", "',' or ']'") == "]":
                return


def read_messages(stream: BinaryIO) -> tuple[str, Iterator[Item]]:
    """Detect the format of ``stream`` and return its name and an iterator over its messages.

    JSON lines when the first non-blank line is a whole JSON object without a ``batch`` key;
    otherwise a batch document. Raises :class:`FileFormatError` (lazily, from the iterator, for
    problems found later in a document).
    """
    pending: list[bytes] = []
    line = 0
    while True:
        raw = stream.readline(MAX_VALUE_CHARS + 1)
        if not raw:
            return "empty file", iter(())
        line += 1
        pending.append(raw)
        if raw.strip(b" \t\r\n\xef\xbb\xbf"):
            break
    first = raw
    try:
        value = _DECODER.decode(first.decode("utf-8").lstrip("\ufeff"))
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict) and "batch" not in value:
        return "JSON lines", _json_lines(stream, 1, pending)
    initial = b"".join(pending).decode("utf-8", errors="replace").lstrip("\ufeff")  # a first look only
    if not initial.lstrip().startswith("{"):
        raise FileFormatError(line, 'neither a batch document ({"batch": [...]}) nor JSON lines (one message per line)')
    # The batch-level context applies to every message, and may come after the batch: look through the
    # whole document for it first (a stream that cannot be read twice is copied to a temporary file).
    if not _seekable(stream):
        stream = _copy_to_temporary(pending, stream)
        pending = []
    origin = stream.tell() - sum(map(len, pending))
    context: Optional[dict[str, Any]] = None
    scan = _document_reader(stream, origin, skip_batch=True)
    try:
        for _ in scan.items():
            pass
        context = scan.context
    except FileFormatError:
        context = scan.context  # the real reading names the problem, at its line
    reader = _document_reader(stream, origin)
    reader.context = context
    return "batch document", reader.items()


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, ValueError, OSError):
        return False


def _copy_to_temporary(pending: list[bytes], stream: BinaryIO) -> BinaryIO:
    copy = tempfile.TemporaryFile()  # on disk: memory stays bounded whatever comes in
    for raw in pending:
        copy.write(raw)
    shutil.copyfileobj(stream, copy, CHUNK_CHARS)
    copy.seek(0)
    return copy


def _document_reader(stream: BinaryIO, origin: int, skip_batch: bool = False) -> _DocumentReader:
    """A reader of the batch document in ``stream`` from byte ``origin``."""
    stream.seek(origin)
    decoder = codecs.getincrementaldecoder("utf-8")()

    def read_text() -> str:
        while True:
            chunk = stream.read(CHUNK_CHARS)
            text = decoder.decode(chunk, final=not chunk)
            if text or not chunk:
                return text

    try:
        initial = read_text().lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise FileFormatError(1, f"is not valid UTF-8 (at byte {exc.start})") from None
    return _DocumentReader(read_text, initial, 1, skip_batch=skip_batch)


def with_context(message: Any, context: Optional[dict[str, Any]]) -> Any:
    """``message`` with a batch-level ``context`` merged into its own ``context`` (the message's keys win)."""
    if not context or not isinstance(message, dict):
        return message
    own = message.get("context")
    if own is None:
        return {**message, "context": dict(context)}
    if isinstance(own, dict):
        return {**message, "context": {**context, **own}}
    return message  # not an object: the check says so


def complete(message: Any) -> Any:
    """Fill in what the handler would: a missing ``type`` (track), ``messageId`` or ``timestamp`` (now),
    a timestamp in another ISO 8601 form, and int ids as text. Other problems are left for the check."""
    if not isinstance(message, dict):
        return message
    message = {"type": "track", **message}
    if message.get("messageId") in (None, ""):
        message["messageId"] = new_message_id()
    if message.get("timestamp") is None:
        message["timestamp"] = now_timestamp()
    elif not is_wire_timestamp(message["timestamp"]):
        message["timestamp"] = user_timestamp(message["timestamp"])
    for key in ID_FIELDS:
        value = message.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            message[key] = str(value)
    return message


def check(item: Item) -> tuple[Optional[bytes], Optional[str]]:
    """The message's compact bytes, or why it cannot be sent."""
    if item.problem is not None:
        return None, item.problem
    try:
        message = complete(item.value)
    except InvalidEventError as error:
        return None, error.reason
    problem = wire_problem(message)
    if problem is not None:
        return None, problem
    try:
        data = _ENCODER.encode(message).encode("utf-8")
    except UnicodeEncodeError:
        return None, "contains text that is not valid Unicode (a lone surrogate)"
    if len(data) > MAX_MESSAGE_BYTES:
        return None, f"is {len(data):,} bytes serialised; the limit is {MAX_MESSAGE_BYTES:,}"
    return data, None


# -- sending -----------------------------------------------------------------------------------------


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


class _Progress:
    def __init__(self, out: Optional[TextIO], stream: IO[bytes], report: Report) -> None:
        self._out = out
        self._stream = stream
        self._report = report
        self._started = time.monotonic()
        self._next = self._started + PROGRESS_EVERY
        self._shown = False
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
        self._shown = True


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
    out = cast(TextIO, _Scrubbed(out if out is not None else sys.stdout, key or "", url))
    err = cast(TextIO, _Scrubbed(err if err is not None else sys.stderr, key or "", url))
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


class _Scrubbed(io.TextIOBase):
    """A text stream that writes through to another with every form of the secrets replaced."""

    def __init__(self, stream: TextIO, write_key: str, endpoint: str) -> None:
        super().__init__()
        self._stream = stream
        self._scrub = _scrubber(write_key, endpoint)

    def write(self, text: str) -> int:
        self._stream.write(self._scrub(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def _scrubber(write_key: str, endpoint: str) -> Callable[[str], str]:
    try:
        from .._redact import Redactor
    except ImportError:  # pragma: no cover - the package ships it; a minimal stand-in keeps output safe anyway
        return _plain_scrubber(write_key, endpoint)
    return Redactor(write_key, endpoint).scrub


def _plain_scrubber(write_key: str, endpoint: str) -> Callable[[str], str]:
    import base64
    from urllib.parse import quote, urlsplit

    secrets = set()
    if write_key:
        secrets |= {write_key, quote(write_key, safe="")}
        for raw in (f"{write_key}:", write_key):
            encoded = base64.b64encode(raw.encode("utf-8", "surrogatepass")).decode("ascii")
            secrets |= {encoded, encoded.rstrip("=")}
    try:
        parts = urlsplit(endpoint)
        secrets |= {parts.netloc.rpartition("@")[0], parts.query, parts.fragment}
    except ValueError:
        pass
    forms = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)
    if not forms:
        return lambda text: text
    pattern = re.compile("|".join(map(re.escape, forms)))
    return lambda text: pattern.sub("[redacted]", text)


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
    progress = _Progress(progress_out, stream, report)
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
        _print_dry_run(report, path, broken, out)
        return EXIT_OK if report.invalid == 0 and broken is None else EXIT_FAILED
    return _summarise(report, path, transport, broken, err)


def _print_dry_run(report: Report, path: str, broken: Optional[FileFormatError], out: TextIO) -> None:
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


def _summarise(
    report: Report, path: str, transport: Optional[Transport], broken: Optional[FileFormatError], err: TextIO
) -> int:
    where = transport.endpoint if transport is not None else ""
    valid = report.valid_total
    never_sent = valid - report.delivered - report.failed  # left unread or unsent after a fatal error
    lines = [
        f"dreamdata-logging send: {path} ({report.format}): {report.delivered:,} of {valid:,} valid message(s) "
        f"delivered to {where} in {report.requests:,} request(s), {report.bytes:,} bytes, "
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
    return EXIT_OK if ok else EXIT_FAILED
