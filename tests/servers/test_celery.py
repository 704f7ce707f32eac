"""Celery prefork workers on the filesystem broker: every event a task logs arrives, through warm shutdown
(SIGTERM) and recycled pool children (--max-tasks-per-child 1)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dreamdata_logging.tools.collector import Collector

from .harness import APPS, MARGIN, SHUTDOWN_TIMEOUT, Server, assert_all_arrived, tool

pytest.importorskip("celery", reason="Celery is installed by the servers extra")

#: Celery's own warm shutdown (stopping consumers, joining the pool) comes on top of shutdown_timeout.
CELERY_SHUTDOWN = SHUTDOWN_TIMEOUT + MARGIN + 5


def start_worker(collector: Collector, tmp_path: Path, mode: str, *options: str, flush_interval: str = "60") -> Server:
    folder = tmp_path / "broker"
    folder.mkdir()
    # flush_interval 60: nothing is sent on the timer, so every event rides on a child's end or the shutdown.
    env = {"DD_CELERY_FOLDER": str(folder), "DD_CELERY_MODE": mode, "DD_FLUSH_INTERVAL": flush_interval}
    argv = [tool("celery"), "-A", "celery_app", "worker", "--pool", "prefork", "--concurrency", "2", "-l", "INFO",
            "--without-heartbeat", "--without-mingle", "--without-gossip", *options]
    server = Server(argv, collector, tmp_path, env=env)
    server.wait_output(" ready.")
    return server


def send_tasks(server: Server, count: int) -> None:
    """Send ``count`` tasks from another process, as an application would."""
    sent = subprocess.run([sys.executable, "celery_app.py", str(count)], cwd=str(APPS), env=server.env,
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr


CASES = {
    "named_logger": ("named", []),
    "named_logger_max_tasks_per_child_1": ("named", ["--max-tasks-per-child", "1"]),
    "root_logger_unhijacked": ("root-unhijacked", []),
    "root_logger_after_setup_logger": ("root-signal", ["--max-tasks-per-child", "1"]),
    "root_logger_celery_setup": ("root-setup", []),
}


@pytest.mark.parametrize("mode,options", CASES.values(), ids=CASES.keys())
def test_celery_prefork_warm_shutdown_delivers_every_event(
    collector: Collector, tmp_path: Path, mode: str, options: list[str]
) -> None:
    count = 16
    server = start_worker(collector, tmp_path, mode, *options)
    with server:
        send_tasks(server, count)
        ids = server.wait_ids(count)
        server.signal(signal.SIGTERM)  # warm shutdown
        code, seconds = server.wait_exit(CELERY_SHUTDOWN)
        assert code == 0, server.output()
        assert_all_arrived(collector, ids, server.output())
        assert seconds < CELERY_SHUTDOWN
