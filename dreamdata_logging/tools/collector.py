"""A local stand-in for Dreamdata's ``POST /v1/batch``, with a live event debugger at ``GET /``.

It checks what the real endpoint checks (auth, JSON, the 500,000-byte body limit, each message) and
answers as it would: 200 ``{"success": true}``, or 400/401/404/405/408/413/431 with ``{"error": "<reason>"}``.
By default it accepts what the real API accepts from any client (any RFC 3339 timestamp, no envelope
``messageId``, a batch-level ``context`` merged into each message); ``strict=True`` (``--strict``) also
enforces this package's exact format (see :func:`dreamdata_logging._wire.wire_problem`).

It is what ``dreamdata-logging collector``, the demo and the project's tests talk to, so it also records
requests and messages (the last ``keep`` of each; ``keep=None`` keeps everything), appends accepted
messages to ``out`` as JSON lines, and can inject faults (error statuses, stalls, dropped connections,
outages). Each request's memory and time are bounded whatever its framing or encoding: headers, a
declared or chunked body over the limit, a gzip body that inflates past it, and a client too slow to
finish its request within ``request_timeout`` are all refused without holding more than the limit.

Besides the standard library it uses only the package's wire checks, the same ones
``dreamdata-logging send`` applies before sending; it does not need the handler.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import hmac
import http.client
import json
import os
import select
import socket
import socketserver
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from .._wire import api_problem as _api_problem
from .._wire import is_rfc3339_timestamp as _is_rfc3339
from .._wire import is_wire_timestamp as _is_timestamp
from .._wire import wire_problem as _message_problem
from ._debugger_page import PAGE as _PAGE

__all__ = [
    "BATCH_PATH",
    "DEFAULT_KEEP",
    "MAX_BODY_BYTES",
    "MAX_MESSAGE_BYTES",
    "Collector",
    "Fault",
    "RequestRecord",
    "run_collector",
]

BATCH_PATH = "/v1/batch"
PAGE_PATH = "/"  # the debugger page
EVENTS_PATH = "/events"  # its server-sent events
MAX_BODY_BYTES = 500_000  # per request, as sent before any gzip
MAX_MESSAGE_BYTES = 32_000  # per message, serialised compactly
MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
#: How many messages (and request records) a :class:`Collector` keeps by default; all are counted.
DEFAULT_KEEP = 10_000
#: How many the ``dreamdata-logging collector`` command keeps (it streams everything to ``--out``).
CLI_KEEP = 1_000

# An over-limit body up to this size is read and thrown away, so a keep-alive connection stays usable;
# a larger one (declared, or chunked past it) is answered at once and its connection closed.
_DRAIN_LIMIT = 2 * 1024 * 1024
# A gzip body may be a little larger than what it inflates to; never more than this on the wire.
_GZIP_WIRE_LIMIT = MAX_BODY_BYTES + 64 * 1024
# The request line and headers of one request, together.
_HEADER_LIMIT = 32 * 1024
# After answering a request whose body is left unread: read and discard at most this much, for at most
# this long, before closing, so the client reads the answer instead of a connection reset.
_LINGER_BYTES = 1024 * 1024
_LINGER_SECONDS = 1.0
# How often the accept loop looks for a stop request; bounds how long stop() takes.
_POLL_INTERVAL = 0.05
# How often the deadline watcher looks for requests that are taking too long.
_REAP_INTERVAL = 0.1
# How long stop() waits for connection threads (woken by the stop) to finish their request.
_JOIN_TIMEOUT = 2.0
# Debugger: seconds between keep-alive comments to an idle page (how soon a closed page is noticed),
# most pages connected at once, and what the event feed keeps for pages that connect later.
_SSE_PING = 5.0
_SSE_GATHER = 0.1
_MAX_PAGES = 32
_FEED_ROWS = 2_000
_FEED_BYTES = 8 * 1024 * 1024
_FIELD_CHARS = 200  # a field shown in a debugger column
_JSON_CHARS = 64 * 1024  # a message's JSON shown in the debugger (refused ones may be larger)
_OK_BODY = b'{"success": true}'

Message = Dict[str, Any]
_Body = Tuple[Optional[bytes], int]  # (the body, or None when it was read but not kept; its size)
# One message as judged: (the message as received, its compact JSON when it could be made, why it is refused)
_Judged = Tuple[Any, Optional[bytes], Optional[str]]


@dataclass(frozen=True)
class Fault:
    """One injected answer; see :meth:`Collector.script` and :meth:`Collector.set_down`."""

    status: int = 503
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. {"Retry-After": "2"}
    body: str = ""
    delay: float = 0.0  # seconds to stall before answering; stop() ends the stall early
    drop: bool = False  # read the request, then close the connection without answering

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise ValueError(f"Fault status must be 200..599, not {self.status}")
        if self.delay < 0:
            raise ValueError("Fault delay must be >= 0")


@dataclass
class RequestRecord:
    """One request as the collector saw it (accepted, rejected or faulted)."""

    method: str
    path: str  # as requested, query string included
    headers: Dict[str, str]  # Authorization is redacted
    body_size: int = 0  # bytes as sent (for a body refused unread: as declared, or read so far)
    decoded_size: int = 0  # after gunzip (a refused gzip bomb stops counting past the limit)
    status: int = 0  # 0: no answer was sent (dropped, or the collector stopped mid-stall)
    message_count: int = 0  # messages in the batch, when the body could be read as one
    error: Optional[str] = None  # why it was refused, or which fault answered it


class _Reject(Exception):
    """The answer to a request that fails a check."""

    def __init__(self, status: int, reason: str, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class _Refused(Exception):
    """A batch whose body and envelope are fine but some message is not: each message keeps its verdict."""

    def __init__(self, reject: _Reject, judged: List[_Judged]) -> None:
        super().__init__(reject.reason)
        self.reject = reject
        self.judged = judged


# -- checks ----------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _filled(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _auth_problem(header: Optional[str], write_key: Optional[str]) -> Optional[str]:
    """Why ``Authorization`` is refused, or None. Never quotes the key or the header."""
    if not header:
        return "missing Authorization header (HTTP Basic with the write key as username)"
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return "Authorization must use the Basic scheme"
    try:
        credentials = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "Authorization Basic credentials are not valid base64 of 'KEY:'"
    user, colon, _ = credentials.partition(":")
    if not colon:
        return "Authorization Basic credentials must be 'KEY:' (a colon, then an empty password)"
    if not user:
        return "empty write key in Authorization"
    if write_key is not None and not hmac.compare_digest(user.encode(), write_key.encode()):
        return "invalid write key"
    return None


def _gunzip(raw: bytes) -> bytes:
    """Decompress every gzip member, giving up just past the body limit (a bomb stays small)."""
    parts: List[bytes] = []
    size = 0
    while raw:
        member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            part = member.decompress(raw, MAX_BODY_BYTES + 1 - size)
        except zlib.error as exc:
            raise _Reject(400, f"body is not valid gzip: {exc}") from None
        size += len(part)
        parts.append(part)
        if size > MAX_BODY_BYTES:
            raise _Reject(413, f"decoded body is over {MAX_BODY_BYTES:,} bytes")
        if not member.eof:
            raise _Reject(400, "gzip body is truncated")
        raw = member.unused_data
    return b"".join(parts)


def _not_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_batch(body: bytes, strict: bool) -> Tuple[List[Any], Optional[Dict[str, Any]]]:
    """The envelope's ``batch`` list and batch-level ``context``, after checking the body and the envelope."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject(400, f"body is not valid UTF-8 (at byte {exc.start})") from None
    try:  # strict JSON: NaN and Infinity are Python's extension, not JSON
        document = json.loads(text, parse_constant=_not_json_constant)
    except (ValueError, RecursionError) as exc:
        raise _Reject(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _Reject(400, "body must be a JSON object")
    batch = document.get("batch")
    if not isinstance(batch, list):
        raise _Reject(400, f"'batch' must be a list, not {_show(batch)}")
    context = document.get("context")
    if context is not None and not isinstance(context, dict):
        raise _Reject(400, f"the batch's 'context' must be an object, not {_show(context)}")
    if strict:
        if not _filled(document.get("messageId")):
            raise _Reject(400, "the batch needs a non-empty string 'messageId' (strict)")
        if not _is_timestamp(document.get("sentAt")):
            raise _Reject(
                400,
                "'sentAt' must be RFC 3339 UTC with milliseconds, like 2015-12-02T00:30:08.276Z,"
                f" not {_show(document.get('sentAt'))} (strict)",
            )
    else:
        if "messageId" in document and not _filled(document["messageId"]):
            shown = _show(document["messageId"])
            raise _Reject(400, f"the batch's 'messageId' must be a non-empty string, not {shown}")
        if "sentAt" in document and not _is_rfc3339(document["sentAt"]):
            raise _Reject(400, f"'sentAt' must be an RFC 3339 date-time, not {_show(document['sentAt'])}")
    return batch, context


def _merge_context(batch: List[Any], context: Optional[Dict[str, Any]]) -> List[Any]:
    """Each message with the batch-level ``context`` merged into its own (the message's keys win)."""
    if not context:
        return batch
    merged: List[Any] = []
    for message in batch:
        if isinstance(message, dict):
            own = message.get("context")
            if own is None:
                message = {**message, "context": dict(context)}
            elif isinstance(own, dict):
                message = {**message, "context": {**context, **own}}
        merged.append(message)
    return merged


def _judge_messages(batch: List[Any], strict: bool) -> List[_Judged]:
    """Each message with its compact JSON (the out line; its size is checked) or why it is refused."""
    rule = _message_problem if strict else _api_problem
    judged: List[_Judged] = []
    for message in batch:
        problem = rule(message)
        line: Optional[bytes] = None
        if problem is None:
            try:
                line = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate escape, e.g. "\ud800": valid JSON, not Unicode
                problem = "contains text that is not valid Unicode (a lone surrogate)"
            else:
                if len(line) > MAX_MESSAGE_BYTES:
                    problem = f"is {len(line):,} bytes serialised; the limit is {MAX_MESSAGE_BYTES:,}"
        judged.append((message, line, problem))
    return judged


def _first_problem(judged: List[_Judged]) -> Optional[Tuple[int, str]]:
    for index, (_, _, problem) in enumerate(judged):
        if problem is not None:
            return index, problem
    return None


def _peek(raw: Optional[bytes], gzipped: bool) -> Tuple[int, int]:
    """Decoded size and message count of a body that a fault answers instead of judging; best effort."""
    if raw is None:
        return 0, 0
    try:
        body = _gunzip(raw) if gzipped else raw
    except _Reject:
        return 0, 0
    try:
        batch = json.loads(body).get("batch")
    except (ValueError, AttributeError, RecursionError):
        batch = None
    return len(body), len(batch) if isinstance(batch, list) else 0


# -- HTTP ------------------------------------------------------------------------------------------


class _Connection:
    """What the deadline watcher knows about one open connection."""

    __slots__ = ("thread", "deadline", "timed_out")

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.deadline: Optional[float] = None  # monotonic; None: no deadline (an open debugger page)
        self.timed_out = False


class _HeaderBudget:
    """The handler's ``rfile`` while it reads a request line and headers: at most ``budget`` bytes in all."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.budget: Optional[int] = None

    def readline(self, limit: int = -1) -> bytes:
        if self.budget is None:
            return self.inner.readline(limit)  # type: ignore[no-any-return]
        if self.budget <= 0:
            raise http.client.LineTooLong(f"headers over {_HEADER_LIMIT:,} bytes")
        line: bytes = self.inner.readline(min(limit, self.budget) if limit >= 0 else self.budget)
        self.budget -= len(line)
        if self.budget <= 0 and not line.endswith(b"\n"):
            raise http.client.LineTooLong(f"headers over {_HEADER_LIMIT:,} bytes")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a client's session reuses its connection
    server: _Server
    _state: _Connection
    _body_in: Any
    _linger = False

    def setup(self) -> None:
        # Each read waits at most idle_timeout (also between requests on a keep-alive connection).
        self.timeout = self.server.collector._idle_timeout  # type: ignore[misc]
        super().setup()
        self._body_in = self.rfile
        self.rfile = _HeaderBudget(self._body_in)  # type: ignore[assignment]
        self._state = self.server.state_of(self.connection)

    def handle_one_request(self) -> None:
        collector = self.server.collector
        self._linger = False
        self._state.deadline = time.monotonic() + collector._idle_timeout + collector._request_timeout
        self.rfile.budget = None  # type: ignore[attr-defined]
        super().handle_one_request()
        if self._linger:
            self._linger_close()

    def parse_request(self) -> bool:
        # The request line is in: from here the whole request has request_timeout.
        self._state.deadline = time.monotonic() + self.server.collector._request_timeout
        self.rfile.budget = _HEADER_LIMIT  # type: ignore[attr-defined]
        try:
            return super().parse_request()
        finally:
            self.rfile.budget = None  # type: ignore[attr-defined]

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """Malformed request lines and headers (400, 414, 431, ...): a JSON answer, recorded, then close."""
        reason = message or self.responses.get(code, ("error",))[0]
        if code == 431 or "too long" in reason.lower():
            code, reason = 431, f"request line and headers must fit in {_HEADER_LIMIT:,} bytes"
        self.close_connection = True
        path = getattr(self, "path", None)
        record = RequestRecord(self.command or "-", path if isinstance(path, str) else "", {}, status=code)
        record.error = reason
        self.server.collector._record(record)
        try:
            self._reply(code, json.dumps({"error": reason}).encode())
        except OSError:
            pass

    def do_POST(self) -> None:
        self._serve()

    # Every method reaches the same code, which answers 405 (or 404) instead of the base class's 501.
    do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the collector prints its own line per request (verbose); the default goes to stderr

    def _serve(self) -> None:
        collector = self.server.collector
        path = urlsplit(self.path).path
        if self.command == "GET" and path in (PAGE_PATH, EVENTS_PATH):
            # The debugger: never consumes a scripted fault, never appears among requests().
            self._drain_small_body()
            if path == PAGE_PATH:
                self._reply(200, _PAGE, _PAGE_HEADERS)
            else:
                self._serve_events()
            return
        headers = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.headers.items()}
        record = RequestRecord(self.command, self.path, headers)
        fault = collector._next_fault()
        if fault is not None:
            self._serve_fault(record, fault)
            return
        try:
            messages, lines = self._check(record)
        except _Refused as refused:
            reject = refused.reject
            record.status, record.error = reject.status, reject.reason
            collector._record(record, judged=refused.judged)
            self._reply(reject.status, json.dumps({"error": reject.reason}).encode(), reject.headers)
            return
        except _Reject as reject:
            record.status, record.error = reject.status, reject.reason
            collector._record(record)
            self._reply(reject.status, json.dumps({"error": reject.reason}).encode(), reject.headers)
            return
        record.status = 200
        collector._record(record, messages, lines)  # before answering: a client that got 200 can look
        self._reply(200, _OK_BODY)

    def _check(self, record: RequestRecord) -> Tuple[List[Message], List[bytes]]:
        """Read and judge the request as the real endpoint would; raise _Reject or _Refused to refuse it."""
        collector = self.server.collector
        path = urlsplit(self.path).path
        problem: Optional[str] = None
        status = 400
        extra: Dict[str, str] = {}
        if path != BATCH_PATH:
            status, problem = 404, f"no such endpoint {_show(path)}; the endpoint is POST {BATCH_PATH}"
        elif self.command != "POST":
            status, problem, extra = 405, f"{self.command} is not allowed; use POST", {"Allow": "POST"}
        else:
            problem = _auth_problem(self.headers.get("Authorization"), collector._write_key)
            if problem is not None:
                status, extra = 401, {"WWW-Authenticate": 'Basic realm="dreamdata"'}
        if problem is None:
            media_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
                problem = f"Content-Type must be application/json, not {_show(media_type or None)}"
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if problem is None and encoding not in ("identity", "gzip"):
            problem = f"unsupported Content-Encoding {_show(encoding)}; use gzip or none"
        if problem is not None:
            _, record.body_size = self._receive(max_keep=0)  # read and discard, to keep the connection in step
            raise _Reject(status, problem, extra)

        gzipped = encoding == "gzip"
        raw, record.body_size = self._receive(_GZIP_WIRE_LIMIT if gzipped else MAX_BODY_BYTES)
        self._state.deadline = None  # the client's part is done: the rest is the collector's
        if raw is None:
            record.decoded_size = record.body_size
            raise _Reject(413, f"body is {record.body_size:,} bytes; the limit is {MAX_BODY_BYTES:,}")
        try:
            body = _gunzip(raw) if gzipped else raw
        except _Reject as reject:
            if reject.status == 413:
                record.decoded_size = MAX_BODY_BYTES + 1
            raise
        record.decoded_size = len(body)
        batch, context = _parse_batch(body, collector._strict)
        record.message_count = len(batch)
        judged = _judge_messages(_merge_context(batch, context), collector._strict)
        first = _first_problem(judged)
        if first is not None:
            index, problem = first
            raise _Refused(_Reject(400, f"batch[{index}] {problem}"), judged)
        return [message for message, _, _ in judged], [line for _, line, _ in judged if line is not None]

    def _serve_fault(self, record: RequestRecord, fault: Fault) -> None:
        try:
            raw, record.body_size = self._receive(_DRAIN_LIMIT)  # read the request first, as a server would
        except _Reject:
            raw = None
        self._state.deadline = None  # a scripted stall may outlast the request deadline
        gzipped = self.headers.get("Content-Encoding", "").strip().lower() == "gzip"
        record.decoded_size, record.message_count = _peek(raw, gzipped)
        record.status = 0 if fault.drop else fault.status
        record.error = "fault: connection dropped" if fault.drop else f"fault: {fault.status}"
        collector = self.server.collector
        collector._record(record)
        if fault.delay > 0 and collector._stopping.wait(fault.delay):
            collector._amend(record, 0, record.error + "; the collector stopped during the stall")
            self.close_connection = True
            return
        if fault.drop:
            self.close_connection = True  # the base class then closes the socket, unanswered
            return
        body = fault.body.encode("utf-8")
        headers = dict(fault.headers)
        if body and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json" if _is_json(body) else "text/plain; charset=utf-8"
        self._reply(fault.status, body, headers)

    # -- reading bodies, within bounds --

    def _timed_out(self) -> _Reject:
        self.close_connection = True
        return _Reject(
            408, f"the request was not complete within {self.server.collector._request_timeout:g} s; connection closed"
        )

    def _receive(self, max_keep: int) -> _Body:
        """Read the body, whatever its framing; keep it only up to ``max_keep`` bytes.

        An over-limit body up to ``_DRAIN_LIMIT`` is read and thrown away, so the next request on a
        keep-alive connection starts where it should; a larger one is not read at all: the answer goes
        out at once and the connection is closed.
        """
        if self.headers.get("Transfer-Encoding", "").strip().lower() == "chunked":
            return self._receive_chunked(max_keep)
        declared = self.headers.get("Content-Length", "0").strip()
        if not (declared.isascii() and declared.isdigit()) or len(declared) > 18:
            self.close_connection = True
            raise _Reject(400, "malformed Content-Length")
        length = int(declared)
        if length <= max_keep:
            return self._read(length), length
        if length > _DRAIN_LIMIT:
            self.close_connection = self._linger = True
            return None, length
        left = length
        while left:  # drain in slices: the body is refused, no need to hold it
            left -= len(self._read(min(left, 65536)))
        return None, length

    def _receive_chunked(self, max_keep: int) -> _Body:
        parts: List[bytes] = []
        size = 0
        while True:
            line = self._body_in.readline(1026)
            if self._state.timed_out:
                raise self._timed_out()
            if not line:
                raise ConnectionResetError("the client closed the connection mid-body")
            try:
                chunk_size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                chunk_size = -1
            if chunk_size < 0 or not line.endswith(b"\n"):
                self.close_connection = True
                raise _Reject(400, "malformed chunked body")
            if chunk_size == 0:
                break
            size += chunk_size
            if size > _DRAIN_LIMIT:  # an endless or huge body: stop reading, answer, close
                self.close_connection = self._linger = True
                return None, size
            if size <= max_keep:
                parts.append(self._read(chunk_size))
            else:
                parts.clear()
                left = chunk_size
                while left:
                    left -= len(self._read(min(left, 65536)))
            if self._body_in.readline(1026) not in (b"\r\n", b"\n"):  # the CRLF after each chunk
                self.close_connection = True
                raise _Reject(400, "malformed chunked body")
        for _ in range(100):  # trailers, unused (at most 100 short lines)
            if self._body_in.readline(1026) in (b"\r\n", b"\n", b""):
                break
        else:
            self.close_connection = True
            raise _Reject(400, "too many chunked trailers")
        return (b"".join(parts) if size <= max_keep else None), size

    def _read(self, n: int) -> bytes:
        data: bytes = self._body_in.read(n)
        if len(data) < n:
            if self._state.timed_out:
                raise self._timed_out()
            raise ConnectionResetError("the client closed the connection mid-body")
        return data

    def _drain_small_body(self) -> None:
        """A GET with a body (rare): read it when small, else close after answering."""
        try:
            self._receive(max_keep=0)
        except _Reject:
            self.close_connection = True

    def _linger_close(self) -> None:
        """After answering a request whose body was left unread: let the client read the answer, then close.

        Closing at once with unread data makes the kernel reset the connection, which can destroy the
        answer before the client reads it; so stop writing, read and discard a bounded amount for a
        bounded time, and only then close.
        """
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            end = time.monotonic() + _LINGER_SECONDS
            budget = _LINGER_BYTES
            while budget > 0:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.connection.settimeout(left)
                data = self.connection.recv(min(65536, budget))
                if not data:
                    break
                budget -= len(data)
        except OSError:
            pass

    # -- answering --

    def _reply(self, status: int, body: bytes, headers: Optional[Mapping[str, str]] = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        if body and not any(k.lower() == "content-type" for k in (headers or {})):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve_events(self) -> None:
        """``GET /events``: the debugger's server-sent events, until the page or the collector goes away."""
        collector = self.server.collector
        feed = collector._feed
        self.close_connection = True
        if not feed.enter():
            self._reply(503, json.dumps({"error": f"at most {_MAX_PAGES} debugger pages at once"}).encode())
            return
        self._state.deadline = None  # a page stays connected as long as it likes
        try:
            try:
                last = int(self.headers.get("Last-Event-ID", "0").strip() or "0")
            except ValueError:
                last = 0
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n")
            while not collector._stopping.is_set():
                chunks, last = feed.wait_after(last, _SSE_PING)
                if collector._stopping.is_set():
                    break
                if chunks:
                    self.wfile.write(b"".join(chunks))
                    # Then gather for a moment: however fast batches come, a page's thread wakes and
                    # writes at most about ten times a second, so many pages cost the batches little.
                    collector._stopping.wait(_SSE_GATHER)
                elif self._page_gone():
                    break
                else:
                    self.wfile.write(b": ping\n\n")
        except OSError:
            pass  # the page went away mid-write
        finally:
            feed.leave()

    def _page_gone(self) -> bool:
        """A page never sends anything on its event stream: readable means it closed the connection."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True


_PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    # Nothing is fetched from anywhere but this collector; the page's own script and style are inline.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must never keep the interpreter alive
    block_on_close = False  # stop() joins the connection threads itself, with a deadline

    def __init__(self, address: Tuple[str, int], collector: Collector) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.collector = collector
        # Open connections and their threads, so stop() can end idle keep-alive reads and stalls, and
        # the deadline watcher can end requests that take too long.
        self.connections: Dict[socket.socket, _Connection] = {}
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind: its socket.getfqdn() is a reverse DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def get_request(self) -> Tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # Answers are written as headers then body; without this, Nagle plus delayed ACK adds ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    def state_of(self, sock: socket.socket) -> _Connection:
        with self.connections_lock:
            state = self.connections.get(sock)
        return state if state is not None else _Connection(threading.current_thread())

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections[request] = _Connection(threading.current_thread())
        try:
            if not self.collector._stopping.is_set():  # accepted just as stop() took its snapshot
                super().process_request_thread(request, client_address)
            else:
                self.shutdown_request(request)
        finally:
            with self.connections_lock:
                self.connections.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away, or stop() closed the connection: nothing to report
        super().handle_error(request, client_address)

    def watch_deadlines(self, stopping: threading.Event) -> None:
        """Stop reading from any connection whose request is past its deadline (slow or stalled clients)."""
        while not stopping.wait(_REAP_INTERVAL):
            now = time.monotonic()
            with self.connections_lock:
                late = [(s, c) for s, c in self.connections.items() if c.deadline is not None and c.deadline < now]
            for sock, state in late:
                state.timed_out, state.deadline = True, None
                try:
                    sock.shutdown(socket.SHUT_RD)  # a blocked read returns; the answer (408) can still go out
                except OSError:
                    pass

    def close_connections(self) -> List[threading.Thread]:
        with self.connections_lock:
            open_connections = list(self.connections.items())
        for sock, _ in open_connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading the next request
            except OSError:
                pass  # already closed by its thread
        return [state.thread for _, state in open_connections]


# -- the debugger's event feed ---------------------------------------------------------------------


def _text(value: Any) -> str:
    """A field for a debugger column: text as is, anything else as JSON; never very long."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (ValueError, TypeError, RecursionError):
            text = type(value).__name__
    return text if len(text) <= _FIELD_CHARS else text[: _FIELD_CHARS - 1] + "\u2026"


def _json_text(message: Any, line: Optional[bytes]) -> str:
    if line is not None:
        return line.decode("utf-8")
    try:
        text = json.dumps(message, ensure_ascii=True, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):
        text = json.dumps(repr(message)[:_JSON_CHARS])
    if len(text) > _JSON_CHARS:
        text = json.dumps(f"(not shown whole: {len(text):,} characters) " + text[: _JSON_CHARS - 100])
    return text


def _row(message: Any, line: Optional[bytes], reason: Optional[str]) -> Dict[str, str]:
    fields = message if isinstance(message, dict) else {}
    name = next((fields[k] for k in ("event", "name", "groupId", "previousId") if fields.get(k) is not None), None)
    return {
        "type": _text(fields.get("type")),
        "name": _text(name),
        "userId": _text(fields.get("userId")),
        "anonymousId": _text(fields.get("anonymousId")),
        "messageId": _text(fields.get("messageId")),
        "status": "accepted" if reason is None else "refused",
        "reason": reason or "",
        "json": _json_text(message, line),
    }


class _Feed:
    """What happened lately, as ready-made server-sent events; pages wait on it, nothing waits for pages.

    Publishing costs the same however many pages are connected (one encoding, one notify); each page's
    thread writes at its own pace, and a page that falls behind the feed's bound skips what was dropped.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._events: Deque[Tuple[int, bytes, int]] = collections.deque()  # (id, event bytes, rows)
        self._rows = 0
        self._bytes = 0
        self._seq = 0
        self._pages = 0
        self._closed = False

    def publish(self, record: RequestRecord, judged: Optional[List[_Judged]]) -> None:
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        refused_at = _first_problem(judged) if judged else None
        rows = []
        for message, line, problem in judged or ():
            if problem is None and refused_at is not None:
                problem = f"not accepted: its batch was refused because of batch[{refused_at[0]}]"
            rows.append(_row(message, line, problem))
        request = {
            "method": _text(record.method),
            "path": _text(urlsplit(record.path).path),  # never a query string
            "status": record.status,
            "reason": record.error or "",
            "size": record.body_size,
            "messages": record.message_count,
            "level": record.status != 200 and not rows,  # refused before any message was read
        }
        with self._changed:
            self._seq += 1
            entry = {"id": self._seq, "time": stamp, "request": request, "rows": rows}
            data = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            event = b"id: %d\nevent: batch\ndata: %s\n\n" % (self._seq, data)
            self._events.append((self._seq, event, len(rows)))
            self._rows += len(rows)
            self._bytes += len(event)
            while len(self._events) > 1 and (self._rows > _FEED_ROWS or self._bytes > _FEED_BYTES):
                _, old, count = self._events.popleft()
                self._rows -= count
                self._bytes -= len(old)
            self._changed.notify_all()

    def wait_after(self, last: int, timeout: float) -> Tuple[List[bytes], int]:
        """The events after id ``last`` (waiting up to ``timeout`` for one), and the newest id."""
        with self._changed:
            if last > self._seq:
                last = 0  # an id from an earlier collector: send everything kept
            self._changed.wait_for(lambda: self._seq > last or self._closed, timeout)
            chunks = [event for seq, event, _ in self._events if seq > last]
            return chunks, self._seq

    def enter(self) -> bool:
        with self._changed:
            if self._pages >= _MAX_PAGES or self._closed:
                return False
            self._pages += 1
            return True

    def leave(self) -> None:
        with self._changed:
            self._pages -= 1

    @property
    def pages(self) -> int:
        with self._changed:
            return self._pages

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def clear(self) -> None:
        with self._changed:
            self._events.clear()
            self._rows = self._bytes = 0


# -- the collector ---------------------------------------------------------------------------------


class Collector:
    """A local ``POST /v1/batch`` that checks like the real one, records, and injects faults.

    The socket is bound on construction (``port=0`` picks a free port, see :attr:`url`); serve with
    :meth:`start` (background) or :meth:`serve_forever` (foreground). A stopped collector cannot be
    started again: make a new one, on the same :attr:`port` if needed. ``write_key=None`` (or "")
    accepts any non-empty key.

    ``strict=True`` also enforces this package's exact format; by default what Dreamdata's API accepts
    from any client is accepted. ``keep`` bounds how many accepted messages (and request records)
    :meth:`received` and :meth:`requests` return, the newest ones; ``keep=None`` keeps everything.
    :meth:`wait_for` and :attr:`accepted` count every accepted message, kept or not. ``out`` gets every
    accepted message as a JSON line. ``request_timeout`` bounds how long one request may take to arrive
    (a slower client gets 408 and is disconnected); ``idle_timeout`` how long any single read may wait.
    The live event debugger is at :attr:`page_url`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        write_key: Optional[str] = None,
        out: Union[str, os.PathLike[str], None] = None,
        verbose: bool = False,
        *,
        strict: bool = False,
        keep: Optional[int] = DEFAULT_KEEP,
        request_timeout: float = 10.0,
        idle_timeout: float = 30.0,
    ) -> None:
        if keep is not None and keep < 0:
            raise ValueError(f"keep must be None or 0 or more, not {keep}")
        if not request_timeout > 0 or not idle_timeout > 0:
            raise ValueError("request_timeout and idle_timeout must be more than 0")
        self._write_key = write_key or None
        self._out = os.fspath(out) if out is not None else None
        if self._out is not None:
            open(self._out, "ab").close()  # fail now, not at the first batch, if it can't be written
        self._verbose = verbose
        self._strict = strict
        self._request_timeout = float(request_timeout)
        self._idle_timeout = float(idle_timeout)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._messages: Deque[Message] = collections.deque(maxlen=keep)
        self._requests: Deque[RequestRecord] = collections.deque(maxlen=keep)
        self._accepted = 0
        self._request_count = 0
        self._faults: Deque[Fault] = collections.deque()
        self._down: Optional[Fault] = None
        self._feed = _Feed()
        self._stopping = threading.Event()  # also ends stalls early
        self._serving = False
        self._stopped = False
        self._thread: Optional[threading.Thread] = None
        self._watcher: Optional[threading.Thread] = None
        self._server = _Server((host, port), self)

    def __repr__(self) -> str:
        return f"<Collector {self.url}>"  # never the write key

    @property
    def url(self) -> str:
        """The batch endpoint, e.g. ``http://127.0.0.1:8765/v1/batch``."""
        return self._base() + BATCH_PATH

    @property
    def page_url(self) -> str:
        """The live event debugger, e.g. ``http://127.0.0.1:8765/``."""
        return self._base() + PAGE_PATH

    def _base(self) -> str:
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    # -- lifecycle --

    def _claim(self) -> bool:
        """Mark the collector as serving; False when it already is."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("this Collector was stopped; make a new one")
            if self._serving:
                return False
            self._serving = True
        self._watcher = threading.Thread(
            target=self._server.watch_deadlines, args=(self._stopping,), name=f"collector-{self.port}-deadlines"
        )
        self._watcher.daemon = True
        self._watcher.start()
        return True

    def start(self) -> Collector:
        """Serve in a background daemon thread; returns self. Calling it again while serving is a no-op."""
        if self._claim():
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(_POLL_INTERVAL,), name=f"collector-{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until stop() or Ctrl-C (which returns cleanly)."""
        if not self._claim():
            raise RuntimeError("this Collector is already serving")
        try:
            self._server.serve_forever(_POLL_INTERVAL)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, close the socket and every open connection (debugger pages too); idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            serving = self._serving
        self._stopping.set()
        self._feed.close()
        if serving:  # shutdown() waits for the accept loop, which only exists once serving began
            self._server.shutdown()
        self._server.server_close()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in self._server.close_connections():
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        for own in (self._thread, self._watcher):
            if own is not None and own is not threading.current_thread():
                own.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what arrived --

    def received(self) -> List[Message]:
        """A copy of the accepted messages kept (every one with ``keep=None``; else the newest), oldest first.

        A batch-level ``context`` is already merged into each message.
        """
        with self._lock:
            return list(self._messages)

    def requests(self) -> List[RequestRecord]:
        """A copy of the records of the requests kept (accepted or not; the newest ``keep``), oldest first.

        The debugger's own requests (``GET /`` and ``GET /events``) are not among them.
        """
        with self._lock:
            return [dataclasses.replace(record) for record in self._requests]

    @property
    def accepted(self) -> int:
        """How many messages were accepted (since the start or the last :meth:`reset`), kept or not."""
        with self._lock:
            return self._accepted

    @property
    def request_count(self) -> int:
        """How many requests were seen (since the start or the last :meth:`reset`), kept or not."""
        with self._lock:
            return self._request_count

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` messages were accepted; False if ``timeout`` passed first."""
        with self._arrived:
            return self._arrived.wait_for(lambda: self._accepted >= count, timeout)

    def reset(self) -> None:
        """Forget the messages and requests seen so far, and their counts (faults stay scripted)."""
        with self._lock:
            self._messages.clear()
            self._requests.clear()
            self._accepted = self._request_count = 0
        self._feed.clear()

    # -- fault injection --

    def script(self, *faults: Fault) -> None:
        """Queue faults: each next request consumes one (FIFO) instead of normal handling."""
        with self._lock:
            self._faults.extend(faults)

    def set_down(self, fault: Optional[Fault]) -> None:
        """While set, every request gets ``fault`` (scripted faults wait); None brings it back up."""
        with self._lock:
            self._down = fault

    # -- used by the request handler --

    def _next_fault(self) -> Optional[Fault]:
        with self._lock:
            if self._down is not None:
                return self._down
            return self._faults.popleft() if self._faults else None

    def _record(
        self,
        record: RequestRecord,
        messages: Optional[List[Message]] = None,
        lines: Optional[List[bytes]] = None,
        judged: Optional[List[_Judged]] = None,
    ) -> None:
        with self._arrived:
            self._requests.append(record)
            self._request_count += 1
            if messages:
                if self._out is not None and lines:
                    # Under the lock, so the file's order is the order of arrival; closing flushes per batch.
                    with open(self._out, "ab") as out:
                        out.write(b"\n".join(lines) + b"\n")
                self._messages.extend(messages)
                self._accepted += len(messages)
                self._arrived.notify_all()
        if messages and lines is not None and judged is None:
            judged = [(message, line, None) for message, line in zip(messages, lines)]
        self._feed.publish(record, judged)
        if self._verbose:
            self._report(record)

    def _amend(self, record: RequestRecord, status: int, error: str) -> None:
        with self._lock:
            record.status, record.error = status, error
        if self._verbose:
            self._report(record)

    def _report(self, record: RequestRecord) -> None:
        size = f"{record.body_size:,} bytes"
        if record.decoded_size != record.body_size and record.decoded_size:
            size += f" ({record.decoded_size:,} decoded)"
        path = urlsplit(record.path).path  # never a query string
        line = (
            f"{time.strftime('%H:%M:%S')} {record.status or '---'} {record.method} {path}"
            f" {record.message_count} messages, {size}"
        )
        if record.error:
            line += f": {record.error}"
        if sys.stdout is not None:
            sys.stdout.write(line + "\n")  # one write, so lines from concurrent requests don't interleave
            sys.stdout.flush()


def run_collector(
    host: str = "127.0.0.1",
    port: int = 8765,
    write_key: Optional[str] = None,
    out: Optional[str] = None,
    *,
    strict: bool = False,
    keep: int = CLI_KEEP,
) -> int:
    """``dreamdata-logging collector``: serve in the foreground, a line per request, until Ctrl-C."""
    try:
        collector = Collector(host, port, write_key=write_key, out=out, verbose=True, strict=strict, keep=keep)
    except OSError as exc:
        print(f"dreamdata-logging collector: cannot start on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    auth = "checking the write key" if write_key else "accepting any non-empty write key"
    rules = "this package's exact format (--strict)" if strict else "what Dreamdata's API accepts"
    target = f"; appending accepted messages to {out}" if out else ""
    print(
        f"dreamdata-logging collector listening on {collector.url} ({auth}; checking {rules}{target});"
        f" Ctrl-C stops it\nlive event debugger: open {collector.page_url} in a browser"
        f" (it shows the last {_FEED_ROWS:,} events; {keep:,} messages are kept in memory)",
        flush=True,
    )
    collector.serve_forever()
    print(f"stopped: {collector.request_count} requests, {collector.accepted} messages accepted", flush=True)
    return 0
