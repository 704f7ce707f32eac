"""One table of field rules: the handler words each rule as the collector and ``send`` do, the helpers as
the handler does, and defaults merge under an event the same way everywhere."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from dreamdata_logging import bind, identify, track
from dreamdata_logging.errors import InvalidEventError
from dreamdata_logging.events.bind import current
from dreamdata_logging.events.message import build_message
from dreamdata_logging.wire.rules import api_problem, wire_problem, with_batch_context

TS = "2012-12-02T00:30:08.276Z"
RECORD = logging.LogRecord("app", logging.INFO, __file__, 1, "Signed Up", (), None)


def handler_reason(event: dict[str, Any]) -> str:
    with pytest.raises(InvalidEventError) as raised:
        build_message(event, RECORD)
    return raised.value.reason


@pytest.mark.parametrize(
    "event",
    [
        {"type": "track", "event": "Signed Up"},  # no identity
        {"type": "track", "event": "", "userId": "u"},
        {"type": "group", "userId": "u"},
        {"type": "alias", "userId": "u"},
        {"type": "alias", "previousId": "p", "anonymousId": "a"},
        {"type": "shout", "userId": "u"},
    ],
)
def test_the_handler_and_the_collector_give_the_same_reason(event: dict[str, Any]) -> None:
    reason = handler_reason(event)
    travelling = {**event, "messageId": "m-1", "timestamp": TS}
    assert wire_problem(travelling) == reason
    assert api_problem(travelling) == reason


@pytest.mark.parametrize(
    ("call", "event", "field"),
    [
        (lambda: identify(user_id="u", traits=[1]), {"type": "identify", "userId": "u", "traits": [1]}, "traits"),
        (lambda: track("E", user_id=["u"]), {"type": "track", "event": "E", "userId": ["u"]}, "user_id"),
    ],
)
def test_a_helper_words_a_rule_as_the_handler_does(call: Any, event: dict[str, Any], field: str) -> None:
    """The same words; the helper names its keyword (user_id), the handler the field ('userId')."""
    with pytest.raises(TypeError) as raised:
        call()
    wire = {"user_id": "userId"}.get(field, field)
    assert handler_reason(event) == str(raised.value).replace(field, f"'{wire}'", 1)


def test_defaults_merge_under_an_event_and_a_batch_context_under_a_message_alike() -> None:
    with bind(user_id="u", context={"ip": "10.0.0.1", "locale": "da"}):
        with bind(context={"locale": "en"}):  # an inner bind merges its context into the outer one's
            defaults = current()
            assert defaults is not None and defaults["context"] == {"ip": "10.0.0.1", "locale": "en"}
            message = build_message(track("E", context={"page": "/"})["dreamdata"], RECORD, defaults)
            # An event's context of None is absent: the bound one stays.
            bare = build_message({"event": "E", "context": None}, RECORD, defaults)
    assert b'"context":{"ip":"10.0.0.1","locale":"en","page":"/","library":' in message
    assert b'"context":{"ip":"10.0.0.1","locale":"en","library":' in bare
    batch_context = {"ip": "10.0.0.1", "locale": "en"}
    own = {"type": "track", "context": {"page": "/"}}
    assert with_batch_context(own, batch_context)["context"] == {"ip": "10.0.0.1", "locale": "en", "page": "/"}
    assert with_batch_context({"type": "track", "context": None}, batch_context)["context"] == batch_context
