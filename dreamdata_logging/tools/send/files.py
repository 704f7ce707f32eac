"""Reading the files of ``dreamdata-logging send`` as streams: a batch document or JSON lines.

Memory stays bounded by a read buffer whatever the size of the file: a document's ``batch`` list is
read value by value, JSON lines line by line. Each message comes with the line it starts on; a message
that cannot be read is an :class:`Item` with a problem, a file that breaks off a :class:`FileFormatError`.
"""

from __future__ import annotations

import codecs
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Optional

from dreamdata_logging.wire.rules import STRICT_JSON, with_batch_context

#: Bytes read from the file at a time when parsing a batch document.
CHUNK_CHARS = 1 << 20
#: A JSON-lines line, or one value of a batch document, may not be longer than this; a message is at
#: most 32,000 bytes, so this only stops a broken file from being read into memory whole.
MAX_VALUE_CHARS = 8 << 20

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


def _json_lines(stream: BinaryIO, first_line: int, pending: list[bytes], chunk_chars: int) -> Iterator[Item]:
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
                raw = stream.readline(chunk_chars)
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
            yield Item(line, STRICT_JSON.decode(text))
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
                value, end = STRICT_JSON.raw_decode(self._buf, self._pos)
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
                yield Item(line, with_batch_context(value, self.context))
            if self._expect(",]", "',' or ']'") == "]":
                return


def read_messages(stream: BinaryIO, chunk_chars: int = CHUNK_CHARS) -> tuple[str, Iterator[Item]]:
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
        value = STRICT_JSON.decode(first.decode("utf-8").lstrip("\ufeff"))
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict) and "batch" not in value:
        return "JSON lines", _json_lines(stream, 1, pending, chunk_chars)
    initial = b"".join(pending).decode("utf-8", errors="replace").lstrip("\ufeff")  # a first look only
    if not initial.lstrip().startswith("{"):
        raise FileFormatError(line, 'neither a batch document ({"batch": [...]}) nor JSON lines (one message per line)')
    # The batch-level context applies to every message, and may come after the batch: look through the
    # whole document for it first (a stream that cannot be read twice is copied to a temporary file).
    if not _seekable(stream):
        stream = _copy_to_temporary(pending, stream, chunk_chars)
        pending = []
    origin = stream.tell() - sum(map(len, pending))
    context: Optional[dict[str, Any]] = None
    scan = _document_reader(stream, origin, chunk_chars, skip_batch=True)
    try:
        for _ in scan.items():
            pass
        context = scan.context
    except FileFormatError:
        context = scan.context  # the real reading names the problem, at its line
    reader = _document_reader(stream, origin, chunk_chars)
    reader.context = context
    return "batch document", reader.items()


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, ValueError, OSError):
        return False


def _copy_to_temporary(pending: list[bytes], stream: BinaryIO, chunk_chars: int) -> BinaryIO:
    copy = tempfile.TemporaryFile()  # on disk: memory stays bounded whatever comes in
    for raw in pending:
        copy.write(raw)
    shutil.copyfileobj(stream, copy, chunk_chars)
    copy.seek(0)
    return copy


def _document_reader(stream: BinaryIO, origin: int, chunk_chars: int, skip_batch: bool = False) -> _DocumentReader:
    """A reader of the batch document in ``stream`` from byte ``origin``."""
    stream.seek(origin)
    decoder = codecs.getincrementaldecoder("utf-8")()

    def read_text() -> str:
        while True:
            chunk = stream.read(chunk_chars)
            text = decoder.decode(chunk, final=not chunk)
            if text or not chunk:
                return text

    try:
        initial = read_text().lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise FileFormatError(1, f"is not valid UTF-8 (at byte {exc.start})") from None
    return _DocumentReader(read_text, initial, 1, skip_batch=skip_batch)
