"""The core pipeline against the real collector: record -> message -> batch -> POST /v1/batch."""

from __future__ import annotations

import base64
import copy
import datetime
import json
import logging
import logging.config
import re
import subprocess
import sys
import threading
from importlib import resources
from typing import Any

import pytest
import yaml

import dreamdata_logging
from dreamdata_logging import DeliveryError, DreamdataHandler, identify, track
from dreamdata_logging.tools.collector import Collector

from .conftest import TIMESTAMP, UUID4, WRITE_KEY


def reference() -> dict[str, Any]:
    text = resources.files("dreamdata_logging").joinpath("examples", "example.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def without(message: dict[str, Any], *keys: str) -> dict[str, Any]:
    trimmed = {k: v for k, v in message.items() if k not in keys}
    if "context" in trimmed:
        trimmed["context"] = {k: v for k, v in trimmed["context"].items() if k != "library"}
    return trimmed


LIBRARY = {"name": "dreamdata-logging", "version": dreamdata_logging.__version__}


def test_reference_example_rebuilt_through_logging(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    expected_identify, expected_track = reference()["batch"]
    log.info(
        "identify",
        extra=identify(
            user_id=expected_identify["userId"],
            traits=expected_identify["traits"],
            context=expected_identify["context"],
        ),
    )
    log.info(
        "Song Played",
        extra=track(
            user_id=expected_track["userId"],
            properties=expected_track["properties"],
            context=expected_track["context"],
        ),
    )
    assert handler.flush(timeout=10)
    received = collector.received()
    assert len(received) == 2
    for got, want in zip(received, (expected_identify, expected_track)):
        assert without(got, "messageId", "timestamp") == without(want, "messageId", "timestamp")
        assert list(got)[:3] == ["type", "messageId", "timestamp"]
        assert UUID4.match(got["messageId"])
        assert TIMESTAMP.match(got["timestamp"])
        # The example's identify names its own library ({"name": "customer", "version": "v1"}): a library
        # the caller gives is kept, as Dreamdata's own SDKs keep it; otherwise this library names itself.
        assert got["context"]["library"] == want["context"].get("library", LIBRARY)
    assert received[0]["context"]["library"] == {"name": "customer", "version": "v1"}


def test_library_is_named_when_the_caller_names_none(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    log.info("a", extra=track(user_id="u1"))
    log.info("b", extra=track(user_id="u1", context={"ip": "127.0.0.1"}))
    assert handler.flush(timeout=10)
    first, second = collector.received()
    assert first["context"] == {"library": LIBRARY}
    assert second["context"] == {"ip": "127.0.0.1", "library": LIBRARY}


def test_reference_example_with_its_ids_and_timestamps(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    for want in reference()["batch"]:
        fields = {k: v for k, v in want.items() if k not in ("type", "messageId", "timestamp")}
        fields.update(type=want["type"], messageId=want["messageId"], timestamp=want["timestamp"])
        log.info(want.get("event", want["type"]), extra={"dreamdata": fields})
    assert handler.flush(timeout=10)
    received = collector.received()
    assert [without(m) for m in received] == [without(m) for m in reference()["batch"]]


def test_many_threads_all_delivered_once_within_limits(collector, make_handler, make_logger):
    handler = make_handler(flush_at=2000, max_queue_size=50_000)
    log = make_logger(handler)
    properties = {"plan": "pro", "note": "x" * 300}

    def emit(thread: int) -> None:
        for n in range(5000):
            log.info("Thread Event", extra=track(user_id=f"{thread}-{n}", properties=properties))

    threads = [threading.Thread(target=emit, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert handler.flush(timeout=60)
    received = collector.received()
    assert len(received) == 20_000
    assert len({m["messageId"] for m in received}) == 20_000
    assert {m["userId"] for m in received} == {f"{t}-{n}" for t in range(4) for n in range(5000)}
    posts = [r for r in collector.requests() if r.status == 200]
    assert all(r.decoded_size <= 500_000 for r in posts)
    assert all(r.message_count <= 2000 for r in posts)
    # Bodies are filled close to the limit, not sent a few messages at a time.
    assert max(r.decoded_size for r in posts) > 450_000
    stats = handler.stats()
    assert stats["delivered"] == 20_000 and stats["emitted"] == 20_000 and stats["queued"] == 0


def test_flush_at_bounds_messages_per_request(collector, make_handler, make_logger):
    handler = make_handler(flush_at=70)
    log = make_logger(handler)
    for n in range(1000):
        log.info("Small", extra=track(user_id=n))
    assert handler.flush(timeout=30)
    posts = [r for r in collector.requests() if r.status == 200]
    assert sum(r.message_count for r in posts) == 1000
    assert max(r.message_count for r in posts) == 70


def test_headers_auth_and_envelope(collector, make_handler, make_logger):
    handler = make_handler()
    make_logger(handler).info("Signed Up", extra=track(user_id="u1"))
    assert handler.flush(timeout=10)
    [request] = collector.requests()
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["content-type"] == "application/json"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert headers["user-agent"] == f"dreamdata-logging/{dreamdata_logging.__version__} python/{version}"
    assert "content-encoding" not in headers
    assert request.status == 200 and request.message_count == 1


def test_auth_header_is_basic_with_key_and_empty_password():
    import requests

    from dreamdata_logging.transport.transport import _WriteKeyAuth

    prepared = _WriteKeyAuth(WRITE_KEY)(requests.Request("POST", "http://127.0.0.1/").prepare())
    assert prepared.headers["Authorization"] == "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    assert WRITE_KEY not in repr(_WriteKeyAuth(WRITE_KEY))


def test_envelope_is_compact_json_with_id_and_sent_at():
    from dreamdata_logging.wire.rules import Batch

    batch = Batch([b'{"a":1}', b'{"b":2}'])
    body = batch.body()
    document = json.loads(body)
    assert list(document) == ["messageId", "sentAt", "batch"]
    assert UUID4.match(document["messageId"]) and TIMESTAMP.match(document["sentAt"])
    assert document["batch"] == [{"a": 1}, {"b": 2}]
    assert b" " not in body and len(body) == batch.body_size()


def test_gzip_when_turned_on(collector, make_handler, make_logger):
    handler = make_handler(gzip=True)
    make_logger(handler).info("Zipped", extra=track(user_id="u1", properties={"pad": "y" * 5000}))
    assert handler.flush(timeout=10)
    [request] = collector.requests()
    assert request.headers.get("Content-Encoding") == "gzip"
    assert request.body_size < request.decoded_size
    assert collector.received()[0]["properties"]["pad"] == "y" * 5000


def test_wrong_key_reports_clearly_without_leaking_it(collector, make_handler, make_logger, caplog, capfd):
    secret = "wrong-key-4f9d2a"
    errors: list[tuple[BaseException, list[Any]]] = []
    handler = make_handler(write_key=secret, on_error=lambda exc, msgs: errors.append((exc, msgs)))
    log = make_logger(handler)
    with caplog.at_level(logging.DEBUG):
        log.info("Signed Up", extra=track(user_id="u1"))
        assert handler.flush(timeout=10) is False
    [(error, messages)] = errors
    assert isinstance(error, DeliveryError) and error.status == 401
    assert "write key was rejected" in str(error)
    assert [m["event"] for m in messages] == ["Signed Up"]
    stats = handler.stats()
    assert stats["failed"] == 1 and stats["delivered"] == 0 and stats["retries"] == 0
    assert collector.received() == []
    encoded = base64.b64encode(f"{secret}:".encode()).decode()
    handler.close()
    seen = " ".join(
        [
            caplog.text,
            repr(handler),
            str(error),
            repr(error),
            json.dumps(messages),
            str(vars(handler)),
            *capfd.readouterr(),
        ]
    )
    assert secret not in seen and encoded not in seen
    assert "write key was rejected" in caplog.text


def test_ordinary_records_are_skipped_and_counted(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    log.debug("debug line")
    log.info("info line with extra", extra={"request_id": "r1"})
    log.warning("warning %s", "line")
    log.info("Signed Up", extra=track(user_id="u1"))
    assert handler.flush(timeout=10)
    assert [m["event"] for m in collector.received()] == ["Signed Up"]
    stats = handler.stats()
    assert stats["skipped"] == 3 and stats["emitted"] == 1 and stats["delivered"] == 1


def test_refused_events_alone_with_reasons_neighbours_arrive(collector, make_handler, make_logger, caplog):
    errors: list[BaseException] = []
    handler = make_handler(on_error=lambda exc, msgs: errors.append(exc))
    log = make_logger(handler)
    with caplog.at_level(logging.WARNING, logger="dreamdata_logging"):
        log.info("Before", extra=track(user_id="u1"))
        log.info("Too Big", extra=track(user_id="u1", properties={"blob": "z" * 40_000}))
        log.info("No Id", extra=track())
        log.info("Bad Props", extra={"dreamdata": {"userId": "u1", "properties": ["not", "a", "mapping"]}})
        circular: dict[str, Any] = {}
        circular["self"] = circular
        log.info("Circular", extra=track(user_id="u1", properties=circular))
        log.info("After", extra=track(user_id="u1"))
    assert handler.flush(timeout=10)
    assert [m["event"] for m in collector.received()] == ["Before", "After"]
    assert handler.stats()["invalid"] == 4
    reasons = [str(e) for e in errors]
    assert any("'Too Big'" in r and "the limit is 32,000" in r for r in reasons)
    assert any("'No Id'" in r and "'userId' or 'anonymousId'" in r for r in reasons)
    assert any("'Bad Props'" in r and "'properties' must be a mapping, not list" in r for r in reasons)
    assert any("'Circular'" in r and "circular" in r for r in reasons)
    assert "the limit is 32,000" in caplog.text


def test_invalid_event_reports_are_rate_limited(collector, make_handler, make_logger, caplog):
    handler = make_handler()
    log = make_logger(handler)
    with caplog.at_level(logging.WARNING, logger="dreamdata_logging"):
        for _ in range(50):
            log.info("No Id", extra=track())
    assert handler.stats()["invalid"] == 50
    assert caplog.text.count("'userId' or 'anonymousId'") == 1


def test_snapshot_at_emit_and_callers_dicts_untouched(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    properties = {"items": [1, 2], "nested": {"a": 1}}
    context = {"ip": "10.0.0.1"}
    event = {"userId": "u1", "properties": properties, "context": context}
    before = copy.deepcopy(event)
    log.info("Snapshot", extra={"dreamdata": event})
    properties["items"].append(3)
    properties["nested"]["a"] = 2
    context["ip"] = "changed"
    assert handler.flush(timeout=10)
    [message] = collector.received()
    assert message["properties"] == {"items": [1, 2], "nested": {"a": 1}}
    assert message["context"]["ip"] == "10.0.0.1"
    properties["items"].pop()
    properties["nested"]["a"] = 1
    context["ip"] = "10.0.0.1"
    assert event == before  # no type, messageId, timestamp or library was added to the caller's dicts


def test_defaults_type_event_and_timestamp(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    captured: list[logging.LogRecord] = []

    class Keep(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            captured.append(record)
            return True

    handler.addFilter(Keep())
    log.info("Order %s Placed", "A-1", extra={"dreamdata": {"userId": 7}})
    assert handler.flush(timeout=10)
    [message] = collector.received()
    assert message["type"] == "track" and message["event"] == "Order A-1 Placed" and message["userId"] == "7"
    created = datetime.datetime.fromtimestamp(captured[0].created, datetime.timezone.utc)
    assert message["timestamp"] == created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(captured[0].msecs):03d}Z"


@pytest.mark.parametrize(
    ("given", "wire"),
    [
        (
            datetime.datetime(2012, 12, 2, 1, 30, 8, 276_000, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
            "2012-12-02T00:30:08.276Z",
        ),
        (datetime.datetime(2012, 12, 2, 0, 30, 8, 276_999), "2012-12-02T00:30:08.276Z"),  # naive means UTC
        ("2012-12-02T00:30:08.276Z", "2012-12-02T00:30:08.276Z"),
        ("2012-12-02T02:30:08+02:00", "2012-12-02T00:30:08.000Z"),
        (1354408208.276, "2012-12-02T00:30:08.276Z"),
    ],
)
def test_user_timestamps_become_utc(collector, make_handler, make_logger, given, wire):
    handler = make_handler()
    make_logger(handler).info("Timed", extra=track(user_id="u1", timestamp=given))
    assert handler.flush(timeout=10)
    assert collector.received()[0]["timestamp"] == wire


@pytest.mark.parametrize(
    "given",
    [
        "2024-02-30T00:00:00.000Z",
        "2024-13-01T00:00:00.000Z",
        "\u0662024-01-01T00:00:00.000Z",
        "0000-01-01T00:00:00.000Z",
    ],
)
def test_text_in_wire_form_that_is_no_date_is_refused(make_handler, make_logger, given):
    """Text already in wire form is kept as it is only when it is a real date and time."""
    handler = make_handler(send=False)
    make_logger(handler).info("Timed", extra=track(user_id="u1", timestamp=given))
    assert handler.stats()["invalid"] == 1 and handler.stats()["emitted"] == 0


def test_text_in_wire_form_is_kept(collector, make_handler, make_logger):
    handler = make_handler()
    make_logger(handler).info("Timed", extra=track(user_id="u1", timestamp="2024-02-29T23:59:59.999Z"))
    assert handler.flush(timeout=10)
    assert collector.received()[0]["timestamp"] == "2024-02-29T23:59:59.999Z"


def test_every_type_and_its_fields(collector, make_handler, make_logger):
    from dreamdata_logging import alias, group, page, screen

    handler = make_handler()
    log = make_logger(handler)
    log.info("x", extra=page("Pricing", category="Docs", anonymous_id="a1", properties={"path": "/p"}))
    log.info("x", extra=screen("Home", user_id="u1"))
    log.info("x", extra=group("g1", user_id="u1", traits={"name": "Acme"}))
    log.info("x", extra=alias("a1", user_id="u1"))
    log.info("x", extra=identify(user_id="u1", traits={"email": "e@example.com"}, integrations={"All": True}))
    log.info("x", extra={"dreamdata": {"type": "track", "userId": "u1", "event": "Raw", "customTopLevel": 1}})
    assert handler.flush(timeout=10)
    received = collector.received()
    assert [m["type"] for m in received] == ["page", "screen", "group", "alias", "identify", "track"]
    assert received[0]["name"] == "Pricing" and received[0]["category"] == "Docs" and received[0]["anonymousId"] == "a1"
    assert received[2]["groupId"] == "g1" and received[2]["traits"] == {"name": "Acme"}
    assert received[3]["previousId"] == "a1" and received[3]["userId"] == "u1"
    assert received[4]["integrations"] == {"All": True}
    assert received[5]["customTopLevel"] == 1


def test_helpers_validate_eagerly():
    with pytest.raises(TypeError):
        track(user_id=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        track(user_id="u", properties=["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        track("", user_id="u")
    with pytest.raises(TypeError):
        identify(user_id="u", timestamp=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        identify(user_id="")
    assert track("E", user_id=5) == {"dreamdata": {"type": "track", "event": "E", "userId": 5}}


def test_config_examples_load_through_dictconfig(collector, monkeypatch, tmp_path):
    monkeypatch.setenv("DREAMDATA_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("DREAMDATA_ENDPOINT", collector.url)
    examples = resources.files("dreamdata_logging").joinpath("examples")
    configs = [
        json.loads(examples.joinpath("logging.json").read_text()),
        yaml.safe_load(examples.joinpath("logging.yaml").read_text()),
    ]
    assert configs[0] == configs[1]  # the README shows both; they must say the same
    for n, config in enumerate(configs):
        logging.config.dictConfig(config)
        log = logging.getLogger("analytics")
        [handler] = log.handlers
        assert isinstance(handler, DreamdataHandler) and handler.endpoint == collector.url
        log.info("Configured", extra=track(user_id=f"cfg-{n}"))
        assert handler.flush(timeout=10)
        handler.close()
    assert [m["userId"] for m in collector.received()] == ["cfg-0", "cfg-1"]
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})


def test_dictconfig_converts_strings(collector, monkeypatch):
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "dd": {
                    "class": "dreamdata_logging.DreamdataHandler",
                    "write_key": WRITE_KEY,
                    "endpoint": collector.url,
                    "flush_at": "10",
                    "flush_interval": "0.5",
                    "gzip": "true",
                    "send": "yes",
                    "max_retries": "2",
                    "verify": "false",
                    "on_error": "tests.test_core:record_error",
                }
            },
            "loggers": {"strings": {"handlers": ["dd"], "level": "INFO"}},
        }
    )
    [handler] = logging.getLogger("strings").handlers
    assert isinstance(handler, DreamdataHandler)
    assert handler.flush_at == 10 and handler.flush_interval == 0.5 and handler.on_error is record_error
    logging.getLogger("strings").info("Strings", extra=track(user_id="u1"))
    assert handler.flush(timeout=10)
    assert collector.requests()[0].headers.get("Content-Encoding") == "gzip"
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})


def record_error(error: BaseException, messages: list[Any]) -> None:
    """Referenced by name from a config in the test above."""


def test_missing_write_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DREAMDATA_WRITE_KEY", raising=False)
    with pytest.raises(ValueError, match="DREAMDATA_WRITE_KEY"):
        DreamdataHandler()


def test_send_false_builds_validates_and_counts(collector, make_handler, make_logger):
    handler = make_handler(send=False)
    log = make_logger(handler)
    log.info("Kept Local", extra=track(user_id="u1"))
    log.info("Invalid", extra=track())
    assert handler.flush(timeout=5)
    stats = handler.stats()
    assert stats["emitted"] == 1 and stats["invalid"] == 1 and stats["delivered"] == 0
    assert collector.requests() == []


def test_close_is_idempotent_and_a_closed_handler_reopens_like_file_handler(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    log.info("Before Close", extra=track(user_id="u1"))
    handler.close()
    handler.close()
    assert [m["event"] for m in collector.received()] == ["Before Close"]
    # Still attached to a logger (as after a reconfiguration): the next event reopens it.
    log.info("After Close", extra=track(user_id="u1"))
    assert handler.flush(timeout=10)
    assert [m["event"] for m in collector.received()] == ["Before Close", "After Close"]
    stats = handler.stats()
    assert stats["emitted"] == 2 and stats["delivered"] == 2 and stats["dropped_closed"] == 0
    handler.close()
    log.info("Reopened Again", extra=track(user_id="u1"))
    handler.close()
    assert [m["event"] for m in collector.received()][-1] == "Reopened Again"


def test_demo_command_runs_and_reports():
    result = subprocess.run(
        [sys.executable, "-m", "dreamdata_logging", "demo"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "all events arrived" in result.stdout
    assert '"event": "Song Played"' in result.stdout
    stats = json.loads(re.search(r"handler stats: (\{.*\})", result.stdout).group(1))
    assert stats["delivered"] == 6 and stats["skipped"] == 1


def test_collector_rejects_what_the_handler_never_sends():
    # The handler's output is checked by a collector that really checks: prove it refuses bad input.
    import requests

    with Collector(write_key=WRITE_KEY, strict=True) as strict:
        response = requests.post(
            strict.url,
            data=b'{"batch":[{"type":"track"}]}',
            auth=(WRITE_KEY, ""),
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
        assert response.status_code == 400
