"""The durable spool: nothing lost across outages and restarts (against the real collector).

Processes run as subprocesses with hard timeouts; tests synchronise on flush(), collector.wait_for()
and the subprocesses' exit, never on sleeps. Every handler retries and spools on shortened timings, given to
its transport and delivery (``handler_timings``, and the scenario script's own) for speed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytest

from dreamdata_logging import DreamdataHandler, track
from dreamdata_logging.delivery.delivery import Delivery, Settings
from dreamdata_logging.spool.spool import Spool
from dreamdata_logging.tools.collector import Fault
from dreamdata_logging.transport.transport import Backoff, Transport
from dreamdata_logging.wire.rules import new_message_id, now_timestamp

from .conftest import WRITE_KEY
from .scenarios.timings import QUICK_BACKOFF, QUICK_SPOOL

SCENARIO = Path(__file__).parent / "scenarios" / "spool_process.py"
DOWN = Fault(status=503)
HARD_TIMEOUT = 60  # seconds any subprocess may take before the test fails


@pytest.fixture
def handler_timings() -> dict[str, Any]:
    """Every handler made by ``make_handler`` here retries within milliseconds and spools after a second."""
    return {"backoff": QUICK_BACKOFF, "spool_timing": QUICK_SPOOL}


def env() -> dict[str, str]:
    return {**os.environ, "DREAMDATA_WRITE_KEY": WRITE_KEY, "PYTHONUNBUFFERED": "1"}


def run_emitter(spool: Path, endpoint: str, count: int, tag: str, ending: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCENARIO), "emit", str(spool), endpoint, str(count), tag, ending],
        env=env(),
        capture_output=True,
        text=True,
        timeout=HARD_TIMEOUT,
    )


def start_drainer(spool: Path, endpoint: str, flush_at: int = 100) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCENARIO), "drain", str(spool), endpoint, str(flush_at)],
        env=env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    """Close the drainer's stdin (its signal to stop) and return its stats."""
    try:
        out, err = process.communicate(input="", timeout=HARD_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def spool_rows(path: Path) -> list[dict[str, Any]]:
    """What is in the spool file, oldest first (read directly, without leasing)."""
    with sqlite3.connect(path) as conn:
        return [json.loads(data) for (data,) in conn.execute("SELECT data FROM events ORDER BY id")]


def message(n: int, tag: str = "t") -> bytes:
    data = {
        "type": "track",
        "messageId": new_message_id(),
        "timestamp": now_timestamp(),
        "userId": f"user-{n % 5}",
        "event": "Prefilled",
        "properties": {"tag": tag, "n": n},
        "context": {"library": {"name": "dreamdata-logging", "version": "test"}},
    }
    return json.dumps(data, separators=(",", ":")).encode()


def assert_exactly_once(received: list[dict[str, Any]], tag: str, count: int) -> None:
    mine = [m for m in received if m.get("properties", {}).get("tag") == tag]
    ids = Counter(m["messageId"] for m in mine)
    assert [i for i, k in ids.items() if k > 1] == [], "a messageId arrived twice"
    assert sorted(m["properties"]["n"] for m in mine) == list(range(count))


# -- in one process ---------------------------------------------------------------------------------


def test_outage_during_emission_then_recovery_delivers_every_event(tmp_path, collector, make_handler, make_logger):
    spool = tmp_path / "events.sqlite3"
    errors: list[Any] = []
    handler = make_handler(
        spool=spool, max_retries=1, flush_at=50, flush_interval=0.05, on_error=lambda e, m: errors.append(m)
    )
    log = make_logger(handler)
    collector.set_down(DOWN)
    for n in range(600):
        log.info("Outage", extra=track(user_id="u1", properties={"tag": "outage", "n": n}))
    assert handler.flush(timeout=30) is False  # not delivered (yet): kept in the spool
    stats = handler.stats()
    assert stats["spool_written"] == 600 and stats["spooled"] == 600
    assert stats["failed"] == 0 and stats["dropped_queue_full"] == 0 and errors == []
    assert collector.received() == []

    # Events emitted while the endpoint is known to be down go straight to the spool.
    for n in range(600, 700):
        log.info("Outage", extra=track(user_id="u1", properties={"tag": "outage", "n": n}))
    assert handler.flush(timeout=30) is False

    collector.set_down(None)  # the endpoint answers again: the spool drains in the background
    assert collector.wait_for(700, timeout=30)
    assert_exactly_once(collector.received(), "outage", 700)
    # Messages travel byte for byte as they were first serialised: the same messageIds and timestamps.
    assert all(m["type"] == "track" and m["event"] == "Outage" for m in collector.received())

    # After recovery, live events go straight to the endpoint again.
    log.info("After", extra=track(user_id="u1", properties={"tag": "after", "n": 0}))
    assert handler.flush(timeout=30) is True
    assert collector.wait_for(701, timeout=30)
    handler.close()
    assert Spool(spool).pending() == (0, 0)
    assert handler.stats()["spool_delivered"] == 700
    assert errors == []


def test_queue_past_high_water_during_an_outage_goes_to_the_spool_not_dropped(
    tmp_path, collector, make_handler, make_logger
):
    # Without the high-water rule the first batch would retry for the whole retry budget (120 s; the
    # flush below would time out) while the queue filled and dropped events.
    slow = Backoff(base=0.2, cap=0.5)
    only_high_water = replace(QUICK_SPOOL, after=3600.0)  # no batch goes to the spool for taking long
    spool = tmp_path / "events.sqlite3"
    handler = make_handler(
        spool=spool, max_queue_size=1000, flush_at=100, max_retries=1000, flush_interval=0.05, backoff=slow,
        spool_timing=only_high_water,
    )  # fmt: skip
    log = make_logger(handler)
    collector.set_down(DOWN)
    for n in range(700):  # past half of max_queue_size, below the bound
        log.info("Spill", extra=track(user_id="u1", properties={"tag": "spill", "n": n}))
    assert handler.flush(timeout=60) is False
    stats = handler.stats()
    assert stats["dropped_queue_full"] == 0 and stats["failed"] == 0
    assert stats["spool_written"] == 700
    collector.set_down(None)
    assert collector.wait_for(700, timeout=60)
    assert_exactly_once(collector.received(), "spill", 700)


@pytest.mark.parametrize("awaited", [False, True], ids=["flush", "aflush"])
def test_flush_that_runs_out_of_time_with_events_still_queued_says_false(
    tmp_path, collector, make_handler, make_logger, awaited
):
    # The endpoint is down, the batch keeps retrying (no spool takeover, no high water): when flush() runs
    # out of time the events are neither delivered nor spooled, whatever the (empty) spool says.
    slow = Backoff(base=0.2, cap=0.5)
    no_takeover = replace(QUICK_SPOOL, after=3600.0)
    handler = make_handler(
        spool=tmp_path / "events.sqlite3", max_retries=1000, flush_interval=0.05, backoff=slow,
        spool_timing=no_takeover, shutdown_timeout=1.0,
    )  # fmt: skip
    log = make_logger(handler)
    collector.set_down(DOWN)
    for n in range(5):
        log.info("Held", extra=track(user_id="u1", properties={"tag": "held", "n": n}))
    if awaited:
        assert asyncio.run(handler.aflush(0.5)) is False
    else:
        assert handler.flush(timeout=0.5) is False
    stats = handler.stats()
    assert stats["queued"] == 5 and stats["spool_written"] == 0 and stats["delivered"] == 0
    collector.set_down(None)
    assert handler.flush(timeout=30) is True
    assert_exactly_once(collector.received(), "held", 5)


def test_a_delivery_built_from_its_parts_spools_through_an_outage_and_drains_after(tmp_path, collector):
    """The delivery machinery takes its transport, spool and timings as arguments: no handler is needed."""
    transport = Transport(collector.url, WRITE_KEY, max_retries=1, backoff=QUICK_BACKOFF)
    settings = Settings(
        flush_at=50, flush_interval=0.05, max_queue_size=1000, max_queue_bytes=10**7, shutdown_timeout=2,
        block_on_full=0,
    )
    spool = Spool(tmp_path / "parts.sqlite3")
    delivery = Delivery(
        transport, spool, settings, on_error=None, scrub=transport.redactor.scrub, spool_timing=QUICK_SPOOL
    )
    collector.set_down(DOWN)
    sent = [message(n, "parts") for n in range(120)]
    for data in sent:
        delivery.sink.message(data, delivery.worker_for_this_process())
    assert delivery.flush(timeout=30) is False  # kept in the spool, not delivered
    stats = delivery.stats()
    assert (stats["emitted"], stats["spool_written"], stats["spooled"], stats["delivered"]) == (120, 120, 120, 0)
    collector.set_down(None)
    assert delivery.flush(timeout=30) is True  # the spool drained
    delivery.close()
    stats = delivery.stats()
    assert (stats["spool_delivered"], stats["spooled"], stats["failed"]) == (120, 0, 0)
    assert sorted(m["messageId"] for m in collector.received()) == sorted(json.loads(m)["messageId"] for m in sent)


def test_without_spool_option_nothing_changes(collector, make_handler, make_logger):
    handler = make_handler(max_retries=0)
    log = make_logger(handler)
    collector.set_down(DOWN)
    log.info("Lost", extra=track(user_id="u1"))
    assert handler.flush(timeout=30) is False
    stats = handler.stats()
    assert stats["failed"] == 1 and stats["spooled"] == 0 and stats["spool_written"] == 0


def test_invalid_batches_are_not_spooled(tmp_path, collector, make_handler, make_logger):
    spool = tmp_path / "events.sqlite3"
    handler = make_handler(spool=spool, max_retries=0)
    log = make_logger(handler)
    collector.script(Fault(status=400, body='{"error": "bad"}'))
    log.info("Refused", extra=track(user_id="u1"))
    assert handler.flush(timeout=30) is False
    stats = handler.stats()
    assert stats["failed"] == 1 and stats["spool_written"] == 0 and stats["spooled"] == 0


def test_close_with_endpoint_down_spools_what_is_queued(tmp_path, collector, make_handler, make_logger, capfd):
    spool = tmp_path / "events.sqlite3"
    collector.set_down(Fault(status=503, delay=0.5))
    handler = make_handler(spool=spool, max_retries=8, flush_interval=60, shutdown_timeout=1)
    log = make_logger(handler)
    for n in range(300):
        log.info("Closing", extra=track(user_id="u1", properties={"tag": "close", "n": n}))
    handler.close()
    err = capfd.readouterr().err
    assert "300 event(s) could not be delivered" in err and "kept in the spool" in err
    assert "were not delivered" not in err  # nothing was lost
    assert handler.stats()["failed"] == 0
    assert sorted(m["properties"]["n"] for m in spool_rows(spool)) == list(range(300))


# -- across processes ---------------------------------------------------------------------------------


def test_outage_then_exit_then_new_process_delivers_exactly_once(tmp_path, collector):
    spool = tmp_path / "events.sqlite3"
    collector.set_down(DOWN)
    emitted = run_emitter(spool, collector.url, 1500, "restart", "exit")
    assert emitted.returncode == 0, emitted.stderr
    assert "kept in the spool" in emitted.stderr and "were not delivered" not in emitted.stderr
    assert collector.received() == []
    assert len(spool_rows(spool)) == 1500

    collector.set_down(None)
    drainer = start_drainer(spool, collector.url)
    try:
        assert collector.wait_for(1500, timeout=HARD_TIMEOUT)
    finally:
        stats = finish(drainer)
    assert stats["spool_delivered"] == 1500
    assert_exactly_once(collector.received(), "restart", 1500)
    assert spool_rows(spool) == []


def test_kill_9_after_spooling_loses_nothing_that_was_spooled(tmp_path, collector):
    spool = tmp_path / "events.sqlite3"
    collector.set_down(DOWN)
    killed = run_emitter(spool, collector.url, 400, "killed", "kill")
    assert killed.returncode == -9
    assert json.loads(killed.stdout.splitlines()[-1])["spool_written"] == 400

    collector.set_down(None)
    drainer = start_drainer(spool, collector.url)
    try:
        assert collector.wait_for(400, timeout=HARD_TIMEOUT)
    finally:
        finish(drainer)
    assert_exactly_once(collector.received(), "killed", 400)


def test_two_processes_draining_one_spool_never_send_a_message_twice(tmp_path, collector):
    spool = tmp_path / "events.sqlite3"
    count = 6000
    Spool(spool).put([message(n, "shared") for n in range(count)])
    drainers = [start_drainer(spool, collector.url, flush_at=40) for _ in range(2)]
    try:
        assert collector.wait_for(count, timeout=HARD_TIMEOUT)
    finally:
        stats = [finish(process) for process in drainers]
    assert_exactly_once(collector.received(), "shared", count)
    assert sum(s["spool_delivered"] for s in stats) == count
    assert spool_rows(spool) == []


def test_a_crashed_processes_leases_expire_and_another_process_sends_them(tmp_path, collector):
    spool_path = tmp_path / "events.sqlite3"
    crashed = Spool(spool_path, lease_seconds=0.0)  # its leases are over at once, as after a crash
    crashed.put([message(n, "lease") for n in range(10)])
    claim = crashed.claim(100, 500_000)
    assert claim is not None and len(claim) == 10
    live = Spool(spool_path)
    taken = live.claim(100, 500_000)
    assert taken is not None and taken.messages == claim.messages
    assert live.claim(100, 500_000) is None  # held by `live` now: no one else gets them
    crashed.ack(claim)  # a late ack under an expired, re-taken lease deletes nothing
    assert live.pending()[0] == 10
    live.ack(taken)
    assert live.pending() == (0, 0)


def test_spool_claims_never_overlap_between_processes(tmp_path):
    """Many processes claim from one file at once: each row goes to exactly one of them."""
    spool_path = tmp_path / "events.sqlite3"
    Spool(spool_path).put([message(n, "claims") for n in range(3000)])
    code = (
        "import json, sys\n"
        "from dreamdata_logging.spool.spool import Spool\n"
        "spool = Spool(sys.argv[1])\n"
        "got = []\n"
        "while True:\n"
        "    claim = spool.claim(7, 500_000)\n"
        "    if claim is None:\n"
        "        break\n"
        "    got += [json.loads(m)['messageId'] for m in claim.messages]\n"
        "    spool.ack(claim)\n"
        "print(json.dumps(got))\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(spool_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=HARD_TIMEOUT)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes)
    ids = [i for out in outputs for i in json.loads(out)]
    assert len(ids) == 3000 and len(set(ids)) == 3000


# -- bounds ---------------------------------------------------------------------------------------------


def test_spool_full_drops_the_oldest_events_and_counts_them(tmp_path, collector, make_handler, make_logger):
    no_probe = replace(QUICK_SPOOL, retry_base=3600.0, retry_cap=3600.0)  # no probe (it leases rows) while filling
    spool = tmp_path / "events.sqlite3"
    dropped: list[dict[str, Any]] = []
    handler = make_handler(
        spool=spool,
        spool_max_bytes=40_000,
        max_retries=0,
        flush_at=20,
        flush_interval=0.05,
        on_error=lambda error, messages: dropped.extend(messages),
        spool_timing=no_probe,
    )
    log = make_logger(handler)
    collector.set_down(DOWN)
    count = 600
    for n in range(count):
        log.info("Full", extra=track(user_id="u1", properties={"tag": "full", "n": n, "pad": "x" * 100}))
    assert handler.flush(timeout=30) is False
    stats = handler.stats()
    kept = spool_rows(spool)
    assert stats["spool_written"] == count
    assert 0 < stats["spooled"] == len(kept) < count
    assert stats["spool_dropped"] == count - len(kept) == len(dropped)
    assert stats["failed"] == 0 and stats["dropped_queue_full"] == 0
    assert Spool(spool).pending()[1] <= 40_000
    # The oldest went first: what is left is the newest events, in order.
    assert [m["properties"]["n"] for m in kept] == list(range(count - len(kept), count))
    assert sorted(m["properties"]["n"] for m in dropped) == list(range(count - len(kept)))
    handler.close()

    collector.set_down(None)  # a new handler (as after a restart) sends what was kept
    handler2 = make_handler(spool=spool, spool_timing=no_probe)
    assert collector.wait_for(len(kept), timeout=30)
    assert [m["properties"]["n"] for m in collector.received()] == [m["properties"]["n"] for m in kept]
    handler2.close()


def test_put_trims_oldest_unleased_rows(tmp_path):
    spool = Spool(tmp_path / "s.sqlite3", max_bytes=100)
    assert spool.put([b"a" * 40, b"b" * 40]) == []
    claim = spool.claim(1, 1000)  # "a" is being sent: it is not dropped while leased
    assert claim is not None
    assert spool.put([b"c" * 40]) == [b"b" * 40]
    assert spool.pending() == (2, 80)
    spool.release(claim)
    assert spool.put([b"d" * 40]) == [b"a" * 40]


# -- damaged files, config, fork ------------------------------------------------------------------------


def test_corrupt_spool_file_is_moved_aside_and_events_still_kept(
    tmp_path, collector, make_handler, make_logger, caplog
):
    spool = tmp_path / "events.sqlite3"
    spool.write_bytes(b"this is not an SQLite database\n" * 200)
    collector.set_down(DOWN)
    with caplog.at_level(logging.ERROR, logger="dreamdata_logging"):
        handler = make_handler(spool=spool, max_retries=0, flush_interval=0.05)  # never raises
        log = make_logger(handler)
        for n in range(50):
            log.info("Corrupt", extra=track(user_id="u1", properties={"tag": "corrupt", "n": n}))
        assert handler.flush(timeout=30) is False
    aside = list(tmp_path.glob("events.sqlite3.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not an SQLite database")
    assert any("unreadable" in r.getMessage() and "moved it aside" in r.getMessage() for r in caplog.records)
    assert handler.stats()["spool_written"] == 50  # into the fresh spool
    collector.set_down(None)
    assert collector.wait_for(50, timeout=30)
    assert_exactly_once(collector.received(), "corrupt", 50)


def test_spool_damaged_mid_file_is_moved_aside_and_replaced(tmp_path, caplog):
    path = tmp_path / "damaged.sqlite3"
    spool = Spool(path)
    spool.put([message(n) for n in range(2000)])
    spool.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with open(path, "r+b") as damaged:  # overwrite pages in the middle (the header stays valid)
        damaged.seek(size // 3)
        damaged.write(b"\xff" * (size // 3))
    with caplog.at_level(logging.ERROR, logger="dreamdata_logging"):
        again = Spool(path)
        first: Optional[Any] = None
        for _ in range(300):  # reads until it meets the damage; never raises but SpoolUnavailable
            try:
                first = again.claim(10, 500_000)
                if first is None:
                    break
                again.ack(first)
            except Exception as error:
                assert type(error).__name__ == "SpoolUnavailable"
                break
    assert again.moved_aside and Path(again.moved_aside[0]).exists()
    assert any("moved it aside" in r.getMessage() for r in caplog.records)
    assert again.put([b'{"x":1}']) == [] and again.pending() == (1, 7)  # a fresh, working spool


def test_unusable_spool_is_reported_and_events_fail_as_without_one(
    tmp_path, collector, make_handler, make_logger, caplog
):
    errors: list[Any] = []
    unusable = tmp_path / "a-directory"
    unusable.mkdir()  # SQLite cannot open a directory: not corrupt, just unusable (nothing is moved)
    collector.set_down(DOWN)
    with caplog.at_level(logging.ERROR, logger="dreamdata_logging"):
        handler = make_handler(spool=unusable, max_retries=0, on_error=lambda e, m: errors.append(m))
        log = make_logger(handler)
        log.info("Nowhere", extra=track(user_id="u1"))
        assert handler.flush(timeout=30) is False
    stats = handler.stats()
    assert stats["failed"] == 1 and stats["spool_written"] == 0 and stats["spooled"] == 0
    assert len(errors) == 1 and unusable.is_dir()
    assert any("is unavailable" in r.getMessage() for r in caplog.records)
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a spool under a file: its directory cannot be created
    assert make_handler(spool=blocked / "events.sqlite3").stats()["spooled"] == 0


def test_another_programs_database_is_not_used(tmp_path):
    path = tmp_path / "app.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    spool = Spool(path)
    assert spool.put([b"{}"]) == []
    assert spool.moved_aside
    with sqlite3.connect(spool.moved_aside[0]) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("users",)]


def test_spool_options_from_dict_config(tmp_path, collector, make_handler):
    spool = tmp_path / "configured" / "events.sqlite3"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "dd": {
                    "class": "dreamdata_logging.DreamdataHandler",
                    "write_key": WRITE_KEY,
                    "endpoint": collector.url,
                    "spool": str(spool),
                    "spool_max_bytes": "250000",
                }
            },
            "loggers": {"spool.config": {"handlers": ["dd"], "level": "INFO", "propagate": False}},
        }
    )
    log = logging.getLogger("spool.config")
    handler = log.handlers[0]
    try:
        assert isinstance(handler, DreamdataHandler)
        assert handler.spool_max_bytes == 250_000
        log.info("Configured", extra=track(user_id="u1"))
        assert handler.flush(timeout=30)
        assert spool.exists()
    finally:
        log.removeHandler(handler)
        handler.close()
    with pytest.raises(ValueError):
        DreamdataHandler(WRITE_KEY, endpoint=collector.url, spool=str(spool), spool_max_bytes="lots")
    assert make_handler(spool="").stats()["spooled"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_opens_its_own_connection(tmp_path):
    path = tmp_path / "fork.sqlite3"
    spool = Spool(path)
    spool.put([b"parent"])
    pid = os.fork()
    if pid == 0:  # the child: must not use the parent's connection
        code = 1
        try:
            spool.put([b"child"])
            code = 0 if spool.pending()[0] == 2 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert spool.pending() == (2, 11)
    spool.put([b"parent again"])
    assert spool.pending()[0] == 3
