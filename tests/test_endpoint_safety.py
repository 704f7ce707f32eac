"""The transport against a misbehaving endpoint: redirects, unbounded or slow answers, secrets in text, bad config.

Every fault is a real server on loopback (tests/fault_servers.py); 127.0.0.2 plays "another host".
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from dreamdata_logging import DeliveryError, DreamdataHandler, track
from dreamdata_logging.transport.redact import REDACTED, Redactor
from dreamdata_logging.transport.transport import MAX_ANSWER_BYTES, InsecureEndpointWarning, Transport
from dreamdata_logging.wire.rules import Batch

from .fault_servers import (
    FaultServer,
    big_body,
    echo_headers,
    endless_body,
    gzip_bomb,
    redirect,
    respond,
    trickle,
)

KEY = "sk-ENDPOINT-safety-key-93e1"
KEY_FORMS = (
    KEY,
    base64.b64encode(f"{KEY}:".encode()).decode(),
    base64.b64encode(f"{KEY}:".encode()).decode().rstrip("="),
    base64.b64encode(KEY.encode()).decode(),
)
TOKEN = "tok-QUERY-secret-5521"
#: Added to every bound on elapsed time: the machine is small and shared.
MARGIN = 3.0
OTHER_HOST = "127.0.0.2"


def one_batch(user: str = "u") -> Batch:
    message = {"type": "track", "event": "E", "userId": user, "messageId": str(uuid.uuid4()),
               "timestamp": "2020-01-01T00:00:00.000Z"}  # fmt: skip
    return Batch([json.dumps(message).encode()])


@pytest.fixture
def target() -> Iterator[FaultServer]:
    """Where redirects point: another host that accepts anything."""
    with FaultServer(respond(200), host=OTHER_HOST) as server:
        yield server


def make_transport(url: str, **options: Any) -> Transport:
    options.setdefault("max_retries", 0)
    return Transport(url, KEY, **options)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for form in (*KEY_FORMS, TOKEN):
            assert form not in text, f"{form!r} shown in {text!r}"


# -- redirects ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_delivery_that_names_where_it_pointed(status: int, target: FaultServer) -> None:
    location = f"http://user:pw-{TOKEN}@{OTHER_HOST}:{target.port}/v1/batch?token={TOKEN}#frag-{TOKEN}"
    with FaultServer(redirect(status, location)) as origin:
        transport = make_transport(origin.url, max_retries=3)
        with pytest.raises(DeliveryError) as raised:
            transport.send(one_batch())
        transport.close()
    error = raised.value
    assert (error.status, error.retryable) == (status, False)
    assert f"http://{OTHER_HOST}:{target.port}/v1/batch" in str(error)  # where it pointed, scrubbed
    assert "not followed" in str(error) and "final URL" in str(error)
    assert "user" not in str(error) and "frag" not in str(error) and "?" not in str(error).split("batch", 1)[1]
    assert_no_secret(str(error))
    assert len(origin.requests) == 1  # not retried
    assert target.requests == []  # nothing went to the other host, neither a GET nor the data


def test_a_relative_or_missing_location_is_reported_too() -> None:
    with FaultServer(redirect(308, "/elsewhere?token=" + TOKEN)) as origin:
        with pytest.raises(DeliveryError, match=r"redirect to http://127\.0\.0\.1:\d+/elsewhere;") as raised:
            make_transport(origin.url).send(one_batch())
    assert_no_secret(str(raised.value))
    with FaultServer(respond(302)) as origin:
        with pytest.raises(DeliveryError, match="no Location") as raised:
            make_transport(origin.url).send(one_batch())
    assert raised.value.status == 302


def test_handler_flush_is_false_on_a_redirect_and_on_error_gets_the_3xx(target: FaultServer) -> None:
    errors: list[tuple[BaseException, list[Any]]] = []
    with FaultServer(redirect(302, f"http://{OTHER_HOST}:{target.port}/v1/batch")) as origin:
        handler = DreamdataHandler(
            KEY, endpoint=origin.url, flush_interval=60, on_error=lambda e, m: errors.append((e, m))
        )
        log = logging.getLogger(f"test.{uuid.uuid4().hex}")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(handler)
        log.info("Redirected", extra=track(user_id="u1"))
        assert handler.flush(timeout=30) is False
        handler.close()
        log.removeHandler(handler)
    delivery = [(e, m) for e, m in errors if isinstance(e, DeliveryError)]
    assert len(delivery) == 1
    error, messages = delivery[0]
    assert error.status == 302 and not error.retryable and len(messages) == 1
    assert handler.stats()["delivered"] == 0
    assert target.requests == []



def test_an_https_endpoint_redirecting_to_plain_http_gets_no_data_resent(tls_files, target: FaultServer) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    with FaultServer(redirect(307, f"http://{OTHER_HOST}:{target.port}/v1/batch"), tls=context) as origin:
        transport = make_transport(origin.url, verify=tls_files[0])
        with pytest.raises(DeliveryError) as raised:
            transport.send(one_batch())
        transport.close()
        assert len(origin.requests) == 1 and origin.requests[0].body  # the data went to the https endpoint only
    assert raised.value.status == 307 and f"http://{OTHER_HOST}:{target.port}/v1/batch" in str(raised.value)
    assert target.requests == []


# -- bounded answers ---------------------------------------------------------------------------------------

MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    from dreamdata_logging.transport.transport import Transport
    from dreamdata_logging.wire.rules import Batch
    from dreamdata_logging.errors import DeliveryError

    def peak():  # the process's high-water mark of resident memory, in bytes
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    message = b'{"type":"track","event":"E","userId":"u","messageId":"m","timestamp":"2020-01-01T00:00:00.000Z"}'
    warm, cases = sys.argv[1], json.loads(sys.argv[2])
    Transport(warm, "k", max_retries=0).send(Batch([message]))  # imports, first connection, watchdog thread
    report = {}
    start = peak()
    for name, url in cases.items():
        transport = Transport(url, "k", max_retries=0, timeout=20)
        before = peak()
        try:
            transport.send(Batch([message]))
            outcome = "delivered"
        except DeliveryError as exc:
            outcome = f"{exc.status}: {str(exc)[:80]}"
        transport.close()
        report[name] = [peak() - before, outcome]
    report["total"] = [peak() - start, ""]
    print(json.dumps(report))
    """
)

BIG_ANSWERS = {
    "100 MB 2xx body": big_body(200, 100 * 1024 * 1024),
    "100 MB 4xx body": big_body(400, 100 * 1024 * 1024),
    "gzip bomb 2xx": gzip_bomb(200),
    "gzip bomb 4xx": gzip_bomb(400),
    "endless 2xx body": endless_body(200),
    "endless 5xx body": endless_body(503),
}


def test_answers_are_read_only_up_to_a_bound_memory_stays_flat() -> None:
    servers = {name: FaultServer(answer).start() for name, answer in BIG_ANSWERS.items()}
    try:
        with FaultServer(respond(200)) as warm:
            done = subprocess.run(
                [sys.executable, "-c", MEMORY_PROBE, warm.url, json.dumps({n: s.url for n, s in servers.items()})],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    print(json.dumps(report, indent=1))  # shown with -s: the measured growth per answer
    for name in BIG_ANSWERS:
        growth, outcome = report[name]
        assert growth < 20 * 1024 * 1024, (name, growth)
        expected = "delivered" if "2xx" in name else ("400" if "4xx" in name else "503")
        assert outcome.startswith(expected), (name, outcome)
    assert report["total"][0] < 20 * 1024 * 1024
    assert "xxxx" in report["100 MB 4xx body"][1]  # an excerpt of the error answer is still shown


def test_a_gzip_error_answer_is_quoted_inflated() -> None:
    with FaultServer(gzip_bomb(400, inflated=64 * 1024 * 1024, fill=b"Q")) as server:
        with pytest.raises(DeliveryError) as raised:
            make_transport(server.url).send(one_batch())
    assert raised.value.status == 400 and not raised.value.retryable
    assert "HTTP 400" in str(raised.value) and "QQQQQQQQ" in str(raised.value)  # the inflated start


def test_a_connection_whose_answer_was_not_read_to_its_end_is_not_reused() -> None:
    with FaultServer(respond(400, body=b"z" * (4 * MAX_ANSWER_BYTES))) as server:
        transport = make_transport(server.url)
        for _ in range(3):
            with pytest.raises(DeliveryError, match="HTTP 400"):
                transport.send(one_batch())
        transport.close()
    assert len(server.requests) == 3
    assert [r.connection for r in server.requests] == [1, 2, 3]  # a fresh connection each time


def test_a_connection_whose_short_answer_was_read_whole_is_kept_alive() -> None:
    with FaultServer(respond(200, body=b"ok" * 100)) as ok, FaultServer(respond(400, body=b"bad")) as bad:
        good_transport, bad_transport = make_transport(ok.url), make_transport(bad.url)
        for _ in range(3):
            good_transport.send(one_batch())
            with pytest.raises(DeliveryError):
                bad_transport.send(one_batch())
        good_transport.close()
        bad_transport.close()
    assert [r.connection for r in ok.requests] == [1, 1, 1]
    assert [r.connection for r in bad.requests] == [1, 1, 1]


# -- total deadline ----------------------------------------------------------------------------------------


def test_a_trickling_answer_is_cut_at_the_total_deadline() -> None:
    with FaultServer(trickle(200, interval=0.25)) as server:  # about 60 s for the whole answer
        transport = make_transport(server.url, timeout=1)
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="total deadline") as raised:
            transport.send(one_batch())
        elapsed = time.monotonic() - started
        transport.close()
    assert raised.value.retryable and raised.value.status is None
    assert elapsed < 1 + MARGIN


def test_the_deadline_passed_to_send_bounds_a_request_below_its_timeout() -> None:
    with FaultServer(trickle(200, interval=0.25)) as server:
        transport = make_transport(server.url, timeout=60, max_retries=5)
        started = time.monotonic()
        with pytest.raises(DeliveryError):
            transport.send(one_batch(), deadline=time.monotonic() + 1.0)
        elapsed = time.monotonic() - started
        transport.close()
    assert elapsed < 1 + MARGIN


def test_a_2xx_whose_body_trickles_counts_as_delivered_within_the_deadline() -> None:
    with FaultServer(trickle(200, interval=0.25, body=b"x" * 400, head_too=False)) as server:
        transport = make_transport(server.url, timeout=1)
        started = time.monotonic()
        transport.send(one_batch())  # the status arrived: accepted, though the rest was cut off
        elapsed = time.monotonic() - started
        sent = transport.bytes_sent
        transport.close()
    assert sent > 0 and elapsed < 1 + MARGIN


def test_consecutive_requests_each_get_their_own_deadline() -> None:
    """The watchdog re-arms: a slow request after many quick ones is still cut, and quick ones are not."""
    with FaultServer(respond(200)) as quick, FaultServer(trickle(200, interval=0.25)) as slow:
        transport = make_transport(quick.url, timeout=1)
        for _ in range(20):
            transport.send(one_batch())
        slow_transport = make_transport(slow.url, timeout=0.5)
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(DeliveryError, match="total deadline"):
                slow_transport.send(one_batch())
            assert time.monotonic() - started < 0.5 + MARGIN
        transport.send(one_batch())
        transport.close()
        slow_transport.close()
    assert len(quick.requests) == 21


# -- secrets -----------------------------------------------------------------------------------------------


def test_redactor_scrubs_every_form_of_the_key_and_the_url_secrets() -> None:
    key = "key/with+odd=chars-0042"
    url = f"https://api.example.com/v1/batch?token={TOKEN}&x=1#frag-{TOKEN}"
    redactor = Redactor(key, url)
    forms = [
        key,
        base64.b64encode(f"{key}:".encode()).decode(),
        base64.b64encode(f"{key}:".encode()).decode().rstrip("="),
        base64.b64encode(key.encode()).decode(),
        base64.b64encode(key.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(f"{key}:".encode()).decode(),
        quote(key, safe=""),
        quote(key, safe="").lower(),
        quote(key),
        quote_plus(key),
        TOKEN,
        f"token={TOKEN}&x=1",
        f"frag-{TOKEN}",
    ]
    for form in forms:
        text = redactor.scrub(f"before {form} after")
        assert text == f"before {REDACTED} after", (form, text)
    assert redactor.scrub("nothing secret here, HTTP 400") == "nothing secret here, HTTP 400"
    assert key not in repr(redactor) and TOKEN not in repr(redactor)
    userinfo = Redactor(KEY, "https://someone:pa55-word-77@host/v1/batch")
    assert userinfo.scrub("x someone:pa55-word-77 y pa55-word-77 z") == f"x {REDACTED} y {REDACTED} z"


def test_an_error_answer_echoing_the_authorization_header_is_scrubbed() -> None:
    with FaultServer(echo_headers(400)) as server:
        with pytest.raises(DeliveryError) as raised:
            make_transport(f"{server.url}?token={TOKEN}").send(one_batch())
        assert server.requests[0].path.endswith(f"?token={TOKEN}")  # the query string is still sent
        assert server.requests[0].headers["authorization"] == "Basic " + KEY_FORMS[1]
    text = str(raised.value)
    assert "authorization: Basic " + REDACTED in text
    assert_no_secret(text, repr(raised.value), repr(raised.value.args))


def test_the_endpoint_query_and_fragment_never_show(capfd: pytest.CaptureFixture[str]) -> None:
    closed = FaultServer(respond(200))
    closed.stop()  # a port that refuses connections: the network error quotes the URL
    url = f"http://127.0.0.1:{closed.port}/v1/batch?token={TOKEN}#frag"
    transport = make_transport(url)
    assert transport.endpoint == f"http://127.0.0.1:{closed.port}/v1/batch"
    with pytest.raises(DeliveryError) as raised:
        transport.send(one_batch())
    assert "network error" in str(raised.value)
    assert_no_secret(repr(transport), transport.endpoint, str(raised.value))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Transport(f"http://dreamdata.invalid/v1/batch?token={TOKEN}", KEY)
    [warning] = [w for w in caught if issubclass(w.category, InsecureEndpointWarning)]
    assert "http://dreamdata.invalid/v1/batch " in str(warning.message)
    assert_no_secret(str(warning.message))


def test_handler_text_never_shows_the_key_or_the_url_token(capfd: pytest.CaptureFixture[str]) -> None:
    errors: list[tuple[BaseException, list[Any]]] = []
    seen: list[str] = []
    with FaultServer(echo_headers(400)) as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handler = DreamdataHandler(KEY, endpoint=f"{server.url}?token={TOKEN}", flush_interval=60,
                                   on_error=lambda e, m: errors.append((e, m)))  # fmt: skip
        log = logging.getLogger(f"test.{uuid.uuid4().hex}")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(handler)
        log.info("Echoed", extra=track(user_id="u1"))
        assert handler.flush(timeout=30) is False
        seen += [repr(handler), handler.endpoint, str(handler.stats())]
        handler.close()
        log.removeHandler(handler)
    assert errors
    for error, messages in errors:
        seen += [str(error), repr(error), json.dumps(messages, default=str)]
    seen += [str(w.message) for w in caught]
    captured = capfd.readouterr()
    seen += [captured.out, captured.err]
    assert_no_secret(*seen)


# -- construction -------------------------------------------------------------------------------------------

BAD_KEYS = {
    "colon": "abc:def-secret",
    "newline": "abcdef-secret\n",
    "tab": "abc\tdef-secret",
    "non-ascii": "abcdéf-secret",
    "empty": "",
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_a_key_that_cannot_be_sent_is_refused_at_construction_without_echoing_it(key: str) -> None:
    with pytest.raises(ValueError, match="write_key") as raised:
        Transport("http://127.0.0.1:9/v1/batch", key)
    if key:
        assert key.strip() not in str(raised.value) and "secret" not in str(raised.value)
    if key:  # the handler builds its transport in its constructor: the same error reaches the user there
        with pytest.raises(ValueError, match="write_key"):
            DreamdataHandler(key, endpoint="http://127.0.0.1:9/v1/batch")


BAD_ENDPOINTS = {
    "ftp": ("ftp://127.0.0.1/v1/batch", "http"),
    "no scheme": ("127.0.0.1:8080/v1/batch", "http"),
    "no host": ("http:///v1/batch", "no host"),
    "port out of range": ("http://127.0.0.1:99999/v1/batch", "bad port"),
    "port not a number": ("http://127.0.0.1:abc/v1/batch", "bad port"),
    "port zero": ("http://127.0.0.1:0/v1/batch", "bad port"),
    "space": ("http://127.0.0.1/v1/ batch", "spaces"),
    "credentials": (f"https://someone:{TOKEN}@api.example.com/v1/batch", "put credentials in write_key"),
}


@pytest.mark.parametrize("endpoint, reason", BAD_ENDPOINTS.values(), ids=BAD_ENDPOINTS.keys())
def test_an_endpoint_that_cannot_work_is_refused_at_construction(endpoint: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as raised:
        Transport(endpoint, KEY)
    assert_no_secret(str(raised.value))
    with pytest.raises(ValueError, match=reason):
        DreamdataHandler(KEY, endpoint=endpoint)


def test_good_endpoints_are_accepted_and_shown_without_secrets() -> None:
    cases = {
        "http://127.0.0.1:8765": "http://127.0.0.1:8765/v1/batch",
        "HTTPS://api.example.com/": "https://api.example.com/v1/batch",
        f"https://api.example.com/v1/batch?token={TOKEN}#x": "https://api.example.com/v1/batch",
        "http://[::1]:8080/custom/path": "http://[::1]:8080/custom/path",
    }
    for given, shown in cases.items():
        transport = Transport(given, KEY)
        assert transport.endpoint == shown and repr(transport) == f"<Transport {shown}>"

