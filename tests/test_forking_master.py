"""What a handler does with an event logged in a uWSGI master that forks its workers (the servers themselves
run in tests/servers/test_uwsgi.py): no thread is ever started there; the event is sent at once from the
logging thread, or kept in the spool for the workers, and counted either way."""

from __future__ import annotations

import threading
import time

from dreamdata_logging import track
from dreamdata_logging.spool.spool import Spool

from .test_delivery import closed_port_url


def ours() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("dreamdata-logging")}


def as_forking_master(handler):
    """The state a handler is in when made in a uWSGI master that forks (as ``in_uwsgi_master()`` finds it)."""
    handler._delivery.forking_master = True
    return handler


def test_sent_at_once_from_the_logging_thread_and_no_thread_left(make_handler, make_logger, collector):
    handler = as_forking_master(make_handler(flush_interval=60))
    log = make_logger(handler)
    before = ours()
    log.info("x", extra=track(user_id="u", event="Master Event"))
    assert [m["event"] for m in collector.received()] == ["Master Event"]  # already there: sent in the call
    assert ours() - before == set()  # no thread of ours is alive when the master forks
    log.info("x", extra=track(user_id="u", event="Second Master Event"))  # the transport works again after
    assert [m["event"] for m in collector.received()] == ["Master Event", "Second Master Event"]
    assert ours() - before == set()
    stats = handler.stats()
    assert (stats["emitted"], stats["delivered"], stats["queued"]) == (2, 2, 0)


def test_endpoint_down_the_event_fails_within_shutdown_timeout_and_is_counted(make_handler, make_logger):
    refused = []
    handler = as_forking_master(
        make_handler(endpoint=closed_port_url(), shutdown_timeout=0.5, on_error=lambda e, batch: refused.append(batch))
    )
    started = time.monotonic()
    make_logger(handler).info("x", extra=track(user_id="u", event="Master Event"))
    assert time.monotonic() - started < 0.5 + 5  # bounded by shutdown_timeout (plus a margin for a busy machine)
    assert handler._worker.stopped
    stats = handler.stats()
    assert (stats["emitted"], stats["failed"], stats["queued"]) == (1, 1, 0)
    assert [[m["event"] for m in batch] for batch in refused] == [["Master Event"]]


def test_with_a_spool_the_event_is_kept_there_for_the_workers(make_handler, make_logger, collector, tmp_path):
    spool = tmp_path / "spool.sqlite3"
    handler = as_forking_master(make_handler(flush_interval=60, spool=spool))
    make_logger(handler).info("x", extra=track(user_id="u", event="Master Event"))
    assert collector.received() == []  # not sent from the master
    assert handler._worker.stopped
    assert Spool(spool).pending()[0] == 1
    stats = handler.stats()
    assert (stats["emitted"], stats["spool_written"], stats["queued"], stats["delivered"]) == (1, 1, 0, 0)


def test_a_spool_that_cannot_be_written_sends_the_event_instead(make_handler, make_logger, collector, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    handler = as_forking_master(make_handler(flush_interval=60, spool=blocker / "spool.sqlite3"))
    make_logger(handler).info("x", extra=track(user_id="u", event="Master Event"))
    assert [m["event"] for m in collector.received()] == ["Master Event"]
    assert handler._worker.stopped
    stats = handler.stats()
    assert (stats["emitted"], stats["delivered"], stats["spool_written"]) == (1, 1, 0)
