"""HTTP/1.1 request framing for the collector, within bounds: a request's headers, body and time are limited.

:class:`BoundedRequestHandler` reads a request line and headers of at most ``HEADER_LIMIT`` bytes, gives the
whole request ``request_seconds`` once its first line is in (the deadline watcher ends a slower one), reads a
body whatever its framing (``Content-Length`` or chunked) keeping at most what the caller asks for, and
answers in a way that lets the client read the answer even when its body was left unread.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, List, Mapping, Optional, Tuple

from dreamdata_logging.tools.collector.checks import Reject

# An over-limit body up to this size is read and thrown away, so a keep-alive connection stays usable;
# a larger one (declared, or chunked past it) is answered at once and its connection closed.
DRAIN_LIMIT = 2 * 1024 * 1024
# The request line and headers of one request, together.
HEADER_LIMIT = 32 * 1024
# After answering a request whose body is left unread: read and discard at most this much, for at most
# this long, before closing, so the client reads the answer instead of a connection reset.
_LINGER_BYTES = 1024 * 1024
_LINGER_SECONDS = 1.0

Body = Tuple[Optional[bytes], int]  # (the body, or None when it was read but not kept; its size)


class Connection:
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
            raise http.client.LineTooLong(f"headers over {HEADER_LIMIT:,} bytes")
        line: bytes = self.inner.readline(min(limit, self.budget) if limit >= 0 else self.budget)
        self.budget -= len(line)
        if self.budget <= 0 and not line.endswith(b"\n"):
            raise http.client.LineTooLong(f"headers over {HEADER_LIMIT:,} bytes")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class BoundedRequestHandler(BaseHTTPRequestHandler):
    """Reads requests within bounds and answers them; a subclass sets the times and routes each request."""

    protocol_version = "HTTP/1.1"  # keep-alive, so a client's session reuses its connection
    idle_seconds = 30.0  # each read waits at most this long (also between requests on a keep-alive connection)
    request_seconds = 10.0  # a whole request, from its first line
    _state: Connection
    _body_in: Any
    _linger = False

    def setup(self) -> None:
        self.timeout = self.idle_seconds  # type: ignore[misc]
        super().setup()
        self._body_in = self.rfile
        self.rfile = _HeaderBudget(self._body_in)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        self._linger = False
        self._state.deadline = time.monotonic() + self.idle_seconds + self.request_seconds
        self.rfile.budget = None  # type: ignore[attr-defined]
        super().handle_one_request()
        if self._linger:
            self._linger_close()

    def parse_request(self) -> bool:
        # The request line is in: from here the whole request has request_seconds.
        self._state.deadline = time.monotonic() + self.request_seconds
        self.rfile.budget = HEADER_LIMIT  # type: ignore[attr-defined]
        try:
            return super().parse_request()
        finally:
            self.rfile.budget = None  # type: ignore[attr-defined]

    # -- reading bodies, within bounds --

    def _timed_out(self) -> Reject:
        self.close_connection = True
        return Reject(408, f"the request was not complete within {self.request_seconds:g} s; connection closed")

    def _receive(self, max_keep: int) -> Body:
        """Read the body, whatever its framing; keep it only up to ``max_keep`` bytes.

        An over-limit body up to ``DRAIN_LIMIT`` is read and thrown away, so the next request on a
        keep-alive connection starts where it should; a larger one is not read at all: the answer goes
        out at once and the connection is closed.
        """
        if self.headers.get("Transfer-Encoding", "").strip().lower() == "chunked":
            return self._receive_chunked(max_keep)
        declared = self.headers.get("Content-Length", "0").strip()
        if not (declared.isascii() and declared.isdigit()) or len(declared) > 18:
            self.close_connection = True
            raise Reject(400, "malformed Content-Length")
        length = int(declared)
        if length <= max_keep:
            return self._read(length), length
        if length > DRAIN_LIMIT:
            self.close_connection = self._linger = True
            return None, length
        self._discard(length)  # the body is refused: no need to hold it
        return None, length

    def _receive_chunked(self, max_keep: int) -> Body:
        parts: List[bytes] = []
        size = 0
        while True:
            chunk_size = self._chunk_size()
            if chunk_size == 0:
                break
            size += chunk_size
            if size > DRAIN_LIMIT:  # an endless or huge body: stop reading, answer, close
                self.close_connection = self._linger = True
                return None, size
            if size <= max_keep:
                parts.append(self._read(chunk_size))
            else:
                parts.clear()
                self._discard(chunk_size)
            if self._body_in.readline(1026) not in (b"\r\n", b"\n"):  # the CRLF after each chunk
                self.close_connection = True
                raise Reject(400, "malformed chunked body")
        for _ in range(100):  # trailers, unused (at most 100 short lines)
            if self._body_in.readline(1026) in (b"\r\n", b"\n", b""):
                break
        else:
            self.close_connection = True
            raise Reject(400, "too many chunked trailers")
        return (b"".join(parts) if size <= max_keep else None), size

    def _chunk_size(self) -> int:
        """The size on the next chunk's first line."""
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
            raise Reject(400, "malformed chunked body")
        return chunk_size

    def _read(self, n: int) -> bytes:
        data: bytes = self._body_in.read(n)
        if len(data) < n:
            if self._state.timed_out:
                raise self._timed_out()
            raise ConnectionResetError("the client closed the connection mid-body")
        return data

    def _discard(self, n: int) -> None:
        """Read ``n`` bytes in slices and throw them away."""
        while n:
            n -= len(self._read(min(n, 65536)))

    def _drain_small_body(self) -> None:
        """A GET with a body (rare): read it when small, else close after answering."""
        try:
            self._receive(max_keep=0)
        except Reject:
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
