"""A full queue: dropped events reach on_error (in batches, from the worker thread, within a bound), and with
block_on_full a caller waits for room instead of dropping, except where waiting could hang."""

from __future__ import annotations

import logging
import logging.config
import threading
import time
from typing import Any

import pytest

from dreamdata_logging import DreamdataHandler, QueueFullError
from dreamdata_logging.delivery import full as full_module
from dreamdata_logging.tools.collector import Collector, Fault

from .conftest import WRITE_KEY, log_events, logger_with
from .fault_servers import FaultServer, refuse_messages


class Errors:
    def __init__(self) -> None:
        self.calls: list[tuple[BaseException, list[Any]]] = []
        self.threads: set[int] = set()

    def __call__(self, error: BaseException, messages: list[Any]) -> None:
        self.threads.add(threading.get_ident())
        self.calls.append((error, messages))

    def dropped(self) -> list[tuple[QueueFullError, list[Any]]]:
        return [(e, m) for e, m in self.calls if isinstance(e, QueueFullError)]




def sending(collector: Collector) -> None:
    """Until the worker's first request reached the collector: it is inside a send, which the fault holds."""
    end = time.monotonic() + 10
    while not collector.requests():
        assert time.monotonic() < end, "the worker sent nothing"
        time.sleep(0.01)


def test_events_dropped_by_a_full_queue_reach_on_error(collector: Collector) -> None:
    errors = Errors()
    handler = DreamdataHandler(
        WRITE_KEY, endpoint=collector.url, max_queue_size=10, flush_at=5, flush_interval=0.05, on_error=errors
    )
    collector.set_down(Fault(503, headers={"Retry-After": "30"}))  # the first batch waits; the queue fills
    log = logger_with(handler)
    ids = log_events(log, 10)
    sending(collector)
    ids += log_events(log, 90)
    stats = handler.stats()
    assert (stats["queued"], stats["dropped_queue_full"]) == (10, 90)
    collector.set_down(None)
    handler.close()  # ends the wait; what is held is delivered, and the dropped ones are handed over

    assert sorted(m["messageId"] for m in collector.received()) == sorted(ids[:10])
    dropped = errors.dropped()
    assert len(dropped) == 1  # one call for all of them, not one per event
    [(error, messages)] = dropped
    assert [m["messageId"] for m in messages] == ids[10:]  # every dropped event, in order
    assert error.dropped == 90 and "queue was full" in str(error)
    assert threading.get_ident() not in errors.threads  # never called in the logging caller's thread
    stats = handler.stats()
    assert stats["emitted"] == stats["delivered"] + stats["dropped_queue_full"] == 100


def test_on_error_gets_at_most_the_bound_and_the_count_of_the_rest(collector: Collector) -> None:
    kept = full_module.MAX_KEPT
    errors = Errors()
    handler = DreamdataHandler(WRITE_KEY, endpoint=collector.url, max_queue_size=10, flush_at=5, on_error=errors)
    collector.set_down(Fault(503, headers={"Retry-After": "30"}))
    log = logger_with(handler)
    ids = log_events(log, 10)
    sending(collector)
    ids += log_events(log, kept + 100)
    collector.set_down(None)
    handler.close()
    [(error, messages)] = errors.dropped()
    assert [m["messageId"] for m in messages] == ids[10 : 10 + kept]  # the first MAX_KEPT dropped ones
    total = kept + 100
    assert error.dropped == total and f"{total} event(s) dropped" in str(error) and f"{kept} of them" in str(error)
    assert handler.stats()["dropped_queue_full"] == total


def test_block_on_full_waits_for_room_and_every_event_arrives() -> None:
    accepted: list[str] = []
    with FaultServer(refuse_messages(set(), accepted, delay=0.1)) as server:  # about 100 events a second
        handler = DreamdataHandler(
            WRITE_KEY, endpoint=server.url, max_queue_size=20, flush_at=10, flush_interval=60, block_on_full=30
        )
        try:
            log = logger_with(handler)
            ids: list[str] = []
            threads = [threading.Thread(target=lambda: ids.extend(log_events(log, 50))) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert handler.flush(timeout=30)
            stats = handler.stats()
        finally:
            handler.close()
    assert stats["dropped_queue_full"] == 0 and stats["delivered"] == 200, stats
    assert len(ids) == 200 and sorted(accepted) == sorted(ids)


def test_without_block_on_full_the_same_slow_endpoint_drops() -> None:
    """The control for the test above: the endpoint is slow enough that the queue overflows."""
    accepted: list[str] = []
    with FaultServer(refuse_messages(set(), accepted, delay=0.1)) as server:
        handler = DreamdataHandler(WRITE_KEY, endpoint=server.url, max_queue_size=20, flush_at=10, flush_interval=60)
        try:
            log_events(logger_with(handler), 200)
            dropped = handler.stats()["dropped_queue_full"]
        finally:
            handler.close()
    assert dropped > 0


def _emit_in_thread(target: Any) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(20)  # block_on_full is 600 s: still running here means it waited
    return thread


def test_block_on_full_never_waits_with_loggings_lock_held(collector: Collector) -> None:
    handler = DreamdataHandler(
        WRITE_KEY, endpoint=collector.url, max_queue_size=5, flush_at=5, flush_interval=60, block_on_full=600
    )
    collector.set_down(Fault(503, headers={"Retry-After": "30"}))
    log = logger_with(handler)
    log_events(log, 5)  # the queue is full now; the first batch waits for the endpoint

    def with_lock() -> None:
        with logging._lock:  # type: ignore[attr-defined]  # as inside dictConfig / fileConfig
            log_events(log, 1)

    try:
        assert not _emit_in_thread(with_lock).is_alive()
        assert handler.stats()["dropped_queue_full"] == 1
    finally:
        collector.set_down(None)
        handler.close()


def test_block_on_full_never_waits_in_a_reentered_call(collector: Collector) -> None:
    """A call that re-entered the handler on its own thread (as a signal handler does) never waits."""
    handler = DreamdataHandler(
        WRITE_KEY, endpoint=collector.url, max_queue_size=5, flush_at=5, flush_interval=60, block_on_full=600
    )
    collector.set_down(Fault(503, headers={"Retry-After": "30"}))
    log = logger_with(handler)
    log_events(log, 5)
    buffer = handler._worker.buffer

    def reentered() -> None:
        buffer._inside.add(threading.get_ident())  # what put() marks while it runs: the signal arrived there
        try:
            log_events(log, 1)
        finally:
            buffer._inside.discard(threading.get_ident())

    try:
        assert not _emit_in_thread(reentered).is_alive()
    finally:
        collector.set_down(None)
        handler.close()


def test_block_on_full_from_a_config_file_string(collector: Collector) -> None:
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"dd": {"class": "dreamdata_logging.DreamdataHandler", "write_key": WRITE_KEY,
                            "endpoint": collector.url, "block_on_full": "2.5"}},
        "loggers": {"test.full.config": {"handlers": ["dd"], "level": "INFO", "propagate": False}},
    })  # fmt: skip
    handler = logging.getLogger("test.full.config").handlers[0]
    try:
        assert isinstance(handler, DreamdataHandler) and handler.block_on_full == 2.5
        with pytest.raises(ValueError, match="block_on_full"):
            DreamdataHandler(WRITE_KEY, endpoint=collector.url, block_on_full=-1)
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
