"""A log record's event data to one serialised message (the caller's thread does this once, at emit)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Optional

from . import _encoding as encoding
from ._wire import (
    _LIBRARY_ONLY,
    ID_FIELDS,
    LIBRARY,
    MAPPING_FIELDS,
    MAX_MESSAGE_BYTES,
    REQUIRED_FIELDS,
    _id_text,
    _show,
    describe,
    format_timestamp,
    new_message_id,
    user_timestamp,
)
from .errors import InvalidEventError


def build_message(
    event: Any,
    record: logging.LogRecord,
    defaults: Optional[Mapping[str, Any]] = None,
    extra_fields: Optional[Mapping[str, Any]] = None,
    name: Optional[str] = None,
) -> bytes:
    """Turn the ``dreamdata`` mapping of ``record`` into one serialised message.

    ``defaults`` (from :func:`dreamdata_logging.bind`) fill fields the event leaves out;
    ``extra_fields`` (from ``include_extra``) become properties or traits, below explicit ones;
    ``name`` is a track's default ``event`` when it is not the record's formatted message.
    Raises :class:`InvalidEventError` naming the reason; never modifies ``event``.
    """
    if type(event) is not dict and not isinstance(event, Mapping):
        raise InvalidEventError(f"the 'dreamdata' attribute must be a mapping, not {type(event).__name__}")
    message: dict[str, Any] = {"type": "track", "messageId": None, "timestamp": None}
    if defaults:
        message.update(defaults)
    message.update(event)
    kind = message["type"]
    if type(kind) is not str or kind not in REQUIRED_FIELDS:
        raise InvalidEventError(
            f"unknown type {_show(kind)}; expected one of {', '.join(REQUIRED_FIELDS)}", describe(message)
        )
    if kind == "track" and "event" not in message:
        message["event"] = record.getMessage() if name is None else name

    try:
        for field in MAPPING_FIELDS:
            value = message.get(field, message)  # the message itself stands for "absent"
            if value is message or type(value) is dict:
                continue
            if value is None:
                del message[field]
            elif not isinstance(value, Mapping):
                raise InvalidEventError(f"{field} must be a mapping, not {type(value).__name__}")
        if defaults and "context" in defaults and event.get("context") is not None:
            message["context"] = {**defaults["context"], **event["context"]}
        if extra_fields:
            target = "traits" if kind in ("identify", "group") else "properties"
            message[target] = {**extra_fields, **message.get(target, {})}

        for field in ID_FIELDS:
            value = message.get(field)
            if value is not None and type(value) is not str:
                message[field] = _id_text(field, value)
        if not (message.get("userId") or message.get("anonymousId")):
            raise InvalidEventError("needs a userId or an anonymousId")

        for field in REQUIRED_FIELDS[kind]:
            value = message.get(field)
            if not isinstance(value, str) or not value:
                raise InvalidEventError(f"{kind} needs {field} as a non-empty string")

        if message["messageId"] is None:
            message["messageId"] = new_message_id()
        elif type(message["messageId"]) is not str:
            message["messageId"] = str(encoding.convert(message["messageId"]))
        if message["messageId"] == "":  # the endpoint would refuse the whole batch over it
            raise InvalidEventError("messageId must not be empty")
        if message["timestamp"] is None:
            message["timestamp"] = format_timestamp(int(record.created), int(record.msecs))
        else:
            message["timestamp"] = user_timestamp(message["timestamp"])

        context = message.get("context")
        if not context:
            message["context"] = _LIBRARY_ONLY
        elif "library" not in context:  # a library the user names is kept
            message["context"] = {**context, "library": LIBRARY}

        data = encoding.dumps(message)
    except InvalidEventError as error:
        if error.event == "event":
            raise InvalidEventError(error.reason, describe(message)) from None
        raise
    size = len(data)
    if size > MAX_MESSAGE_BYTES - _NEAR_LIMIT:  # near the limit: measure as the endpoint's side would
        size = max(size, encoding.standard_size(data))
    if size > MAX_MESSAGE_BYTES:
        raise InvalidEventError(f"{size:,} bytes serialised; the limit is {MAX_MESSAGE_BYTES:,}", describe(message))
    return data


#: Below this many bytes under the limit, no encoder's spelling of numbers can take a message over it.
_NEAR_LIMIT = 8_000
