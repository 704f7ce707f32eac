"""Each event helper puts every keyword in its wire field, in the order fields stand in an event."""

from __future__ import annotations

import datetime

import pytest

from dreamdata_logging import alias, group, identify, page, screen, track

WHEN = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
COMMON = {"context": {"ip": "127.0.0.1"}, "integrations": {"All": True}, "timestamp": WHEN, "message_id": "m-1"}
COMMON_WIRE = {"context": {"ip": "127.0.0.1"}, "integrations": {"All": True}, "timestamp": WHEN, "messageId": "m-1"}


@pytest.mark.parametrize(
    ("helper", "first", "keywords", "expected"),
    [
        (
            track,
            "Signed Up",
            {"user_id": "u-1", "anonymous_id": "a-1", "properties": {"plan": "pro"}},
            {
                "type": "track",
                "event": "Signed Up",
                "userId": "u-1",
                "anonymousId": "a-1",
                "properties": {"plan": "pro"},
            },
        ),
        (
            page,
            "Home",
            {"category": "Docs", "user_id": 7, "anonymous_id": "a-1", "properties": {"path": "/"}},
            {
                "type": "page",
                "userId": 7,
                "anonymousId": "a-1",
                "name": "Home",
                "category": "Docs",
                "properties": {"path": "/"},
            },
        ),
        (
            screen,
            "Settings",
            {"category": "App", "user_id": "u-1", "anonymous_id": 9, "properties": {"tab": 2}},
            {
                "type": "screen",
                "userId": "u-1",
                "anonymousId": 9,
                "name": "Settings",
                "category": "App",
                "properties": {"tab": 2},
            },
        ),
        (
            group,
            "g-1",
            {"user_id": "u-1", "anonymous_id": "a-1", "traits": {"seats": 3}},
            {"type": "group", "userId": "u-1", "anonymousId": "a-1", "groupId": "g-1", "traits": {"seats": 3}},
        ),
        (
            alias,
            "old-1",
            {"user_id": "u-1", "anonymous_id": "a-1"},
            {"type": "alias", "userId": "u-1", "anonymousId": "a-1", "previousId": "old-1"},
        ),
        (
            identify,
            None,
            {"user_id": "u-1", "anonymous_id": "a-1", "traits": {"email": "x@example.com"}},
            {"type": "identify", "userId": "u-1", "anonymousId": "a-1", "traits": {"email": "x@example.com"}},
        ),
    ],
)
def test_every_keyword_lands_in_its_wire_field_in_event_order(helper, first, keywords, expected):
    args = () if first is None else (first,)
    body = helper(*args, **keywords, **COMMON)["dreamdata"]
    want = {**expected, **COMMON_WIRE}
    assert body == want
    assert list(body) == list(want)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: page(name=3), TypeError, "name must be a str, not int"),
        (lambda: screen(category=b"x"), TypeError, "category must be a str, not bytes"),
        (lambda: group("g", user_id=""), ValueError, "user_id must not be empty"),
        (lambda: alias(True), TypeError, "previous_id must be a str or int, not bool"),
        (lambda: identify(traits=[1]), TypeError, "traits must be a mapping, not list"),
        (lambda: track(""), TypeError, "event must be a non-empty str"),
        (lambda: track(message_id=""), TypeError, "message_id must be a non-empty str"),
        (lambda: track(timestamp=True), TypeError, "timestamp must be a datetime, ISO 8601 str or epoch seconds"),
        # The first field in event order is checked first.
        (lambda: page(7, user_id=[]), TypeError, "user_id must be a str or int, not list"),
    ],
)
def test_each_field_is_checked_eagerly_with_its_keyword_in_the_error(call, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(")):
        call()
