"""Who the collector answers: only Host names of its own on loopback, and the write key for the debugger beyond.

Every request here is real HTTP over a socket to a running collector, with the Host header set by hand, as a
web page that rebinds its name to 127.0.0.1 would send it.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Optional

import pytest

from dreamdata_logging import DreamdataHandler, identify
from dreamdata_logging.tools.collector import Collector, Fault

KEY = "wk-host-guard-secret-5c1e"
EMAIL = "rebind-victim@example.com"
FOREIGN_HOSTS = ("evil.example", "evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example:{port}")


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def ask(
    port: int, method: str, path: str, host: Optional[str], headers: Optional[dict[str, str]] = None, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One request with exactly this Host (None: no Host header at all); the status, headers and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        answer = {k.lower(): v for k, v in response.getheaders()}
        if "text/event-stream" in answer.get("content-type", ""):
            return response.status, answer, b""  # a feed that stays open: its events are read elsewhere
        return response.status, answer, response.read()
    finally:
        conn.close()


def read_feed_until(port: int, host: str, wanted: bytes, authorization: Optional[str] = None) -> bytes:
    """Open the debugger's feed with this Host and read it until ``wanted`` appears; what was read."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        sock.sendall(f"GET /events HTTP/1.1\r\nHost: {host}\r\n{auth}Accept: text/event-stream\r\n\r\n".encode())
        seen = b""
        while wanted not in seen:
            chunk = sock.recv(65536)
            assert chunk, f"the feed ended before showing {wanted!r}: {seen[:300]!r}"
            seen += chunk
        return seen


def send_identify(collector: Collector, key: str) -> str:
    """Log one identify carrying EMAIL through a real handler; returns its messageId once it arrived."""
    endpoint = f"http://127.0.0.1:{collector.port}/v1/batch"  # loopback, whatever address it is bound to
    handler = DreamdataHandler(key, endpoint=endpoint, flush_interval=0.05)
    log = logging.getLogger(f"host-guard-{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    message_id = str(uuid.uuid4())
    try:
        log.info("identify", extra=identify(user_id="42", traits={"email": EMAIL}, message_id=message_id))
        assert handler.flush(timeout=10)
    finally:
        handler.close()
    assert collector.wait_for(1, timeout=10)
    assert [m["messageId"] for m in collector.received()] == [message_id]
    return message_id


@pytest.fixture
def loopback() -> Iterator[Collector]:
    with Collector(write_key=KEY, keep=None) as c:
        yield c


@pytest.fixture
def everywhere() -> Iterator[Collector]:
    with Collector(host="0.0.0.0", write_key=KEY, keep=None) as c:
        yield c


# -- bound to loopback: only its own names --


@pytest.mark.parametrize("path", ["/", "/events", "/v1/batch", "/anything"])
@pytest.mark.parametrize("foreign", FOREIGN_HOSTS)
def test_a_foreign_host_is_refused_on_every_path(loopback: Collector, path: str, foreign: str) -> None:
    host = foreign.format(port=loopback.port)
    status, headers, body = ask(loopback.port, "GET", path, host, {"Authorization": basic(KEY)})
    assert status == 421
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert "does not name this collector" in error and "127.0.0.1, localhost, [::1]" in error
    assert KEY not in body.decode()


def test_a_foreign_host_cannot_post_a_batch_nor_use_up_a_fault(loopback: Collector) -> None:
    loopback.script(Fault(status=503))
    batch = json.dumps({"batch": [{"type": "identify", "userId": "1", "messageId": "m-1"}]}).encode()
    headers = {"Authorization": basic(KEY), "Content-Type": "application/json"}
    status, _, body = ask(loopback.port, "POST", "/v1/batch", "evil.example", headers, batch)
    assert status == 421 and b"does not name this collector" in body
    assert loopback.accepted == 0
    [refused] = loopback.requests()
    assert refused.status == 421 and refused.headers["Authorization"] == "<redacted>"
    # The scripted fault is still there for the next request that names the collector.
    status, _, _ = ask(loopback.port, "POST", "/v1/batch", f"127.0.0.1:{loopback.port}", headers, batch)
    assert status == 503
    status, _, body = ask(loopback.port, "POST", "/v1/batch", f"127.0.0.1:{loopback.port}", headers, batch)
    assert status == 200 and json.loads(body) == {"success": True}
    assert loopback.accepted == 1


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "LocalHost", "[::1]"])
@pytest.mark.parametrize("with_port", [False, True])
def test_its_own_names_are_answered(loopback: Collector, name: str, with_port: bool) -> None:
    host = f"{name}:{loopback.port}" if with_port else name
    status, headers, body = ask(loopback.port, "GET", "/", host)
    assert status == 200 and headers["content-type"].startswith("text/html") and b"EventSource" in body
    status, headers, _ = ask(loopback.port, "GET", "/events", host)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")


def test_its_own_name_with_another_port_is_refused(loopback: Collector) -> None:
    other = loopback.port + 1 if loopback.port < 65535 else loopback.port - 1
    status, _, _ = ask(loopback.port, "GET", "/", f"127.0.0.1:{other}")
    assert status == 421


def test_a_missing_or_doubled_host_is_refused(loopback: Collector) -> None:
    status, _, body = ask(loopback.port, "GET", "/", None)
    assert status == 400 and json.loads(body) == {"error": "missing Host header"}
    with socket.create_connection(("127.0.0.1", loopback.port), timeout=10) as sock:
        sock.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{loopback.port}\r\nHost: evil.example\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"more than one Host header" in answer


def test_through_a_proxy_only_the_batch_endpoint_answers_another_host(loopback: Collector) -> None:
    """An absolute-form target (as through an HTTP proxy) names the target host; browsers send it only to proxies."""
    batch = json.dumps({"batch": [{"type": "identify", "userId": "1", "messageId": "m-1"}]}).encode()
    headers = {"Authorization": basic(KEY), "Content-Type": "application/json"}
    status, _, _ = ask(loopback.port, "POST", "http://dreamdata.invalid/v1/batch", "dreamdata.invalid", headers, batch)
    assert status == 200 and loopback.accepted == 1
    for path in ("http://evil.example/", "http://evil.example/events"):
        status, _, body = ask(loopback.port, "GET", path, "evil.example")
        assert status == 421 and b"does not name this collector" in body


def test_a_rebound_page_cannot_read_the_feed_the_developer_can(loopback: Collector) -> None:
    send_identify(loopback, KEY)
    status, _, body = ask(loopback.port, "GET", "/events", f"evil.example:{loopback.port}")
    assert status == 421 and EMAIL.encode() not in body
    assert EMAIL.encode() in read_feed_until(loopback.port, f"127.0.0.1:{loopback.port}", EMAIL.encode())


# -- bound beyond loopback: any Host, and the write key for the page and the feed --


@pytest.mark.parametrize("path", ["/", "/events"])
def test_beyond_loopback_the_debugger_asks_for_the_write_key(everywhere: Collector, path: str) -> None:
    host = f"collector.internal:{everywhere.port}"
    for authorization in (None, basic("not-the-key"), "Bearer " + KEY, basic("")):
        headers = {"Authorization": authorization} if authorization else {}
        status, answer, body = ask(everywhere.port, "GET", path, host, headers)
        assert status == 401, authorization
        assert answer["www-authenticate"].startswith('Basic realm="dreamdata-logging collector"')
        assert "write key as user name" in json.loads(body)["error"] and KEY not in body.decode()
    status, answer, body = ask(everywhere.port, "GET", path, host, {"Authorization": basic(KEY)})
    assert status == 200
    if path == "/":
        assert b"EventSource" in body
    else:
        assert answer["content-type"].startswith("text/event-stream")


def test_beyond_loopback_the_feed_shows_events_to_the_key_holder(everywhere: Collector) -> None:
    send_identify(everywhere, KEY)
    # The batch endpoint takes any Host here, with the key.
    batch = json.dumps({"batch": [{"type": "identify", "userId": "2", "messageId": "m-2"}]}).encode()
    headers = {"Authorization": basic(KEY), "Content-Type": "application/json"}
    status, _, _ = ask(everywhere.port, "POST", "/v1/batch", "collector.internal", headers, batch)
    assert status == 200 and everywhere.accepted == 2
    status, _, body = ask(everywhere.port, "GET", "/events", "10.1.2.3")
    assert status == 401 and EMAIL.encode() not in body
    seen = read_feed_until(everywhere.port, "10.1.2.3", EMAIL.encode(), basic(KEY))
    assert seen.startswith(b"HTTP/1.1 200")


def test_beyond_loopback_without_a_write_key_the_debugger_stays_closed() -> None:
    with Collector(host="0.0.0.0", write_key=None) as c:
        for path in ("/", "/events"):
            status, _, body = ask(c.port, "GET", path, f"127.0.0.1:{c.port}", {"Authorization": basic("any-key")})
            assert status == 403 and "--write-key" in json.loads(body)["error"]
        send_identify(c, "any-non-empty-key")  # the batch endpoint still takes any non-empty key


@pytest.mark.parametrize("key", [None, KEY])
def test_the_command_beyond_loopback_says_how_to_open_the_debugger(key: Optional[str]) -> None:
    command = [sys.executable, "-m", "dreamdata_logging", "collector", "--host", "0.0.0.0", "--port", "0"]
    process = subprocess.Popen(
        command + (["--write-key", key] if key else []), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    watchdog = threading.Timer(30, process.kill)  # a hard bound, should the command hang
    watchdog.start()
    try:
        assert process.stdout is not None
        first, second = process.stdout.readline(), process.stdout.readline()
        port = int(first.split("listening on http://0.0.0.0:")[1].split("/")[0])
        status, _, body = ask(port, "GET", "/", "collector.internal", {"Authorization": basic(key or "any-key")})
        if key is None:
            assert "live event debugger: closed" in second and "--write-key" in second
            assert status == 403
        else:
            assert f"open port {port} of this machine" in second and "user name: the write key" in second
            assert status == 200 and b"EventSource" in body
        assert KEY not in first + second
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
        watchdog.cancel()
