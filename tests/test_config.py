"""Configuration from files: fileConfig INI, Django's LOGGING setting, QueueHandler in front (3.12+)."""

from __future__ import annotations

import inspect
import json
import logging
import logging.config
import os
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import pytest

from dreamdata_logging import DreamdataHandler, track

from .conftest import WRITE_KEY

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def env(collector, monkeypatch):
    """The write key and endpoint only in the environment, as the config files expect."""
    monkeypatch.setenv("DREAMDATA_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("DREAMDATA_ENDPOINT", collector.url)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})  # closes what was configured
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("analytics").handlers.clear()


def _run(code: str, collector, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DREAMDATA_WRITE_KEY": WRITE_KEY, "DREAMDATA_ENDPOINT": collector.url, **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=str(EXAMPLES),
    )


def test_fileconfig_ini_example(collector, env):
    path = resources.files("dreamdata_logging").joinpath("examples", "logging.ini")
    with resources.as_file(path) as ini:
        logging.config.fileConfig(ini, disable_existing_loggers=False)
    log = logging.getLogger("analytics")
    [handler] = log.handlers
    assert isinstance(handler, DreamdataHandler)
    assert handler.endpoint == collector.url
    assert handler.flush_interval == 1.0 and isinstance(handler.flush_interval, float)
    assert handler.shutdown_timeout == 5.0 and handler.include_extra is True
    assert handler.level == logging.INFO and not log.propagate
    log.info("Configured", extra={**track(user_id="ini-1"), "source": "ini"})
    assert handler.flush(timeout=20)
    [message] = collector.received()
    assert message["userId"] == "ini-1" and message["properties"] == {"source": "ini"}
    handler.close()


def test_fileconfig_converts_string_args_and_kwargs(collector, env, tmp_path):
    ini = tmp_path / "strings.ini"
    ini.write_text(
        textwrap.dedent(
            f"""
            [loggers]
            keys=root

            [handlers]
            keys=dd

            [formatters]
            keys=

            [logger_root]
            level=INFO
            handlers=dd

            [handler_dd]
            class=dreamdata_logging.DreamdataHandler
            args=("{WRITE_KEY}",)
            kwargs={{"endpoint": "{collector.url}", "flush_at": "500", "max_retries": "3", "gzip": "yes",
                    "send": "true", "timeout": "2.5", "verify": "false", "include_extra": "0",
                    "proxies": "", "on_error": ""}}
            """
        )
    )
    logging.config.fileConfig(ini, disable_existing_loggers=False)
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, DreamdataHandler)]
    try:
        assert handler.flush_at == 500 and isinstance(handler.flush_at, int)
        assert handler.send is True and handler.include_extra is False and handler.on_error is None
        assert handler._transport.gzip is True and handler._transport.max_retries == 3
        assert handler._transport.timeout == 2.5 and handler._transport.verify is False
        logging.getLogger("strings").info("Strings", extra={**track(user_id="s-1"), "dropped": 1})
        assert handler.flush(timeout=20)
        [message] = collector.received()
        assert message["userId"] == "s-1" and "properties" not in message
        assert collector.requests()[0].headers.get("Content-Encoding") == "gzip"
    finally:
        handler.close()


def test_django_logging_setting(collector):
    pytest.importorskip("django")
    done = _run(
        """
        import logging
        import django
        from django.conf import settings
        from django_settings import LOGGING
        from dreamdata_logging import DreamdataHandler, track

        settings.configure(LOGGING=LOGGING)  # what a settings.py with LOGGING = {...} does
        django.setup()  # Django runs dictConfig(LOGGING) here
        log = logging.getLogger("analytics")
        [handler] = log.handlers
        assert isinstance(handler, DreamdataHandler), log.handlers
        assert handler.flush_interval == 1.0
        log.info("Signed Up", extra=track(user_id="django-1", properties={"plan": "pro"}))
        assert handler.flush(timeout=30)
        print("ok", django.get_version())
        """,
        collector,
    )
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr
    [message] = collector.received()
    assert message["event"] == "Signed Up" and message["userId"] == "django-1"


QUEUE_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "dreamdata": {"class": "dreamdata_logging.DreamdataHandler", "flush_interval": "0.2"},
        "queued": {"class": "logging.handlers.QueueHandler", "handlers": ["dreamdata"]},
    },
    "loggers": {"analytics": {"handlers": ["queued"], "level": "INFO", "propagate": False}},
}


@pytest.mark.skipif(
    sys.version_info < (3, 12),
    reason="dictConfig's 'handlers'/'listener' keys for QueueHandler exist from Python 3.12",
)
def test_queue_handler_in_front_delivers_at_exit(collector):
    """The README's recipe: start the listener, stop it at exit; nothing is lost at interpreter exit."""
    done = _run(
        f"""
        import atexit, json, logging, logging.config, logging.handlers
        from dreamdata_logging import DreamdataHandler, track

        logging.config.dictConfig(json.loads({json.dumps(json.dumps(QUEUE_CONFIG))}))
        queued = logging.getLogger("analytics").handlers[0]
        assert isinstance(queued, logging.handlers.QueueHandler)
        assert isinstance(queued.listener.handlers[0], DreamdataHandler)
        queued.listener.start()  # dictConfig makes the listener but does not start it
        atexit.register(queued.listener.stop)  # runs before logging.shutdown: drains the queue first

        log = logging.getLogger("analytics")
        for n in range(300):
            log.info("Queued %s", n, extra=track(user_id="q-1", properties={{"n": n}}))
        # no flush, no close: interpreter exit (logging.shutdown) must deliver all 300
        """,
        collector,
    )
    assert done.returncode == 0, done.stderr
    received = collector.received()
    assert sorted(m["properties"]["n"] for m in received) == list(range(300))
    assert received[0]["event"] == "Queued 0"
    assert "not delivered" not in done.stderr


def _documented_keywords() -> dict[str, str]:
    """Each entry of the Args block of DreamdataHandler's docstring: keyword -> its text."""
    doc = inspect.cleandoc(DreamdataHandler.__doc__ or "")  # Python 3.13 strips the indentation itself
    assert "\nArgs:\n" in doc
    entries: dict[str, str] = {}
    keyword = None
    for line in doc.split("\nArgs:\n", 1)[1].splitlines():
        if line.startswith(" " * 8) and keyword is not None:
            entries[keyword] += " " + line.strip()
        elif line.startswith(" " * 4) and ":" in line:
            keyword, text = line.strip().split(":", 1)
            entries[keyword] = text.strip()
    return entries


def test_every_keyword_is_documented_with_its_default() -> None:
    parameters = dict(inspect.signature(DreamdataHandler.__init__).parameters)
    del parameters["self"]
    entries = _documented_keywords()
    assert list(entries) == list(parameters)  # each keyword, in the order of the signature
    for name, parameter in parameters.items():
        default = parameter.default
        if name == "level":
            shown = f"logging.NOTSET ({default})"
        elif isinstance(default, bool) or default is None:
            shown = repr(default)
        elif isinstance(default, (int, float)):
            shown = f"{default:,}"
        else:
            shown = f'"{default}"'
        assert f"Default {shown}" in entries[name].replace("``", ""), (name, shown, entries[name])
