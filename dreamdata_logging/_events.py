"""Helpers that build the ``extra=`` of an event record: ``log.info("Signed Up", extra=track(user_id=...))``.

Each returns ``{"dreamdata": {...}}`` in wire spelling, with only the fields given, and checks types
eagerly so mistakes surface at the call site. Identity may be left out here when
:func:`dreamdata_logging.bind` supplies it.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Optional, Union

Id = Union[str, int]
Timestamp = Union[datetime.datetime, str, int, float]
Fields = Optional[Mapping[str, Any]]


def _check_id(name: str, value: Any) -> None:
    if type(value) is str and value:
        return
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{name} must be a str or int, not {type(value).__name__}")
    if value == "":
        raise ValueError(f"{name} must not be empty")


def _check_mapping(name: str, value: Any) -> None:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, not {type(value).__name__}")


def _check_timestamp(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (datetime.datetime, str, int, float)):
        raise TypeError(f"timestamp must be a datetime, ISO 8601 str or epoch seconds, not {type(value).__name__}")


def _check_message_id(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError("message_id must be a non-empty str")


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")


# Errors name the helper's keyword, not the wire field.
_KEYWORDS = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "groupId": "group_id",
    "previousId": "previous_id",
    "messageId": "message_id",
}
_CHECKS = {
    "userId": _check_id,
    "anonymousId": _check_id,
    "groupId": _check_id,
    "previousId": _check_id,
    "properties": _check_mapping,
    "traits": _check_mapping,
    "context": _check_mapping,
    "integrations": _check_mapping,
    "timestamp": _check_timestamp,
    "messageId": _check_message_id,
    "name": _check_text,
    "category": _check_text,
}


def _event(kind: str, **fields: Any) -> dict[str, dict[str, Any]]:
    """Assemble ``{"dreamdata": {...}}`` from wire-spelled fields, skipping the ones left as None."""
    body = {"type": kind}
    for key, value in fields.items():
        if value is not None:
            check = _CHECKS.get(key)
            if check is not None:
                check(_KEYWORDS.get(key, key), value)
            body[key] = value
    return {"dreamdata": body}


def track(
    event: Optional[str] = None,
    *,
    user_id: Optional[Id] = None,
    anonymous_id: Optional[Id] = None,
    properties: Fields = None,
    context: Fields = None,
    integrations: Fields = None,
    timestamp: Optional[Timestamp] = None,
    message_id: Optional[str] = None,
) -> dict[str, dict[str, Any]]:
    """A track event. Without ``event``, the record's formatted message is the event name."""
    # Written out rather than through _event(): this is the call on the hot path.
    body: dict[str, Any] = {"type": "track"}
    if event is not None:
        if not isinstance(event, str) or not event:
            raise TypeError("event must be a non-empty str")
        body["event"] = event
    if user_id is not None:
        if type(user_id) is not str or not user_id:
            _check_id("user_id", user_id)
        body["userId"] = user_id
    if anonymous_id is not None:
        _check_id("anonymous_id", anonymous_id)
        body["anonymousId"] = anonymous_id
    if properties is not None:
        if type(properties) is not dict:
            _check_mapping("properties", properties)
        body["properties"] = properties
    if context is not None:
        if type(context) is not dict:
            _check_mapping("context", context)
        body["context"] = context
    if integrations is not None:
        _check_mapping("integrations", integrations)
        body["integrations"] = integrations
    if timestamp is not None:
        _check_timestamp("timestamp", timestamp)
        body["timestamp"] = timestamp
    if message_id is not None:
        _check_message_id("message_id", message_id)
        body["messageId"] = message_id
    return {"dreamdata": body}


def identify(
    *,
    user_id: Optional[Id] = None,
    anonymous_id: Optional[Id] = None,
    traits: Fields = None,
    context: Fields = None,
    integrations: Fields = None,
    timestamp: Optional[Timestamp] = None,
    message_id: Optional[str] = None,
) -> dict[str, dict[str, Any]]:
    """An identify event: who the user is (``traits``)."""
    return _event(
        "identify",
        userId=user_id,
        anonymousId=anonymous_id,
        traits=traits,
        context=context,
        integrations=integrations,
        timestamp=timestamp,
        messageId=message_id,
    )


def page(
    name: Optional[str] = None,
    *,
    category: Optional[str] = None,
    user_id: Optional[Id] = None,
    anonymous_id: Optional[Id] = None,
    properties: Fields = None,
    context: Fields = None,
    integrations: Fields = None,
    timestamp: Optional[Timestamp] = None,
    message_id: Optional[str] = None,
) -> dict[str, dict[str, Any]]:
    """A page view."""
    return _event(
        "page",
        userId=user_id,
        anonymousId=anonymous_id,
        name=name,
        category=category,
        properties=properties,
        context=context,
        integrations=integrations,
        timestamp=timestamp,
        messageId=message_id,
    )


def screen(
    name: Optional[str] = None,
    *,
    category: Optional[str] = None,
    user_id: Optional[Id] = None,
    anonymous_id: Optional[Id] = None,
    properties: Fields = None,
    context: Fields = None,
    integrations: Fields = None,
    timestamp: Optional[Timestamp] = None,
    message_id: Optional[str] = None,
) -> dict[str, dict[str, Any]]:
    """A screen view (mobile apps)."""
    return _event(
        "screen",
        userId=user_id,
        anonymousId=anonymous_id,
        name=name,
        category=category,
        properties=properties,
        context=context,
        integrations=integrations,
        timestamp=timestamp,
        messageId=message_id,
    )


def group(
    group_id: Optional[Id] = None,
    *,
    user_id: Optional[Id] = None,
    anonymous_id: Optional[Id] = None,
    traits: Fields = None,
    context: Fields = None,
    integrations: Fields = None,
    timestamp: Optional[Timestamp] = None,
    message_id: Optional[str] = None,
) -> dict[str, dict[str, Any]]:
    """A group event: the user belongs to ``group_id`` (an account or company)."""
    if group_id is None:
        raise TypeError("group() needs group_id")
    return _event(
        "group",
        userId=user_id,
        anonymousId=anonymous_id,
        groupId=group_id,
        traits=traits,
        context=context,
        integrations=integrations,
        timestamp=timestamp,
        messageId=message_id,
    )


def alias(
    previous_id: Optional[Id] = None,
    *,
    user_id: Optional[Id] = None,
    anonymous_id: Optional[Id] = None,
    context: Fields = None,
    integrations: Fields = None,
    timestamp: Optional[Timestamp] = None,
    message_id: Optional[str] = None,
) -> dict[str, dict[str, Any]]:
    """An alias event: ``previous_id`` and ``user_id`` are the same person."""
    if previous_id is None:
        raise TypeError("alias() needs previous_id")
    return _event(
        "alias",
        userId=user_id,
        anonymousId=anonymous_id,
        previousId=previous_id,
        context=context,
        integrations=integrations,
        timestamp=timestamp,
        messageId=message_id,
    )
