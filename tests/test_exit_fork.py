"""Interpreter exit, Ctrl-C and fork, each in a subprocess (tests/scenarios/) with a hard timeout,
against the real local collector running in the test process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import pytest

from dreamdata_logging.tools.collector import Collector, Fault

from .test_delivery import closed_port_url

SCENARIOS = Path(__file__).parent / "scenarios"
#: Hard limit on any scenario subprocess; the bounds we assert on are far below it.
HARD_TIMEOUT = 120
#: Added to any bound on elapsed time: the machine is small and shared.
MARGIN = 2.0

DOWN = {
    "503-retry-after-30": Fault(503, headers={"Retry-After": "30"}),
    "stall": Fault(200, delay=30),
    "dropped-connection": Fault(drop=True),
    "closed-port": None,
}


def exit_seconds(stderr: str) -> float:
    """The scenario's own measure: from the start of exit to the end of logging.shutdown()."""
    found = re.findall(r"exit took ([0-9.]+)s", stderr)
    assert found, stderr
    return float(found[-1])


def run_exit_app(endpoint: str, mode: str, count: int = 5, shutdown_timeout: float = 1.0) -> Any:
    return subprocess.run(
        [sys.executable, str(SCENARIOS / "exit_app.py"), endpoint, mode, str(count), str(shutdown_timeout)],
        capture_output=True,
        text=True,
        timeout=HARD_TIMEOUT,
    )


def user_ids(collector: Collector) -> list[str]:
    return [m["userId"] for m in collector.received()]


# -- interpreter exit ----------------------------------------------------------------------------------


def test_exit_delivers_everything_queued(collector):
    run = run_exit_app(collector.url, "exit", count=50, shutdown_timeout=5)
    assert run.returncode == 0, run.stderr
    assert sorted(user_ids(collector)) == sorted(f"exit-{i}" for i in range(50))  # flush_interval was 60 s
    assert "not delivered" not in run.stderr
    assert exit_seconds(run.stderr) < 5 + MARGIN


@pytest.mark.parametrize("fault", DOWN.values(), ids=DOWN.keys())
def test_exit_with_the_endpoint_down_keeps_to_shutdown_timeout_and_says_what_was_lost(collector, fault):
    if fault is not None:
        collector.set_down(fault)
    run = run_exit_app(collector.url if fault is not None else closed_port_url(), "exit", shutdown_timeout=1)
    assert run.returncode == 0, run.stderr
    assert exit_seconds(run.stderr) < 1 + MARGIN
    assert "dreamdata-logging: 5 event(s) were not delivered" in run.stderr
    assert "shutdown_timeout=1s" in run.stderr
    assert collector.received() == []


def test_events_emitted_during_exit_are_delivered_without_starting_a_thread(collector):
    run = run_exit_app(collector.url, "atexit", count=5, shutdown_timeout=5)
    assert run.returncode == 0, run.stderr
    assert "during exit: exiting=True threads=['MainThread']" in run.stderr  # shipped inline by close()
    assert sorted(user_ids(collector)) == sorted(f"atexit-{i}" for i in range(5))


# -- Ctrl-C ----------------------------------------------------------------------------------------------


def interrupt_app(endpoint: str, shutdown_timeout: float) -> tuple[int, str]:
    """Start the app, wait for it to say "ready", send SIGINT; return its exit code and stderr."""
    proc = subprocess.Popen(
        [sys.executable, str(SCENARIOS / "exit_app.py"), endpoint, "sigint", "5", str(shutdown_timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killer = threading.Timer(HARD_TIMEOUT, proc.kill)  # readline() below has no timeout of its own
    killer.start()
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=HARD_TIMEOUT)
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def test_ctrl_c_exits_through_logging_shutdown_and_delivers(collector):
    code, err = interrupt_app(collector.url, shutdown_timeout=5)
    assert code != 0 and "KeyboardInterrupt" in err
    assert sorted(user_ids(collector)) == sorted(f"sigint-{i}" for i in range(5))
    assert exit_seconds(err) < 5 + MARGIN


def test_ctrl_c_with_the_endpoint_down_keeps_to_shutdown_timeout(collector):
    collector.set_down(Fault(503, headers={"Retry-After": "30"}))
    code, err = interrupt_app(collector.url, shutdown_timeout=1)
    assert code != 0 and "KeyboardInterrupt" in err
    assert exit_seconds(err) < 1 + MARGIN
    assert "dreamdata-logging: 5 event(s) were not delivered" in err


# -- fork ----------------------------------------------------------------------------------------------


def run_fork_app(collector: Collector, mode: str, env: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    run = subprocess.run(
        [sys.executable, str(SCENARIOS / "fork_app.py"), collector.url, mode],
        capture_output=True,
        text=True,
        timeout=HARD_TIMEOUT,
        env={**os.environ, **(env or {})},
    )
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def by_process(collector: Collector) -> Counter[str]:
    received = collector.received()
    assert len({m["messageId"] for m in received}) == len(received)  # nothing sent twice
    return Counter(m["userId"].rsplit("-", 1)[0] for m in received)


def report(lines: list[dict[str, Any]], who: str) -> Optional[dict[str, Any]]:
    return next((line for line in lines if line.get("who") == who), None)


@pytest.mark.parametrize("mode", ["os-fork", "in-flight"])
def test_forked_child_ships_its_own_events_and_not_the_parents(collector, mode):
    if mode == "in-flight":
        collector.script(Fault(200, delay=4))  # the parent's batch is inside this request when it forks
    lines = run_fork_app(collector, mode)
    assert {"child_exit": 0} in lines
    assert by_process(collector) == {"parent": 5, "child": 3, "parent-after": 2}
    child_start = report(lines, "child-start")
    assert child_start is not None  # the child starts from nothing: no queue, no counters
    assert child_start["stats"]["queued"] == 0 and child_start["stats"]["emitted"] == 0
    child, parent = report(lines, "child"), report(lines, "parent")
    assert child is not None and parent is not None and child["pid"] != parent["pid"]
    assert child["stats"]["emitted"] == 3
    if mode == "in-flight":
        stalled = [r for r in collector.requests() if r.error == "fault: 200"]
        assert [r.message_count for r in stalled] == [5]  # the parent's batch, given up on (timeout=2) and retried


@pytest.mark.parametrize("process_ids", ["in records", "not in records"])
def test_a_child_forked_without_pythons_fork_hooks_starts_clean(collector, process_ids):
    """A fork that runs none of Python's fork hooks (uWSGI's workers) is noticed at the child's first event
    by its process id (the record's, or read by the handler when logging.logProcesses is off): the child
    sends its own events, never the parent's."""
    env = {"FORK_APP_NO_PROCESS_IDS": "1"} if process_ids == "not in records" else {}
    lines = run_fork_app(collector, "no-hooks", env)
    assert {"child_exit": 0} in lines
    assert by_process(collector) == {"parent": 5, "child": 3, "parent-after": 2}
    child, parent = report(lines, "child"), report(lines, "parent")
    assert child is not None and parent is not None and child["pid"] != parent["pid"]
    assert child["stats"]["emitted"] == 3 and parent["stats"]["emitted"] == 7


def test_multiprocessing_fork_children_deliver_before_they_end(collector):
    """multiprocessing children end with os._exit(): no atexit; the handler closes from multiprocessing's hook."""
    lines = run_fork_app(collector, "multiprocessing")
    assert {"child_exit": [0, 0]} in lines
    assert by_process(collector) == {"parent": 2, "mp0": 3, "mp1": 3}


def test_fork_while_another_thread_emits(collector):
    lines = run_fork_app(collector, "stress")
    assert {"child_exit": [0] * 10} in lines  # no child hung on a lock held at fork, each flush succeeded
    counts = by_process(collector)
    assert counts["stress"] == 10
    assert set(counts) == {"stress", "busy"}
    assert sorted(m["userId"] for m in collector.received() if m["userId"].startswith("stress")) == sorted(
        f"stress-{n}" for n in range(10)
    )
