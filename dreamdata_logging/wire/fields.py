"""The field rules of a message, in one table: per type, the fields it needs and may carry, each field's
kind, and the one wording of every error about them.

Every layer reads this table: the helpers and :func:`dreamdata_logging.bind` (Python values, named by
their keyword, ``user_id``), the handler as it builds a message, and the checks of a decoded message as
the endpoint makes them (the local collector and ``dreamdata-logging send``; fields named in wire
spelling, ``'userId'``). A kind says what it expects in both views: a Python value may be an int id or
any mapping, where a decoded JSON message has a string id and an object.

It also holds the one merge of defaults under an event (:func:`merged`): ``bind()`` over an outer
``bind()``, ``bind()`` under an event, a batch's ``context`` under a message's.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple


class Kind(enum.Enum):
    """What a field holds: (as a Python value, as decoded JSON)."""

    ID = ("a str or int", "a string")
    TEXT = ("a str", "a string")
    NAME = ("a non-empty str", "a non-empty string")
    MAPPING = ("a mapping", "an object")
    TIMESTAMP = ("a datetime, ISO 8601 str or epoch seconds", "an RFC 3339 date-time")

    def __init__(self, python: str, json: str) -> None:
        self.python = python
        self.json = json


class Field(NamedTuple):
    wire: str  # its name in a message: userId
    keyword: str  # its name as a helper's keyword: user_id
    kind: Kind


_KINDS = {
    Kind.NAME: ("event", "messageId"),
    Kind.ID: ("userId", "anonymousId", "groupId", "previousId"),
    Kind.TEXT: ("name", "category"),
    Kind.MAPPING: ("properties", "traits", "context", "integrations"),
    Kind.TIMESTAMP: ("timestamp",),
}
_ORDER = (
    "event userId anonymousId groupId previousId name category properties traits context integrations timestamp"
    " messageId"
).split()

_KIND_OF = {wire: kind for kind, wires in _KINDS.items() for wire in wires}


def _keyword(wire: str) -> str:
    """A wire name as a Python keyword: ``anonymousId`` -> ``anonymous_id``."""
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in wire)


#: Every field of an event, in the order they stand in a message.
FIELDS: tuple[Field, ...] = tuple(Field(wire, _keyword(wire), _KIND_OF[wire]) for wire in _ORDER)


class TypeRule(NamedTuple):
    required: tuple[str, ...]  # besides userId or anonymousId, which every type needs
    own: tuple[str, ...]  # the fields of this type besides COMMON_FIELDS


#: The fields every message type may carry.
COMMON_FIELDS = ("userId", "anonymousId", "context", "integrations", "timestamp", "messageId")
#: A message needs one of these, non-empty (bind() may supply it).
IDENTITY_FIELDS = ("userId", "anonymousId")

#: Per message type: the fields it must carry and its own fields, in wire spelling.
MESSAGE_TYPES: dict[str, TypeRule] = {
    "track": TypeRule(("event",), ("event", "properties")),
    "identify": TypeRule((), ("traits",)),
    **dict.fromkeys(("page", "screen"), TypeRule((), ("name", "category", "properties"))),
    "group": TypeRule(("groupId",), ("groupId", "traits")),
    "alias": TypeRule(("previousId", "userId"), ("previousId",)),
}

REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {kind: rule.required for kind, rule in MESSAGE_TYPES.items()}
MAPPING_FIELDS = tuple(field.wire for field in FIELDS if field.kind is Kind.MAPPING)
ID_FIELDS = tuple(field.wire for field in FIELDS if field.kind is Kind.ID)


def fields_of(kind: str) -> tuple[Field, ...]:
    """The fields a message of type ``kind`` may carry, in message order."""
    names = {*MESSAGE_TYPES[kind].own, *COMMON_FIELDS}
    return tuple(field for field in FIELDS if field.wire in names)


# -- the one wording of each error ---------------------------------------------------------------------


def quoted(field: str) -> str:
    """A wire field as errors name it: ``'userId'`` (a helper's keyword is named bare: ``user_id``)."""
    return f"'{field}'"


def wrong_kind(name: str, kind: Kind, actual: str, *, decoded: bool = False) -> str:
    """``name must be <what the kind holds>, not <actual>``; ``decoded``: said of JSON, not of Python."""
    return f"{name} must be {kind.json if decoded else kind.python}, not {actual}"


def empty(name: str) -> str:
    return f"{name} must not be empty"


def missing(field: str, kind: str = "") -> str:
    """A required text field is absent or empty: ``track needs a non-empty string 'event'``."""
    return f"{kind} needs a non-empty string {quoted(field)}".lstrip()


#: No identity: neither userId nor anonymousId is a non-empty string.
NO_IDENTITY = f"needs a non-empty {quoted('userId')} or {quoted('anonymousId')}"


def unknown_type(shown: str) -> str:
    return f"{quoted('type')} must be one of {', '.join(MESSAGE_TYPES)}, not {shown}"


# -- checks of Python values (the helpers, bind()): TypeError or ValueError naming the keyword ---------


def check_id(name: str, value: Any) -> None:
    if type(value) is str and value:
        return
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(wrong_kind(name, Kind.ID, type(value).__name__))
    if value == "":
        raise ValueError(empty(name))


def check_text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(wrong_kind(name, Kind.TEXT, type(value).__name__))


def check_name(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(wrong_kind(name, Kind.NAME, "''" if isinstance(value, str) else type(value).__name__))


def check_mapping(name: str, value: Any) -> None:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise TypeError(wrong_kind(name, Kind.MAPPING, type(value).__name__))


def check_timestamp(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (datetime.datetime, str, int, float)):
        raise TypeError(wrong_kind(name, Kind.TIMESTAMP, type(value).__name__))


Check = Callable[[str, Any], None]
CHECKS: dict[Kind, Check] = {
    Kind.ID: check_id,
    Kind.TEXT: check_text,
    Kind.NAME: check_name,
    Kind.MAPPING: check_mapping,
    Kind.TIMESTAMP: check_timestamp,
}


def id_text(name: str, value: Any) -> str:
    """An id as the wire carries it (an int becomes its digits); TypeError for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(wrong_kind(name, Kind.ID, type(value).__name__))


# -- defaults under an event ----------------------------------------------------------------------------


def merged_context(below: Mapping[str, Any], above: Any) -> Any:
    """A ``context`` over a default one: merged key by key (``above``'s keys win); ``above`` of None is
    absent; one that is not a mapping is kept as it is, for the checks to refuse."""
    if above is None:
        return below
    if type(above) is dict or isinstance(above, Mapping):
        return {**below, **above}
    return above


def merged(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """``own`` over ``defaults``, with the two contexts merged by :func:`merged_context` (inlined for the
    common case: this runs at every emit inside a ``bind()``)."""
    message = {**defaults, **own}
    above = own.get("context")
    if above is None:
        if "context" in own and "context" in defaults:  # None is absent: the default one stays
            message["context"] = defaults["context"]
    elif "context" in defaults:
        below = defaults["context"]
        message["context"] = {**below, **above} if type(above) is dict else merged_context(below, above)
    return message
