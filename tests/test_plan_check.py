"""``dreamdata-logging plan check``: each message of a file against a tracking plan, with its line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dreamdata_logging.tools.cli import main

PLAN = {
    "track": {
        "Signed Up": {
            "properties": {"type": "object", "required": ["plan"], "properties": {"plan": {"enum": ["free", "pro"]}}}
        }
    },
    "identify": {"traits": {"type": "object", "properties": {"email": {"type": "string"}}}},
}


@pytest.fixture
def plan(tmp_path: Path) -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    return str(path)


def track(name: str, **properties: object) -> dict[str, object]:
    return {"type": "track", "event": name, "userId": "u1", "properties": properties}


def test_json_lines_all_following_the_plan_exit_0(tmp_path: Path, plan: str, capsys) -> None:
    lines = tmp_path / "good.jsonl"
    lines.write_text("\n".join(json.dumps(track("Signed Up", plan=p)) for p in ("free", "pro")) + "\n")
    assert main(["plan", "check", "--plan", plan, str(lines)]) == 0
    out = capsys.readouterr().out
    assert out == "2 message(s) checked in 1 file(s): all follow the tracking plan\n"


def test_each_violation_is_printed_with_line_index_event_field_and_value(tmp_path: Path, plan: str, capsys) -> None:
    lines = tmp_path / "events.jsonl"
    lines.write_text(
        json.dumps(track("Signed Up", plan="gold"))
        + "\n\n"
        + json.dumps({"type": "identify", "userId": "u1", "traits": {"email": ["a@example.com"]}})
        + "\n"
        + json.dumps(track("Signed Up", plan="pro"))
        + "\n"
    )
    batch = tmp_path / "batch.json"
    batch.write_text(
        '{"batch": [\n'
        + json.dumps(track("Signed Up", plan="free"))
        + ",\n"
        + json.dumps(track("Sgned Up"))
        + ",\n"
        + json.dumps(track("Signed Up"))
        + "]}\n"
    )
    assert main(["plan", "check", "--plan", plan, str(lines), str(batch)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{lines}:1: track \"Signed Up\": properties.plan must be one of ['free', 'pro'] (value: \"gold\")",
        f'{lines}:3: identify: traits.email must be string (value: ["a@example.com"])',
        f'{batch}:3: batch[1]: track "Sgned Up": event is not in the tracking plan (value: "Sgned Up")',
        f'{batch}:4: batch[2]: track "Signed Up": properties.plan is required but missing (value: null)',
        "6 message(s) checked in 2 file(s): 4 break the tracking plan",
    ]


def test_unreadable_input_or_plan_exit_2(tmp_path: Path, plan: str, capsys) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(track("Signed Up", plan="gold")) + "\n{not json\n")
    assert main(["plan", "check", "--plan", plan, str(broken)]) == 2
    captured = capsys.readouterr()
    assert f"{broken}:2: is not valid JSON" in captured.err
    assert "1 break the tracking plan; 1 could not be read" in captured.out  # what could be read is checked
    assert main(["plan", "check", "--plan", plan, str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad_plan = tmp_path / "bad.yaml"
    bad_plan.write_text("track: [")
    assert main(["plan", "check", "--plan", str(bad_plan), str(broken)]) == 2
    assert "is not valid YAML" in capsys.readouterr().err


def test_the_installed_command_reads_standard_input(plan: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dreamdata_logging", "plan", "check", "--plan", plan, "-"],
        input=json.dumps({"batch": [track("Signed Up", plan="gold")]}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "-:1: batch[0]: track \"Signed Up\": properties.plan must be one of ['free', 'pro']" in result.stdout
