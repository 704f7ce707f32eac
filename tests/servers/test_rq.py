"""RQ: a real worker (``rq worker``, forking a work horse per job) against a real Redis server started here.
Every event a job logs arrives, although each work horse ends with ``os._exit()`` right after its job, thanks
to the one line ``dreamdata_logging.rq.setup()``; without it, they are lost."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dreamdata_logging.tools.collector import Collector

from .harness import APPS, Server, assert_all_arrived, free_port, tool

pytest.importorskip("rq", reason="RQ is installed by the test extra")

JOBS = 10
EVENTS_PER_JOB = 3


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A Redis server of its own on a free loopback port, for one test."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("DREAMDATA_LOGGING_REQUIRE_REDIS") or os.environ.get("CI"):  # CI installs it
            pytest.fail("redis-server is required here but not installed")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(folder)]  # fmt: skip
    with Server(argv, None, folder) as server:
        server.wait_output("Ready to accept connections")
        yield f"redis://127.0.0.1:{port}/0"


def finished_jobs(redis_url: str) -> int:
    """How many jobs RQ has recorded as finished (a work horse does that at the end of its job)."""
    from redis import Redis
    from rq import Queue

    connection = Redis.from_url(redis_url)
    try:
        return int(Queue("default", connection=connection).finished_job_registry.count)
    finally:
        connection.close()


def run_worker(collector: Collector, tmp_path: Path, redis_url: str, setup: bool, *options: str) -> Server:
    """Enqueue the jobs and start a worker; return once RQ recorded every job finished. The worker is not
    stopped: its own exit plays no part in what the jobs logged."""
    env = {"REDIS_URL": redis_url, "DD_FLUSH_INTERVAL": "60", "DD_RQ_SETUP": "true" if setup else "false"}
    folder = tmp_path / "worker"
    folder.mkdir()
    # flush_interval 60: nothing is sent on the timer, so every event rides on the end of its job.
    server = Server([tool("rq"), "worker", "-c", "rq_app", *options], collector, folder, env=env)
    try:
        enqueued = subprocess.run([sys.executable, "rq_app.py", str(JOBS), str(EVENTS_PER_JOB)], cwd=str(APPS),
                                  env=server.env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert enqueued.returncode == 0, enqueued.stderr
        server.wait_until(lambda: finished_jobs(redis_url) >= JOBS, f"{JOBS} jobs done", timeout=40)
    except BaseException:
        server.close()
        raise
    return server


WORKERS = {"forked": [], "spawned": ["-w", "rq_app.SpawnedWorker"]}


@pytest.mark.parametrize("options", WORKERS.values(), ids=WORKERS.keys())
def test_rq_work_horses_deliver_every_event_with_setup(
    collector: Collector, tmp_path: Path, redis_url: str, options: list[str]
) -> None:
    if options and int(importlib.import_module("rq.version").VERSION.split(".")[0]) < 3:
        pytest.skip("before RQ 3.0 a spawned work horse imports no module of the application before the job")
    with run_worker(collector, tmp_path, redis_url, True, *options) as worker:
        ids = worker.ids()
        assert len(ids) == JOBS * EVENTS_PER_JOB, worker.output()
        assert_all_arrived(collector, ids, worker.output())
        pids = {message["properties"]["pid"] for message in collector.received()}
        assert len(pids) == JOBS  # one work horse per job, each a process of its own


def test_without_setup_the_work_horses_lose_their_events(collector: Collector, tmp_path: Path, redis_url: str) -> None:
    """The control: the same worker without the one line; each work horse ends before it sends anything."""
    with run_worker(collector, tmp_path, redis_url, setup=False) as worker:
        assert len(worker.ids()) == JOBS * EVENTS_PER_JOB, worker.output()
        assert collector.received() == []
