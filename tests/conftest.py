"""Shared fixtures: a real collector on loopback and handlers pointed at it."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, settings

from dreamdata_logging import DreamdataHandler, track
from dreamdata_logging.tools.collector import Collector

from .scenarios.timings import tune

# Property tests: the same examples on every run ("ci", the default: a newcomer's run never fails by chance);
# more, and new ones each run, with HYPOTHESIS_PROFILE=dev. An example either profile ever found failing is
# kept in the tests as an explicit case (@example or a parametrized test).
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", derandomize=True, database=None, max_examples=150, deadline=None,
                          suppress_health_check=_QUIET, print_blob=True)  # fmt: skip
settings.register_profile("dev", max_examples=400, deadline=None, suppress_health_check=_QUIET, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "ci")

# A shell that starts a command in the background without job control makes it ignore Ctrl-C, and every
# process it starts inherits that: the tests that press Ctrl-C (here and in the servers they start) need
# it delivered.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

WRITE_KEY = "test-write-key-7c1f"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A collector that checks this package's exact format and keeps every message it accepts."""
    with Collector(write_key=WRITE_KEY, strict=True, keep=None) as running:
        yield running


@pytest.fixture
def handler_timings() -> dict[str, Any]:
    """Timings ``make_handler`` gives each handler's parts (see ``scenarios/timings.py``); none by default.
    A test module overrides this fixture to shorten the waits of all its handlers."""
    return {}


@pytest.fixture
def make_handler(
    collector: Collector, handler_timings: dict[str, Any]
) -> Iterator[Callable[..., DreamdataHandler]]:
    """Build handlers aimed at the collector; all are closed after the test.

    Besides the handler's options: ``backoff=`` and ``spool_timing=`` (see ``scenarios/timings.py``)."""
    made: list[DreamdataHandler] = []

    def make(**options: Any) -> DreamdataHandler:
        options.setdefault("endpoint", collector.url)
        options.setdefault("write_key", WRITE_KEY)
        timings = {**handler_timings}
        for name in ("backoff", "spool_timing"):
            if name in options:
                timings[name] = options.pop(name)
        handler = tune(DreamdataHandler(**options), **timings)
        made.append(handler)
        return handler

    yield make
    for handler in made:
        handler.close()


@pytest.fixture
def make_logger() -> Iterator[Callable[[logging.Handler], logging.Logger]]:
    """A fresh, non-propagating logger at DEBUG with the given handler attached."""
    attached: list[tuple[logging.Logger, logging.Handler]] = []

    def make(handler: logging.Handler) -> logging.Logger:
        log = logging.getLogger(f"test.{uuid.uuid4().hex}")
        log.setLevel(logging.DEBUG)
        log.propagate = False
        log.addHandler(handler)
        attached.append((log, handler))
        return log

    yield make
    for log, handler in attached:
        log.removeHandler(handler)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate and key for 127.0.0.1 and localhost, for local https servers."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


def logger_with(handler: logging.Handler) -> logging.Logger:
    """A fresh, non-propagating logger at INFO with ``handler`` attached."""
    log = logging.getLogger(f"test.{uuid.uuid4().hex}")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    return log


def log_events(log: logging.Logger, count: int, name: str = "Test Event") -> list[str]:
    """Log ``count`` track events with known messageIds; returns the ids in order."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for n, message_id in enumerate(ids):
        log.info(name, extra=track(user_id=f"u{n}", message_id=message_id))
    return ids
