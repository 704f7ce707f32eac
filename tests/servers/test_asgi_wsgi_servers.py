"""uvicorn (Ctrl-C, SIGTERM, --workers 2, uvicorn.run() from a script), gunicorn with uvicorn's worker, and
gunicorn sync workers recycled by --max-requests and reloaded by SIGHUP (with and without --preload)."""

from __future__ import annotations

import signal
import sys
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
    "ctrl_c": ([], signal.SIGINT, True),
    "sigterm": ([], signal.SIGTERM, False),
    # uvicorn imports the app inside its own signal handling (with --workers, and in one process too in some
    # versions), so the handler's SIGTERM hook is not installed there, and uvicorn ends the process by SIGTERM
    # with the default action after its graceful shutdown: the app is wrapped in DreamdataMiddleware, which
    # flushes at lifespan shutdown, as docs/deployment.md says to do.
    "workers_2_sigterm": (["--workers", "2"], signal.SIGTERM, False),
    "workers_2_ctrl_c": (["--workers", "2"], signal.SIGINT, True),
}


@pytest.mark.parametrize("options,sig,group", UVICORN.values(), ids=UVICORN.keys())
def test_uvicorn_delivers_every_event(
    collector: Collector, tmp_path: Path, options: list[str], sig: int, group: bool
) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1", "--port", str(port), *options]
    env = {**ENV, "DD_ASGI_MIDDLEWARE": "1"}
    with Server(argv, collector, tmp_path, env=env) as server:
        server.wait_http(f"http://127.0.0.1:{port}/")
        drive(port)
        code = stop_and_check(collector, server, sig, group)
        if sig == signal.SIGTERM:
            assert code in (0, -signal.SIGTERM), server.output()


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
