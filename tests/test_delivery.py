"""Delivery under faults, against the real local collector: retries, Retry-After, 413 splits, refusals,
interruptible waits, bounded memory, outage and recovery, threads, recursion and the write key's secrecy.

Every fault is injected over real HTTP, by the collector or by a small fault server (which also keeps each
request's body). Backoff waits are shortened by giving the transport a shorter :class:`Backoff` (or by the
fault's own ``Retry-After: 0``); time is only ever asserted as a generous upper bound that proves nothing
hangs, or as a lower bound that proves a wait happened.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from dreamdata_logging import DeliveryError, DreamdataHandler, track
from dreamdata_logging.errors import PayloadTooLargeError
from dreamdata_logging.tools.collector import Collector, Fault
from dreamdata_logging.transport import transport as transport_module
from dreamdata_logging.transport.transport import Backoff, InsecureEndpointWarning, Transport, retry_after_seconds
from dreamdata_logging.wire.rules import Batch

from .conftest import WRITE_KEY
from .fault_servers import Answer, FaultServer, in_turn, raw, respond, stall
from .scenarios.timings import QUICK_BACKOFF

SCENARIOS = Path(__file__).parent / "scenarios"
#: Added to any bound we assert on elapsed time: the machine is small and shared.
MARGIN = 2.0


# -- helpers ---------------------------------------------------------------------------------------


def emit(log: logging.Logger, count: int, prefix: str = "u", start: int = 0, pad: int = 0) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(start, start + count)]
    for i, user in zip(range(start, start + count), ids):
        log.info("Delivered", extra=track(user_id=user, properties={"seq": i, "pad": "x" * pad}))
    return ids


def user_ids(collector: Collector) -> list[str]:
    return [m["userId"] for m in collector.received()]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a condition that has no event to wait on (e.g. 'the collector has seen a request')."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


class Errors:
    """An ``on_error`` that keeps what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[BaseException, list[Any]]] = []

    def __call__(self, error: BaseException, messages: list[Any]) -> None:
        self.calls.append((error, messages))

    def delivery(self) -> list[tuple[BaseException, list[Any]]]:
        return [(e, m) for e, m in self.calls if isinstance(e, DeliveryError)]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/batch"


# -- retry policy ------------------------------------------------------------------------------------

RETRYABLE: dict[str, Answer] = {
    "500": respond(500, body=b"internal error"),
    "502": respond(502),
    "503": respond(503),
    "504": respond(504),
    "408": respond(408),
    "429-retry-after-0": respond(429, {"Retry-After": "0"}),
    "dropped-connection": raw(b""),  # reads the request, closes the connection unanswered
    "stall-past-timeout": stall(5.0, respond(200)),
}


@pytest.mark.parametrize("fault", RETRYABLE.values(), ids=RETRYABLE.keys())
def test_retryable_fault_is_retried_with_the_same_message_ids(fault, make_handler, make_logger):
    errors = Errors()
    with FaultServer(in_turn(fault, fault, then=respond(200))) as server:
        handler = make_handler(
            endpoint=server.url, timeout=0.5, on_error=errors, flush_interval=60, backoff=QUICK_BACKOFF
        )
        log = make_logger(handler)
        started = time.monotonic()
        sent = emit(log, 5)
        assert handler.flush(timeout=30)
        elapsed = time.monotonic() - started
        bodies = [json.loads(request.body) for request in server.requests]

    assert len(bodies) == 3  # two faults, then the success
    attempts = [[m["messageId"] for m in body["batch"]] for body in bodies]
    assert attempts[0] == attempts[1] == attempts[2] and len(set(attempts[0])) == 5  # the same every attempt
    assert sorted(m["userId"] for m in bodies[2]["batch"]) == sorted(sent)  # delivered, each once
    stats = handler.stats()
    assert (stats["delivered"], stats["failed"], stats["retries"]) == (5, 0, 2)
    assert errors.calls == []
    assert elapsed < 2 * 0.5 + 5 + MARGIN  # the stall costs at most two request timeouts


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_is_success(status, collector, make_handler, make_logger):
    handler = make_handler(flush_interval=60)
    log = make_logger(handler)
    collector.script(Fault(status))
    emit(log, 3)
    assert handler.flush(timeout=10)
    stats = handler.stats()
    assert (stats["delivered"], stats["failed"], stats["retries"], stats["requests"]) == (3, 0, 0, 1)


def test_retry_after_seconds_is_waited(collector, make_handler, make_logger):
    handler = make_handler(flush_interval=60, backoff=QUICK_BACKOFF)
    log = make_logger(handler)
    collector.script(Fault(429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    emit(log, 2)
    assert handler.flush(timeout=30)
    elapsed = time.monotonic() - started
    assert len(collector.received()) == 2 and handler.stats()["retries"] == 1
    assert 0.9 <= elapsed < 1 + MARGIN  # it waited the server's second, not the (tiny) backoff


def test_retry_after_http_date_is_waited(collector, make_handler, make_logger):
    handler = make_handler(flush_interval=60, backoff=QUICK_BACKOFF)
    log = make_logger(handler)
    when = email.utils.formatdate(time.time() + 3, usegmt=True)  # whole seconds: a wait of 2 to 3 s
    collector.script(Fault(503, headers={"Retry-After": when}))
    started = time.monotonic()
    emit(log, 2)
    assert handler.flush(timeout=30)
    elapsed = time.monotonic() - started
    assert len(collector.received()) == 2
    assert 1.0 <= elapsed < 3 + MARGIN


def test_huge_retry_after_is_clamped(collector, make_handler, make_logger):
    handler = make_handler(flush_interval=60, backoff=Backoff(base=0.01, cap=0.05, retry_after_cap=0.2))
    log = make_logger(handler)
    collector.script(Fault(503, headers={"Retry-After": "86400"}))
    started = time.monotonic()
    emit(log, 2)
    assert handler.flush(timeout=30)
    assert len(collector.received()) == 2
    assert time.monotonic() - started < 0.2 + MARGIN


def test_retry_after_parsing_and_clamping():
    cap = transport_module.RETRY_AFTER_CAP
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("0") == 0.0
    assert retry_after_seconds("1.5") == 1.5
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("999999") == cap
    in_30s = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27.0 <= (retry_after_seconds(in_30s) or 0.0) <= 30.0
    assert retry_after_seconds(email.utils.formatdate(time.time() - 3600, usegmt=True)) == 0.0
    assert retry_after_seconds(email.utils.formatdate(time.time() + 86400, usegmt=True)) == cap
    for bad in (None, "", "soon", "Mon, 99 Foo 2020"):
        assert retry_after_seconds(bad) is None  # then the backoff applies


class RecordingEvent(threading.Event):
    """A ``cancel`` event that notes each backoff wait the transport asks of it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: Optional[float] = None) -> bool:
        if timeout is not None:
            self.waits.append(timeout)
        return super().wait(timeout)


def one_batch() -> Batch:
    message = {"type": "track", "event": "E", "userId": "u", "messageId": "m", "timestamp": "2020-01-01T00:00:00.000Z"}
    return Batch([json.dumps(message).encode()])


def test_backoff_is_exponential_with_full_jitter_and_gives_up_after_max_retries(collector):
    collector.set_down(Fault(503))
    transport = Transport(collector.url, WRITE_KEY, max_retries=12, backoff=Backoff(base=0.001, cap=0.004))
    cancel = RecordingEvent()
    with pytest.raises(DeliveryError, match="gave up after 12 retries") as raised:
        transport.send(one_batch(), cancel=cancel)
    assert raised.value.status == 503 and raised.value.retryable
    assert len(collector.requests()) == 13 and transport.retries == 12
    assert len(cancel.waits) == 12
    for attempt, wait in enumerate(cancel.waits):  # uniform in [0, min(cap, base * 2**n)]
        assert 0.0 <= wait <= min(0.004, 0.001 * 2**attempt)
    assert len(set(cancel.waits)) > 1  # jittered, not a fixed schedule


def test_total_retry_wait_is_capped(collector):
    collector.set_down(Fault(503, headers={"Retry-After": "0.2"}))
    transport = Transport(collector.url, WRITE_KEY, max_retries=1000, backoff=Backoff(wait_budget=0.5))
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="retry budget"):
        transport.send(one_batch())
    assert len(collector.requests()) == 3  # waits of 0.2 + 0.2; a third would pass 0.5
    assert time.monotonic() - started < 0.5 + MARGIN


def test_max_retries_then_on_error_with_the_events(collector, make_handler, make_logger):
    errors = Errors()
    handler = make_handler(max_retries=3, on_error=errors, flush_interval=60)
    log = make_logger(handler)
    collector.set_down(Fault(503, headers={"Retry-After": "0"}))
    sent = emit(log, 4)
    assert handler.flush(timeout=30) is False
    assert len(collector.requests()) == 4  # the first try and 3 retries
    stats = handler.stats()
    assert (stats["delivered"], stats["failed"], stats["retries"]) == (0, 4, 3)
    [(error, messages)] = errors.delivery()
    assert error.status == 503 and "HTTP 503" in str(error)  # type: ignore[attr-defined]
    assert [m["userId"] for m in messages] == sent


# -- 413 and refusals --------------------------------------------------------------------------------


def test_413_splits_the_batch_and_resends_the_halves(collector, make_handler, make_logger):
    handler = make_handler(flush_interval=60)
    log = make_logger(handler)
    collector.script(Fault(413), Fault(413))  # the 8-message batch, then its first half of 4
    sent = emit(log, 8)
    assert handler.flush(timeout=30)
    assert sorted(user_ids(collector)) == sorted(sent)
    assert Counter(m["messageId"] for m in collector.received()).most_common(1)[0][1] == 1
    assert [r.message_count for r in collector.requests()] == [8, 4, 2, 2, 4]
    assert handler.stats()["failed"] == 0


def test_413_on_a_single_message_drops_it_with_the_reason(collector, make_handler, make_logger, caplog):
    errors = Errors()
    handler = make_handler(flush_interval=60, on_error=errors)
    log = make_logger(handler)
    collector.script(Fault(413, body='{"error": "entity too large"}'))
    emit(log, 1, "refused")
    assert handler.flush(timeout=10) is False
    sent = emit(log, 2, "next")
    assert handler.flush(timeout=10)
    assert user_ids(collector) == sent  # the neighbours arrive
    [(error, messages)] = errors.delivery()
    assert isinstance(error, PayloadTooLargeError) and error.status == 413
    assert "entity too large" in str(error)
    assert [m["userId"] for m in messages] == ["refused-0"]
    assert handler.stats()["failed"] == 1
    assert any("could not be delivered" in r.getMessage() and "413" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [404, 409, 422])  # 400: see test_refusals.py
def test_other_4xx_is_not_retried_and_reported_with_an_excerpt(status, collector, make_handler, make_logger):
    errors = Errors()
    handler = make_handler(flush_interval=60, on_error=errors)
    log = make_logger(handler)
    body = json.dumps({"error": "batch[0] is malformed " + "blah " * 1000})
    collector.script(Fault(status, body=body))
    sent = emit(log, 3)
    assert handler.flush(timeout=10) is False
    assert len(collector.requests()) == 1  # no retry
    [(error, messages)] = errors.delivery()
    assert isinstance(error, DeliveryError) and error.status == status and not error.retryable
    text = str(error)
    assert f"HTTP {status}" in text and "batch[0] is malformed" in text
    assert len(text) < 400  # an excerpt, not the 5 kB body
    assert [m["userId"] for m in messages] == sent
    assert handler.stats()["failed"] == 3 and handler.stats()["retries"] == 0


@pytest.mark.parametrize("status", [401, 403])
def test_401_403_say_the_write_key_was_rejected(status, collector, make_handler, make_logger):
    errors = Errors()
    handler = make_handler(flush_interval=60, on_error=errors)
    log = make_logger(handler)
    collector.script(Fault(status, body='{"error": "invalid write key"}'))
    emit(log, 2)
    assert handler.flush(timeout=10) is False
    assert len(collector.requests()) == 1
    [(error, _)] = errors.delivery()
    assert "write key was rejected" in str(error) and error.status == status  # type: ignore[attr-defined]
    assert WRITE_KEY not in str(error)


# -- waits never trap flush()/close() ---------------------------------------------------------------


def test_waits_are_interruptible_and_close_delivers_once_the_endpoint_is_back(collector, make_handler, make_logger):
    handler = make_handler(flush_interval=0.05, shutdown_timeout=5)
    log = make_logger(handler)
    collector.set_down(Fault(503, headers={"Retry-After": "30"}))  # the worker now sleeps 30 s before its retry
    sent = emit(log, 3)
    assert wait_until(lambda: len(collector.requests()) >= 1)

    started = time.monotonic()
    assert handler.flush(timeout=0.2) is False  # flush is not stuck behind the backoff
    sent += emit(log, 2, start=3)  # nor is emit
    assert handler.stats()["queued"] == 5  # nor stats
    assert time.monotonic() - started < 0.2 + MARGIN

    collector.set_down(None)
    started = time.monotonic()
    handler.close()
    elapsed = time.monotonic() - started
    assert sorted(user_ids(collector)) == sorted(sent)  # the wait was cut short and the retry delivered
    assert elapsed < 5 + MARGIN


def test_close_during_a_request_answered_with_a_long_retry_after_makes_one_last_attempt(
    collector, make_handler, make_logger
):
    handler = make_handler(flush_interval=0.05, shutdown_timeout=5)
    log = make_logger(handler)
    collector.script(Fault(503, headers={"Retry-After": "30"}, delay=1.0))  # answered while close() waits
    sent = emit(log, 3)
    assert wait_until(lambda: len(collector.requests()) >= 1)  # the request is in flight, stalled
    started = time.monotonic()
    handler.close()
    assert sorted(user_ids(collector)) == sorted(sent)  # a 30 s wait would not fit: it tried once more at once
    assert time.monotonic() - started < 5 + MARGIN
    assert handler.stats()["retries"] == 1


DOWN = {
    "503-retry-after-30": Fault(503, headers={"Retry-After": "30"}),
    "503-default-backoff": Fault(503),
    "stall": Fault(200, delay=30),
    "dropped-connection": Fault(drop=True),
    "closed-port": None,
}


@pytest.mark.parametrize("fault", DOWN.values(), ids=DOWN.keys())
def test_close_with_the_endpoint_down_returns_within_shutdown_timeout(
    fault, collector, make_handler, make_logger, capfd
):
    endpoint = closed_port_url() if fault is None else collector.url
    handler = make_handler(endpoint=endpoint, shutdown_timeout=1, flush_interval=0.05)
    log = make_logger(handler)
    if fault is not None:
        collector.set_down(fault)
    emit(log, 5)
    if fault is not None:
        assert wait_until(lambda: len(collector.requests()) >= 1)
    started = time.monotonic()
    handler.close()
    elapsed = time.monotonic() - started
    assert elapsed < 1 + MARGIN
    err = capfd.readouterr().err
    assert "dreamdata-logging: 5 event(s) were not delivered" in err and "shutdown_timeout=1s" in err
    handler.close()  # twice is fine
    assert handler.stats()["delivered"] == 0


# -- bounded memory --------------------------------------------------------------------------------


def test_full_queue_drops_new_events_counts_and_warns_once(collector, make_handler, make_logger, caplog):
    handler = make_handler(max_queue_size=10, flush_at=5, flush_interval=0.05, shutdown_timeout=5)
    log = make_logger(handler)
    collector.set_down(Fault(503, headers={"Retry-After": "30"}))
    started = time.monotonic()
    sent = emit(log, 100)
    assert time.monotonic() - started < 5  # emit never waits for the queue
    stats = handler.stats()
    assert (stats["queued"], stats["dropped_queue_full"]) == (10, 90)
    warnings_seen = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(warnings_seen) == 1  # rate-limited
    assert warnings_seen[0].name == "dreamdata_logging" and warnings_seen[0].levelno == logging.WARNING

    collector.set_down(None)
    handler.close()
    assert sorted(user_ids(collector)) == sorted(sent[:10])  # the held ones; the new ones were dropped


def test_byte_bound_holds(collector, make_handler, make_logger):
    handler = make_handler(max_queue_bytes=32_000, flush_interval=60, shutdown_timeout=5)
    log = make_logger(handler)
    collector.set_down(Fault(503, headers={"Retry-After": "30"}))
    emit(log, 100, pad=1000)  # ~1.1 kB each
    stats = handler.stats()
    assert 20 <= stats["queued"] <= 29  # 32,000 bytes of them
    assert stats["dropped_queue_full"] == 100 - stats["queued"]
    assert handler._worker.buffer.held_bytes <= 32_000
    collector.set_down(None)
    assert handler.flush(timeout=30)
    assert len(collector.received()) == stats["queued"]


def test_memory_stays_flat_through_a_long_outage(collector):
    """In a subprocess: 30,000 events of ~500 bytes into a 2,000-event queue while every request fails."""
    collector.set_down(Fault(503))
    run = subprocess.run(
        [sys.executable, str(SCENARIOS / "outage_memory.py"), collector.url, "30000"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    stats = result["stats"]
    assert stats["dropped_queue_full"] >= 15_000 and stats["delivered"] == 0
    assert stats["dropped_queue_full"] + stats["failed"] + stats["queued"] == stats["emitted"] == 30_000
    assert result["stats"]["queued"] <= 2000
    growth = result["traced_end"] - result["traced_warm"]
    assert growth < 2_000_000, result  # Python heap after warm-up vs at the end
    assert result["rss_end"] - result["rss_warm"] < 20_000_000, result


# -- outage and recovery ------------------------------------------------------------------------------


def test_outage_then_recovery_loses_nothing_within_the_retry_budget(collector, make_handler, make_logger):
    handler = make_handler(flush_interval=0.05, flush_at=10, max_retries=1000, backoff=Backoff(base=0.02, cap=0.1))
    log = make_logger(handler)
    collector.set_down(Fault(503))
    started = time.monotonic()
    sent = emit(log, 30)
    assert wait_until(lambda: len(collector.requests()) >= 5)  # it keeps retrying through the outage
    sent += emit(log, 20, start=30)
    collector.set_down(Fault(drop=True))  # the outage changes character
    assert wait_until(lambda: sum(r.status == 0 for r in collector.requests()) >= 2)
    collector.set_down(None)
    assert handler.flush(timeout=30)
    assert time.monotonic() - started < 30
    assert sorted(user_ids(collector)) == sorted(sent)  # all of them, once
    stats = handler.stats()
    assert stats["failed"] == 0 and stats["dropped_queue_full"] == 0 and stats["retries"] >= 7


# -- threads -----------------------------------------------------------------------------------------


def test_many_threads_emit_while_another_flushes(collector, make_handler, make_logger):
    handler = make_handler(flush_at=50, flush_interval=0.01)
    log = make_logger(handler)
    collector.script(*[Fault(503, headers={"Retry-After": "0"})] * 3, Fault(drop=True))
    threads_n, per_thread = 8, 250
    stop = threading.Event()
    flush_results: list[bool] = []

    def flusher() -> None:
        while not stop.is_set():
            flush_results.append(handler.flush(timeout=10))

    def producer(t: int) -> None:
        emit(log, per_thread, prefix=f"t{t}")

    flushing = threading.Thread(target=flusher)
    flushing.start()
    producers = [threading.Thread(target=producer, args=(t,)) for t in range(threads_n)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join(60)
    stop.set()
    flushing.join(60)
    assert not flushing.is_alive()
    assert handler.flush(timeout=30)
    received = collector.received()
    assert len(received) == threads_n * per_thread
    assert len({m["messageId"] for m in received}) == threads_n * per_thread  # nothing twice
    assert {m["userId"] for m in received} == {f"t{t}-{i}" for t in range(threads_n) for i in range(per_thread)}
    assert len(flush_results) > 0


# -- no recursion ------------------------------------------------------------------------------------


@pytest.fixture
def everything_is_an_event():
    """The worst setup: the handler on the root logger at DEBUG, urllib3/requests at DEBUG, and a record
    factory that turns every record of theirs and ours into an event (at most 200, so a loop would end)."""
    root = logging.getLogger()
    saved = (root.level, logging.getLogger("urllib3").level, logging.getLogger("requests").level)
    factory = logging.getLogRecordFactory()
    converted = Counter[str]()

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if record.name.split(".")[0] in ("urllib3", "requests", "dreamdata_logging") and sum(converted.values()) < 200:
            converted[record.name.split(".")[0]] += 1
            record.dreamdata = {"userId": "loop", "event": "recursion"}
        return record

    logging.setLogRecordFactory(make_record)
    root.setLevel(logging.DEBUG)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    logging.getLogger("requests").setLevel(logging.DEBUG)
    handlers: list[logging.Handler] = []
    try:
        yield root, handlers, converted
    finally:
        logging.setLogRecordFactory(factory)
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(saved[0])
        logging.getLogger("urllib3").setLevel(saved[1])
        logging.getLogger("requests").setLevel(saved[2])


def test_no_recursion_on_the_root_logger_at_debug(collector, make_handler, everything_is_an_event):
    root, attached, converted = everything_is_an_event
    handler = make_handler(flush_interval=0.05, max_queue_size=5)
    root.addHandler(handler)
    attached.append(handler)
    collector.script(Fault(422, body="refused"))  # the worker logs a delivery error from its thread
    app = logging.getLogger("app.analytics")
    first = emit(app, 3, "app")
    assert handler.flush(timeout=10) is False
    sent = emit(app, 5, "app", start=3)
    emit(app, 3, "app", start=8)  # queue full: our warning, logged in this thread, comes through root
    assert handler.flush(timeout=10)
    assert handler.flush(timeout=10)  # nothing new was queued by the sends themselves

    assert sorted(user_ids(collector)) == sorted(sent)
    assert converted["urllib3"] > 0 and converted["dreamdata_logging"] > 0  # the hostile factory did fire
    stats = handler.stats()
    assert stats["failed"] == len(first) and stats["dropped_queue_full"] == 3
    assert 0 < stats["skipped"] < 200  # the converted records were skipped, not sent
    assert len(collector.requests()) <= 3


def test_no_recursion_when_shipping_inline_at_exit(collector):
    """During interpreter exit no thread is started and flush() ships from the caller's thread: what urllib3
    logs there about our request must not become events either (before, it fed itself until the cap)."""
    run = subprocess.run(
        [sys.executable, str(SCENARIOS / "exit_recursion.py"), collector.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["workers"] == []  # none was started during exit
    assert found["flushed"] is True
    assert found["converted"].get("urllib3", 0) > 0  # the hostile factory did fire
    assert sorted(user_ids(collector)) == [f"app-{i}" for i in range(4)]
    assert found["stats"]["skipped"] == sum(found["converted"].values())


# -- security ----------------------------------------------------------------------------------------

SECRET = "sk-SECRET-write-key-4b1d"
SECRET_FORMS = (SECRET, base64.b64encode(f"{SECRET}:".encode()).decode())


def test_write_key_never_shows(collector, make_logger, caplog, capfd):
    """Rejected key, network failure, invalid event: the key is in no repr, log, warning, error or on_error data."""
    caplog.set_level(logging.DEBUG)
    errors = Errors()
    seen: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rejected = DreamdataHandler(SECRET, endpoint=collector.url, on_error=errors, flush_interval=60)
        unreachable = DreamdataHandler(SECRET, endpoint=closed_port_url(), on_error=errors, max_retries=1)
        insecure = DreamdataHandler(SECRET, endpoint="http://dreamdata.invalid/v1/batch", send=False)
        for handler in (rejected, unreachable):
            log = make_logger(handler)
            emit(log, 2)
            log.info("bad", extra={"dreamdata": {"event": "no id"}})
            handler.flush(timeout=30)
            seen += [repr(handler), repr(handler._transport), repr(handler._transport._auth), str(handler.stats())]
        for handler in (rejected, unreachable, insecure):
            handler.close()
    assert len(errors.delivery()) == 2 and len(errors.calls) == 4
    seen += [str(w.message) for w in caught]
    seen += [r.getMessage() for r in caplog.records]
    for error, messages in errors.calls:
        seen += [str(error), repr(error), repr(error.args), json.dumps(messages, default=str)]
    captured = capfd.readouterr()
    seen += [captured.out, captured.err]
    assert "write key was rejected" in "".join(seen)
    for text in seen:
        for form in SECRET_FORMS:
            assert form not in text


def test_plain_http_to_a_non_loopback_host_warns_at_construction():
    with pytest.warns(InsecureEndpointWarning, match="unencrypted") as caught:
        handler = DreamdataHandler("k", endpoint="http://collector.example.com:8080")
    handler.close()
    assert caught[0].filename == __file__  # points at the code that built the handler
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for endpoint in ("http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9", "https://example.com"):
            DreamdataHandler("k", endpoint=endpoint).close()



@pytest.fixture
def tls_collector(tls_files: tuple[str, str]) -> Any:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    running = Collector(write_key=WRITE_KEY, strict=True, keep=None)
    running._server.socket = context.wrap_socket(running._server.socket, server_side=True)
    with running.start():
        yield running, running.url.replace("http://", "https://")


def test_tls_is_verified_by_default_and_verify_takes_a_ca_bundle(tls_collector, tls_files, make_logger):
    collector, url = tls_collector
    errors = Errors()
    default = DreamdataHandler(WRITE_KEY, endpoint=url, max_retries=0, on_error=errors, flush_interval=60)
    emit(make_logger(default), 1, "unverified")
    assert default.flush(timeout=30) is False
    default.close()
    [(error, _)] = errors.delivery()
    assert "SSLError" in str(error) or "certificate" in str(error).lower()
    assert collector.received() == []

    pinned = DreamdataHandler(WRITE_KEY, endpoint=url, verify=tls_files[0], flush_interval=60)
    emit(make_logger(pinned), 2, "verified")
    assert pinned.flush(timeout=30)
    pinned.close()
    assert user_ids(collector) == ["verified-0", "verified-1"]


def test_proxies_option_is_used(collector, make_logger):
    proxy = collector.url.rsplit("/v1/batch", 1)[0]  # the collector also answers absolute-form requests
    with pytest.warns(InsecureEndpointWarning):
        handler = DreamdataHandler(
            WRITE_KEY, endpoint="http://dreamdata.invalid/v1/batch", proxies={"http": proxy}, flush_interval=60
        )
    emit(make_logger(handler), 2)
    assert handler.flush(timeout=30)
    handler.close()
    assert len(collector.received()) == 2
    assert collector.requests()[0].path == "http://dreamdata.invalid/v1/batch"  # it went through the proxy


def test_proxy_environment_variables_are_used(collector, make_logger, monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", collector.url.rsplit("/v1/batch", 1)[0])
    with pytest.warns(InsecureEndpointWarning):
        handler = DreamdataHandler(WRITE_KEY, endpoint="http://dreamdata.invalid/v1/batch", flush_interval=60)
    emit(make_logger(handler), 2)
    assert handler.flush(timeout=30)
    handler.close()
    assert len(collector.received()) == 2
    assert collector.requests()[0].path == "http://dreamdata.invalid/v1/batch"
