"""The wire format of ``POST /v1/batch``: limits, field rules, ids, timestamps and request bodies.

One place for the rules that the handler, the local collector and ``dreamdata-logging send`` share.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from dreamdata_logging._version import __version__
from dreamdata_logging.errors import InvalidEventError
from dreamdata_logging.wire import fields
from dreamdata_logging.wire.fields import IDENTITY_FIELDS, MAPPING_FIELDS, NO_IDENTITY, REQUIRED_FIELDS, Kind, quoted

#: Most bytes one request body may have (before any gzip).
MAX_BODY_BYTES = 500_000
#: Most bytes one serialised message may have.
MAX_MESSAGE_BYTES = 32_000


def too_big(size: int) -> str:
    """The one wording of a message over :data:`MAX_MESSAGE_BYTES`."""
    return f"{size:,} bytes serialised; the limit is {MAX_MESSAGE_BYTES:,}"


LIBRARY = {"name": "dreamdata-logging", "version": __version__}
_LIBRARY_ONLY = {"library": LIBRARY}  # shared: it is only ever serialised, never changed

# A ``{"messageId":"<uuid>","sentAt":"<timestamp>","batch":[`` ... ``]}`` envelope around the messages.
_ENVELOPE_HEAD = b'{"messageId":"%s","sentAt":"%s","batch":['
_ENVELOPE_TAIL = b"]}"
ENVELOPE_BYTES = len(_ENVELOPE_HEAD % (b"0" * 36, b"0" * 24)) + len(_ENVELOPE_TAIL)


# Message ids come from a generator seeded from the OS once per process: os.urandom() per event is a
# system call that releases the GIL, and every release lets the worker thread take it from the caller.
_random = random.Random()
_random_bits = _random.getrandbits


def new_message_id() -> str:
    """A random (version 4) UUID as text; cheaper than ``str(uuid.uuid4())``."""
    h = _random_bits(128).to_bytes(16, "little").hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def reseed_ids() -> None:
    """A new process (made by any means) must never repeat its parent's ids: seed again from the OS."""
    _random.seed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reseed_ids)

_second_prefix: tuple[int, str] = (-1, "")


def format_timestamp(seconds: int, millis: int) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``; the per-second part is cached."""
    global _second_prefix
    cached_second, prefix = _second_prefix
    if seconds != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_prefix = (seconds, prefix)
    return f"{prefix}.{millis:03d}Z"


def now_timestamp() -> str:
    now = time.time()
    return format_timestamp(int(now), int(now * 1000) % 1000)


def user_timestamp(value: Any) -> str:
    """A user-given timestamp (datetime, ISO text or epoch seconds) in wire form."""
    if type(value) is str and is_wire_timestamp(value):  # already in wire form (before_send's): kept as it is
        return value
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    elif isinstance(value, str):
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidEventError(f"timestamp {_show(value)} is not ISO 8601") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            moment = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
        except (OverflowError, OSError, ValueError):  # NaN, or beyond year 1..9999
            raise InvalidEventError(f"timestamp {_show(value)} is out of range") from None
    elif isinstance(value, datetime.date):
        moment = datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc)
    else:
        raise InvalidEventError(fields.wrong_kind(quoted("timestamp"), Kind.TIMESTAMP, type(value).__name__))
    try:
        utc = moment.astimezone(datetime.timezone.utc)
    except (OverflowError, ValueError):  # e.g. 0001-01-01 in a zone east of UTC
        raise InvalidEventError("timestamp is out of range once converted to UTC") from None
    # The year by hand: strftime's %Y gives "219", not "0219", on some platforms.
    return f"{utc.year:04d}-" + utc.strftime("%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def describe(message: Mapping[str, Any]) -> str:
    """A short name of an event for error messages, e.g. ``track 'Signed Up' (userId='42')``."""
    kind = message.get("type", "track")
    parts = [kind[:40] if isinstance(kind, str) else type(kind).__name__]  # never a hostile value's str()
    if kind == "track" and isinstance(message.get("event"), str):
        parts.append(repr(message["event"][:80]))
    for field in ("userId", "anonymousId", "messageId"):
        value = message.get(field)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            parts.append(f"({field}={str(value)[:80]!r})")
            break
    return " ".join(parts)


class Batch:
    """Serialised messages that travel in one request; the envelope id is fixed, ``sentAt`` is per attempt."""

    __slots__ = ("messages", "size", "batch_id")

    def __init__(self, messages: Sequence[bytes], size: Optional[int] = None) -> None:
        self.messages = messages
        self.size = size if size is not None else sum(map(len, messages))
        self.batch_id = new_message_id()

    def __len__(self) -> int:
        return len(self.messages)

    def body(self, sent_at: Optional[str] = None) -> bytes:
        head = _ENVELOPE_HEAD % (self.batch_id.encode(), (sent_at or now_timestamp()).encode())
        # One join, so one allocation: a second body-sized buffer made the allocator return and fault in
        # the memory of every request anew (about 200 page faults per 500 kB body).
        parts = list(self.messages) or [b""]
        parts[0] = head + parts[0]
        parts[-1] += _ENVELOPE_TAIL
        return b",".join(parts)

    def body_size(self) -> int:
        return body_size(self.size, len(self.messages))


def body_size(message_bytes: int, count: int) -> int:
    """Bytes of a request body holding ``count`` messages of ``message_bytes`` in total."""
    return ENVELOPE_BYTES + message_bytes + max(count - 1, 0)


# -- checking a message as the endpoint does (shared by the collector and ``dreamdata-logging send``) --

# [0-9], not \d: \d also matches non-ASCII digits.
_WIRE_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _filled(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def is_wire_timestamp(value: Any) -> bool:
    """True for RFC 3339 UTC with milliseconds and ``Z``, e.g. ``2012-12-02T00:30:08.276Z``."""
    if not isinstance(value, str) or _WIRE_TIMESTAMP.fullmatch(value) is None:
        return False
    try:  # the pattern lets 2012-13-45 through
        datetime.datetime.fromisoformat(value[:-1])
    except ValueError:
        return False
    return True


def wire_problem(message: Any) -> Optional[str]:
    """What is wrong with one decoded message as it would travel, or None.

    Checks type, ``messageId``, ``timestamp``, identity, each type's required fields and the mapping
    fields; not the serialised size (see :data:`MAX_MESSAGE_BYTES`).
    """
    return _problem(message, _own_id_and_time_problem)


def _own_id_and_time_problem(message: dict[str, Any]) -> Optional[str]:
    if not _filled(message.get("messageId")):
        return fields.missing("messageId")
    if not is_wire_timestamp(message.get("timestamp")):
        return (
            f"'timestamp' must be RFC 3339 UTC with milliseconds, like 2012-12-02T00:30:08.276Z,"
            f" not {_show(message.get('timestamp'))}"
        )
    return None


#: A message of a batch that is not a JSON object.
NOT_AN_OBJECT = "is not an object"


def _problem(message: Any, id_and_time: Callable[[dict[str, Any]], Optional[str]]) -> Optional[str]:
    """The rules every client's message must follow (type, identity, the type's fields, mappings), with
    ``id_and_time`` checking ``messageId`` and ``timestamp`` after the type, as the endpoint does."""
    if not isinstance(message, dict):
        return NOT_AN_OBJECT
    kind = message.get("type")
    if kind not in REQUIRED_FIELDS:
        return fields.unknown_type(_show(kind))
    problem = id_and_time(message)
    if problem is not None:
        return problem
    for key in IDENTITY_FIELDS:
        if message.get(key) is not None and not isinstance(message[key], str):
            return fields.wrong_kind(quoted(key), Kind.ID, _show(message[key]), decoded=True)
    if not (_filled(message.get("userId")) or _filled(message.get("anonymousId"))):
        return NO_IDENTITY
    for key in REQUIRED_FIELDS[kind]:
        if not _filled(message.get(key)):
            return fields.missing(key, kind)
    for key in MAPPING_FIELDS:
        if key in message and not isinstance(message[key], dict):
            return fields.wrong_kind(quoted(key), Kind.MAPPING, _show(message[key]), decoded=True)
    return None


# -- what Dreamdata's endpoint accepts from any client (the local collector's default) --

# Any RFC 3339 date-time: a "T" (either case), seconds, an optional fraction of any length, "Z" or an offset.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)


def is_rfc3339_timestamp(value: Any) -> bool:
    """True for any RFC 3339 date-time: ``2019-01-01T00:00:00Z``, ``2019-01-01T02:00:00.123456+02:00``, ...

    Wider than :func:`is_wire_timestamp` (this package's own form): any fraction or none, any offset.
    """
    if not isinstance(value, str):
        return False
    match = _RFC3339.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second
        return False
    if match.group(9) is not None and (int(match.group(9)) > 23 or int(match.group(10)) > 59):
        return False
    return True


def api_problem(message: Any) -> Optional[str]:
    """What the endpoint refuses in one decoded message from any client, or None.

    The rules of :func:`wire_problem` with what other clients send allowed: any RFC 3339 ``timestamp``
    (or none), and no ``messageId`` (one given must still be a non-empty string).
    """
    return _problem(message, _any_id_and_time_problem)


def _any_id_and_time_problem(message: dict[str, Any]) -> Optional[str]:
    if "messageId" in message and not _filled(message["messageId"]):
        return fields.wrong_kind(quoted("messageId"), Kind.NAME, _show(message["messageId"]), decoded=True)
    if "timestamp" in message and not is_rfc3339_timestamp(message["timestamp"]):
        return (
            "'timestamp' must be an RFC 3339 date-time, like 2012-12-02T00:30:08.276Z or"
            f" 2012-12-02T02:30:08+02:00, not {_show(message['timestamp'])}"
        )
    return None


# -- reading and writing messages as the endpoint does (the local collector and ``dreamdata-logging send``) --


def _not_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: Strict JSON: NaN and Infinity are Python's extension, not JSON, and are refused.
STRICT_JSON = json.JSONDecoder(parse_constant=_not_json_constant)


def with_batch_context(message: Any, context: Optional[Mapping[str, Any]]) -> Any:
    """``message`` with a batch-level ``context`` merged into its own ``context`` (the message's keys win)."""
    if not context or not isinstance(message, dict):
        return message
    return {**message, "context": fields.merged_context(dict(context), message.get("context"))}
