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
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{name} must be a str or int, not {type(value).__name__}")
    if value == "":
        raise ValueError(f"{name} must not be empty")


def _check_mapping(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, not {type(value).__name__}")


def _event(kind: str, **fields: Any) -> dict[str, dict[str, Any]]:
    """Assemble ``{"dreamdata": {...}}`` from wire-spelled fields, skipping the ones left as None."""
    for name in ("userId", "anonymousId", "groupId", "previousId"):
        _check_id(name, fields.get(name))
    for name in ("properties", "traits", "context", "integrations"):
        _check_mapping(name, fields.get(name))
    timestamp = fields.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool) or not isinstance(timestamp, (datetime.datetime, str, int, float))
    ):
        raise TypeError(f"timestamp must be a datetime, ISO 8601 str or epoch seconds, not {type(timestamp).__name__}")
    message_id = fields.get("messageId")
    if message_id is not None and (not isinstance(message_id, str) or not message_id):
        raise TypeError("message_id must be a non-empty str")
    body = {"type": kind}
    body.update((key, value) for key, value in fields.items() if value is not None)
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
    if event is not None and (not isinstance(event, str) or not event):
        raise TypeError("event must be a non-empty str")
    return _event(
        "track",
        event=event,
        userId=user_id,
        anonymousId=anonymous_id,
        properties=properties,
        context=context,
        integrations=integrations,
        timestamp=timestamp,
        messageId=message_id,
    )


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


def _view(kind: str, **fields: Any) -> dict[str, dict[str, Any]]:
    for name in ("name", "category"):
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise TypeError(f"{name} must be a str, not {type(fields[name]).__name__}")
    return _event(kind, **fields)


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
    return _view(
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
    return _view(
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
