"""The collector's HTTP server: each request goes to the batch checks, a scripted fault or the debugger.

The server also keeps the open connections, so :meth:`Collector.stop` can end idle reads and stalls and
the deadline watcher can end requests that take too long.
"""

from __future__ import annotations

import json
import socket
import socketserver
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from dreamdata_logging.tools.collector.checks import (
    Judged,
    Refused,
    Reject,
    auth_problem,
    first_problem,
    gunzip,
    judge_messages,
    merge_context,
    parse_batch,
    peek,
)
from dreamdata_logging.tools.collector.faults import Fault
from dreamdata_logging.tools.collector.feed import PAGE, PAGE_HEADERS, stream_events
from dreamdata_logging.tools.collector.framing import DRAIN_LIMIT, HEADER_LIMIT, BoundedRequestHandler, Connection
from dreamdata_logging.tools.collector.guard import HostGuard
from dreamdata_logging.tools.collector.records import RequestRecord
from dreamdata_logging.wire.rules import MAX_BODY_BYTES
from dreamdata_logging.wire.rules import _show as show

if TYPE_CHECKING:
    from dreamdata_logging.tools.collector import Collector

BATCH_PATH = "/v1/batch"
PAGE_PATH = "/"  # the debugger page
EVENTS_PATH = "/events"  # its server-sent events
# A gzip body may be a little larger than what it inflates to; never more than this on the wire.
_GZIP_WIRE_LIMIT = MAX_BODY_BYTES + 64 * 1024
# How often the deadline watcher looks for requests that are taking too long.
_REAP_INTERVAL = 0.1
_OK_BODY = b'{"success": true}'

Message = Dict[str, Any]


class _Handler(BoundedRequestHandler):
    server: CollectorServer

    def setup(self) -> None:
        collector = self.server.collector
        self.idle_seconds, self.request_seconds = collector._idle_timeout, collector._request_timeout
        super().setup()
        self._state = self.server.state_of(self.connection)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """Malformed request lines and headers (400, 414, 431, ...): a JSON answer, recorded, then close."""
        reason = message or self.responses.get(code, ("error",))[0]
        if code == 431 or "too long" in reason.lower():
            code, reason = 431, f"request line and headers must fit in {HEADER_LIMIT:,} bytes"
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
        debugger = self.command == "GET" and path in (PAGE_PATH, EVENTS_PATH)
        refusal = self.server.guard.refusal(self.headers, debugger, proxied=self.path.lower().startswith(("http://", "https://")))
        if refusal is not None:  # a wrong Host (any path), or no write key for the debugger beyond loopback
            self._turn_away(refusal, debugger)
            return
        if debugger:
            # The debugger: never consumes a scripted fault, never appears among requests().
            self._drain_small_body()
            if path == PAGE_PATH:
                self._reply(200, PAGE, PAGE_HEADERS)
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
        except Refused as refused:
            self._refuse(record, refused.reject, refused.judged)
            return
        except Reject as reject:
            self._refuse(record, reject)
            return
        record.status = 200
        collector._record(record, messages, lines)  # before answering: a client that got 200 can look
        self._reply(200, _OK_BODY)

    def _turn_away(self, reject: Reject, debugger: bool) -> None:
        """Refuse a request before serving its path: no fault is consumed; the debugger's are not recorded."""
        if debugger:
            self._drain_small_body()
            self._reply(reject.status, json.dumps({"error": reject.reason}).encode(), reject.headers)
            return
        headers = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.headers.items()}
        record = RequestRecord(self.command, self.path, headers)
        try:
            _, record.body_size = self._receive(max_keep=0)  # read and discard, to keep the connection in step
        except Reject as unreadable:
            reject = unreadable
        self._refuse(record, reject)

    def _refuse(self, record: RequestRecord, reject: Reject, judged: Optional[List[Judged]] = None) -> None:
        record.status, record.error = reject.status, reject.reason
        self.server.collector._record(record, judged=judged)
        self._reply(reject.status, json.dumps({"error": reject.reason}).encode(), reject.headers)

    def _request_problem(self) -> Tuple[int, Optional[str], Dict[str, str]]:
        """Status, reason and headers for a request refused before its body is read; reason None if none."""
        path = urlsplit(self.path).path
        if path != BATCH_PATH:
            return 404, f"no such endpoint {show(path)}; the endpoint is POST {BATCH_PATH}", {}
        if self.command != "POST":
            return 405, f"{self.command} is not allowed; use POST", {"Allow": "POST"}
        problem = auth_problem(self.headers.get("Authorization"), self.server.collector._write_key)
        if problem is not None:
            return 401, problem, {"WWW-Authenticate": 'Basic realm="dreamdata"'}
        media_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return 400, f"Content-Type must be application/json, not {show(media_type or None)}", {}
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            return 400, f"unsupported Content-Encoding {show(encoding)}; use gzip or none", {}
        return 400, None, {}

    def _check(self, record: RequestRecord) -> Tuple[List[Message], List[bytes]]:
        """Read and judge the request as the real endpoint would; raise Reject or Refused to refuse it."""
        status, problem, extra = self._request_problem()
        if problem is not None:
            _, record.body_size = self._receive(max_keep=0)  # read and discard, to keep the connection in step
            raise Reject(status, problem, extra)
        gzipped = self.headers.get("Content-Encoding", "identity").strip().lower() == "gzip"
        raw, record.body_size = self._receive(_GZIP_WIRE_LIMIT if gzipped else MAX_BODY_BYTES)
        self._state.deadline = None  # the client's part is done: the rest is the collector's
        if raw is None:
            record.decoded_size = record.body_size
            raise Reject(413, f"body is {record.body_size:,} bytes; the limit is {MAX_BODY_BYTES:,}")
        try:
            body = gunzip(raw) if gzipped else raw
        except Reject as reject:
            if reject.status == 413:
                record.decoded_size = MAX_BODY_BYTES + 1
            raise
        record.decoded_size = len(body)
        strict = self.server.collector._strict
        batch, context = parse_batch(body, strict)
        record.message_count = len(batch)
        judged = judge_messages(merge_context(batch, context), strict)
        first = first_problem(judged)
        if first is not None:
            index, problem = first
            raise Refused(Reject(400, f"batch[{index}] {problem}"), judged)
        return [message for message, _, _ in judged], [line for _, line, _ in judged if line is not None]

    def _serve_fault(self, record: RequestRecord, fault: Fault) -> None:
        try:
            raw, record.body_size = self._receive(DRAIN_LIMIT)  # read the request first, as a server would
        except Reject:
            raw = None
        self._state.deadline = None  # a scripted stall may outlast the request deadline
        gzipped = self.headers.get("Content-Encoding", "").strip().lower() == "gzip"
        record.decoded_size, record.message_count = peek(raw, gzipped)
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
        body, headers = fault.answer()
        self._reply(fault.status, body, headers)

    def _serve_events(self) -> None:
        """``GET /events``: the debugger's server-sent events, until the page or the collector goes away."""
        feed = self.server.collector._feed
        self.close_connection = True
        if not feed.enter():
            self._reply(503, json.dumps({"error": f"at most {feed.max_pages} debugger pages at once"}).encode())
            return
        self._state.deadline = None  # a page stays connected as long as it likes
        stream_events(self, feed, self.server.collector._stopping)


class CollectorServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must never keep the interpreter alive
    block_on_close = False  # stop() joins the connection threads itself, with a deadline

    def __init__(self, address: Tuple[str, int], collector: Collector) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.collector = collector
        # Open connections and their threads, so stop() can end idle keep-alive reads and stalls, and
        # the deadline watcher can end requests that take too long.
        self.connections: Dict[socket.socket, Connection] = {}
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind: its socket.getfqdn() is a reverse DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])
        self.guard = HostGuard(self.server_name, self.server_port, self.collector._write_key)

    def get_request(self) -> Tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # Answers are written as headers then body; without this, Nagle plus delayed ACK adds ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    def state_of(self, sock: socket.socket) -> Connection:
        with self.connections_lock:
            state = self.connections.get(sock)
        return state if state is not None else Connection(threading.current_thread())

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections[request] = Connection(threading.current_thread())
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
