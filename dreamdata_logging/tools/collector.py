"""A local stand-in for Dreamdata's ``POST /v1/batch``.

It checks what the real endpoint checks (auth, JSON, the 500,000-byte body limit, each message) and
answers as it would: 200 ``{"success": true}``, or 400/401/404/405/413 with ``{"error": "<reason>"}``.
It is what ``dreamdata-logging collector``, the demo and the project's tests talk to, so it also
records every request and can inject faults (error statuses, stalls, dropped connections, outages).

Besides the standard library it uses only the package's wire checks (``message.wire_problem``), the same
ones ``dreamdata-logging send`` applies before sending; it does not need the handler.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import hmac
import json
import os
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

from .._wire import is_wire_timestamp as _is_timestamp
from .._wire import wire_problem as _message_problem

__all__ = ["BATCH_PATH", "MAX_BODY_BYTES", "MAX_MESSAGE_BYTES", "Collector", "Fault", "RequestRecord", "run_collector"]

BATCH_PATH = "/v1/batch"
MAX_BODY_BYTES = 500_000  # per request, as sent before any gzip
MAX_MESSAGE_BYTES = 32_000  # per message, serialised compactly
MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")

# A body this large is not worth reading just to keep the connection in step: answer and close instead.
_DRAIN_LIMIT = 64 * 1024 * 1024
# How often the accept loop looks for a stop request; bounds how long stop() takes.
_POLL_INTERVAL = 0.05
# How long stop() waits for connection threads (woken by the stop) to finish their request.
_JOIN_TIMEOUT = 2.0
_OK_BODY = b'{"success": true}'

Message = Dict[str, Any]
_Body = Tuple[Optional[bytes], int]  # (the body, or None when it was read but not kept; its size)


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
    body_size: int = 0  # bytes as sent
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


def _parse_batch(body: bytes) -> List[Any]:
    """The envelope's ``batch`` list, after checking the body and the envelope (not the messages)."""
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
    if not _filled(document.get("messageId")):
        raise _Reject(400, "the batch needs a non-empty string 'messageId'")
    if not _is_timestamp(document.get("sentAt")):
        raise _Reject(
            400,
            "'sentAt' must be RFC 3339 UTC with milliseconds, like 2015-12-02T00:30:08.276Z,"
            f" not {_show(document.get('sentAt'))}",
        )
    return batch


def _serialise_messages(batch: List[Any]) -> List[bytes]:
    """Check each message; return each one's compact JSON (its size is checked, and it is the out line)."""
    lines = []
    for index, message in enumerate(batch):
        problem = _message_problem(message)
        if problem is None:
            try:
                line = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate escape, e.g. "\ud800": valid JSON, not Unicode
                problem = "contains text that is not valid Unicode (a lone surrogate)"
            else:
                if len(line) > MAX_MESSAGE_BYTES:
                    problem = f"is {len(line):,} bytes serialised; the limit is {MAX_MESSAGE_BYTES:,}"
        if problem is not None:
            raise _Reject(400, f"batch[{index}] {problem}")
        lines.append(line)
    return lines


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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a client's session reuses its connection
    server: _Server

    def do_POST(self) -> None:
        self._serve()

    # Every method reaches the same code, which answers 405 (or 404) instead of the base class's 501.
    do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the collector prints its own line per request (verbose); the default goes to stderr

    def _serve(self) -> None:
        collector = self.server.collector
        headers = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.headers.items()}
        record = RequestRecord(self.command, self.path, headers)
        fault = collector._next_fault()
        if fault is not None:
            self._serve_fault(record, fault)
            return
        try:
            messages, lines = self._check(record)
        except _Reject as reject:
            record.status, record.error = reject.status, reject.reason
            collector._record(record)
            self._reply(reject.status, json.dumps({"error": reject.reason}).encode(), reject.headers)
            return
        record.status = 200
        collector._record(record, messages, lines)  # before answering: a client that got 200 can look
        self._reply(200, _OK_BODY)

    def _check(self, record: RequestRecord) -> Tuple[List[Message], List[bytes]]:
        """Read and judge the request as the real endpoint would; raise _Reject to refuse it."""
        path = urlsplit(self.path).path
        problem: Optional[str] = None
        status = 400
        extra: Dict[str, str] = {}
        if path != BATCH_PATH:
            status, problem = 404, f"no such endpoint {_show(path)}; the endpoint is POST {BATCH_PATH}"
        elif self.command != "POST":
            status, problem, extra = 405, f"{self.command} is not allowed; use POST", {"Allow": "POST"}
        else:
            problem = _auth_problem(self.headers.get("Authorization"), self.server.collector._write_key)
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
        # Uncompressed, the declared length alone decides 413: the body is drained, never held.
        raw, record.body_size = self._receive(_DRAIN_LIMIT if gzipped else MAX_BODY_BYTES)
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
        batch = _parse_batch(body)
        record.message_count = len(batch)
        return batch, _serialise_messages(batch)

    def _serve_fault(self, record: RequestRecord, fault: Fault) -> None:
        try:
            raw, record.body_size = self._receive(_DRAIN_LIMIT)  # read the request first, as a server would
        except _Reject:
            raw = None
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

    def _receive(self, max_keep: int) -> _Body:
        """Read the body, whatever its framing; keep it only up to ``max_keep`` bytes.

        The body is always read, so the next request on a keep-alive connection starts where it
        should; one that cannot be framed or is huge is left unread and the connection is closed.
        """
        if self.headers.get("Transfer-Encoding", "").strip().lower() == "chunked":
            return self._receive_chunked(max_keep)
        declared = self.headers.get("Content-Length", "0").strip()
        if not (declared.isascii() and declared.isdigit()):
            self.close_connection = True
            raise _Reject(400, "malformed Content-Length")
        length = int(declared)
        if length > _DRAIN_LIMIT:
            self.close_connection = True
            return None, length
        if length <= max_keep:
            return self._read(length), length
        while length:  # drain in slices: the body is refused, no need to hold it
            length -= len(self._read(min(length, 65536)))
        return None, int(declared)

    def _receive_chunked(self, max_keep: int) -> _Body:
        parts: List[bytes] = []
        size = 0
        while True:
            try:
                chunk_size = int(self.rfile.readline(1024).split(b";")[0], 16)
            except ValueError:
                self.close_connection = True
                raise _Reject(400, "malformed chunked body") from None
            if chunk_size == 0:
                break
            size += chunk_size
            if size > _DRAIN_LIMIT:
                self.close_connection = True
                return None, size
            chunk = self._read(chunk_size)
            self.rfile.readline(1024)  # the CRLF after each chunk
            if size <= max_keep:
                parts.append(chunk)
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers, unused
        return (b"".join(parts) if size <= max_keep else None), size

    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise ConnectionResetError("the client closed the connection mid-body")
        return data

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
        # Open connections and their threads, so stop() can end idle keep-alive reads and stalls.
        self.connections: Dict[socket.socket, threading.Thread] = {}
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

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections[request] = threading.current_thread()
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

    def close_connections(self) -> List[threading.Thread]:
        with self.connections_lock:
            open_connections = list(self.connections.items())
        for sock, _ in open_connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading the next request
            except OSError:
                pass  # already closed by its thread
        return [thread for _, thread in open_connections]


# -- the collector ---------------------------------------------------------------------------------


class Collector:
    """A local ``POST /v1/batch`` that checks like the real one, records, and injects faults.

    The socket is bound on construction (``port=0`` picks a free port, see :attr:`url`); serve with
    :meth:`start` (background) or :meth:`serve_forever` (foreground). A stopped collector cannot be
    started again: make a new one, on the same :attr:`port` if needed. ``write_key=None`` (or "")
    accepts any non-empty key.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        write_key: Optional[str] = None,
        out: Union[str, os.PathLike[str], None] = None,
        verbose: bool = False,
    ) -> None:
        self._write_key = write_key or None
        self._out = os.fspath(out) if out is not None else None
        if self._out is not None:
            open(self._out, "ab").close()  # fail now, not at the first batch, if it can't be written
        self._verbose = verbose
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._messages: List[Message] = []
        self._requests: List[RequestRecord] = []
        self._faults: Deque[Fault] = collections.deque()
        self._down: Optional[Fault] = None
        self._stopping = threading.Event()  # also ends stalls early
        self._serving = False
        self._stopped = False
        self._thread: Optional[threading.Thread] = None
        self._server = _Server((host, port), self)

    def __repr__(self) -> str:
        return f"<Collector {self.url}>"  # never the write key

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}{BATCH_PATH}"

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
        """Stop serving, close the socket and every open connection; idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            serving = self._serving
        self._stopping.set()
        if serving:  # shutdown() waits for the accept loop, which only exists once serving began
            self._server.shutdown()
        self._server.server_close()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in self._server.close_connections():
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what arrived --

    def received(self) -> List[Message]:
        """A copy of every accepted message, in arrival order."""
        with self._lock:
            return list(self._messages)

    def requests(self) -> List[RequestRecord]:
        """A copy of the record of every request seen, accepted or not, in arrival order."""
        with self._lock:
            return [dataclasses.replace(record) for record in self._requests]

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` messages were accepted; False if ``timeout`` passed first."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self._messages) >= count, timeout)

    def reset(self) -> None:
        """Forget the messages and requests seen so far (faults stay scripted)."""
        with self._lock:
            self._messages.clear()
            self._requests.clear()

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
        self, record: RequestRecord, messages: Optional[List[Message]] = None, lines: Optional[List[bytes]] = None
    ) -> None:
        with self._arrived:
            self._requests.append(record)
            if messages:
                if self._out is not None and lines:
                    # Under the lock, so the file's order is received()'s; closing flushes per batch.
                    with open(self._out, "ab") as out:
                        out.write(b"\n".join(lines) + b"\n")
                self._messages.extend(messages)
                self._arrived.notify_all()
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
        line = (
            f"{time.strftime('%H:%M:%S')} {record.status or '---'} {record.method} {record.path}"
            f" {record.message_count} messages, {size}"
        )
        if record.error:
            line += f": {record.error}"
        if sys.stdout is not None:
            sys.stdout.write(line + "\n")  # one write, so lines from concurrent requests don't interleave
            sys.stdout.flush()


def run_collector(
    host: str = "127.0.0.1", port: int = 8765, write_key: Optional[str] = None, out: Optional[str] = None
) -> int:
    """``dreamdata-logging collector``: serve in the foreground, a line per request, until Ctrl-C."""
    try:
        collector = Collector(host, port, write_key=write_key, out=out, verbose=True)
    except OSError as exc:
        print(f"dreamdata-logging collector: cannot start on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    auth = "checking the write key" if write_key else "accepting any non-empty write key"
    target = f", appending accepted messages to {out}" if out else ""
    print(f"dreamdata-logging collector listening on {collector.url} ({auth}{target}); Ctrl-C stops it", flush=True)
    collector.serve_forever()
    print(f"stopped: {len(collector.requests())} requests, {len(collector.received())} messages accepted", flush=True)
    return 0
