"""uWSGI prefork (with and without --lazy-apps), recycled workers (--max-requests), an event logged at import
in the master before fork; shut down by SIGTERM with --die-on-term. Requests come over its HTTP socket."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from dreamdata_logging.tools.collector import Collector

from .harness import MARGIN, SHUTDOWN_TIMEOUT, Server, assert_all_arrived, free_port, get, tool

UWSGI = tool("uwsgi")
if not os.path.exists(UWSGI):
    pytest.skip("uWSGI is installed by the servers extra", allow_module_level=True)

REQUESTS = 20
CASES = {
    "prefork": ([], False),
    "prefork_event_at_import": ([], True),
    "lazy_apps": (["--lazy-apps"], False),
    "lazy_apps_event_at_import": (["--lazy-apps"], True),
    "prefork_max_requests": (["--max-requests", "3"], False),
    "lazy_apps_max_requests": (["--lazy-apps", "--max-requests", "3"], False),
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


@pytest.mark.parametrize("options,event_at_import", CASES.values(), ids=CASES.keys())
def test_uwsgi_delivers_every_event(
    collector: Collector, tmp_path: Path, options: list[str], event_at_import: bool
) -> None:
    port, stats_port = free_port(), free_port()
    argv = [UWSGI, "--http-socket", f"127.0.0.1:{port}", "--master", "--processes", "2", "--wsgi-file",
            "wsgi_app.py", "--need-app", "--die-on-term", "--disable-logging", "--stats", f"127.0.0.1:{stats_port}",
            *options]
    # flush_interval 60: nothing is sent on the timer, so every event rides on a worker's end or the shutdown.
    env = {"DD_FLUSH_INTERVAL": "60", "DD_EVENT_AT_IMPORT": "1" if event_at_import else "0"}
    with Server(argv, collector, tmp_path, env=env) as server:
        server.wait_http(f"http://127.0.0.1:{port}/")
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
        if event_at_import and "--lazy-apps" not in options:
            # Logged in the master before it forks: the master runs no Python exit hooks, and a sending
            # thread there could be forked into a worker mid-request, so the handler refuses the event
            # there, loudly, rather than lose it silently or risk hanging the workers.
            master_event, ids = ids[0], ids[1:]
            assert master_event not in {m["messageId"] for m in collector.received()}
            assert "cannot be delivered" in server.output() and "--lazy-apps" in server.output()
        assert_all_arrived(collector, ids, server.output())
        assert seconds < SHUTDOWN_TIMEOUT + MARGIN
