"""The collector and ``dreamdata-logging send`` apply the same wire rules: a number JSON cannot hold.

JSON text such as ``1e400`` is valid JSON but reads as an infinite float, which cannot be written back as
JSON: the collector refuses the batch (as the endpoint does), and ``send`` skips the message with its line.
"""

from __future__ import annotations

import json
from pathlib import Path

import requests

from dreamdata_logging.tools import cli
from dreamdata_logging.tools.collector import Collector

from .conftest import WRITE_KEY

TS = "2012-12-02T00:30:08.276Z"


def line(n: int, number: str) -> str:
    """One message as JSON text, with ``number`` written as is."""
    fields = f'"type":"track","event":"e","userId":"u","messageId":"m-{n}","timestamp":"{TS}"'
    return f'{{{fields},"properties":{{"v":{number}}}}}'


def test_collector_refuses_a_number_too_large_for_json(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    for strict in (False, True):
        with Collector(write_key=WRITE_KEY, strict=strict, out=out) as collector:
            body = f'{{"messageId":"b-1","sentAt":"{TS}","batch":[{line(0, "1")},{line(1, "1e400")}]}}'
            answer = requests.post(
                collector.url,
                data=body.encode(),
                auth=(WRITE_KEY, ""),
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            assert answer.status_code == 400
            assert answer.json()["error"].startswith("batch[1] contains a number too large")
            assert collector.accepted == 0 and collector.received() == []
    assert out.read_bytes() == b""  # never an "Infinity" line


def test_send_skips_a_number_too_large_for_json(collector: Collector, tmp_path: Path, capsys: object) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([line(0, "1"), line(1, "1e400"), line(2, "2.5")]) + "\n")
    code = cli.main(["send", str(path), "--write-key", WRITE_KEY, "--endpoint", collector.url, "--quiet"])
    assert code == 1  # an invalid message was skipped
    assert [m["messageId"] for m in collector.received()] == ["m-0", "m-2"]
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "line 2: skipped: message contains a number too large" in err
    assert json.loads(line(1, "1e400"))["properties"]["v"] == float("inf")  # what makes it unsendable
