"""Closed and reopened, reconfigured, in an outage with a spool: every event counted once, in every state."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from dreamdata_logging import track
from dreamdata_logging.tools.collector import Collector, Fault
from dreamdata_logging.transport.transport import Transport
from dreamdata_logging.wire.rules import Batch

from .conftest import WRITE_KEY
from .scenarios.timings import QUICK_BACKOFF


def ledger_adds_up(stats: dict[str, int]) -> bool:
    return stats["emitted"] == (
        stats["delivered"] + stats["failed"] + stats["dropped_queue_full"] + stats["dropped_closed"]
        + stats["queued"] + stats["spool_written"] + stats["unsent"] + stats["captured"]
    )  # fmt: skip


def log_numbered(log: logging.Logger, count: int, tag: str) -> list[str]:
    ids = []
    for n in range(count):
        message_id = f"{tag}-{n}-{uuid.uuid4().hex[:8]}"
        log.info("Numbered", extra=track(user_id=tag, message_id=message_id))
        ids.append(message_id)
    return ids


def test_one_transport_posts_one_body_at_a_time_from_many_threads(collector: Collector) -> None:
    transport = Transport(collector.url, WRITE_KEY, timeout=10, max_retries=0)
    sent: list[str] = []
    lock = threading.Lock()

    def sender(n: int) -> None:
        for k in range(20):
            message_id = f"s{n}-{k}"
            fields = f'"messageId":"{message_id}","timestamp":"2024-01-01T00:00:00.000Z"'
            data = ('{"type":"track","event":"E","userId":"u",' + fields + "}").encode()
            transport.send(Batch([data], len(data)))
            with lock:
                sent.append(message_id)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    received = Counter(m["messageId"] for m in collector.received())
    # Each body is its own: none sent twice, none replaced by another thread's.
    assert sorted(received) == sorted(sent) and set(received.values()) == {1}
    assert transport.requests_sent == 160
    transport.close()


def test_64_threads_logging_while_the_handler_closes_and_reopens(collector, make_handler, make_logger) -> None:
    handler = make_handler(flush_interval=0.01, flush_at=100)
    log = make_logger(handler)
    ids: list[list[str]] = [[] for _ in range(64)]
    go = threading.Event()

    def writer(n: int) -> None:
        go.wait(10)
        ids[n] = log_numbered(log, 150, f"w{n}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    go.set()
    for _ in range(20):  # close again and again while they log: each next event reopens it
        handler.close()
        time.sleep(0.005)
    for thread in threads:
        thread.join(60)
    assert handler.flush(30)
    logged = [i for part in ids for i in part]
    received = Counter(m["messageId"] for m in collector.received())
    stats = handler.stats()
    assert len(logged) == 64 * 150 == stats["emitted"]
    assert set(received.values()) == {1}  # no event twice
    assert sorted(received) == sorted(logged)  # and none missing: closed mid-stream, nothing is dropped
    assert stats["delivered"] == len(received) and stats["dropped_closed"] == 0 and stats["queued"] == 0
    assert ledger_adds_up(stats) and handler.reopened


def test_the_spool_drains_after_closes_in_an_outage_without_live_traffic(
    collector, make_handler, make_logger, tmp_path: Path
) -> None:
    handler = make_handler(
        spool=str(tmp_path / "spool.sqlite"), flush_interval=0.02, max_retries=1, timeout=2, backoff=QUICK_BACKOFF
    )
    log = make_logger(handler)
    collector.set_down(Fault(503))
    logged = []
    for round_ in range(4):  # an outage with closes (each next event reopens the handler)
        logged += log_numbered(log, 300, f"r{round_}")
        assert not handler.flush(20)  # spooled is not delivered
        handler.close()
    logged += log_numbered(log, 10, "last")  # reopened; then no live traffic follows
    assert not handler.flush(20)
    stats = handler.stats()
    assert stats["spooled"] == len(logged) and stats["delivered"] == 0 and ledger_adds_up(stats)

    collector.set_down(None)
    assert handler.flush(60)  # True only once the spool has drained: every event delivered
    stats = handler.stats()
    received = Counter(m["messageId"] for m in collector.received())
    assert sorted(received) == sorted(logged) and set(received.values()) == {1}
    assert stats["spooled"] == 0 and stats["spool_delivered"] == len(logged) == stats["spool_written"]
    assert ledger_adds_up(stats)


def test_flush_is_false_while_the_spool_still_holds_events_and_the_endpoint_fails(
    collector, make_handler, make_logger, tmp_path: Path
) -> None:
    handler = make_handler(
        spool=str(tmp_path / "spool.sqlite"), flush_interval=0.02, max_retries=0, timeout=1, backoff=QUICK_BACKOFF
    )
    log = make_logger(handler)
    collector.set_down(Fault(503))
    log_numbered(log, 20, "down")
    assert not handler.flush(10)
    started = time.monotonic()
    assert not handler.flush(30)  # nothing new, but the spool is not delivered: a probe fails, flush says so
    assert time.monotonic() - started < 25
    assert handler.stats()["spooled"] == 20


def test_settings_changed_after_construction_take_effect(collector, make_handler, make_logger, capfd) -> None:
    handler = make_handler(shutdown_timeout=30, flush_interval=60, max_queue_size=1000)
    log = make_logger(handler)
    handler.shutdown_timeout = 0.2
    handler.max_queue_size = 3
    handler.flush_at = 2
    assert (handler.shutdown_timeout, handler.max_queue_size, handler.flush_at) == (0.2, 3, 2)
    with pytest.raises(ValueError):
        handler.flush_interval = 0
    with pytest.raises(AttributeError):
        handler.handle_sigterm = False  # type: ignore[misc]  # read-only: decided at construction
    collector.set_down(Fault(503, delay=0.5))
    log_numbered(log, 5, "q")  # queue of 3: two are dropped
    started = time.monotonic()
    handler.close()
    assert time.monotonic() - started < 0.2 + 1.5  # the new shutdown_timeout, not 30 s
    stats = handler.stats()
    assert stats["dropped_queue_full"] == 2 and ledger_adds_up(stats)


def test_aflush_waits_for_the_spool_too(collector, make_handler, make_logger, tmp_path: Path) -> None:
    import asyncio

    handler = make_handler(
        spool=str(tmp_path / "spool.sqlite"), flush_interval=0.02, max_retries=0, timeout=2, backoff=QUICK_BACKOFF
    )
    log = make_logger(handler)
    collector.set_down(Fault(503))
    logged = log_numbered(log, 50, "async")
    assert not asyncio.run(handler.aflush(20))  # spooled is not delivered
    collector.set_down(None)
    assert asyncio.run(handler.aflush(60))
    received = Counter(m["messageId"] for m in collector.received())
    assert sorted(received) == sorted(logged) and handler.stats()["spooled"] == 0


def test_forks_while_the_spool_is_busy_never_leave_a_child_hung(collector, make_handler, tmp_path: Path) -> None:
    """A child forked while a thread of the parent is inside SQLite must not hang on its first SQLite call."""
    import os

    handler = make_handler(spool=str(tmp_path / "spool.sqlite"), flush_interval=0.01, max_retries=0, timeout=1)
    busy = threading.Event()
    busy.set()

    def hammer() -> None:  # the spool in use all the time: every stats() reads it
        while busy.is_set():
            handler.stats()

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    children = []
    try:
        for _ in range(100):
            pid = os.fork()
            if pid == 0:  # the child reads the spool at once (stats) and ends
                try:
                    handler.stats()
                finally:
                    os._exit(0)
            children.append(pid)
    finally:
        busy.clear()
        thread.join(10)
    deadline = time.monotonic() + 30
    waiting = set(children)
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert status == 0
                waiting.discard(pid)
        time.sleep(0.01)
    for pid in waiting:  # hung: end them, then fail
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert not waiting, f"{len(waiting)} of {len(children)} children hung"
