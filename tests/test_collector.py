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
    with Collector(write_key=KEY, out=out) as c:
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
