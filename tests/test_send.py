"""``dreamdata-logging send FILE`` against the real collector: formats, limits, retries, dry run, exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from dreamdata_logging.tools import cli, send
from dreamdata_logging.tools.collector import Collector, Fault
from dreamdata_logging.wire.rules import MAX_BODY_BYTES

from .conftest import WRITE_KEY

TS = "2012-12-02T00:30:08.276Z"


def reference() -> dict[str, Any]:
    text = resources.files("dreamdata_logging").joinpath("examples", "example.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def message(n: int, **fields: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "type": "track",
        "messageId": str(uuid.UUID(int=n, version=4)),
        "timestamp": TS,
        "userId": f"user-{n}",
        "event": "Song Played",
        "properties": {"n": n},
    }
    m.update(fields)
    return m


def write_lines(path: Path, messages: list[Any]) -> Path:
    path.write_text("".join((m if isinstance(m, str) else json.dumps(m)) + "\n" for m in messages), encoding="utf-8")
    return path


def run(*args: str) -> int:
    return cli.main(["send", *args])


def test_reference_batch_document_is_sent_as_is(collector, tmp_path, capsys):
    document = reference()
    code = run(
        str(resources.files("dreamdata_logging").joinpath("examples", "example.json")),
        "--write-key",
        WRITE_KEY,
        "--endpoint",
        collector.url,
    )
    assert code == 0
    assert collector.received() == document["batch"]  # messageIds kept: sending again is idempotent
    [request] = collector.requests()
    assert request.status == 200 and request.message_count == 2
    err = capsys.readouterr().err
    assert "2 of 2 valid message(s) delivered" in err and "all messages arrived" in err
    assert WRITE_KEY not in err


def test_json_lines_split_within_the_body_limit(collector, tmp_path, capsys):
    padding = "x" * 900
    messages = [message(n, properties={"n": n, "pad": padding}) for n in range(1500)]
    path = write_lines(tmp_path / "events.jsonl", messages)
    assert run(str(path), "--write-key", WRITE_KEY, "--endpoint", collector.url) == 0
    assert collector.received() == messages
    requests = collector.requests()
    assert len(requests) >= 3  # 1,500 x ~1 KB cannot go in one request
    assert all(r.status == 200 and r.body_size <= MAX_BODY_BYTES for r in requests)
    assert sum(r.message_count for r in requests) == 1500


def test_invalid_lines_are_reported_with_line_numbers_and_skipped(collector, tmp_path, capsys):
    lines: list[Any] = [
        message(0),
        message(1, userId=None),  # line 2: no identity
        "",  # line 3: blank, ignored
        "{not json",  # line 4
        message(2, type="bogus"),  # line 5
        message(3, properties={"big": "y" * 40_000}),  # line 6: over 32,000 bytes
        message(4),
        "[1, 2]",  # line 8: not an object
    ]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    assert run(str(path), "--write-key", WRITE_KEY, "--endpoint", collector.url) == 1
    assert [m["userId"] for m in collector.received()] == ["user-0", "user-4"]
    err = capsys.readouterr().err
    assert "line 2: skipped: message needs a non-empty 'userId' or 'anonymousId'" in err
    assert "line 4: skipped: message is not valid JSON" in err
    assert "line 5: skipped: message 'type' must be one of" in err
    assert "line 6: skipped: message is 4" in err and "the limit is 32,000" in err
    assert "line 8: skipped: message is not an object" in err
    assert "2 of 2 valid message(s) delivered" in err and "5 invalid skipped" in err
    assert "NOT everything arrived" in err


def test_missing_ids_and_timestamps_are_filled_in_as_the_handler_would(collector, tmp_path, capsys):
    lines = [
        {"userId": 7, "event": "No Id Or Time"},
        {"type": "identify", "anonymousId": "a1", "timestamp": "2012-12-02T01:30:08+01:00"},
    ]
    path = write_lines(tmp_path / "partial.jsonl", lines)
    assert run(str(path), "--write-key", WRITE_KEY, "--endpoint", collector.url) == 0
    first, second = collector.received()
    assert first["type"] == "track" and first["userId"] == "7" and first["event"] == "No Id Or Time"
    assert len(first["messageId"]) == 36 and first["timestamp"].endswith("Z")
    assert second["timestamp"] == "2012-12-02T00:30:08.000Z" and second["messageId"] != first["messageId"]


def test_dry_run_reports_and_sends_nothing(collector, tmp_path, capsys):
    path = write_lines(
        tmp_path / "dry.jsonl",
        [message(0), message(1, type="identify", traits={"a": 1}), message(2, event=""), message(3)],
    )
    assert run(str(path), "--dry-run", "--endpoint", collector.url) == 1  # no key needed for a dry run
    assert collector.requests() == []
    out = capsys.readouterr().out
    assert "JSON lines" in out
    assert "valid messages:   3 (1 identify, 2 track)" in out
    assert "invalid messages: 1" in out
    assert "line 3: message track needs a non-empty string 'event'" in out
    assert "would send 3 message(s) in 1 request(s)" in out
    assert "nothing was sent" in out

    good = write_lines(tmp_path / "good.jsonl", [message(0)])
    assert run(str(good), "--dry-run") == 0
    assert "OK; nothing was sent" in capsys.readouterr().out


def test_retries_with_the_handlers_policy(collector, tmp_path, capsys):
    collector.script(Fault(503, headers={"Retry-After": "0"}), Fault(429, headers={"Retry-After": "0"}))
    path = write_lines(tmp_path / "retry.jsonl", [message(n) for n in range(5)])
    assert run(str(path), "--write-key", WRITE_KEY, "--endpoint", collector.url) == 0
    assert [r.status for r in collector.requests()] == [503, 429, 200]
    assert len(collector.received()) == 5
    assert "2 retries" in capsys.readouterr().err


def test_endpoint_down_is_a_failure_naming_the_first_undelivered_line(collector, tmp_path, capsys):
    collector.set_down(Fault(503, headers={"Retry-After": "0"}))
    path = write_lines(tmp_path / "down.jsonl", [message(n) for n in range(5)])
    code = run(str(path), "--write-key", WRITE_KEY, "--endpoint", collector.url, "--max-retries", "2")
    assert code == 1
    assert len(collector.requests()) == 3  # the first try and 2 retries
    err = capsys.readouterr().err
    assert "0 of 5 valid message(s) delivered" in err
    assert "5 valid message(s) were not delivered; the first at line 1" in err
    assert "HTTP 503" in err and "NOT everything arrived" in err


def test_wrong_write_key_stops_at_once(collector, tmp_path, capsys):
    path = write_lines(tmp_path / "k.jsonl", [message(n) for n in range(3)])
    assert run(str(path), "--write-key", "wrong-key-93b1", "--endpoint", collector.url) == 1
    assert len(collector.requests()) == 1  # 401 is not retried
    err = capsys.readouterr().err
    assert "write key was rejected" in err and "wrong-key-93b1" not in err


def test_environment_supplies_key_and_endpoint(collector, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DREAMDATA_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("DREAMDATA_ENDPOINT", collector.url)
    path = write_lines(tmp_path / "env.jsonl", [message(0)])
    assert run(str(path), "--gzip") == 0
    [request] = collector.requests()
    assert request.headers.get("Content-Encoding") == "gzip"
    assert collector.received() == [message(0)]


def test_usage_errors_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DREAMDATA_WRITE_KEY", raising=False)
    path = write_lines(tmp_path / "ok.jsonl", [message(0)])
    assert run(str(path)) == 2
    assert "no write key" in capsys.readouterr().err
    assert run(str(tmp_path / "missing.jsonl"), "--write-key", "k") == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "text.txt").write_text("hello\nworld\n")
    assert run(str(tmp_path / "text.txt"), "--dry-run") == 2
    assert "neither a batch document" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main(["send"])
    assert exited.value.code == 2


def test_empty_file_sends_nothing_and_succeeds(collector, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert run(str(tmp_path / "empty.jsonl"), "--write-key", WRITE_KEY, "--endpoint", collector.url) == 0
    assert collector.requests() == []


def batch_document(messages: list[Any], indent: int | None = 2) -> str:
    return json.dumps(
        {"messageId": "6f47f5a0-4118-42de-9e15-95cf9ed2a426", "sentAt": TS, "batch": messages, "extra": [1, {"a": 2}]},
        indent=indent,
        ensure_ascii=False,
    )


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_batch_document_is_streamed_across_chunk_boundaries(monkeypatch, chunk, indent):
    monkeypatch.setattr(send, "CHUNK_CHARS", chunk)
    messages = [message(n, properties={"n": n, "text": 'héllo ✓ "q" \\ 1e5', "num": 12345.5}) for n in range(40)]
    messages[7] = {"type": "track"}  # invalid, reported at its line
    text = batch_document(messages, indent)
    fmt, items = send.read_messages(io.BytesIO(text.encode("utf-8")))
    assert fmt == "batch document"
    got = list(items)
    assert [item.value for item in got] == messages
    lines = text.split("\n")
    for item in got:
        if indent is None:
            assert item.line == 1
        else:  # each message starts with "{" on the line the reader names
            assert lines[item.line - 1].strip() == "{"
    bad = [item for item in got if send.check(item)[1] is not None]
    assert [item.value for item in bad] == [{"type": "track"}]


def test_broken_batch_document_stops_with_the_line(collector, tmp_path, capsys):
    text = batch_document([message(0), message(1)])
    cut = text[: text.rindex('"userId"')] + '"userId": oops'
    path = tmp_path / "broken.json"
    path.write_text(cut)
    assert run(str(path), "--write-key", WRITE_KEY, "--endpoint", collector.url) == 1
    assert collector.received() == [message(0)]  # what came before the break was sent
    err = capsys.readouterr().err
    assert f"stopped reading at line {cut.count(chr(10)) + 1}: invalid JSON" in err
    (tmp_path / "nobatch.json").write_text('{\n  "messageId": "x",\n  "sentAt": "y"\n}\n')
    assert run(str(tmp_path / "nobatch.json"), "--dry-run") == 2
    assert "no 'batch' list" in capsys.readouterr().err


def test_stdin_and_python_dash_m_entry(collector, tmp_path):
    lines = "".join(json.dumps(message(n)) + "\n" for n in range(3))
    done = subprocess.run(
        [sys.executable, "-m", "dreamdata_logging", "send", "-", "--write-key", WRITE_KEY, "--endpoint", collector.url],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(collector.received()) == 3


MEASURE = textwrap.dedent(
    """
    import resource, sys
    from dreamdata_logging.tools.send import send_file
    code = send_file(sys.argv[1], write_key=sys.argv[2], endpoint=sys.argv[3], quiet=True)
    print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def _peak_rss_kib(collector: Collector, path: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), WRITE_KEY, collector.url],
        capture_output=True,
        text=True,
        timeout=600,
    )
    code, rss = done.stdout.split()
    assert code == "0", done.stderr
    return int(rss)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_memory_stays_bounded_whatever_the_file_size(tmp_path):
    """Peak RSS of a send of 200,000 events is that of 20,000: the file is streamed, never held."""
    collector = Collector(write_key=WRITE_KEY).start()
    stop = threading.Event()

    def drain() -> None:  # keep the collector's own memory small (the exit code says all arrived)
        while not stop.is_set():
            if collector.wait_for(5000, timeout=0.2):
                collector.reset()

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    try:
        sizes = {}
        for count in (20_000, 200_000):
            path = tmp_path / f"{count}.jsonl"
            with path.open("w") as out:
                for n in range(count):
                    out.write(json.dumps(message(n)) + "\n")
            sizes[count] = _peak_rss_kib(collector, path)
            os.unlink(path)
    finally:
        stop.set()
        drainer.join(5)
        collector.stop()
    growth_kib = sizes[200_000] - sizes[20_000]
    assert growth_kib < 20 * 1024, sizes  # ~40 MB more file; loading it would add hundreds of MB


def _document_with_context_last(messages: list[Any]) -> str:
    # As Segment-style SDKs write it: the batch-level context after the batch, no envelope messageId.
    return json.dumps(
        {"batch": messages, "context": {"library": {"name": "analytics-go", "version": "3.0.0"}, "ip": "24.5.68.47"}},
        indent=2,
    )


def test_batch_level_context_is_merged_into_each_message(collector, tmp_path, capsys):
    own = message(1, context={"ip": "10.0.0.1", "locale": "da-DK"})
    path = tmp_path / "sdk.json"
    path.write_text(_document_with_context_last([message(0), own]))
    assert run(str(path), "--write-key", WRITE_KEY, "--endpoint", collector.url) == 0
    first, second = collector.received()
    assert first["context"] == {"library": {"name": "analytics-go", "version": "3.0.0"}, "ip": "24.5.68.47"}
    # The message's own keys win; the batch's fill in the rest.
    assert second["context"] == {"library": {"name": "analytics-go", "version": "3.0.0"}, "ip": "10.0.0.1",
                                 "locale": "da-DK"}  # fmt: skip
    (tmp_path / "bad.json").write_text('{"batch": [], "context": "text"}')
    assert run(str(tmp_path / "bad.json"), "--dry-run") == 2
    assert "the batch's 'context' must be an object" in capsys.readouterr().err


def test_batch_level_context_from_standard_input(collector):
    done = subprocess.run(
        [sys.executable, "-m", "dreamdata_logging", "send", "-", "--write-key", WRITE_KEY, "--endpoint", collector.url],
        input=_document_with_context_last([message(n) for n in range(3)]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [m["context"]["ip"] for m in collector.received()] == ["24.5.68.47"] * 3


def test_output_never_shows_the_key_or_the_endpoints_private_parts(collector, tmp_path, capsys):
    import base64
    from urllib.parse import quote

    key = "wk-send-secret/+=ÿ-4471"
    endpoint = collector.url + "?token=tok-8812#frag-2290"
    secrets = [
        key,
        quote(key, safe=""),
        base64.b64encode(f"{key}:".encode()).decode(),
        base64.b64encode(key.encode()).decode(),
        "pass-word-5531",
        "tok-8812",
        "frag-2290",
    ]
    # A key pasted into the wrong field is quoted back in the reason a message is refused.
    path = write_lines(tmp_path / "s.jsonl", [message(0), {"type": key, "userId": "u"}])
    for args in (
        ["--write-key", key, "--endpoint", endpoint],  # refused: this key is not the collector's
        ["--write-key", key, "--endpoint", endpoint, "--dry-run"],
        ["--write-key", key, "--endpoint", endpoint.replace("http://", "ftp://")],  # a usage error
        ["--write-key", key, "--endpoint", endpoint.replace("http://", "http://someone:pass-word-5531@")],
    ):
        run(str(path), *args)
        printed = capsys.readouterr()
        text = printed.out + printed.err
        assert "dreamdata-logging send" in text or "invalid messages: 1" in text
        for secret in secrets:
            assert secret not in text, (args, secret)
    run(str(path), "--dry-run")  # no key given: the same line is shown as it is
    assert "'wk-send-secret" in capsys.readouterr().out
