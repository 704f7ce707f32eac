"""Small loopback HTTP/1.1 servers that misbehave on purpose, for tests of the transport and anything above it.

A :class:`FaultServer` parses each request on a keep-alive connection, records it (:attr:`FaultServer.requests`,
with the number of the connection it came on) and lets an *answer* function write whatever bytes it likes.
Answer functions for the usual faults are below: :func:`respond`, :func:`redirect`, :func:`big_body`,
:func:`endless_body`, :func:`gzip_bomb`, :func:`trickle`, :func:`echo_headers`. An answer returns True to keep
the connection open for the next request, False to close it.

    with FaultServer(redirect(307, "http://127.0.0.2:9/v1/batch")) as server:
        ...  # send to server.url; server.requests lists what arrived

Answers that write for long (trickles, endless bodies) stop when the client goes away or the server stops.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import threading
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Optional

# An answer writes to the connection's socket; True keeps the connection open for another request.
Answer = Callable[["Request", socket.socket, threading.Event], bool]

_MAX_LINE = 65536


@dataclass
class Request:
    """One request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    connection: int  # 1 for the first connection accepted, 2 for the second, ...


@dataclass
class _State:
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    open_sockets: set[socket.socket] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)


def _read_request(stream: BinaryIO, connection: int) -> Optional[Request]:
    line = stream.readline(_MAX_LINE)
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        header = stream.readline(_MAX_LINE)
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = stream.read(int(headers["content-length"]))
    return Request(method, path, headers, body, connection)


class FaultServer:
    """A threaded HTTP/1.1 server on ``host`` (loopback) whose answers are written by ``answer``."""

    def __init__(self, answer: Answer, *, host: str = "127.0.0.1", tls: Optional[ssl.SSLContext] = None) -> None:
        self.answer = answer
        self._state = _State()
        self._stopping = threading.Event()
        state, stopping, server_self = self._state, self._stopping, self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                with state.lock:
                    state.connections += 1
                    number = state.connections
                    state.open_sockets.add(sock)
                try:
                    reader = sock.makefile("rb")
                    while not stopping.is_set():
                        request = _read_request(reader, number)
                        if request is None:
                            return
                        with state.lock:
                            state.requests.append(request)
                            state.arrived.notify_all()
                        if not server_self.answer(request, sock, stopping):
                            return
                except (OSError, ValueError):
                    return  # the client went away, or sent something that is not HTTP
                finally:
                    with state.lock:
                        state.open_sockets.discard(sock)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self) -> tuple[socket.socket, object]:
                sock, address = super().get_request()
                if tls is not None:
                    sock = tls.wrap_socket(sock, server_side=True)
                return sock, address

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a failed TLS handshake or a client gone mid-answer is part of the test

        self._server = Server((host, 0), Handler)
        self.host, self.port = self._server.server_address[:2]
        scheme = "https" if tls is not None else "http"
        self.base_url = f"{scheme}://{self.host}:{self.port}"
        self.url = f"{self.base_url}/v1/batch"
        self._thread: Optional[threading.Thread] = None

    @property
    def requests(self) -> list[Request]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def connections(self) -> int:
        """How many connections were accepted so far."""
        with self._state.lock:
            return self._state.connections

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        with self._state.arrived:
            return self._state.arrived.wait_for(lambda: len(self._state.requests) >= count, timeout)

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()  # waits for serve_forever to return: only once it was started
        self._server.server_close()
        with self._state.lock:
            sockets = list(self._state.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- answers ---------------------------------------------------------------------------------------------


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever"] + [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def respond(status: int = 200, headers: Optional[dict[str, str]] = None, body: bytes = b"") -> Answer:
    """A complete, well-formed answer; the connection stays open."""

    def answer(request: Request, sock: socket.socket, stopping: threading.Event) -> bool:
        sock.sendall(_head(status, {"Content-Length": str(len(body)), **(headers or {})}) + body)
        return True

    return answer


def redirect(status: int, location: str) -> Answer:
    return respond(status, {"Location": location})


def big_body(status: int = 200, size: int = 100 * 1024 * 1024, chunk: int = 65536) -> Answer:
    """An answer of ``size`` bytes announced with Content-Length, written until done or the client leaves."""
    block = b"x" * chunk

    def answer(request: Request, sock: socket.socket, stopping: threading.Event) -> bool:
        sock.sendall(_head(status, {"Content-Length": str(size), "Content-Type": "text/plain"}))
        left = size
        while left > 0 and not stopping.is_set():
            piece = block[: min(chunk, left)]
            sock.sendall(piece)
            left -= len(piece)
        return True

    return answer


def endless_body(status: int = 200, chunk: int = 65536) -> Answer:
    """A chunked answer that never ends (until the client leaves or the server stops)."""
    block = f"{chunk:x}\r\n".encode() + b"y" * chunk + b"\r\n"

    def answer(request: Request, sock: socket.socket, stopping: threading.Event) -> bool:
        sock.sendall(_head(status, {"Transfer-Encoding": "chunked", "Content-Type": "text/plain"}))
        while not stopping.is_set():
            sock.sendall(block)
        return False

    return answer


def gzip_bomb(status: int = 200, inflated: int = 256 * 1024 * 1024, fill: bytes = b"\0") -> Answer:
    """A small gzip answer (about 1/1000 of ``inflated``) that inflates to ``inflated`` bytes of ``fill``."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: with a gzip header
    block = fill * (1024 * 1024)
    pieces = [deflater.compress(block) for _ in range(inflated // len(block))]
    pieces.append(deflater.flush())
    return respond(status, {"Content-Encoding": "gzip", "Content-Type": "text/plain"}, b"".join(pieces))


def trickle(status: int = 200, interval: float = 0.25, body: bytes = b"ok", head_too: bool = True) -> Answer:
    """An answer written one byte per ``interval`` seconds (from its status line when ``head_too``)."""

    def answer(request: Request, sock: socket.socket, stopping: threading.Event) -> bool:
        head = _head(status, {"Content-Length": str(len(body)), "X-Padding": "p" * 200})
        slow = head + body if head_too else body
        if not head_too:
            sock.sendall(head)
        for i in range(len(slow)):
            if stopping.wait(interval):
                return False
            sock.sendall(slow[i : i + 1])
        return True

    return answer


def echo_headers(status: int = 400) -> Answer:
    """An error answer whose body repeats every request header, Authorization included."""

    def answer(request: Request, sock: socket.socket, stopping: threading.Event) -> bool:
        first = sorted(request.headers.items(), key=lambda item: item[0] != "authorization")  # the key up front
        body = "".join(f"{name}: {value}\n" for name, value in first).encode("latin-1")
        body += b"path: " + request.path.encode("latin-1")
        sock.sendall(_head(status, {"Content-Length": str(len(body)), "Content-Type": "text/plain"}) + body)
        return True

    return answer


def raw(data: bytes, keep_open: bool = False) -> Answer:
    """Exactly ``data`` as the answer, whatever it is."""

    def answer(request: Request, sock: socket.socket, stopping: threading.Event) -> bool:
        sock.sendall(data)
        return keep_open

    return answer


def refuse_messages(poisoned: set[str], accepted: list[str], delay: float = 0.0) -> Answer:
    """400 for any batch holding a message whose messageId is in ``poisoned`` (naming it, as an endpoint that
    validates each message does); otherwise 200, with the batch's messageIds appended to ``accepted``.
    Each answer comes ``delay`` seconds after its request (a slow endpoint)."""

    def answer(request: Request, sock: socket.socket, stopping: threading.Event) -> bool:
        if delay and stopping.wait(delay):
            return False
        body = request.body
        if request.headers.get("content-encoding") == "gzip":
            body = zlib.decompress(body, 47)
        ids = [message["messageId"] for message in json.loads(body)["batch"]]
        bad = [message_id for message_id in ids if message_id in poisoned]
        if bad:
            reason = json.dumps({"error": f"message {bad[0]}: refused, 'event' is not allowed"}).encode()
            sock.sendall(_head(400, {"Content-Length": str(len(reason)), "Content-Type": "application/json"}) + reason)
            return True
        accepted.extend(ids)
        done = b'{"success": true}'
        sock.sendall(_head(200, {"Content-Length": str(len(done)), "Content-Type": "application/json"}) + done)
        return True

    return answer


def in_turn(*answers: Answer, then: Answer) -> Answer:
    """The first request gets ``answers[0]``, the second ``answers[1]``...; the ones after them ``then``."""
    lock = threading.Lock()
    served = [0]

    def answer(request: Request, sock: socket.socket, stopping: threading.Event) -> bool:
        with lock:
            number = served[0]
            served[0] += 1
        chosen = answers[number] if number < len(answers) else then
        return chosen(request, sock, stopping)

    return answer


def stall(seconds: float, then: Answer) -> Answer:
    """Nothing for ``seconds`` (or until the server stops), then ``then``'s answer."""

    def answer(request: Request, sock: socket.socket, stopping: threading.Event) -> bool:
        if stopping.wait(seconds):
            return False
        return then(request, sock, stopping)

    return answer
