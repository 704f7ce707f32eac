"""A deliberately cheap stand-in for ``POST /v1/batch`` on loopback.

It is the benchmark's sink, not a validator (``dreamdata-logging collector`` is that): it speaks
HTTP/1.1 with keep-alive, sets TCP_NODELAY on every connection, reads each body and counts the
messages in it without parsing (each message has exactly one ``"type"`` key and the batch envelope,
Dreamdata's or Segment's, has none; the workloads contain no other ``"type"`` string), then answers
``200 {"success":true}``. In outage mode it reads the body and answers 503 instead.

The first few bodies after every reset are also parsed with :mod:`json` as a spot check that the
cheap count is right (``spot_checked`` / ``spot_check_errors`` in the stats).

Control, on the same port (used by ``benchmarks.run``)::

    GET  /__bench/stats                 counters as JSON
    POST /__bench/reset                 zero the counters
    POST /__bench/mode?status=503       answer every batch with 503 (status=200 to recover)

Run on its own: ``python -m benchmarks.receiver --port 8765`` (prints ``PORT <n>`` when ready).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import sys
import threading
import time

BODY_LIMIT = 500_000
SPOT_CHECK_BODIES = 3
_MARK = b'"type"'

_OK_BODY = b'{"success":true}'
_OUTAGE_BODY = b'{"code":"unavailable","message":"simulated outage"}'


def _response(status: int, reason: str, body: bytes, close: bool = False) -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n"
        "\r\n"
    ).encode("ascii") + body


class Receiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.host, self.port = self.sock.getsockname()[:2]
        self.lock = threading.Lock()
        self.status = 200
        self._reset()

    # -- counters ---------------------------------------------------------------------------
    def _reset(self) -> None:
        self.stats = {
            "requests": 0,  # batch POSTs answered 2xx
            "messages": 0,  # messages in those
            "body_bytes": 0,  # their bodies, as sent (before any gunzip)
            "max_body": 0,
            "min_body": None,
            "over_limit": 0,  # bodies > 500,000 bytes
            "rejected_requests": 0,  # batch POSTs answered 503 (outage mode)
            "rejected_messages": 0,
            "gzip_requests": 0,
            "spot_checked": 0,
            "spot_check_errors": [],
            "first_request_at": None,
            "last_request_at": None,
        }
        self.cpu_at_reset = os.times()
        self.wall_at_reset = time.monotonic()

    def snapshot(self) -> dict:
        with self.lock:
            s = dict(self.stats)
            s["spot_check_errors"] = list(self.stats["spot_check_errors"])
        t = os.times()
        s["cpu_seconds"] = round((t.user + t.system) - (self.cpu_at_reset.user + self.cpu_at_reset.system), 3)
        s["wall_seconds"] = round(time.monotonic() - self.wall_at_reset, 3)
        s["mode"] = self.status
        return s

    # -- server -----------------------------------------------------------------------------
    def serve_forever(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def start_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, daemon=True, name="bench-receiver")
        t.start()
        return t

    def _serve_conn(self, conn: socket.socket) -> None:
        try:
            self._loop(conn)
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _loop(self, conn: socket.socket) -> None:
        recv = conn.recv
        buf = b""
        while True:
            # request line + headers
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                chunk = recv(262144)
                if not chunk:
                    return
                buf += chunk
                end = buf.find(b"\r\n\r\n", max(0, len(buf) - len(chunk) - 3))
            head = buf[:end].decode("latin-1")
            buf = buf[end + 4 :]
            lines = head.split("\r\n")
            method, target, version = (lines[0].split(" ") + ["", "", ""])[:3]
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()

            # body
            if headers.get("expect", "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body, buf = self._read_chunked(recv, buf)
            else:
                n = int(headers.get("content-length", "0") or 0)
                if len(buf) >= n:
                    body, buf = buf[:n], buf[n:]
                else:
                    ba = bytearray(n)
                    mv = memoryview(ba)
                    have = len(buf)
                    mv[:have] = buf
                    while have < n:
                        got = conn.recv_into(mv[have:], n - have)
                        if not got:
                            return
                        have += got
                    body, buf = ba, b""

            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            conn.sendall(self._handle(method, target, headers, body, close))
            if close:
                return

    @staticmethod
    def _read_chunked(recv, buf: bytes):
        parts = []
        while True:
            while b"\r\n" not in buf:
                buf += recv(262144)
            line, buf = buf.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            while len(buf) < size + 2:
                chunk = recv(262144)
                if not chunk:
                    raise ConnectionError("eof in chunk")
                buf += chunk
            if size == 0:
                # no trailers expected; consume the final CRLF
                return b"".join(parts), buf[2:]
            parts.append(buf[:size])
            buf = buf[size + 2 :]

    def _handle(self, method: str, target: str, headers: dict, body, close: bool) -> bytes:
        if target.startswith("/__bench/"):
            return self._control(method, target, close)
        if method != "POST":
            return _response(405, "Method Not Allowed", b'{"success":false}', close)
        size = len(body)
        zipped = headers.get("content-encoding", "").lower() == "gzip"
        raw = gzip.decompress(body) if zipped else body
        n = raw.count(_MARK)
        now = time.monotonic()
        with self.lock:
            s = self.stats
            if s["first_request_at"] is None:
                s["first_request_at"] = now
            s["last_request_at"] = now
            if self.status != 200:
                s["rejected_requests"] += 1
                s["rejected_messages"] += n
                status = self.status
            else:
                status = 200
                s["requests"] += 1
                s["messages"] += n
                s["body_bytes"] += size
                s["gzip_requests"] += zipped
                if size > s["max_body"]:
                    s["max_body"] = size
                if s["min_body"] is None or size < s["min_body"]:
                    s["min_body"] = size
                if size > BODY_LIMIT:
                    s["over_limit"] += 1
                spot = s["spot_checked"] < SPOT_CHECK_BODIES
                if spot:
                    s["spot_checked"] += 1
        if status != 200:
            return _response(status, "Service Unavailable", _OUTAGE_BODY, close)
        if spot:
            self._spot_check(raw, n)
        return _response(200, "OK", _OK_BODY, close)

    def _spot_check(self, raw, counted: int) -> None:
        err = None
        try:
            doc = json.loads(bytes(raw))
            batch = doc.get("batch")
            if not isinstance(batch, list) or len(batch) != counted:
                err = (
                    f"cheap count {counted} != parsed batch length {len(batch) if isinstance(batch, list) else batch!r}"
                )
        except Exception as e:  # noqa: BLE001 - report anything
            err = f"body is not JSON: {e}"
        if err:
            with self.lock:
                self.stats["spot_check_errors"].append(err)

    def _control(self, method: str, target: str, close: bool) -> bytes:
        path, _, query = target.partition("?")
        if path == "/__bench/stats":
            body = self.snapshot()
        elif path == "/__bench/reset" and method == "POST":
            with self.lock:
                self._reset()
            body = {"ok": True}
        elif path == "/__bench/mode" and method == "POST":
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            self.status = int(params.get("status", "200"))
            body = {"ok": True, "mode": self.status}
        else:
            return _response(404, "Not Found", b'{"success":false}', close)
        return _response(200, "OK", json.dumps(body).encode(), close)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    r = Receiver(args.host, args.port)
    print(f"PORT {r.port}", flush=True)
    try:
        r.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
