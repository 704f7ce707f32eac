"""The local collector: real HTTP on loopback against a started Collector, no mocks."""

from __future__ import annotations

import base64
import copy
import gzip
import http.client
import io
import json
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests

from dreamdata_logging.tools.collector import (
    MAX_BODY_BYTES,
    MAX_MESSAGE_BYTES,
    Collector,
    Fault,
    run_collector,
)

KEY = "wk-secret-7f3a9c"
TS = "2012-12-02T00:30:08.276Z"


def message(n: int = 0, **fields: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "type": "track",
        "messageId": f"m-{n}",
        "timestamp": TS,
        "userId": "019mr8mf4r",
        "event": "Song Played",
        "properties": {"n": n, "name": "Fallin for You"},
        "context": {"library": {"name": "dreamdata-logging", "version": "0"}},
    }
    m.update(fields)
    return m


def batch(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"messageId": "b-1", "sentAt": "2015-12-02T00:30:08.276Z", "batch": list(messages)}
    doc.update(fields)
    return doc


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def post(
    c: Collector,
    body: Any,
    *,
    key: Optional[str] = KEY,
    headers: Optional[dict[str, str]] = None,
    zipped: bool = False,
    session: Optional[requests.Session] = None,
    timeout: float = 5.0,
) -> requests.Response:
    data = body if isinstance(body, bytes) else compact(body)
    sent = {"Content-Type": "application/json"}
    if zipped:
        data = gzip.compress(data)
        sent["Content-Encoding"] = "gzip"
    sent.update(headers or {})
    auth = (key, "") if key is not None else None
    return (session or requests).post(c.url, data=data, headers=sent, auth=auth, timeout=timeout)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "received.jsonl"


@pytest.fixture
def collector(out: Path) -> Iterator[Collector]:
    """Strict (this package's exact format) and keeping everything: what the suite's shared fixture is."""
    with Collector(write_key=KEY, out=out, strict=True, keep=None) as c:
        yield c


# -- accepted ----------------------------------------------------------------------------------------


def test_accepted_batch_is_recorded_and_written(collector: Collector, out: Path) -> None:
    sent = [message(0), message(1, type="identify", traits={"email": "jake@yahoo.com"}, event=None, extra=1)]
    r = post(collector, batch(*sent))
    assert (r.status_code, r.json()) == (200, {"success": True})
    assert collector.received() == sent
    assert [json.loads(line) for line in out.read_text("utf-8").splitlines()] == sent
    [record] = collector.requests()
    assert (record.method, record.path, record.status, record.error) == ("POST", "/v1/batch", 200, None)
    assert record.message_count == 2
    assert record.body_size == record.decoded_size == len(compact(batch(*sent)))
    assert record.headers["Authorization"] == "<redacted>"


def test_out_file_appends_one_line_per_message_across_batches(collector: Collector, out: Path) -> None:
    post(collector, batch(message(0, properties={"text": "café ☕"})))
    post(collector, batch(message(1), message(2)))
    lines = out.read_text("utf-8").splitlines()
    assert [json.loads(line)["messageId"] for line in lines] == ["m-0", "m-1", "m-2"]
    assert "café ☕" in lines[0]  # UTF-8, not \u escapes


def test_url_port_and_any_key_when_none_configured() -> None:
    with Collector() as c:
        assert c.url == f"http://127.0.0.1:{c.port}/v1/batch" and c.port > 0
        assert post(c, batch(message()), key="whatever").status_code == 200
        assert post(c, batch(message()), key="").status_code == 401
    keyed = Collector(write_key=KEY)
    assert KEY not in repr(keyed)
    keyed.stop()


def test_gzip_body_is_decoded(collector: Collector) -> None:
    sent = batch(*(message(i) for i in range(50)))
    r = post(collector, sent, zipped=True)
    assert r.status_code == 200, r.text
    assert len(collector.received()) == 50
    [record] = collector.requests()
    assert record.decoded_size == len(compact(sent)) > record.body_size


def test_chunked_body_is_accepted(collector: Collector) -> None:
    data = compact(batch(message(0), message(1)))
    parts = iter([data[:10], data[10:]])  # a generator makes requests send it chunked
    r = requests.post(
        collector.url, data=parts, headers={"Content-Type": "application/json"}, auth=(KEY, ""), timeout=5
    )
    assert r.status_code == 200, r.text
    assert collector.requests()[0].headers.get("Transfer-Encoding") == "chunked"
    assert len(collector.received()) == 2


def test_body_and_message_limits_are_inclusive(collector: Collector) -> None:
    # A message of exactly 32,000 bytes serialised, in a body of exactly 500,000 bytes: both fit.
    m = message(0, properties={"pad": ""})
    m["properties"]["pad"] = "x" * (MAX_MESSAGE_BYTES - len(compact(m)))
    assert len(compact(m)) == MAX_MESSAGE_BYTES
    doc = batch(m, pad="")
    doc["pad"] = "y" * (MAX_BODY_BYTES - len(compact(doc)))
    assert len(compact(doc)) == MAX_BODY_BYTES
    assert post(collector, doc).status_code == 200
    doc["pad"] += "y"
    assert post(collector, doc).status_code == 413
    m["properties"]["pad"] += "x"
    r = post(collector, batch(message(0), m))
    assert r.status_code == 400 and "batch[1]" in r.json()["error"] and "32,000" in r.json()["error"]


def test_many_events_concurrently(collector: Collector, out: Path) -> None:
    """20,000 events in ~300 KB requests from 4 threads, each with its own keep-alive session."""
    per_request, requests_per_thread, threads = 250, 20, 4
    total = per_request * requests_per_thread * threads
    statuses: list[int] = []

    def send(t: int) -> None:
        with requests.Session() as s:
            for r in range(requests_per_thread):
                first = (t * requests_per_thread + r) * per_request
                doc = batch(*(message(first + i) for i in range(per_request)))
                statuses.append(post(collector, doc, session=s).status_code)

    workers = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    assert collector.wait_for(total, timeout=30)
    for w in workers:
        w.join()
    assert statuses == [200] * (threads * requests_per_thread)
    ids = [m["messageId"] for m in collector.received()]
    assert sorted(ids) == sorted(f"m-{i}" for i in range(total))
    assert [json.loads(line)["messageId"] for line in out.read_text("utf-8").splitlines()] == ids


def test_keep_alive_survives_rejections() -> None:
    with Collector(write_key=KEY) as c:
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=5)
        auth = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
        json_headers = {**auth, "Content-Type": "application/json"}
        attempts = [
            ("POST", "/elsewhere", b"{}", json_headers, 404),
            ("POST", "/v1/batch", b"x" * 600_000, json_headers, 413),  # refused early, body drained
            ("POST", "/v1/batch", compact(batch(message())), {"Content-Type": "application/json"}, 401),
            ("POST", "/v1/batch", compact(batch(message())), json_headers, 200),
        ]
        sockets = set()
        for method, path, body, headers, status in attempts:
            conn.request(method, path, body=body, headers=headers)
            assert conn.sock is not None
            sockets.add(conn.sock)
            response = conn.getresponse()
            response.read()
            assert response.status == status
        assert len(sockets) == 1  # one connection served them all
        conn.close()


# -- rejected ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, header",
    [
        ("wrong-key", None),
        (None, None),
        (None, "Bearer " + KEY),
        (None, "Basic not-base64!!"),
        (None, "Basic " + base64.b64encode(KEY.encode()).decode()),  # no colon
        (None, "Basic " + base64.b64encode(b":").decode()),  # empty username
    ],
    ids=["wrong-key", "missing", "not-basic", "bad-base64", "no-colon", "empty-user"],
)
def test_unauthorised(collector: Collector, key: Optional[str], header: Optional[str]) -> None:
    r = post(collector, batch(message()), key=key, headers={"Authorization": header} if header else None)
    assert r.status_code == 401
    assert r.json()["error"] and KEY not in r.text
    assert collector.received() == []


def test_paths_and_methods(collector: Collector) -> None:
    r = requests.post(collector.url.replace("/v1/batch", "/v1/track"), json={}, auth=(KEY, ""), timeout=5)
    assert r.status_code == 404 and "error" in r.json()
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        r = requests.request(method, collector.url, auth=(KEY, ""), timeout=5)
        assert r.status_code == 405 and r.headers["Allow"] == "POST" and "error" in r.json()
    assert requests.head(collector.url, timeout=5).status_code == 405


def test_gzip_problems(collector: Collector) -> None:
    headers = {"Content-Encoding": "gzip"}
    r = post(collector, b"definitely not gzip", headers=headers)
    assert r.status_code == 400 and "gzip" in r.json()["error"]
    r = post(collector, gzip.compress(compact(batch(message())))[:-5], headers=headers)
    assert r.status_code == 400 and "gzip" in r.json()["error"]
    # Small on the wire, over the limit once decoded: 413, measured on the decoded body.
    doc = batch(message(), pad="z" * MAX_BODY_BYTES)
    r = post(collector, doc, zipped=True)
    assert r.status_code == 413 and collector.requests()[-1].body_size < 10_000


def _set(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc["batch"][1].update(fields)

    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        del doc["batch"][1][key]

    return mutate


def _envelope(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.update(fields)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (_envelope(batch={"not": "a list"}), "'batch'"),
        (_envelope(sentAt="2015-12-02T00:30:08Z"), "'sentAt'"),
        (_envelope(messageId=7), "'messageId'"),
        (_set(timestamp="2012-12-02T00:30:08.276+00:00"), "batch[1] 'timestamp'"),
        (_set(timestamp="2012-12-02 00:30:08.276Z"), "batch[1] 'timestamp'"),
        (_set(timestamp="2012-13-02T00:30:08.276Z"), "batch[1] 'timestamp'"),
        (_drop("messageId"), "batch[1] needs a non-empty string 'messageId'"),
        (_set(messageId=""), "batch[1] needs a non-empty string 'messageId'"),
        (_drop("userId"), "batch[1] needs a non-empty 'userId' or 'anonymousId'"),
        (_set(userId=42), "batch[1] 'userId' must be a string"),
        (_drop("event"), "batch[1] track needs a non-empty string 'event'"),
        (_set(event=""), "batch[1] track needs a non-empty string 'event'"),
        (_set(type="group"), "batch[1] group needs a non-empty string 'groupId'"),
        (_set(type="alias"), "batch[1] alias needs a non-empty string 'previousId'"),
        (_set(type="launch"), "batch[1] 'type' must be one of"),
        (_set(properties=["a", "list"]), "batch[1] 'properties' must be an object"),
        (_set(traits="text"), "batch[1] 'traits' must be an object"),
        (_set(context=None), "batch[1] 'context' must be an object"),
    ],
)
def test_invalid_batches(collector: Collector, mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    doc = batch(message(0), message(1))
    mutate(doc)
    r = post(collector, doc)
    assert r.status_code == 400
    assert expected in r.json()["error"]
    assert collector.received() == []
    assert collector.requests()[0].error == r.json()["error"]


@pytest.mark.parametrize(
    "body, headers, expected",
    [
        (b'{"batch": [', {}, "not valid JSON"),
        (b'{"batch": [], "x": NaN}', {}, "not valid JSON"),
        (b'["a list"]', {}, "JSON object"),
        (b'{"batch": [], "x": "\xff"}', {}, "UTF-8"),
        (compact(batch(message())), {"Content-Type": "text/plain"}, "Content-Type"),
        (compact(batch(message())), {"Content-Encoding": "br"}, "Content-Encoding"),
    ],
    ids=["truncated", "nan", "array", "latin1", "content-type", "brotli"],
)
def test_unreadable_bodies(collector: Collector, body: bytes, headers: dict[str, str], expected: str) -> None:
    r = post(collector, body, headers=headers)
    assert r.status_code == 400 and expected in r.json()["error"]


def test_valid_types_and_anonymous_id(collector: Collector) -> None:
    sent = [
        message(0, type="identify", event=None, userId=None, anonymousId="anon"),
        message(1, type="page", name="Home"),
        message(2, type="screen"),
        message(3, type="group", groupId="g-1"),
        message(4, type="alias", previousId="anon"),
    ]
    assert post(collector, batch(*sent)).status_code == 200
    assert collector.wait_for(5, timeout=1)


# -- faults ------------------------------------------------------------------------------------------


def test_scripted_faults_are_consumed_in_order(collector: Collector) -> None:
    collector.script(Fault(503), Fault(429, headers={"Retry-After": "2"}, body='{"error": "slow down"}'))
    with requests.Session() as s:
        first = post(collector, batch(message(0)), session=s)
        second = post(collector, batch(message(0)), session=s)
        third = post(collector, batch(message(0)), session=s)
    assert first.status_code == 503
    assert (second.status_code, second.headers["Retry-After"], second.json()) == (429, "2", {"error": "slow down"})
    assert third.status_code == 200
    assert [r.status for r in collector.requests()] == [503, 429, 200]
    assert [r.message_count for r in collector.requests()] == [1, 1, 1]  # faults still count what was sent
    assert len(collector.received()) == 1


def test_outage_and_recovery(collector: Collector) -> None:
    collector.set_down(Fault(503, body="down for maintenance"))
    collector.script(Fault(500))  # waits out the outage
    for _ in range(3):
        r = post(collector, batch(message()))
        assert (r.status_code, r.text, r.headers["Content-Type"]) == (
            503,
            "down for maintenance",
            "text/plain; charset=utf-8",
        )
    collector.set_down(None)
    assert post(collector, batch(message())).status_code == 500
    assert post(collector, batch(message())).status_code == 200
    assert collector.wait_for(1, timeout=1)


def test_dropped_connection_is_a_connection_error(collector: Collector) -> None:
    collector.script(Fault(drop=True))
    with pytest.raises(requests.exceptions.ConnectionError):
        post(collector, batch(message()))
    assert collector.requests()[0].status == 0
    assert post(collector, batch(message())).status_code == 200


def test_short_stall_then_answer(collector: Collector) -> None:
    collector.script(Fault(503, delay=0.2))
    started = time.monotonic()
    assert post(collector, batch(message()), timeout=5).status_code == 503
    assert time.monotonic() - started >= 0.2


def test_stall_times_out_client_and_stop_ends_it(collector: Collector) -> None:
    collector.script(Fault(delay=30))
    with pytest.raises(requests.exceptions.Timeout):
        post(collector, batch(message()), timeout=0.3)
    started = time.monotonic()
    collector.stop()
    assert time.monotonic() - started < 1.0
    [record] = collector.requests()
    assert record.status == 0 and "stopped during the stall" in (record.error or "")
    collector.stop()  # idempotent


def test_wait_for_times_out_and_reset_forgets(collector: Collector) -> None:
    assert not collector.wait_for(1, timeout=0.05)
    post(collector, batch(message()))
    assert collector.wait_for(1, timeout=1)
    collector.reset()
    assert collector.received() == [] and collector.requests() == []
    assert not collector.wait_for(1, timeout=0.01)


def test_stopped_collector_cannot_restart_but_port_is_reusable() -> None:
    c = Collector().start()
    port = c.port
    assert c.start() is c  # already serving: no-op
    c.stop()
    with pytest.raises(RuntimeError):
        c.start()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(c.url, json={}, timeout=2)
    with Collector(port=port) as again:
        assert post(again, batch(message())).status_code == 200
    Collector().stop()  # never started: stop must not hang


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault(status=100)
    with pytest.raises(ValueError):
        Fault(delay=-1)


# -- printed output ----------------------------------------------------------------------------------


def test_verbose_output_never_shows_the_key(capfd: pytest.CaptureFixture[str], out: Path) -> None:
    with Collector(write_key=KEY, out=out, verbose=True) as c:
        post(c, batch(message(0), message(1)))
        post(c, batch(message()), key=KEY + "-other")
        post(c, batch(message()), headers={"Authorization": "Basic " + base64.b64encode(KEY.encode()).decode()})
        post(c, b"{oops")
    printed = capfd.readouterr()
    lines = printed.out.splitlines()
    assert len(lines) == 4
    assert " 200 POST /v1/batch 2 messages" in lines[0] and " 401 " in lines[1] and " 400 " in lines[3]
    text = printed.out + printed.err
    assert KEY not in text and base64.b64encode(KEY.encode()).decode()[:12] not in text


class _Tee(io.StringIO):
    """stdout for run_collector: keeps what is written and signals once it printed its URL."""

    def __init__(self) -> None:
        super().__init__()
        self.listening = threading.Event()

    def write(self, text: str) -> int:
        n = super().write(text)
        if "listening on" in self.getvalue():
            self.listening.set()
        return n


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_run_collector_serves_until_ctrl_c(monkeypatch: pytest.MonkeyPatch, out: Path) -> None:
    with socket.socket() as probe:  # a free port for the command, which takes a fixed one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stdout = _Tee()
    monkeypatch.setattr(sys, "stdout", stdout)
    results: dict[str, int] = {}

    def client() -> None:
        try:
            assert stdout.listening.wait(10)
            url = stdout.getvalue().split("listening on ")[1].split()[0]
            data = compact(batch(message()))
            for key in (KEY, "intruder"):
                r = requests.post(
                    url, data=data, auth=(key, ""), headers={"Content-Type": "application/json"}, timeout=5
                )
                results[key] = r.status_code
        finally:  # Ctrl-C, whatever happened, so the command returns
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    thread = threading.Thread(target=client)
    thread.start()
    assert run_collector("127.0.0.1", port, KEY, str(out)) == 0
    thread.join()
    assert results == {KEY: 200, "intruder": 401}
    printed = stdout.getvalue()
    assert f"http://127.0.0.1:{port}/v1/batch" in printed and "stopped" in printed
    assert KEY not in printed
    assert len(out.read_text("utf-8").splitlines()) == 1


def test_copies_are_copies(collector: Collector) -> None:
    post(collector, batch(message()))
    collector.received().clear()
    records = collector.requests()
    records[0].status = 999
    assert len(collector.received()) == 1 and collector.requests()[0].status == 200
    assert copy.deepcopy(collector.received()) == [message()]


# -- what the real API accepts from other clients (the default) ---------------------------------------

# Request bodies as Segment-style SDKs (Dreamdata's Go SDK among them) send them: RFC 3339 timestamps
# without milliseconds or with offsets, no envelope messageId, a batch-level context.
GO_SDK_BODIES: list[dict[str, Any]] = [
    {
        "batch": [
            {
                "type": "track",
                "event": "Download",
                "messageId": "I'm unique",
                "userId": "123456",
                "properties": {"application": "Segment Desktop", "platform": "osx", "version": "1.1.0"},
                "context": {"whatever": "here", "library": {"name": "mine", "version": "9"}},
                "timestamp": "2019-01-01T00:00:00Z",
            }
        ],
        "context": {"library": {"name": "analytics-go", "version": "3.0.0"}, "ip": "24.5.68.47"},
        "sentAt": "2019-01-01T00:00:00Z",
    },
    {
        "batch": [
            {"type": "identify", "userId": "123456", "traits": {"email": "jake@yahoo.com"},
             "timestamp": "2019-01-01T02:00:00+02:00", "messageId": "i-1"},
            {"type": "group", "anonymousId": "anon-1", "groupId": "g-1",
             "timestamp": "2019-01-01T00:00:00.123456-05:30"},
            {"type": "page", "userId": "123456", "name": "Pricing", "timestamp": "2019-01-01t00:00:00z"},
            {"type": "screen", "userId": "123456", "name": "Home"},
            {"type": "alias", "userId": "123456", "previousId": "anon-1", "timestamp": "2016-12-31T23:59:60Z"},
        ],
        "messageId": "batch-without-uuid",
        "context": {"library": {"name": "analytics-go", "version": "3.0.0"}},
    },
]


def test_bodies_of_other_sdks_are_accepted_with_the_batch_context_merged() -> None:
    with Collector(write_key=KEY, keep=None) as lenient:
        for body in GO_SDK_BODIES:
            r = post(lenient, body)
            assert r.status_code == 200, r.text
        received = lenient.received()
    assert [m["type"] for m in received] == ["track", "identify", "group", "page", "screen", "alias"]
    # The message's own context keys win; the batch's fill in the rest.
    assert received[0]["context"] == {
        "whatever": "here",
        "library": {"name": "mine", "version": "9"},
        "ip": "24.5.68.47",
    }
    assert all(m["context"]["library"]["name"] == "analytics-go" for m in received[1:])
    assert received[1]["timestamp"] == "2019-01-01T02:00:00+02:00"  # kept as sent


def test_strict_refuses_what_this_package_never_sends() -> None:
    with Collector(write_key=KEY, strict=True) as strict:
        r = post(strict, GO_SDK_BODIES[0])
        assert r.status_code == 400 and "'messageId'" in r.json()["error"] and "(strict)" in r.json()["error"]
        r = post(strict, {**GO_SDK_BODIES[0], "messageId": "b-1", "sentAt": "2015-12-02T00:30:08.276Z"})
        assert r.status_code == 400 and r.json()["error"].startswith("batch[0] 'timestamp' must be RFC 3339 UTC")
        assert post(strict, batch(message(0), context={"ip": "24.5.68.47"})).status_code == 200
        assert strict.received()[0]["context"]["ip"] == "24.5.68.47"


@pytest.mark.parametrize(
    "timestamp",
    ["2019-01-01 00:00:00Z", "2019-01-01T00:00Z", "2019-02-30T00:00:00Z", "2019-01-01T24:00:00Z",
     "2019-01-01T00:00:00+25:00", "2019-01-01T00:00:00", "1546300800", 1546300800, "", None],
)  # fmt: skip
def test_lenient_still_refuses_what_is_not_rfc_3339(timestamp: Any) -> None:
    with Collector() as lenient:
        r = post(lenient, {"batch": [message(0, timestamp=timestamp)]}, key="any")
        assert r.status_code == 400 and "batch[0] 'timestamp' must be an RFC 3339 date-time" in r.json()["error"]
        for bad, expected in (
            ({"batch": [message(0)], "context": "x"}, "the batch's 'context' must be an object"),
            ({"batch": [message(0)], "sentAt": "yesterday"}, "'sentAt' must be an RFC 3339"),
            ({"batch": [message(0, messageId="")]}, "batch[0] 'messageId' must be a non-empty string"),
        ):
            r = post(lenient, bad, key="any")
            assert r.status_code == 400 and expected in r.json()["error"]


# -- bounded memory ------------------------------------------------------------------------------------


def test_keep_bounds_what_is_held_but_every_message_is_counted_and_written(out: Path) -> None:
    with Collector(write_key=KEY, out=out, keep=3) as c:
        for n in range(10):
            assert post(c, batch(message(n))).status_code == 200
        assert c.wait_for(10, timeout=1) and c.accepted == 10 and c.request_count == 10
        assert [m["messageId"] for m in c.received()] == ["m-7", "m-8", "m-9"]
        assert len(c.requests()) == 3
        c.reset()
        assert c.accepted == 0 and c.received() == [] and not c.wait_for(1, timeout=0.01)
    assert len(out.read_text("utf-8").splitlines()) == 10
    with pytest.raises(ValueError):
        Collector(keep=-1)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cli_collector_memory_stays_flat_while_100k_messages_pass(tmp_path: Path) -> None:
    import subprocess

    received = tmp_path / "all.jsonl"
    log = tmp_path / "collector.log"
    with log.open("w") as printed:
        process = subprocess.Popen(
            [sys.executable, "-m", "dreamdata_logging", "collector", "--port", "0", "--out", str(received)],
            stdout=printed,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        url = log.read_text().split("listening on ")[1].split()[0]
        per_request, total = 500, 100_000

        def send(session: requests.Session, first: int) -> None:
            doc = batch(*(message(first + i) for i in range(per_request)))
            r = session.post(url, data=compact(doc), headers={"Content-Type": "application/json"}, auth=("k", ""))
            assert r.status_code == 200, r.text

        with requests.Session() as session:
            for first in range(0, 10_000, per_request):  # warm up: the kept window fills
                send(session, first)
            before = _rss_kib(process.pid)
            for first in range(10_000, total, per_request):
                send(session, first)
            after = _rss_kib(process.pid)
        lines = received.read_text("utf-8").splitlines()
        assert len(lines) == total and json.loads(lines[-1])["messageId"] == f"m-{total - 1}"
        # Holding 90,000 more messages would cost well over 100 MB; the kept window and feed are bounded.
        print(f"collector RSS: {before} KiB after 10,000 messages, {after} KiB after {total:,}")
        assert after - before < 25 * 1024, (before, after)
    finally:
        process.terminate()
        process.wait(10)


# -- bounded requests: size, framing, encoding, time, headers ------------------------------------------


def _raw(c: Collector, head: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", c.port), timeout=timeout)
    auth = base64.b64encode(f"{KEY}:".encode()).decode()
    sock.sendall(
        f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:{c.port}\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: application/json\r\n{head}\r\n".encode()
    )
    return sock


def _answer(sock: socket.socket) -> bytes:
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_a_huge_declared_length_is_refused_without_reading_the_body(collector: Collector) -> None:
    sock = _raw(collector, "Content-Length: 10000000000\r\n")
    try:
        answer = _answer(sock)  # no body was sent: the answer cannot have waited for it
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413") and b"Connection: close" in answer
    assert b"10,000,000,000 bytes; the limit is 500,000" in answer


def test_an_endless_chunked_body_is_cut_off(collector: Collector) -> None:
    sock = _raw(collector, "Transfer-Encoding: chunked\r\n")
    sent = 0
    stop = threading.Event()

    def flood() -> None:
        nonlocal sent
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        try:
            while not stop.is_set():
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the collector stopped reading and closed

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        answer = _answer(sock)
    finally:
        stop.set()
        sock.close()
        flooder.join(10)
    assert answer.startswith(b"HTTP/1.1 413")
    [record] = collector.requests()
    assert record.status == 413 and record.body_size <= 3 * 1024 * 1024  # read no further than the drain bound
    assert not flooder.is_alive()


def test_a_gzip_bomb_is_inflated_no_further_than_the_limit(collector: Collector) -> None:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"0" * (1 << 20)
    bomb = b"".join(squeeze.compress(zeros) for _ in range(300)) + squeeze.flush()  # 300 MB inflated
    assert len(bomb) < MAX_BODY_BYTES
    r = post(collector, bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "decoded body is over 500,000 bytes" in r.json()["error"]
    assert collector.requests()[-1].decoded_size == MAX_BODY_BYTES + 1


def test_a_slow_client_is_cut_off_after_the_request_deadline() -> None:
    with Collector(write_key=KEY, request_timeout=0.5) as c:
        started = time.monotonic()
        sock = _raw(c, "Content-Length: 100\r\n")
        sock.sendall(b'{"batch": [')  # then nothing more
        try:
            answer = _answer(sock)
        finally:
            sock.close()
        assert time.monotonic() - started < 10  # a generous bound on a 0.5 s deadline
        assert answer.startswith(b"HTTP/1.1 408") and b"not complete within 0.5 s" in answer
        # Headers that never end are cut off too.
        sock = socket.create_connection(("127.0.0.1", c.port), timeout=10)
        sock.sendall(f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:{c.port}\r\nX-Slow: ".encode())
        ended = time.monotonic()
        try:
            while sock.recv(65536):  # the connection ends: closed, perhaps after an answer
                pass
        except ConnectionResetError:
            pass
        finally:
            sock.close()
        assert time.monotonic() - ended < 10  # not the 30 s idle timeout: the 0.5 s request deadline
        assert post(c, batch(message())).status_code == 200  # others are served all along


def test_headers_are_bounded(collector: Collector) -> None:
    head = "".join(f"X-Filler-{i}: {'y' * 1000}\r\n" for i in range(60))  # 60 KB of headers
    sock = _raw(collector, head + "Content-Length: 2\r\n")
    try:
        answer = _answer(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431") and b"must fit in 32,768 bytes" in answer
    assert collector.requests()[-1].status == 431


def test_a_scripted_stall_longer_than_the_request_deadline_keeps_its_connection() -> None:
    with Collector(write_key=KEY, request_timeout=0.2) as c:
        c.script(Fault(200, body='{"success": true}', delay=0.6))
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=5)
        auth = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        statuses = []
        for n in range(2):  # the stall is the collector's doing, not a slow client: the connection stays
            conn.request("POST", "/v1/batch", body=compact(batch(message(n))), headers=headers)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        conn.close()
        assert statuses == [200, 200] and c.accepted == 1
