"""``dreamdata_logging.celery.setup()`` with a real Celery worker (filesystem broker, solo pool, subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import WRITE_KEY

celery = pytest.importorskip("celery")

ROOT = Path(__file__).resolve().parent.parent

TASKS = textwrap.dedent(
    """
    import logging, os
    from celery import Celery
    import dreamdata_logging.celery
    from dreamdata_logging import DreamdataHandler, track
    from dreamdata_logging.events.bind import bound

    # On the root logger, where the worker's logging set-up would remove it without setup().
    logging.getLogger().addHandler(DreamdataHandler(flush_interval=0.2))
    log = logging.getLogger("analytics")
    log.setLevel(logging.INFO)

    folder = os.environ["BROKER_FOLDER"]
    app = Celery("tasks", broker="filesystem://")
    app.conf.broker_transport_options = {"data_folder_in": folder, "data_folder_out": folder}
    app.conf.task_ignore_result = True
    dreamdata_logging.celery.setup()

    @app.task
    def record(n):
        seen = bound()
        log.info("Task Ran", extra=track(properties={"n": n, "seen": seen}, anonymous_id=None if seen else "worker"))
    """
)

SEND = textwrap.dedent(
    """
    from dreamdata_logging import bind
    from tasks import record

    with bind(user_id="web-user", context={"ip": "198.51.100.4", "locale": "da-DK"}):
        record.delay(1)
    record.delay(2)  # nothing bound: nothing travels
    with bind(anonymous_id="anon-3"):
        record.apply_async((3,), countdown=0)
    with bind(user_id=42, integrations={"All": False}):
        record.delay(4)
    record.delay(5)
    """
)


@pytest.fixture
def project(tmp_path, collector):
    (tmp_path / "tasks.py").write_text(TASKS)
    (tmp_path / "send.py").write_text(SEND)
    broker = tmp_path / "broker"
    broker.mkdir()
    env = {
        **os.environ,
        "BROKER_FOLDER": str(broker),
        "DREAMDATA_WRITE_KEY": WRITE_KEY,
        "DREAMDATA_ENDPOINT": collector.url,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return tmp_path, env


def test_bound_identity_travels_to_the_worker_and_nowhere_else(project, collector):
    folder, env = project
    sent = subprocess.run([sys.executable, "send.py"], cwd=folder, env=env, timeout=60, capture_output=True)
    assert sent.returncode == 0, sent.stderr.decode()
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool=solo", "--loglevel=INFO",
         "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        arrived = collector.wait_for(5, timeout=90)
    finally:
        worker.terminate()
        try:
            _, err = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            _, err = worker.communicate()
    assert arrived, err.decode()[-3000:]
    events = {e["properties"]["n"]: e for e in collector.received()}
    assert sorted(events) == [1, 2, 3, 4, 5]
    first = events[1]
    assert first["userId"] == "web-user" and "anonymousId" not in first
    assert first["context"]["ip"] == "198.51.100.4" and first["context"]["locale"] == "da-DK"
    assert first["properties"]["seen"]["userId"] == "web-user"
    for n in (2, 5):  # sent unbound, right after a bound one: nothing leaked from the previous task
        assert events[n]["properties"]["seen"] == {} and events[n]["anonymousId"] == "worker"
        assert "userId" not in events[n] and "ip" not in events[n]["context"]
    assert events[3]["anonymousId"] == "anon-3" and "userId" not in events[3]
    assert events[4]["userId"] == "42" and events[4]["integrations"] == {"All": False}


def test_eager_tasks_run_with_the_callers_bindings(collector, make_handler, make_logger):
    import dreamdata_logging.celery
    from dreamdata_logging import bind, track

    dreamdata_logging.celery.setup()
    dreamdata_logging.celery.setup()  # twice: connected once
    app = celery.Celery("eager", broker="memory://")
    app.conf.task_always_eager = True
    handler = make_handler()
    log = make_logger(handler)

    @app.task
    def signed_up(plan):
        log.info("Signed Up", extra=track(properties={"plan": plan}))

    with bind(user_id="eager-user"):
        signed_up.delay("pro")
    assert handler.flush(timeout=20) and collector.wait_for(1, timeout=20)
    (event,) = collector.received()
    assert event["userId"] == "eager-user" and event["properties"] == {"plan": "pro"}


def test_published_headers_carry_only_what_is_bound():
    import dreamdata_logging.celery as integration
    from dreamdata_logging import bind

    headers: dict = {}
    integration._on_publish(headers=headers)
    assert headers == {}
    with bind(user_id="u1", context={"ip": "10.0.0.1"}):
        integration._on_publish(headers=headers)
    assert integration._bound_from(type("Request", (), {integration.HEADER: headers[integration.HEADER]})) == {
        "userId": "u1",
        "context": {"ip": "10.0.0.1"},
    }
    forged = type("Request", (), {integration.HEADER: '{"userId": 5, "evil": 1, "anonymousId": "a"}'})
    assert integration._bound_from(forged) == {"anonymousId": "a"}  # wrong types and unknown keys dropped
