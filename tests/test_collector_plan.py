"""The collector with a tracking plan: messages that break it are accepted, flagged, counted and printed."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dreamdata_logging import DreamdataHandler, identify, track
from dreamdata_logging.tools.collector import Collector

from .test_debugger import KEY, EventStream, _rows, _wait, browser, message, post

__all__ = ["browser"]  # the Chromium fixture, shared with the debugger's tests

PLAN = {
    "track": {"Signed Up": {"properties": {"type": "object", "properties": {"plan": {"enum": ["free", "pro"]}}}}},
    "identify": {"traits": {"type": "object", "properties": {"email": {"type": "string"}}}},
}


@pytest.fixture
def plan_file(tmp_path: Path) -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    return str(path)


@pytest.fixture
def collector(plan_file: str) -> Iterator[Collector]:
    with Collector(write_key=KEY, keep=None, plan=plan_file) as c:
        yield c


def test_violations_are_accepted_and_shown_beside_refusals(collector: Collector) -> None:
    stream = EventStream(collector)
    try:
        good, bad = message(1, event="Signed Up", properties={"plan": "pro"}), message(2, event="Song Played")
        assert post(collector, {"batch": [good, bad]}).status_code == 200
        rows = stream.next_event()["rows"]
        assert [(r["status"], r["plan"]) for r in rows] == [
            ("accepted", ""),
            ("accepted", 'track "Song Played": event is not in the tracking plan (value: "Song Played")'),
        ]
        assert collector.plan_violations == 1 and collector.accepted == 2
        refused = message(3, event="Song Played", userId=None)
        assert post(collector, {"batch": [refused]}).status_code == 400
        [row] = stream.next_event()["rows"]
        assert row["status"] == "refused" and row["plan"] == ""  # refused messages are not checked
        assert collector.plan_violations == 1
    finally:
        stream.close()


def test_the_page_flags_violations_from_a_real_handler(browser: Any, collector: Collector) -> None:
    from selenium.webdriver.common.by import By

    browser.get(collector.page_url)
    _wait(lambda: browser.find_element(By.ID, "state").text == "live", "that it is live")
    handler = DreamdataHandler(KEY, endpoint=collector.url, flush_interval=0.05)
    log = logging.getLogger(f"plan.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        log.info("Signed Up", extra=track(user_id="u1", properties={"plan": "pro"}))
        log.info("identify", extra=identify(user_id="u2", traits={"email": 7}))
        assert handler.flush(timeout=10)
    finally:
        log.removeHandler(handler)
        handler.close()
    rows = _wait(lambda: len(_rows(browser)) == 2 and _rows(browser), "both events")
    assert [r[6] for r in rows] == [
        "accepted; breaks the tracking plan: identify: traits.email must be string (value: 7)",
        "accepted",
    ]
    assert "1 breaking the tracking plan" in browser.find_element(By.ID, "counts").text
    browser.find_element(By.ID, "plan-only").click()
    _wait(lambda: [r[1] for r in _rows(browser)] == ["identify"], "only the flagged row")


def _start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dreamdata_logging", "collector", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(stream: Any, text: str, timeout: float = 30.0) -> list[str]:
    """Lines of ``stream`` up to the first holding ``text`` (the process is killed after ``timeout``)."""
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        for line in stream:
            lines.append(line)
            if text in line:
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(timeout), f"never saw {text!r} in {lines!r}"
    return lines


def test_the_command_prints_each_violation(plan_file: str) -> None:
    process = _start_cli("--write-key", KEY, "--plan", plan_file)
    try:
        head = _read_until(process.stdout, "live event debugger")
        assert f"flagging messages that break the tracking plan {plan_file}" in head[0]
        url = head[0].split("listening on ")[1].split(" ")[0]
        body = json.dumps({"batch": [message(1), message(2, event="Signed Up", properties={"plan": "x"})]})
        headers = {"Content-Type": "application/json"}
        assert requests.post(url, data=body, auth=(KEY, ""), headers=headers, timeout=10).ok
        lines = _read_until(process.stdout, "batch[1]")
        assert "batch[0]" in lines[-2]
        assert lines[-1].strip() == (
            'batch[1] breaks the tracking plan: track "Signed Up": properties.plan must be one of '
            "['free', 'pro'] (value: \"x\")"
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            process.kill()


def test_the_command_refuses_a_plan_it_cannot_use(tmp_path: Path) -> None:
    bad = tmp_path / "plan.yaml"
    bad.write_text("track: {A: {properties: {type: objekt}}}")
    process = _start_cli("--plan", os.fspath(bad))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "track 'A' properties is not a usable JSON Schema" in err
