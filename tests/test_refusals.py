"""A batch refused with 400 for one of its messages: the halves are sent again until the refused message is
alone; it alone fails (with the server's reason, passed to on_error), the others arrive, within a bounded
number of requests. A rejected write key is not split."""

from __future__ import annotations

import math
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dreamdata_logging import DeliveryError, DreamdataHandler, track
from dreamdata_logging.delivery.outage import SpoolTiming
from dreamdata_logging.delivery.refusals import MAX_ISOLATED
from dreamdata_logging.tools.collector import Collector, Fault

from .conftest import WRITE_KEY, log_events, logger_with
from .fault_servers import FaultServer, Request, refuse_messages, respond
from .scenarios.timings import QUICK_BACKOFF, tune


class Errors:
    def __init__(self) -> None:
        self.calls: list[tuple[BaseException, list[Any]]] = []

    def __call__(self, error: BaseException, messages: list[Any]) -> None:
        self.calls.append((error, messages))




def test_one_poisoned_message_among_2000_fails_alone_and_the_rest_arrive() -> None:
    accepted: list[str] = []
    ids: list[str] = []
    poisoned: set[str] = set()
    with FaultServer(refuse_messages(poisoned, accepted)) as server:
        errors = Errors()
        handler = DreamdataHandler(WRITE_KEY, endpoint=server.url, flush_interval=60, on_error=errors)
        try:
            log = logger_with(handler)
            ids = [str(uuid.uuid4()) for _ in range(2000)]
            poisoned.add(ids[1234])
            for n, message_id in enumerate(ids):
                log.info("Refusal Test", extra=track(user_id=f"u{n}", message_id=message_id))
            assert handler.flush(timeout=60) is False  # one event was given up on
            stats = handler.stats()
        finally:
            handler.close()
        requests = len(server.requests)

    assert sorted(accepted) == sorted(set(ids) - poisoned)  # every other event arrived, once
    [(error, messages)] = errors.calls
    assert isinstance(error, DeliveryError) and error.status == 400
    assert f"message {ids[1234]}: refused, 'event' is not allowed" in str(error)  # the server's reason
    assert [m["messageId"] for m in messages] == [ids[1234]]
    assert stats["emitted"] == 2000 and stats["delivered"] == 1999 and stats["failed"] == 1
    assert stats["queued"] == 0 and stats["dropped_queue_full"] == 0
    # The events went in at most two bodies; isolating the message takes two requests per halving.
    assert stats["requests"] == requests <= 2 * math.ceil(math.log2(2000)) + 2


def test_a_single_message_refused_with_400_is_final(collector: Collector) -> None:
    errors = Errors()
    handler = DreamdataHandler(WRITE_KEY, endpoint=collector.url, flush_interval=60, on_error=errors)
    try:
        log = logger_with(handler)
        collector.script(Fault(400, body='{"error": "batch[0].event is not allowed"}'))
        log_events(log, 1)
        assert handler.flush(timeout=10) is False
        assert len(collector.requests()) == 1  # not sent again
        [(error, messages)] = errors.calls
        assert isinstance(error, DeliveryError) and "batch[0].event is not allowed" in str(error)
        assert len(messages) == 1 and handler.stats()["failed"] == 1
    finally:
        handler.close()


def test_several_refused_messages_are_each_isolated(collector: Collector) -> None:
    accepted: list[str] = []
    poisoned: set[str] = set()
    with FaultServer(refuse_messages(poisoned, accepted)) as server:
        errors = Errors()
        handler = DreamdataHandler(WRITE_KEY, endpoint=server.url, flush_interval=60, on_error=errors)
        try:
            ids = [str(uuid.uuid4()) for _ in range(100)]
            poisoned.update(ids[n] for n in (0, 1, 50, 99))
            log = logger_with(handler)
            for n, message_id in enumerate(ids):
                log.info("Refusal Test", extra=track(user_id=f"u{n}", message_id=message_id))
            assert handler.flush(timeout=30) is False
            stats = handler.stats()
        finally:
            handler.close()
    assert sorted(accepted) == sorted(set(ids) - poisoned)
    refused = sorted(m["messageId"] for _, messages in errors.calls for m in messages)
    assert refused == sorted(poisoned) and all(len(messages) == 1 for _, messages in errors.calls)
    assert (stats["delivered"], stats["failed"]) == (96, 4)


def test_an_endpoint_refusing_every_batch_is_not_asked_once_per_message(collector: Collector) -> None:
    errors = Errors()
    handler = DreamdataHandler(WRITE_KEY, endpoint=collector.url, flush_interval=60, on_error=errors)
    try:
        collector.set_down(Fault(400, body='{"error": "every batch is refused here"}'))
        log = logger_with(handler)
        log_events(log, 1000)
        assert handler.flush(timeout=60) is False
        stats = handler.stats()
    finally:
        collector.set_down(None)
        handler.close()
    budget = MAX_ISOLATED * 2 * math.ceil(math.log2(1000))
    assert stats["requests"] <= 1 + budget < 1000
    assert stats["failed"] == 1000 and stats["delivered"] == 0  # each counted once, with the reason
    assert sum(len(messages) for _, messages in errors.calls) == 1000
    assert all("every batch is refused here" in str(error) for error, _ in errors.calls)


@pytest.mark.parametrize("status", [401, 403])
def test_a_rejected_write_key_is_not_split(status: int, collector: Collector) -> None:
    errors = Errors()
    handler = DreamdataHandler(WRITE_KEY, endpoint=collector.url, flush_interval=60, on_error=errors)
    try:
        collector.script(Fault(status, body='{"error": "invalid write key"}'))
        log_events(logger_with(handler), 10)
        assert handler.flush(timeout=10) is False
        assert len(collector.requests()) == 1
        [(error, messages)] = errors.calls
        assert "write key was rejected" in str(error) and len(messages) == 10
    finally:
        handler.close()


def test_spooled_events_refused_with_400_are_split_down_to_the_refused_one(tmp_path: Path) -> None:
    accepted: list[str] = []
    poisoned: set[str] = set()
    refuse = refuse_messages(poisoned, accepted)
    down = threading.Event()
    down.set()

    def answer(request: Request, sock: socket.socket, stopping: threading.Event) -> bool:
        if down.is_set():
            return respond(503)(request, sock, stopping)
        return refuse(request, sock, stopping)

    with FaultServer(answer) as server:
        errors = Errors()
        handler = DreamdataHandler(
            WRITE_KEY, endpoint=server.url, spool=tmp_path / "spool.sqlite3", max_retries=0, flush_interval=0.05,
            on_error=errors,
        )  # fmt: skip
        tune(handler, backoff=QUICK_BACKOFF, spool_timing=SpoolTiming(retry_base=0.05, retry_cap=0.2))
        try:
            log = logger_with(handler)
            ids = [str(uuid.uuid4()) for _ in range(200)]
            poisoned.add(ids[77])
            for n, message_id in enumerate(ids):
                log.info("Refusal Test", extra=track(user_id=f"u{n}", message_id=message_id))
            assert handler.flush(timeout=30) is False  # the endpoint is down: kept in the spool
            assert handler.stats()["spool_written"] == 200
            down.clear()  # back, but refusing any batch that holds the poisoned message
            end = time.monotonic() + 30
            while handler.stats()["spooled"] and time.monotonic() < end:
                time.sleep(0.05)
            stats = handler.stats()
        finally:
            handler.close()
    assert sorted(accepted) == sorted(set(ids) - poisoned)
    assert stats["spooled"] == 0 and stats["spool_delivered"] == 199 and stats["failed"] == 1
    [(error, messages)] = errors.calls
    assert isinstance(error, DeliveryError) and error.status == 400 and ids[77] in str(error)
    assert [m["messageId"] for m in messages] == [ids[77]]
