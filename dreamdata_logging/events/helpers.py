"""Helpers that build the ``extra=`` of an event record: ``log.info("Signed Up", extra=track(user_id=...))``.

Each returns ``{"dreamdata": {...}}`` in wire spelling, with only the fields given, and checks types
eagerly so mistakes surface at the call site. Identity may be left out here when
:func:`dreamdata_logging.bind` supplies it.
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

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


def _check_nonempty_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str")


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")


_Check = Callable[[str, Any], None]
_Layout = tuple[tuple[int, str, str, _Check], ...]

# Every field a helper may take: its keyword (which errors name), its wire name and its check, in the
# order the fields stand in an event.
_FIELDS: tuple[tuple[str, str, _Check], ...] = (
    ("event", "event", _check_nonempty_text),
    ("user_id", "userId", _check_id),
    ("anonymous_id", "anonymousId", _check_id),
    ("group_id", "groupId", _check_id),
    ("previous_id", "previousId", _check_id),
    ("name", "name", _check_text),
    ("category", "category", _check_text),
    ("properties", "properties", _check_mapping),
    ("traits", "traits", _check_mapping),
    ("context", "context", _check_mapping),
    ("integrations", "integrations", _check_mapping),
    ("timestamp", "timestamp", _check_timestamp),
    ("message_id", "messageId", _check_nonempty_text),
)

# Per event type, the helper's fields: (position among its parameters, keyword, wire name, check), in
# event order. Filled from the helpers' signatures below.
_LAYOUTS: dict[str, _Layout] = {}


def _event(kind: str, arguments: tuple[Any, ...]) -> dict[str, dict[str, Any]]:
    """Assemble ``{"dreamdata": {...}}`` from a helper's arguments, given in the order of its parameters:
    each one checked, in wire spelling and in event order, skipping the ones left as None.

    (A tuple rather than keywords or ``locals()``: ``track`` is on the hot path of logging.)"""
    body: dict[str, Any] = {"type": kind}
    for position, keyword, wire, check in _LAYOUTS[kind]:
        value = arguments[position]
        if value is not None:
            check(keyword, value)
            body[wire] = value
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
    return _event("track", (event, user_id, anonymous_id, properties, context, integrations, timestamp, message_id))


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
    return _event("identify", (user_id, anonymous_id, traits, context, integrations, timestamp, message_id))


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
        "page", (name, category, user_id, anonymous_id, properties, context, integrations, timestamp, message_id)
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
        "screen", (name, category, user_id, anonymous_id, properties, context, integrations, timestamp, message_id)
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
    return _event("group", (group_id, user_id, anonymous_id, traits, context, integrations, timestamp, message_id))


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
    return _event("alias", (previous_id, user_id, anonymous_id, context, integrations, timestamp, message_id))


def _layout(helper: Callable[..., Any]) -> _Layout:
    """Where each of ``helper``'s fields stands among its parameters, in event order."""
    parameters = list(inspect.signature(helper).parameters)
    layout = tuple(
        (parameters.index(keyword), keyword, wire, check) for keyword, wire, check in _FIELDS if keyword in parameters
    )
    if len(layout) != len(parameters):
        raise AssertionError(f"{helper.__name__}() has a parameter that is not an event field")
    return layout


_LAYOUTS.update((helper.__name__, _layout(helper)) for helper in (track, identify, page, screen, group, alias))
