"""Plain scripts: SIGTERM, dictConfig twice, kill -9 with a spool, re-entrant emit and flush.

Each runs as a subprocess (tests/servers/apps/) with a hard timeout against the collector in this process.
"""

from __future__ import annotations

import re
import signal
import sys
import time

import pytest

from dreamdata_logging.tools.collector import Collector, Fault

from .harness import MARGIN, SHUTDOWN_TIMEOUT, Server, assert_all_arrived

PY = sys.executable


# -- SIGTERM -------------------------------------------------------------------------------------------


def test_sigterm_delivers_queued_events_and_still_ends_by_sigterm(collector: Collector, tmp_path) -> None:
    with Server([PY, "script_sigterm.py", "200"], collector, tmp_path, env={"DD_FLUSH_INTERVAL": "60"}) as app:
        app.wait_output("ready")
        ids = app.wait_ids(200)
        app.signal(signal.SIGTERM)
        code, seconds = app.wait_exit(SHUTDOWN_TIMEOUT + MARGIN)
        assert code == -signal.SIGTERM, app.output()  # the same status as without the package
        assert_all_arrived(collector, ids, app.output())
        assert seconds < SHUTDOWN_TIMEOUT + MARGIN


def test_handle_sigterm_false_leaves_sigterm_alone(collector: Collector, tmp_path) -> None:
    """With handle_sigterm=False the process dies at once by SIGTERM; what was queued is not sent then."""
    env = {"DD_FLUSH_INTERVAL": "60", "DD_HANDLE_SIGTERM": "false"}
    with Server([PY, "script_sigterm.py", "20"], collector, tmp_path, env=env) as app:
        app.wait_output("ready")
        app.signal(signal.SIGTERM)
        code, seconds = app.wait_exit(MARGIN)
        assert code == -signal.SIGTERM, app.output()
        assert "Traceback" not in app.output()


# -- dictConfig twice ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode,before,debug",
    [("other", 50, False), ("same", 50, False), ("other", 1, True), ("same", 1, True)],
)
def test_second_dictconfig_with_an_event_queued_neither_hangs_nor_drops(
    collector: Collector, tmp_path, mode: str, before: int, debug: bool
) -> None:
    env = {"DD_FLUSH_INTERVAL": "60"}
    args = [PY, "script_dictconfig.py", mode, "50", str(before)] + (["debug"] if debug else [])
    with Server(args, collector, tmp_path, env=env) as app:
        code, seconds = app.wait_exit(2 * SHUTDOWN_TIMEOUT + MARGIN)
        assert code == 0, app.output()
        assert "done" in app.output()
        ids = app.ids()
        assert len(ids) == 50 + before
        assert_all_arrived(collector, ids, app.output())
        # Each arrived once: the closed handler's worker and the one that replaced it never share a request.
        received = [m["messageId"] for m in collector.received()]
        assert sorted(received) == sorted(ids), app.output()[-2000:]
        took = re.search(r"second dictConfig took ([0-9.]+)s", app.output())
        assert took is not None and float(took.group(1)) < SHUTDOWN_TIMEOUT + MARGIN


# -- kill -9 with a spool ------------------------------------------------------------------------------


def test_kill_9_during_an_outage_then_the_next_process_sends_the_spool(collector: Collector, tmp_path) -> None:
    spool = str(tmp_path / "spool.sqlite3")
    collector.set_down(Fault(503))
    with Server([PY, "script_spool.py", "emit", spool, "300"], collector, tmp_path) as app:
        app.wait_output("spooled", timeout=55)
        assert "spooled 300" in app.output(), app.output()
        ids = app.ids()
        # Killed while it sends from the spool (rows leased to it), not between two attempts.
        seen = len(collector.requests())
        deadline = time.monotonic() + 30
        while len(collector.requests()) == seen:
            assert time.monotonic() < deadline, "the app never tried the endpoint again"
            time.sleep(0.01)
        app.signal(signal.SIGKILL)
        app.wait_exit(MARGIN)
    collector.set_down(None)
    collector.reset()
    second = tmp_path / "second"
    second.mkdir()
    started = time.monotonic()
    with Server([PY, "script_spool.py", "drain", spool], collector, second) as app:
        assert collector.wait_for(len(ids), 60 + MARGIN), f"{len(collector.received())} of {len(ids)}"
        took = time.monotonic() - started
        app.wait_exit(10 + MARGIN)
        assert_all_arrived(collector, ids, app.output())
        assert took < 60 + MARGIN


# -- re-entrancy ---------------------------------------------------------------------------------------


def test_events_logged_from_a_signal_handler_never_hang(collector: Collector, tmp_path) -> None:
    with Server([PY, "script_reentrancy.py", "signal", "3000"], collector, tmp_path) as app:
        code, _ = app.wait_exit(30)
        assert code == 0, app.output()
        found = re.search(r"(\d+) events from the signal handler; flush: (\w+)", app.output())
        assert found is not None, app.output()
        assert int(found.group(1)) > 0 and found.group(2) == "True"
        ids = app.ids()
        assert len(ids) == 3000 + int(found.group(1))
        assert_all_arrived(collector, ids, app.output())


def test_flush_and_emit_inside_on_error_return_at_once(collector: Collector, tmp_path) -> None:
    with Server([PY, "script_reentrancy.py", "on_error"], collector, tmp_path) as app:
        code, _ = app.wait_exit(30)
        out = app.output()
        assert code == 0, out
        assert "on_error ran: True; flush: True" in out
        took = re.search(r"flush inside on_error returned \w+ in ([0-9.]+)s", out)
        assert took is not None and float(took.group(1)) < 1.0, out
        assert_all_arrived(collector, app.ids(), out)


# -- billiard's own pool -------------------------------------------------------------------------------


def test_billiard_pool_children_deliver_before_billiard_ends_them(collector: Collector, tmp_path) -> None:
    """Outside Celery, a billiard pool child ends with os._exit() in billiard's worker exit path: its handler
    is closed there first. flush_interval 60: every event rides on that close."""
    billiard = pytest.importorskip("billiard", reason="billiard is installed by the celery extra")
    if tuple(int(part) for part in billiard.__version__.split(".")[:2]) < (4, 3):
        # Seen with billiard 4.2.4 (the newest on Python 3.9): Pool(maxtasksperchild=1).map() fails with
        # WorkerLostError on its own, with no logging at all, so the scenario cannot run there.
        pytest.skip(f"billiard {billiard.__version__} loses pool jobs with maxtasksperchild=1 by itself")
    with Server([PY, "script_billiard.py", "16"], collector, tmp_path, env={"DD_FLUSH_INTERVAL": "60"}) as app:
        code, seconds = app.wait_exit(30)
        assert code == 0, app.output()
        assert "done" in app.output()
        ids = app.ids()
        assert len(ids) == 16
        assert_all_arrived(collector, ids, app.output())
