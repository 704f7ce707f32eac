"""The tracking plan in the handler: checked in the caller's thread, counted, reported, sent or dropped."""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dreamdata_logging import DreamdataHandler, group, identify, page, track
from dreamdata_logging.testing import CapturedEvents
from dreamdata_logging.tools.collector import Collector
from dreamdata_logging.wire.plan import PlanError, TrackingPlan, load_plan

from .conftest import WRITE_KEY

PLAN_YAML = """\
track:
  Signed Up:
    properties:            # a JSON Schema
      type: object
      required: [plan]
      properties:
        plan: {enum: [free, pro]}
        seats: {type: integer, minimum: 1}
        at: {type: string}
  Logged In:
identify:
  traits: {type: object, properties: {email: {type: string}}}
group:
  traits: {type: object, required: [name]}
allow_unknown_events: false
"""


@pytest.fixture
def plan_file(tmp_path: Path) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN_YAML)
    return str(path)


def balanced(stats: dict[str, int]) -> bool:
    parts = ("delivered", "failed", "dropped_queue_full", "dropped_closed", "queued", "spool_written")
    return stats["emitted"] == sum(stats[name] for name in parts)


def test_report_sends_every_event_and_counts_each_breaking_event_once(
    collector: Collector, make_handler, make_logger, plan_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler = make_handler(tracking_plan=plan_file)
    log = make_logger(handler)
    with caplog.at_level(logging.WARNING, logger="dreamdata_logging"):
        log.info("Signed Up", extra=track(user_id="1", properties={"plan": "pro", "seats": 3}))
        log.info("Signed Up", extra=track(user_id="2", properties={"plan": "gold", "seats": 0}))  # two fields
        log.info("Signed Up", extra=track(user_id="3", properties={"plan": "platinum"}))  # same kind again
        log.info("Signed Up", extra=track(user_id="4", properties={"seats": 2}))
        log.info("Logged In", extra=track(user_id="5", properties={"anything": [1, 2]}))
        log.info("Signd Up", extra=track(user_id="6"))
        log.info("identify", extra=identify(user_id="7", traits={"email": 42}))
        log.info("group", extra=group("acme", user_id="8", traits={"employees": 3}))
        log.info("page", extra=page("Pricing", user_id="9"))  # the plan says nothing of pages
    assert handler.flush(timeout=15)
    stats = handler.stats()
    assert stats["plan_violations"] == 6 and stats["filtered"] == 0
    assert stats["delivered"] == stats["emitted"] == 9 and balanced(stats)
    assert sorted(m["userId"] for m in collector.received()) == [str(n) for n in range(1, 10)]
    reports = [r.getMessage() for r in caplog.records if "tracking plan" in r.getMessage()]
    assert reports == [
        "dreamdata-logging: event does not follow the tracking plan (sent anyway): "
        "track \"Signed Up\": properties.plan must be one of ['free', 'pro']",
        "dreamdata-logging: event does not follow the tracking plan (sent anyway): "
        'track "Signd Up": event is not in the tracking plan',
        "dreamdata-logging: event does not follow the tracking plan (sent anyway): "
        "identify: traits.email must be string",
        "dreamdata-logging: event does not follow the tracking plan (sent anyway): "
        "group: traits.name is required but missing",
    ]  # the third and fourth "Signed Up" break the same field as the second: rate-limited


def test_drop_sends_nothing_that_breaks_the_plan(collector: Collector, make_handler, make_logger, plan_file) -> None:
    handler = make_handler(tracking_plan=plan_file, plan_policy="drop")
    log = make_logger(handler)
    log.info("Signed Up", extra=track(user_id="1", properties={"plan": "pro"}))
    log.info("Signed Up", extra=track(user_id="2", properties={"plan": "gold"}))
    log.info("Unplanned", extra=track(user_id="3"))
    assert handler.flush(timeout=15)
    stats = handler.stats()
    assert stats["plan_violations"] == 2 and stats["filtered"] == 2 and stats["invalid"] == 0
    assert stats["emitted"] == stats["delivered"] == 1 and balanced(stats)
    assert [m["userId"] for m in collector.received()] == ["1"]


def test_values_are_checked_as_they_are_sent(make_handler, make_logger, plan_file: str) -> None:
    """A datetime is sent as text, so it meets ``type: string``; a bool is not an integer."""
    handler = make_handler(tracking_plan=plan_file, send=False)
    log = make_logger(handler)
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    log.info("Signed Up", extra=track(user_id="1", properties={"plan": "free", "at": when}))
    assert handler.stats()["plan_violations"] == 0
    log.info("Signed Up", extra=track(user_id="1", properties={"plan": "free", "seats": True}))
    assert handler.stats()["plan_violations"] == 1


def test_unknown_events_may_be_allowed(make_handler, make_logger, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"track": {"Known": {"properties": {"required": ["a"]}}}, "allow_unknown_events": True}))
    handler = make_handler(tracking_plan=str(path), send=False)
    log = make_logger(handler)
    log.info("Anything", extra=track(user_id="1"))
    log.info("Known", extra=track(user_id="1"))
    assert handler.stats()["plan_violations"] == 1


def test_the_plan_checks_what_before_send_returns(collector: Collector, make_handler, make_logger, plan_file) -> None:
    def fix_plan(message: dict[str, Any]) -> dict[str, Any]:
        message["properties"]["plan"] = message["properties"]["plan"].lower()
        return message

    handler = make_handler(tracking_plan=plan_file, plan_policy="drop", before_send=fix_plan)
    log = make_logger(handler)
    log.info("Signed Up", extra=track(user_id="1", properties={"plan": "PRO"}))
    log.info("Signed Up", extra=track(user_id="2", properties={"plan": "Gold"}))
    assert handler.flush(timeout=15)
    assert [m["properties"]["plan"] for m in collector.received()] == ["pro"]
    assert handler.stats()["plan_violations"] == 1 and handler.stats()["filtered"] == 1


def test_the_fixture_exposes_violations(dreamdata_events: CapturedEvents, plan_file: str, make_logger) -> None:
    handler = DreamdataHandler(WRITE_KEY, tracking_plan=plan_file)
    try:
        log = make_logger(handler)
        log.info("Signed Up", extra=track(user_id="1", properties={"plan": "pro"}))
        dreamdata_events.assert_plan_followed()
        log.info("Signed Up", extra=track(user_id="1", properties={"plan": "gold"}))
        [violation] = dreamdata_events.plan_violations
        assert (violation.event, violation.field, violation.value) == ("Signed Up", "properties.plan", "gold")
        with pytest.raises(AssertionError, match=r'properties.plan must be one of .* \(value: "gold"\)'):
            dreamdata_events.assert_plan_followed()
        assert len(dreamdata_events.tracks("Signed Up")) == 2  # "report": captured as it would be sent
    finally:
        handler.close()


def test_the_fixture_checks_what_it_captured_against_a_plan_file(dreamdata_events, plan_file, make_logger) -> None:
    handler = DreamdataHandler(WRITE_KEY)  # no plan on the handler
    try:
        log = make_logger(handler)
        log.info("Signed Up", extra=track(user_id="1", properties={"plan": "pro"}))
        log.info("identify", extra=identify(user_id="1", traits={"email": None}))
        [violation] = dreamdata_events.check_plan(plan_file)
        assert (violation.type, violation.field, violation.reason) == ("identify", "traits.email", "must be string")
        assert dreamdata_events.plan_violations == []
    finally:
        handler.close()


@pytest.mark.parametrize(
    "text, name, error",
    [
        ("track: [a, b]", "plan.yaml", "'track' must map event names"),
        ("tracks: {}", "plan.yaml", "unknown key 'tracks'"),
        ("track: {A: {properties: {type: objekt}}}", "plan.yaml", "track 'A' properties is not a usable JSON Schema"),
        ("track: {A: {props: {}}}", "plan.yaml", "track 'A' must hold only 'properties:'"),
        ("allow_unknown_events: maybe", "plan.yaml", "allow_unknown_events must be true or false"),
        ("track: {A: [", "plan.yaml", "is not valid YAML"),
        ('{"track": ', "plan.json", "is not valid JSON"),
    ],
)
def test_a_plan_that_cannot_be_used_is_an_error_at_construction(tmp_path: Path, text, name, error) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        DreamdataHandler(WRITE_KEY, tracking_plan=str(path))
    with pytest.raises(ValueError, match="cannot read the tracking plan"):
        DreamdataHandler(WRITE_KEY, tracking_plan=str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="plan_policy must be 'report' or 'drop'"):
        DreamdataHandler(WRITE_KEY, tracking_plan=str(tmp_path / "missing.yaml"), plan_policy="warn")


def test_without_the_extra_construction_says_what_to_install(plan_file: str) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["fastjsonschema"] = None  # as if the plan extra were not installed
        from dreamdata_logging import DreamdataHandler
        DreamdataHandler("{WRITE_KEY}")  # no plan: no need of it
        try:
            DreamdataHandler("{WRITE_KEY}", tracking_plan={plan_file!r})
        except ValueError as error:
            print(error)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'needs the fastjsonschema package: pip install "dreamdata-logging[plan]"' in result.stdout


def test_the_plan_module_names_field_reason_and_value() -> None:
    plan = TrackingPlan(
        {"track": {"Order": {"properties": {"properties": {"items": {"items": {"required": ["sku"]}}}}}}}
    )
    violation = plan.check({"type": "track", "event": "Order", "properties": {"items": [{"sku": "a"}, {"n": 2}]}})
    assert violation is not None
    assert (violation.field, violation.reason) == ("properties.items[1].sku", "is required but missing")
    assert load_plan(plan) is plan
    with pytest.raises(PlanError):
        TrackingPlan(["not", "a", "plan"])


def test_checking_never_changes_the_event_and_never_fetches_a_schema(make_handler, make_logger, tmp_path) -> None:
    path = tmp_path / "plan.json"
    schema = {"properties": {"plan": {"type": "string", "default": "free"}}}
    path.write_text(json.dumps({"track": {"Signed Up": {"properties": schema}}}))
    handler = make_handler(tracking_plan=str(path), send=False)
    properties: dict[str, Any] = {"seats": 2}
    make_logger(handler).info("Signed Up", extra=track(user_id="1", properties=properties))
    assert properties == {"seats": 2} and handler.stats()["plan_violations"] == 0  # no "default" filled in
    remote = tmp_path / "remote.json"
    remote.write_text(json.dumps({"track": {"A": {"properties": {"$ref": "https://schemas.invalid/a.json"}}}}))
    with pytest.raises(ValueError, match=r"a remote \$ref \(https://schemas.invalid/a.json\) is never fetched"):
        DreamdataHandler(WRITE_KEY, tracking_plan=str(remote))
