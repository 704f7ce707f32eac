"""uvicorn (Ctrl-C, SIGTERM, --workers 2, uvicorn.run() from a script), gunicorn with uvicorn's worker, and
gunicorn sync workers recycled by --max-requests and reloaded by SIGHUP (with and without --preload)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import pytest

from dreamdata_logging.tools.collector import Collector

from .harness import MARGIN, SHUTDOWN_TIMEOUT, Server, assert_all_arrived, free_port, get, tool

pytest.importorskip("uvicorn", reason="uvicorn is installed by the servers extra")
pytest.importorskip("gunicorn", reason="gunicorn is installed by the servers extra")

REQUESTS = 20
#: flush_interval 60: nothing is sent on the timer, so every event rides on the shutdown path.
ENV = {"DD_FLUSH_INTERVAL": "60"}


def drive(port: int, count: int = REQUESTS) -> None:
    for _ in range(count):
        assert get(f"http://127.0.0.1:{port}/event") == b"ok"  # answered: the event was logged


def stop_and_check(collector: Collector, server: Server, sig: int, group: bool = False) -> int:
    server.signal(sig, group=group)
    code, seconds = server.wait_exit(SHUTDOWN_TIMEOUT + MARGIN)
    assert_all_arrived(collector, server.ids(), server.output())
    assert seconds < SHUTDOWN_TIMEOUT + MARGIN
    return code


UVICORN = {
    "ctrl_c": ([], signal.SIGINT, True, False),
    "sigterm": ([], signal.SIGTERM, False, False),
    "workers_2_sigterm": (["--workers", "2"], signal.SIGTERM, False, False),
    "workers_2_ctrl_c": (["--workers", "2"], signal.SIGINT, True, False),
    "workers_2_sigterm_middleware": (["--workers", "2"], signal.SIGTERM, False, True),
}
#: uvicorn's own exit status: one process ends by the SIGTERM it re-raises (Ctrl-C: KeyboardInterrupt, caught:
#: status 0); a --workers parent ends normally.
STATUS = {(False, signal.SIGTERM): {-signal.SIGTERM}, (False, signal.SIGINT): {0},
          (True, signal.SIGTERM): {0}, (True, signal.SIGINT): {0}}  # fmt: skip
SLOW = 4


def slow_requests(port: int, count: int) -> tuple[list[threading.Thread], list[bytes]]:
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda: answers.append(get(f"http://127.0.0.1:{port}/slow", 30)))
               for _ in range(count)]  # fmt: skip
    for thread in threads:
        thread.start()
    return threads, answers


@pytest.mark.parametrize("options,sig,group,middleware", UVICORN.values(), ids=UVICORN.keys())
def test_uvicorn_delivers_every_event(
    collector: Collector, tmp_path: Path, options: list[str], sig: int, group: bool, middleware: bool
) -> None:
    """Without DreamdataMiddleware: uvicorn holds SIGTERM and SIGINT while it serves (the app, and our handler,
    are made inside that), and re-raises the signal after its graceful shutdown, ending the worker with the
    default action. What 4 requests still in flight and the lifespan shutdown log after the signal arrives."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1", "--port", str(port), *options]
    env = {**ENV, "DD_SHUTDOWN_EVENTS": "3", "DD_ASGI_MIDDLEWARE": "1" if middleware else "0"}
    with Server(argv, collector, tmp_path, env=env) as server:
        server.wait_http(f"http://127.0.0.1:{port}/")
        drive(port)
        threads, answers = slow_requests(port, SLOW)
        server.wait_ids(REQUESTS + SLOW)  # every slow request has begun: they end after the signal
        code = stop_and_check(collector, server, sig, group)
        for thread in threads:
            thread.join(10)
        assert answers == [b"ok"] * SLOW  # the graceful shutdown let them finish
        ids = server.ids()
        assert len(ids) >= REQUESTS + SLOW * 6 + 3  # the requests' steps and a lifespan shutdown were logged
        assert code in STATUS[bool(options), sig], server.output()


def test_uvicorn_workers_handle_sigterm_false_opts_out(collector: Collector, tmp_path: Path) -> None:
    """handle_sigterm=False: nothing is delivered at uvicorn's shutdown (flush_interval 60: nothing at all)."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "2"]  # fmt: skip
    env = {**ENV, "DD_SHUTDOWN_EVENTS": "3", "DD_HANDLE_SIGTERM": "false"}
    with Server(argv, collector, tmp_path, env=env) as server:
        server.wait_http(f"http://127.0.0.1:{port}/")
        drive(port, 5)
        server.signal(signal.SIGTERM)
        code, _ = server.wait_exit(SHUTDOWN_TIMEOUT + MARGIN)
        assert code == 0, server.output()
        assert len(server.ids()) >= 5 + 3
        assert collector.received() == []


def test_uvicorn_run_from_a_script_after_the_handler_exists(collector: Collector, tmp_path: Path) -> None:
    """uvicorn.run() runs dictConfig after the app made our handler: the handler must keep working."""
    port = free_port()
    with Server([sys.executable, "uvicorn_run.py", str(port)], collector, tmp_path, env=ENV) as server:
        server.wait_http(f"http://127.0.0.1:{port}/")
        drive(port)
        stop_and_check(collector, server, signal.SIGTERM)


def test_gunicorn_with_uvicorn_worker_sigterm(collector: Collector, tmp_path: Path) -> None:
    pytest.importorskip("uvicorn.workers", reason="this uvicorn has no gunicorn worker")
    port = free_port()
    argv = [tool("gunicorn"), "-k", "uvicorn.workers.UvicornWorker", "-w", "2", "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "20", "asgi_app:app"]
    with Server(argv, collector, tmp_path, env=ENV) as server:
        server.wait_http(f"http://127.0.0.1:{port}/")
        drive(port)
        assert stop_and_check(collector, server, signal.SIGTERM) == 0, server.output()


@pytest.mark.parametrize("preload", [False, True], ids=["", "preload"])
def test_gunicorn_sync_max_requests_and_sighup(collector: Collector, tmp_path: Path, preload: bool) -> None:
    port = free_port()
    argv = [tool("gunicorn"), "-w", "2", "--max-requests", "3", "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "20", *(["--preload"] if preload else []), "wsgi_app:application"]
    with Server(argv, collector, tmp_path, env=ENV) as server:
        server.wait_http(f"http://127.0.0.1:{port}/")
        drive(port)
        booted = server.output().count("Booting worker")
        server.signal(signal.SIGHUP)  # reload: new workers, the old ones stop gracefully
        server.wait_until(lambda: server.output().count("Booting worker") >= booted + 2, "the reload")
        drive(port)
        assert stop_and_check(collector, server, signal.SIGTERM) == 0, server.output()
