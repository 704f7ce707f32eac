"""The ``dreamdata_events`` fixture, as a user's own test suite gets it: through the ``pytest11`` entry point."""

from __future__ import annotations

import importlib.metadata
import logging
import re
import subprocess
import sys
import textwrap

from dreamdata_logging import DreamdataHandler, testing, track
from dreamdata_logging.testing import capture

pytest_plugins = ["pytester"]

USER_TESTS = textwrap.dedent(
    """
    import logging

    import pytest

    from dreamdata_logging import DreamdataHandler, bind, identify, track

    log = logging.getLogger("myapp.analytics")
    log.setLevel(logging.INFO)
    # made at import, before any fixture, aimed at an address where nothing listens
    log.addHandler(DreamdataHandler("real-key", endpoint="http://127.0.0.1:9", max_retries=0))


    def signup(user_id, plan):
        log.info("identify", extra=identify(user_id=user_id, traits={"plan": plan}))
        log.info("Signed Up", extra=track(user_id=user_id, properties={"plan": plan, "source": "ads"}))


    def test_signup_is_tracked(dreamdata_events):
        signup("019mr8mf4r", "pro")
        event = dreamdata_events.assert_tracked("Signed Up", plan="pro")
        assert event["userId"] == "019mr8mf4r"
        assert [m["type"] for m in dreamdata_events.messages] == ["identify", "track"]
        assert dreamdata_events.identifies()[0]["traits"] == {"plan": "pro"}
        assert dreamdata_events.tracks("Signed Up") == dreamdata_events.find(event="Signed Up", user_id="019mr8mf4r")
        assert dreamdata_events.of_type("page") == []
        dreamdata_events.assert_nothing_invalid()


    def test_handlers_made_during_the_test_need_no_key_and_send_nothing(dreamdata_events):
        handler = DreamdataHandler(endpoint="http://127.0.0.1:9")  # DREAMDATA_WRITE_KEY set by the fixture
        other = logging.getLogger("myapp.other")
        other.addHandler(handler)
        with bind(user_id="bound"):
            other.warning("Bound Event", extra=track())
        assert dreamdata_events.find(user_id="bound")[0]["event"] == "Bound Event"
        assert handler.stats()["requests"] == 0 and handler.stats()["queued"] == 0
        other.removeHandler(handler)


    def test_invalid_events_and_clear(dreamdata_events):
        log.info("no id", extra={"dreamdata": {"type": "track"}})
        assert len(dreamdata_events.invalid) == 1 and "userId" in str(dreamdata_events.invalid[0])
        with pytest.raises(AssertionError, match="1 invalid event"):
            dreamdata_events.assert_nothing_invalid()
        signup("u2", "free")
        with pytest.raises(AssertionError, match="tracked: \\\\['Signed Up'\\\\]"):
            dreamdata_events.assert_tracked("Logged In")
        with pytest.raises(AssertionError, match="none with properties"):
            dreamdata_events.assert_tracked("Signed Up", plan="pro")
        dreamdata_events.clear()
        assert len(dreamdata_events) == 0 and dreamdata_events.invalid == []


    def test_nothing_was_sent_by_the_import_time_handler():
        [handler] = log.handlers
        assert handler.stats()["requests"] == 0 and handler.stats()["queued"] == 0
        assert handler.stats()["emitted"] == 4 and handler.stats()["invalid"] == 1
    """
)


def test_entry_point_is_registered():
    found = importlib.metadata.entry_points()
    group = found.select(group="pytest11") if hasattr(found, "select") else found.get("pytest11", [])
    names = {ep.name: ep.value for ep in group}
    assert names.get("dreamdata_logging") == "dreamdata_logging.pytest_plugin"


def test_users_suite_gets_the_fixture_from_the_entry_point(pytester, monkeypatch):
    monkeypatch.delenv("DREAMDATA_WRITE_KEY", raising=False)
    pytester.makepyfile(test_user_suite=USER_TESTS)
    # a subprocess: the plugin is found through the installed entry point only, as in a user's project
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", timeout=120)
    result.assert_outcomes(passed=4)


def test_plugin_can_be_disabled(pytester):
    pytester.makepyfile(test_off="def test_off(dreamdata_events):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:dreamdata_logging", timeout=120)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'dreamdata_events' not found*"])


def test_the_plugin_adds_the_fixture_and_nothing_else(pytester):
    """Loaded in every pytest run of any project that installs the package: it adds no option, ini key or marker."""
    on = pytester.runpytest_subprocess("--help", timeout=120)
    off = pytester.runpytest_subprocess("-p", "no:dreamdata_logging", "--help", timeout=120)
    assert on.ret == off.ret == 0
    assert on.stdout.lines == off.stdout.lines
    on = pytester.runpytest_subprocess("--markers", timeout=120)
    off = pytester.runpytest_subprocess("-p", "no:dreamdata_logging", "--markers", timeout=120)
    assert on.stdout.lines == off.stdout.lines
    on = pytester.runpytest_subprocess("--fixtures", timeout=120)
    off = pytester.runpytest_subprocess("-p", "no:dreamdata_logging", "--fixtures", timeout=120)
    fixture = re.compile(r"^(\w+)(?: \[[^\]]*\])? -- ")
    names_on = {m.group(1) for m in map(fixture.match, on.stdout.lines) if m}
    names_off = {m.group(1) for m in map(fixture.match, off.stdout.lines) if m}
    assert "tmp_path" in names_off and names_on - names_off == {"dreamdata_events"} and names_off <= names_on


def logger_with(name: str, handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(name)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return log


def test_capture_without_pytest_fixture(collector, make_handler):
    handler = make_handler()
    log = logger_with("capture.plain", handler)
    try:
        with capture() as events:
            log.info("Captured", extra=track(user_id="u1"))
        assert testing.active == []
        log.info("Sent", extra=track(user_id="u1"))
        assert handler.flush(timeout=20)
    finally:
        log.removeHandler(handler)
    assert [m["event"] for m in events.messages] == ["Captured"]
    assert [m["event"] for m in collector.received()] == ["Sent"]
    assert isinstance(handler, DreamdataHandler) and handler.stats()["emitted"] == 2


def test_importing_the_package_does_not_import_pytest():
    code = "import sys, dreamdata_logging, dreamdata_logging.testing; print('pytest' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_a_capture_swaps_each_handlers_sink_and_puts_the_queue_back(collector, make_handler):
    """Handlers made before and during a capture hand it their events (counted as captured, never queued);
    nested captures each get them; once the last one ends every handler queues and sends again."""
    before = make_handler()
    log = logger_with("capture.sink", before)
    try:
        with capture() as outer:
            during = make_handler()
            log.addHandler(during)
            with capture() as inner:
                log.info("Nested", extra=track(user_id="u1"))
                log.info("no id", extra={"dreamdata": {"type": "track"}})
            log.info("Outer", extra=track(user_id="u1"))
            for handler in (before, during):
                stats = handler.stats()
                assert (stats["captured"], stats["queued"], stats["invalid"]) == (2, 0, 1), stats
        assert testing.active == []
        log.info("Sent", extra=track(user_id="u2"))
        assert before.flush(timeout=20) and during.flush(timeout=20)
    finally:
        log.removeHandler(before)
        log.removeHandler(during)
    assert [m["event"] for m in inner.messages] == ["Nested", "Nested"]  # one message from each handler
    assert [m["event"] for m in outer.messages] == ["Nested", "Nested", "Outer", "Outer"]
    assert len(inner.invalid) == len(outer.invalid) == 2
    assert [m["event"] for m in collector.received()] == ["Sent", "Sent"]
    for handler in (before, during):
        stats = handler.stats()
        assert stats["captured"] == 2 and stats["delivered"] == 1 and stats["emitted"] == 3, stats


def test_the_handler_module_does_not_import_testing():
    code = "import sys, dreamdata_logging._handler; print('dreamdata_logging.testing' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
