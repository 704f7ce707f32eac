"""uWSGI prefork (with and without --lazy-apps), recycled workers (--max-requests), an event logged at import
in the master before fork (with and without a spool), a spool found at start; shut down by SIGTERM with
--die-on-term. Requests come over its HTTP socket."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from dreamdata_logging.spool.spool import Spool
from dreamdata_logging.tools.collector import Collector

from ..test_spool import message
from .harness import MARGIN, SHUTDOWN_TIMEOUT, Server, assert_all_arrived, free_port, get, tool

UWSGI = tool("uwsgi")
if not os.path.exists(UWSGI):
    pytest.skip("uWSGI is installed by the servers extra", allow_module_level=True)

REQUESTS = 20
CASES = {
    "prefork": ([], False, False),
    "prefork_event_at_import": ([], True, False),
    "prefork_event_at_import_spool": ([], True, True),
    "lazy_apps": (["--lazy-apps"], False, False),
    "lazy_apps_event_at_import": (["--lazy-apps"], True, False),
    "prefork_max_requests": (["--max-requests", "3"], False, False),
    "lazy_apps_max_requests": (["--lazy-apps", "--max-requests", "3"], False, False),
}


def loaded(output: str) -> int:
    return output.count("WSGI app 0 (mountpoint='') ready")


def workers_idle(stats_port: int) -> bool:
    """Every worker idle, as uWSGI's stats server says. uWSGI skips a worker's Python exit hooks when the
    shutdown finds it busy (still finishing a request the client already has its answer to)."""
    try:
        with socket.create_connection(("127.0.0.1", stats_port), timeout=2) as conn:
            raw = b"".join(iter(lambda: conn.recv(65536), b""))
        workers = json.loads(raw)["workers"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(workers) and all(w.get("status") == "idle" for w in workers)


def uwsgi_argv(port: int, stats_port: int, options: list[str]) -> list[str]:
    return [UWSGI, "--http-socket", f"127.0.0.1:{port}", "--master", "--processes", "2", "--wsgi-file",
            "wsgi_app.py", "--need-app", "--die-on-term", "--disable-logging", "--stats", f"127.0.0.1:{stats_port}",
            *options]  # fmt: skip


@pytest.mark.parametrize("options,event_at_import,spool", CASES.values(), ids=CASES.keys())
def test_uwsgi_delivers_every_event(
    collector: Collector, tmp_path: Path, options: list[str], event_at_import: bool, spool: bool
) -> None:
    """An event logged in the master (at import, without --lazy-apps) arrives too: sent at once from the
    master (which runs no thread: it forks the workers), or, with a spool, kept there for the workers."""
    port, stats_port = free_port(), free_port()
    argv = uwsgi_argv(port, stats_port, options)
    # flush_interval 60: nothing is sent on the timer, so every event rides on a worker's end or the shutdown;
    # with a spool, 1: the workers drain the spool on their timer.
    env = {"DD_FLUSH_INTERVAL": "1" if spool else "60", "DD_EVENT_AT_IMPORT": "1" if event_at_import else "0",
           "DD_SPOOL": str(tmp_path / "spool.sqlite3") if spool else ""}  # fmt: skip
    with Server(argv, collector, tmp_path, env=env) as server:
        server.wait_http(f"http://127.0.0.1:{port}/")
        if spool:  # the master's event went to the spool, and a worker sent it from there
            assert collector.wait_for(1, 30), server.output()
            server.wait_until(lambda: Spool(tmp_path / "spool.sqlite3").pending() == (0, 0), "emptying the spool")
        for _ in range(REQUESTS):
            assert get(f"http://127.0.0.1:{port}/event") == b"ok"  # answered: the event was logged
        if "--lazy-apps" in options:  # every worker, respawned ones too, loaded the app before the SIGTERM
            server.wait_until(lambda: loaded(server.output()) >= 2 + server.output().count("Respawned uWSGI worker"),
                              "loading the app in every worker")
        server.wait_until(lambda: workers_idle(stats_port), "every worker idle")
        server.signal(signal.SIGTERM)
        code, seconds = server.wait_exit(SHUTDOWN_TIMEOUT + MARGIN)
        assert code == 0, server.output()
        ids = server.ids()
        assert len(ids) >= REQUESTS + event_at_import
        assert_all_arrived(collector, ids, server.output())
        assert seconds < SHUTDOWN_TIMEOUT + MARGIN


@pytest.mark.parametrize("app_postfork", [False, True], ids=["", "uwsgidecorators_postfork"])
def test_uwsgi_workers_drain_a_spool_found_at_start_without_any_request(
    collector: Collector, tmp_path: Path, app_postfork: bool
) -> None:
    """The app (and the handler) loaded in the master, which never sends; uWSGI forks the workers in C, so no
    Python fork hook runs; no request comes, so no event is logged: the workers still send the 20 events.
    An app's own @postfork function (uwsgidecorators) still runs in each worker."""
    spool_path = tmp_path / "spool.sqlite3"
    spooled = [message(n, "found-at-start") for n in range(20)]
    Spool(spool_path).put(spooled)
    port, stats_port = free_port(), free_port()
    env = {"DD_FLUSH_INTERVAL": "1", "DD_SPOOL": str(spool_path), "DD_POSTFORK": "1" if app_postfork else "0"}
    with Server(uwsgi_argv(port, stats_port, []), collector, tmp_path, env=env) as server:
        assert collector.wait_for(20, 30), server.output()
        server.wait_until(lambda: Spool(spool_path).pending() == (0, 0), "emptying the spool")
        if app_postfork:
            server.wait_until(lambda: server.output().count("app postfork") == 2, "the app's postfork, twice")
        server.signal(signal.SIGTERM)
        code, _ = server.wait_exit(SHUTDOWN_TIMEOUT + MARGIN)
        assert code == 0, server.output()
        assert server.ids() == []
        assert_all_arrived(collector, [json.loads(data)["messageId"] for data in spooled], server.output())
