"""``before_send``: the complete message in the caller's thread; what it returns is sent, None filters it."""

from __future__ import annotations

import logging
import logging.config
import textwrap
import threading
from typing import Any

import pytest

import dreamdata_logging
from dreamdata_logging import DreamdataHandler, InvalidEventError, identify, track
from dreamdata_logging.tools.collector import Collector

from .conftest import TIMESTAMP, UUID4, WRITE_KEY

LIBRARY = {"name": "dreamdata-logging", "version": dreamdata_logging.__version__}


def scrub_email(message: dict[str, Any]) -> dict[str, Any]:
    """A before_send a config file names: takes the email out of identify traits."""
    traits = message.get("traits")
    if traits:
        traits.pop("email", None)
    return message


def drop_tests(message: dict[str, Any]) -> Any:
    return None if message.get("event", "").startswith("Test") else message


def balanced(stats: dict[str, int]) -> bool:
    parts = ("delivered", "failed", "dropped_queue_full", "dropped_closed", "queued", "spool_written")
    return stats["emitted"] == sum(stats[name] for name in parts)


def test_it_sees_the_complete_message_in_the_callers_thread_and_its_result_is_sent(
    collector: Collector, make_handler, make_logger
) -> None:
    seen: list[tuple[dict[str, Any], threading.Thread]] = []

    def hook(message: dict[str, Any]) -> dict[str, Any]:
        seen.append((json_copy(message), threading.current_thread()))
        message["traits"] = {k: v for k, v in message["traits"].items() if k != "email"}
        message["context"]["consent"] = "analytics"
        return message

    handler = make_handler(before_send=hook)
    log = make_logger(handler)
    with dreamdata_logging.bind(user_id="u-7", context={"ip": "203.0.113.9"}):
        log.info("identify", extra=identify(traits={"email": "a@example.com", "plan": "pro"}))
    assert handler.flush(timeout=15)
    [(message, thread)] = seen
    assert thread is threading.current_thread()
    assert message["type"] == "identify" and message["userId"] == "u-7"
    assert UUID4.match(message["messageId"]) and TIMESTAMP.match(message["timestamp"])
    assert message["context"] == {"ip": "203.0.113.9", "library": LIBRARY}
    assert message["traits"] == {"email": "a@example.com", "plan": "pro"}
    [arrived] = collector.received()
    assert arrived["messageId"] == message["messageId"] and arrived["timestamp"] == message["timestamp"]
    assert arrived["traits"] == {"plan": "pro"}
    assert arrived["context"] == {"ip": "203.0.113.9", "library": LIBRARY, "consent": "analytics"}


def json_copy(message: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(message))  # type: ignore[no-any-return]


def test_none_filters_the_event_counted_outside_emitted(collector: Collector, make_handler, make_logger) -> None:
    handler = make_handler(before_send=drop_tests)
    log = make_logger(handler)
    for n in range(10):
        log.info("Test Ping" if n % 2 else "Signed Up", extra=track(user_id=f"u{n}"))
    assert handler.flush(timeout=15)
    stats = handler.stats()
    assert stats["filtered"] == 5 and stats["emitted"] == 5 and stats["delivered"] == 5
    assert stats["invalid"] == 0 and balanced(stats)
    assert sorted(m["userId"] for m in collector.received()) == ["u0", "u2", "u4", "u6", "u8"]


def test_a_hook_that_raises_makes_the_event_invalid_naming_before_send(
    collector: Collector, make_handler, make_logger, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[tuple[BaseException, list[Any]]] = []

    def hook(message: dict[str, Any]) -> dict[str, Any]:
        if message["event"] == "Bad":
            raise KeyError("plan")
        return message

    handler = make_handler(before_send=hook, on_error=lambda error, messages: errors.append((error, messages)))
    log = make_logger(handler)
    with caplog.at_level(logging.WARNING, logger="dreamdata_logging"):
        log.info("Bad", extra=track(user_id="u1", properties={"plan": "pro"}))  # emit() does not raise
        log.info("Good", extra=track(user_id="u2"))
    assert handler.flush(timeout=15)
    stats = handler.stats()
    assert stats["invalid"] == 1 and stats["filtered"] == 0 and stats["delivered"] == 1 and balanced(stats)
    [(error, messages)] = errors
    assert isinstance(error, InvalidEventError) and "before_send raised KeyError" in error.reason
    assert isinstance(error.__cause__, KeyError)
    assert messages == [{"type": "track", "userId": "u1", "properties": {"plan": "pro"}}]
    assert any("before_send raised KeyError" in r.getMessage() for r in caplog.records)
    assert [m["event"] for m in collector.received()] == ["Good"]


@pytest.mark.parametrize(
    "result, reason",
    [
        (["not", "a", "message"], "before_send must return the message or None, not list"),
        ({"type": "track", "event": "X"}, "needs a non-empty 'userId' or 'anonymousId' (in what before_send returned)"),
        (
            {"type": "shout", "userId": "1"},
            "'type' must be one of track, identify, page, screen, group, alias, not 'shout'",
        ),
    ],
)
def test_what_it_returns_is_checked_as_any_event(make_handler, make_logger, result: Any, reason: str) -> None:
    errors: list[BaseException] = []
    handler = make_handler(before_send=lambda message: result, on_error=lambda error, _: errors.append(error))
    make_logger(handler).info("Signed Up", extra=track(user_id="1"))
    assert handler.flush(timeout=15)
    assert handler.stats()["invalid"] == 1 and handler.stats()["emitted"] == 0
    [error] = errors
    assert reason in str(error)


def test_the_size_rules_apply_to_what_it_returns(collector: Collector, make_handler, make_logger) -> None:
    def trim(message: dict[str, Any]) -> dict[str, Any]:
        message.setdefault("properties", {}).pop("blob", None)
        if message["event"] == "Grow":
            message["properties"]["blob"] = "y" * 40_000
        return message

    errors: list[BaseException] = []
    handler = make_handler(before_send=trim, on_error=lambda error, _: errors.append(error))
    log = make_logger(handler)
    log.info("Shrink", extra=track(user_id="1", properties={"blob": "x" * 40_000, "keep": 1}))
    log.info("Grow", extra=track(user_id="1"))
    assert handler.flush(timeout=15)
    assert [m["properties"] for m in collector.received()] == [{"keep": 1}]
    [error] = errors
    assert "bytes serialised; the limit is 32,000" in str(error) and handler.stats()["invalid"] == 1


def test_dictconfig_names_it_with_ext(collector: Collector) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "dreamdata": {
                    "class": "dreamdata_logging.DreamdataHandler",
                    "write_key": WRITE_KEY,
                    "endpoint": collector.url,
                    "before_send": "ext://tests.test_before_send.scrub_email",
                }
            },
            "loggers": {"before-send-dict": {"handlers": ["dreamdata"], "level": "INFO", "propagate": False}},
        }
    )
    log = logging.getLogger("before-send-dict")
    [handler] = log.handlers
    try:
        assert isinstance(handler, DreamdataHandler) and handler.before_send is scrub_email
        log.info("identify", extra=identify(user_id="1", traits={"email": "a@example.com", "name": "Ada"}))
        assert handler.flush(timeout=15)
        assert [m["traits"] for m in collector.received()] == [{"name": "Ada"}]
    finally:
        log.removeHandler(handler)
        handler.close()


def test_fileconfig_names_it_with_a_dotted_path(collector: Collector, tmp_path) -> None:
    ini = tmp_path / "logging.ini"
    ini.write_text(
        textwrap.dedent(
            f"""\
            [loggers]
            keys=root,app

            [handlers]
            keys=dd

            [formatters]
            keys=

            [logger_root]
            handlers=

            [logger_app]
            qualname=before-send-ini
            level=INFO
            handlers=dd
            propagate=0

            [handler_dd]
            class=dreamdata_logging.DreamdataHandler
            args=("{WRITE_KEY}",)
            kwargs={{"endpoint": "{collector.url}", "before_send": "tests.test_before_send.drop_tests"}}
            """
        )
    )
    logging.config.fileConfig(ini, disable_existing_loggers=False)
    log = logging.getLogger("before-send-ini")
    [handler] = log.handlers
    try:
        assert isinstance(handler, DreamdataHandler) and handler.before_send is drop_tests
        log.info("Test Ping", extra=track(user_id="1"))
        log.info("Signed Up", extra=track(user_id="1"))
        assert handler.flush(timeout=15)
        assert [m["event"] for m in collector.received()] == ["Signed Up"]
        assert handler.stats()["filtered"] == 1
    finally:
        log.removeHandler(handler)
        handler.close()


def test_a_value_that_is_not_callable_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="before_send must be callable"):
        DreamdataHandler(WRITE_KEY, before_send=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before_send: cannot import 'no_such_module.hook'"):
        DreamdataHandler(WRITE_KEY, before_send="no_such_module.hook")  # type: ignore[arg-type]


def test_it_sees_integers_beyond_64_bits_exactly(collector: Collector, make_handler, make_logger) -> None:
    """The hook's dict is decoded from the message as sent; a fast decoder that reads big integers as
    floats is not used for such a message."""
    seen: list[Any] = []

    def hook(message: dict[str, Any]) -> dict[str, Any]:
        seen.append(message["properties"])
        return message

    handler = make_handler(before_send=hook)
    big = {"big": 123456789012345678901234567890, "negative": -(2**70), "id_text": "1234567890123456789012"}
    make_logger(handler).info("Counted", extra=track(user_id="u1", properties=big))
    assert handler.flush(timeout=15)
    assert seen == [big] and type(seen[0]["big"]) is int
    assert collector.received()[0]["properties"] == big
