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

from dreamdata_logging.wire.fields import CHECKS, Check, fields_of

Id = Union[str, int]
Timestamp = Union[datetime.datetime, str, int, float]
Fields = Optional[Mapping[str, Any]]


_Layout = tuple[tuple[int, str, str, Check], ...]

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
    """Where each of ``helper``'s fields stands among its parameters, in event order: its parameters are
    the fields the field-rule table gives its message type, each under its keyword."""
    parameters = list(inspect.signature(helper).parameters)
    fields = fields_of(helper.__name__)
    if sorted(parameters) != sorted(field.keyword for field in fields):
        raise AssertionError(f"{helper.__name__}() does not take the fields of its message type")
    return tuple((parameters.index(f.keyword), f.keyword, f.wire, CHECKS[f.kind]) for f in fields)


_LAYOUTS.update((helper.__name__, _layout(helper)) for helper in (track, identify, page, screen, group, alias))
