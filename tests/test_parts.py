"""The delivery machinery part by part, without HTTP: buffer, budget, dispatcher, outage drain, worker.

The dispatcher takes any object with the transport's ``send(batch, deadline=, cancel=)``; these tests
give it a small scripted one, so each decision (send, halve, spool, give up) is checked on its own.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from dreamdata_logging._diagnostics import RateLimitedReporter, Report
from dreamdata_logging.delivery.buffer import ACCEPTED, CLOSED, FULL, READY, Buffer
from dreamdata_logging.delivery.deadlines import Budget, Deadlines
from dreamdata_logging.delivery.dispatch import Dispatcher, Fate
from dreamdata_logging.delivery.ledger import Ledger
from dreamdata_logging.delivery.outage import ClaimOutcome, OutageState, SpoolDrain
from dreamdata_logging.delivery.problems import Problems
from dreamdata_logging.delivery.worker import Worker
from dreamdata_logging.errors import DeliveryError, PayloadTooLargeError
from dreamdata_logging.spool.spool import Spool
from dreamdata_logging.wire.rules import Batch


def message(n: int, pad: int = 0) -> bytes:
    return json.dumps({"type": "track", "messageId": f"m{n}", "userId": "u", "event": "e", "pad": "x" * pad}).encode()


class ScriptedTransport:
    """Answers each send from a script: None (delivered) or an exception to raise. Records every batch."""

    timeout = 1.0

    def __init__(self, *answers: Optional[BaseException], default: Optional[BaseException] = None) -> None:
        self.answers = list(answers)
        self.default = default
        self.sent: list[list[bytes]] = []
        self.deadlines: list[Any] = []

    def send(self, batch: Batch, *, deadline: Any = None, cancel: Optional[threading.Event] = None) -> None:
        self.sent.append(list(batch.messages))
        self.deadlines.append(deadline)
        answer = self.answers.pop(0) if self.answers else self.default
        if answer is not None:
            raise answer


def problems(errors: Optional[list[tuple[BaseException, list[Any]]]] = None) -> Problems:
    def on_error(error: BaseException, messages: list[Any]) -> None:
        if errors is not None:
            errors.append((error, messages))

    return Problems(Ledger(), on_error, lambda text: text)


# -- Buffer -------------------------------------------------------------------------------------------


def test_buffer_bounds_count_and_bytes_in_flight_included():
    buffer = Buffer(max_events=3, max_bytes=10_000, batch_events=100, body_room=400_000)
    assert [buffer.put(message(i)) for i in range(4)] == [ACCEPTED, ACCEPTED, ACCEPTED, FULL]
    batch = buffer.next_batch(force=True)
    assert batch is not None and len(batch[0]) == 3
    assert buffer.put(message(9)) == FULL  # the three are in flight: still held
    buffer.finish(3, batch[1], delivered=True)
    assert buffer.put(message(9)) == ACCEPTED
    small = Buffer(max_events=100, max_bytes=len(message(0)) * 2, batch_events=100, body_room=400_000)
    assert [small.put(message(i)) for i in range(3)] == [ACCEPTED, ACCEPTED, FULL]
    assert small.dropped_full == 1


def test_buffer_cuts_batches_by_count_and_by_body_room():
    buffer = Buffer(max_events=1000, max_bytes=10**7, batch_events=5, body_room=10**6)
    statuses = [buffer.put(message(i)) for i in range(12)]
    assert statuses.count(READY) >= 1  # a full batch wakes the worker
    assert buffer.next_batch(force=False) is not None
    sizes = []
    while (batch := buffer.next_batch(force=True)) is not None:
        sizes.append(len(batch[0]))
    assert sizes == [5, 2]  # the first 5 were taken above; then 5 and the last 2
    one = len(message(0, pad=100))
    roomy = Buffer(max_events=1000, max_bytes=10**7, batch_events=1000, body_room=one * 3 + 2)
    for i in range(7):
        roomy.put(message(i, pad=100))
    cut = [len(b[0]) for b in iter(lambda: roomy.next_batch(force=True), None)]
    assert cut == [3, 3, 1]  # three messages and two commas fill the room exactly


def test_buffer_flush_waits_for_the_sequence_and_reports_failures():
    buffer = Buffer(max_events=100, max_bytes=10**6, batch_events=100, body_room=10**6)
    for i in range(4):
        buffer.put(message(i))
    target, start = buffer.request_flush() or (0, 0)
    assert (target, start) == (4, 0)
    assert not buffer.wait_finished(target, start, timeout=0.01)
    items, size = buffer.next_batch(force=False) or ([], 0)  # wanted by the flush, though not full
    assert len(items) == 4
    done = threading.Thread(target=buffer.finish, args=(4, size, False))
    done.start()
    assert buffer.wait_finished(target, start, timeout=5) is False  # finished, but not delivered
    done.join()
    assert buffer.request_flush() is None and buffer.idle


def test_buffer_put_interrupted_on_its_own_thread_never_waits_on_its_own_lock():
    """A signal handler (or __del__) that logs while its thread is inside put() holding the lock."""
    buffer = Buffer(max_events=100, max_bytes=10**6, batch_events=100, body_room=10**6)
    inner: list[int] = []
    real_accept = buffer._accept

    def accept_then_get_interrupted(data: bytes) -> int:
        if not inner:  # what a signal arriving here would do: emit again on the same thread
            inner.append(buffer.put(message(99)))
        return real_accept(data)

    buffer._accept = accept_then_get_interrupted  # type: ignore[method-assign]
    assert buffer.put(message(1)) == ACCEPTED
    assert inner == [READY]  # set aside, not deadlocked
    items = []
    while (batch := buffer.next_batch(force=True)) is not None:
        items += batch[0]
    assert sorted(json.loads(m)["messageId"] for m in items) == ["m1", "m99"]
    assert buffer.accepted == 2 and buffer.held == 2


def test_closed_buffer_refuses_without_counting_and_seals_only_when_empty():
    buffer = Buffer(max_events=10, max_bytes=10**6, batch_events=10, body_room=10**6)
    assert buffer.put(message(1)) == ACCEPTED
    buffer.close()
    # Refused, not counted: the caller hands the message to a renewed buffer (or counts it, at exit).
    assert buffer.put(message(2)) == CLOSED and buffer.accepted == 1
    assert not buffer.seal()  # one message still held: the worker must ship it first
    batch = buffer.next_batch(force=True)
    assert batch is not None and len(batch[0]) == 1
    buffer.finish(1, batch[1], delivered=True)
    assert buffer.seal() and buffer.sealed


def test_the_ledger_keeps_counting_across_buffers_and_folds_finished_ones():
    ledger = Ledger()
    first = Buffer(max_events=1, max_bytes=10**6, batch_events=10, body_room=10**6)
    ledger.attach(first)
    assert first.put(message(1)) == ACCEPTED and first.put(message(2)) == FULL
    first.close()
    second = Buffer(max_events=10, max_bytes=10**6, batch_events=10, body_room=10**6)
    ledger.attach(second)  # the first still holds its message: not folded yet
    second.put(message(3))
    counts = ledger.counts()
    assert counts["emitted"] == 3 and counts["queued"] == 2 and counts["dropped_queue_full"] == 1
    batch = first.next_batch(force=True)
    assert batch is not None
    first.finish(1, batch[1], delivered=True)
    ledger.add("delivered")
    assert first.seal()
    counts = ledger.counts()  # folded now: the sums stay
    assert counts["emitted"] == 3 and counts["queued"] == 1 and counts["delivered"] == 1
    assert counts["emitted"] == counts["delivered"] + counts["dropped_queue_full"] + counts["queued"]


# -- Budget -------------------------------------------------------------------------------------------


def test_budget_is_the_earliest_deadline_less_the_reserve():
    deadlines = Deadlines()
    assert Budget(deadlines)() is None
    now = time.monotonic()
    own = Budget(deadlines, limit=100)()
    assert own is not None and now + 99 < own < now + 101
    deadlines.closing = now + 10
    deadlines.inline = now + 5
    reserved = Budget(deadlines, limit=100, reserve=0.5)()
    assert reserved == pytest.approx(now + 4.5)


def test_budget_stops_after_the_first_attempt_when_asked():
    deadlines = Deadlines()
    stop = [False]
    budget = Budget(deadlines, limit=100, stop_retrying=lambda: stop[0])
    first = budget()
    stop[0] = True
    before = time.monotonic()
    assert first is not None and first > before + 50  # the first read (before any attempt) is never cut
    assert budget() <= time.monotonic() and budget.stopped


# -- Dispatcher ---------------------------------------------------------------------------------------


def test_dispatcher_counts_a_delivered_batch():
    transport = ScriptedTransport(None)
    found = problems()
    dispatcher = Dispatcher(transport, found, Deadlines())
    assert dispatcher.deliver([message(1), message(2)], 10) is Fate.DELIVERED
    assert found.ledger.delivered == 2 and found.ledger.batches == 1


def test_dispatcher_halves_on_413_until_each_part_fits():
    too_large = PayloadTooLargeError("HTTP 413", status=413)
    transport = ScriptedTransport(too_large, None, too_large, None, None)
    found = problems()
    items = [message(i) for i in range(6)]
    assert Dispatcher(transport, found, Deadlines()).deliver(items, sum(map(len, items))) is Fate.DELIVERED
    assert [len(b) for b in transport.sent] == [6, 3, 3, 1, 2]
    assert found.ledger.delivered == 6 and found.ledger.failed == 0


def test_dispatcher_gives_up_on_a_refused_batch_and_tells_on_error():
    errors: list[tuple[BaseException, list[Any]]] = []
    found = problems(errors)
    refused = DeliveryError("HTTP 400: bad", status=400)
    assert Dispatcher(ScriptedTransport(refused), found, Deadlines()).deliver([message(1)], 1) is Fate.FAILED
    assert found.ledger.failed == 1
    assert errors[0][0] is refused and errors[0][1][0]["messageId"] == "m1"  # decoded for on_error


def test_dispatcher_spools_what_may_succeed_later_and_enters_outage_mode(tmp_path: Path):
    spool = Spool(tmp_path / "spool.sqlite3")
    found = problems()
    down = DeliveryError("HTTP 503", status=503, retryable=True)
    transport = ScriptedTransport(down)
    dispatcher = Dispatcher(transport, found, Deadlines(), spool=spool)
    assert dispatcher.deliver([message(1)], 1) is Fate.SPOOLED
    assert dispatcher.outage.active and spool.pending()[0] == 1 and found.ledger.spool_written == 1
    assert dispatcher.deliver([message(2)], 1) is Fate.SPOOLED  # outage mode: straight to the spool
    assert len(transport.sent) == 1 and spool.pending()[0] == 2
    assert found.ledger.failed == 0
    spool.close()


class RetryingTransport:
    """Fails every attempt with a retryable error, reading its budget before each one as the real transport
    does (a budget that ends stops the send); counts the attempts."""

    timeout = 1.0

    def __init__(self, most: int = 5) -> None:
        self.most = most
        self.attempts = 0

    def send(self, batch: Batch, *, deadline: Any = None, cancel: Optional[threading.Event] = None) -> None:
        for _ in range(self.most):
            limit = deadline() if callable(deadline) else deadline
            if limit is not None and limit <= time.monotonic():
                raise DeliveryError("not delivered before its deadline", retryable=True)
            self.attempts += 1
        raise DeliveryError("HTTP 503 (gave up)", status=503, retryable=True)


@pytest.mark.parametrize("asked", ["during the send", "before it"])
def test_a_spill_asked_before_or_during_a_send_ends_its_retries(tmp_path: Path, asked: str):
    # Callers may fill the queue past its high-water mark before the thread begins its first send: the
    # request must hold for that send, or it retries for its whole budget while the queue fills.
    spool = Spool(tmp_path / "spool.sqlite3")
    transport = RetryingTransport()
    dispatcher = Dispatcher(transport, problems(), Deadlines(), spool=spool)
    if asked == "before it":
        dispatcher.spill()
    else:
        send = transport.send

        def spill_then_send(batch: Batch, **kwargs: Any) -> None:
            dispatcher.spill()
            send(batch, **kwargs)

        transport.send = spill_then_send  # type: ignore[method-assign]
    assert dispatcher.deliver([message(1)], 1) is Fate.SPOOLED
    assert transport.attempts == 1 and spool.pending()[0] == 1
    spool.close()


def test_a_spill_holds_for_one_send_only(tmp_path: Path):
    spool = Spool(tmp_path / "spool.sqlite3")
    transport = RetryingTransport(most=3)
    found = problems()
    dispatcher = Dispatcher(transport, found, Deadlines(), spool=spool)
    dispatcher.spill()
    dispatcher.deliver([message(1)], 1)
    dispatcher.outage.active = False  # as if the endpoint had answered since
    transport.attempts = 0
    assert dispatcher.deliver([message(2)], 1) is Fate.SPOOLED
    assert transport.attempts == 3  # retried as usual: the spill was the first send's
    spool.close()


# -- the spool's drain --------------------------------------------------------------------------------


def test_a_probe_risks_a_small_claim_with_one_attempt_and_a_short_lease(tmp_path: Path):
    spool = Spool(tmp_path / "spool.sqlite3")
    spool.put([message(i) for i in range(100)])
    state = OutageState()
    state.active = True  # in an outage, the next look at the spool is a probe
    calls: list[tuple[int, float, bool]] = []

    def send_claim(claim: Any, limit: float, single_attempt: bool) -> ClaimOutcome:
        calls.append((len(claim), limit, single_attempt))
        return ClaimOutcome.NOT_NOW

    drain = SpoolDrain(spool, state, send_claim, flush_at=2000, body_room=400_000)
    drain.set_request_timeout(3.0)
    drain.run(live_waiting=lambda: False, closing=lambda: False)
    assert calls == [(20, 3.0, True)]
    state.due = 0.0
    state.active = False  # the endpoint answered: now the spool drains in full claims

    def deliver(claim: Any, limit: float, single_attempt: bool) -> ClaimOutcome:
        calls.append((len(claim), limit, single_attempt))
        return ClaimOutcome.DELIVERED

    SpoolDrain(spool, state, deliver, flush_at=2000, body_room=400_000).run(lambda: False, lambda: False)
    assert calls[1][0] == 100 and calls[1][2] is False
    assert spool.pending()[0] == 0
    spool.close()


def test_the_drain_gives_way_to_live_batches(tmp_path: Path):
    spool = Spool(tmp_path / "spool.sqlite3")
    spool.put([message(1)])
    sent: list[int] = []
    drain = SpoolDrain(
        spool, OutageState(), lambda c, limit, one: sent.append(len(c)) or ClaimOutcome.DELIVERED, 10, 400_000
    )
    drain.run(live_waiting=lambda: True, closing=lambda: False)
    assert sent == [] and spool.pending()[0] == 1
    spool.close()


# -- Worker -------------------------------------------------------------------------------------------


def make_worker(transport: ScriptedTransport, flush_interval: float = 60.0) -> tuple[Worker, Problems]:
    found = problems()
    deadlines = Deadlines()
    buffer = Buffer(max_events=1000, max_bytes=10**7, batch_events=100, body_room=400_000)
    return Worker(buffer, Dispatcher(transport, found, deadlines), deadlines, flush_interval=flush_interval), found


def test_worker_flush_close_and_the_thread():
    transport = ScriptedTransport()
    worker, found = make_worker(transport)
    for i in range(3):
        worker.put(message(i))
    assert not worker.stopped
    assert worker.flush(timeout=5)
    assert found.ledger.delivered == 3
    worker.put(message(3))
    worker.close(timeout=5)
    assert worker.stopped and found.ledger.delivered == 4
    assert worker.put(message(4)) == CLOSED


def test_flush_from_the_worker_thread_returns_at_once():
    """An on_error callback runs in the worker thread: a flush() there must not wait on itself."""
    results: list[bool] = []
    holder: list[Worker] = []

    class Failing(ScriptedTransport):
        def send(self, batch: Batch, *, deadline: Any = None, cancel: Optional[threading.Event] = None) -> None:
            results.append(holder[0].flush())  # as an on_error or a transport hook would
            raise DeliveryError("HTTP 400", status=400)

    worker, _ = make_worker(Failing())
    holder.append(worker)
    worker.put(message(1))
    assert worker.flush(timeout=5) is False
    assert results == [None]  # still held: not waited for (a handler's flush() says False)
    worker.close(timeout=1)


def test_close_from_a_signal_handler_takes_no_lock_and_delivers(tmp_path: Path):
    """What the SIGTERM handler does (close without waiting, then join) while the main thread was
    interrupted inside put(): it must neither deadlock nor lose the queued events."""
    transport = ScriptedTransport()
    worker, found = make_worker(transport, flush_interval=0.05)
    for i in range(5):
        worker.put(message(i))
    interrupted: list[bool] = []
    real_accept = worker.buffer._accept

    def handler(signum: int, frame: Any) -> None:
        interrupted.append(worker.buffer.entered_here())
        worker.close(timeout=5, wait=False)
        worker.join()

    previous = signal.signal(signal.SIGUSR1, handler)
    try:

        def accept_and_signal(data: bytes) -> int:
            if not interrupted:
                signal.raise_signal(signal.SIGUSR1)  # runs the handler here, with the buffer's lock held
            return real_accept(data)

        worker.buffer._accept = accept_and_signal  # type: ignore[method-assign]
        worker.put(message(5))
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert interrupted == [True]
    worker.join()
    assert found.ledger.delivered >= 5  # what was queued before the signal went out
    assert worker.stopped



# -- reports ------------------------------------------------------------------------------------------


def test_reports_are_rate_limited_per_kind_and_detail(caplog: pytest.LogCaptureFixture):
    """A spool past its bound and a spool whose disk is full are two kinds, reported apart; one kind's
    details (an invalid event's reason, a failed delivery's status) are rate-limited apart too."""
    reporter = RateLimitedReporter(interval=3600)
    with caplog.at_level(logging.INFO, logger="dreamdata_logging"):
        reporter.report(Report.SPOOL_OVERFLOW, "oldest dropped", logging.ERROR)
        reporter.report(Report.SPOOL_NO_ROOM, "no room on its disk", logging.ERROR)
        reporter.report(Report.SPOOL_OVERFLOW, "oldest dropped again", logging.ERROR)  # within the interval
        reporter.report(Report.INVALID, "invalid event: no userId", detail="no userId")
        reporter.report(Report.INVALID, "invalid event: too big", detail="too big")
        reporter.report(Report.INVALID, "invalid event: no userId again", detail="no userId")
    assert [r.getMessage() for r in caplog.records] == [
        "dreamdata-logging: oldest dropped",
        "dreamdata-logging: no room on its disk",
        "dreamdata-logging: invalid event: no userId",
        "dreamdata-logging: invalid event: too big",
    ]
