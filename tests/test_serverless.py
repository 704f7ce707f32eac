"""``dreamdata_logging.flush()`` and ``@flush_after``: nothing left queued when a serverless function returns."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time

import pytest

import dreamdata_logging
from dreamdata_logging import flush_after, track


class LambdaContext:
    """The part of AWS Lambda's context object that ``flush_after`` reads."""

    def __init__(self, seconds_left: float) -> None:
        self.deadline = time.monotonic() + seconds_left

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


@pytest.fixture
def silent_endpoint():
    """A loopback server that accepts connections and never answers: a send stalls until its timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for connection in accepted:
        connection.close()
    server.close()


def test_flush_delivers_every_handler(collector, make_handler, make_logger):
    gc.collect()  # handlers other tests dropped without closing are no longer alive
    first, second = make_handler(flush_interval=60), make_handler(flush_interval=60)
    log_a, log_b = make_logger(first), make_logger(second)
    for n in range(5):
        log_a.info("A", extra=track(user_id="u1", properties={"n": n}))
        log_b.info("B", extra=track(user_id="u2", properties={"n": n}))
    assert collector.received() == []  # flush_interval=60: nothing sent yet
    assert dreamdata_logging.flush() is True
    events = collector.received()
    assert sorted((e["event"], e["properties"]["n"]) for e in events) == [(k, n) for k in "AB" for n in range(5)]
    assert first.stats()["queued"] == 0 and second.stats()["queued"] == 0
    assert dreamdata_logging.flush(timeout=0) is True  # nothing queued: true at once


def test_lambda_handler_flushed_on_return_and_on_raise(collector, make_handler, make_logger):
    handler = make_handler(flush_interval=60)
    log = make_logger(handler)

    @flush_after
    def lambda_handler(event, context):
        log.info("Invoked", extra=track(user_id=event["user"]))
        if event.get("fail"):
            raise ValueError("bad input")
        return {"statusCode": 200}

    assert lambda_handler({"user": "u1"}, LambdaContext(30)) == {"statusCode": 200}
    assert [e["userId"] for e in collector.received()] == ["u1"]  # delivered before the function returned
    with pytest.raises(ValueError, match="bad input"):
        lambda_handler({"user": "u2", "fail": True}, LambdaContext(30))
    assert [e["userId"] for e in collector.received()] == ["u1", "u2"]
    assert lambda_handler.__name__ == "lambda_handler"


def test_async_function_and_keyword_context(collector, make_handler, make_logger):
    handler = make_handler(flush_interval=60)
    log = make_logger(handler)

    @flush_after(margin=0.2)
    async def handle(event, context=None):
        await asyncio.sleep(0)
        log.info("Async Invoked", extra=track(user_id="u3"))
        return "done"

    assert asyncio.run(handle({}, context=LambdaContext(30))) == "done"
    assert [e["event"] for e in collector.received()] == ["Async Invoked"]


def test_flush_keeps_within_the_time_lambda_has_left(silent_endpoint, make_logger):
    handler = dreamdata_logging.DreamdataHandler(
        "key", endpoint=silent_endpoint, flush_interval=60, timeout=30, shutdown_timeout=30, max_retries=0
    )
    try:
        log = make_logger(handler)

        @flush_after(margin=0.5)
        def lambda_handler(event, context):
            log.info("Stalled", extra=track(user_id="u1"))
            return "ok"

        started = time.monotonic()
        assert lambda_handler({}, LambdaContext(1.5)) == "ok"
        elapsed = time.monotonic() - started
        # the endpoint never answers: without the Lambda bound this would wait shutdown_timeout (30 s)
        assert elapsed < 10, elapsed
        assert handler.stats()["delivered"] == 0

        started = time.monotonic()
        assert dreamdata_logging.flush(timeout=0.5) is False  # still stalled: False, within the bound
        assert time.monotonic() - started < 10
    finally:
        handler.shutdown_timeout = 0.1
        handler.close()
