"""A log record's event data to one serialised message (the caller's thread does this once, at emit)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Callable, Optional

from dreamdata_logging.errors import InvalidEventError
from dreamdata_logging.events import encoding
from dreamdata_logging.wire import fields
from dreamdata_logging.wire.fields import ID_FIELDS, MAPPING_FIELDS, NO_IDENTITY, REQUIRED_FIELDS, Kind, merged, quoted
from dreamdata_logging.wire.rules import (
    _LIBRARY_ONLY,
    MAX_MESSAGE_BYTES,
    _show,
    describe,
    format_timestamp,
    new_message_id,
    too_big,
    user_timestamp,
)


def build_message(
    event: Any,
    record: logging.LogRecord,
    defaults: Optional[Mapping[str, Any]] = None,
    extra_fields: Optional[Mapping[str, Any]] = None,
    name: Optional[str] = None,
    check: Optional[Callable[[str, dict[str, Any]], None]] = None,
    limit: int = MAX_MESSAGE_BYTES,
) -> bytes:
    """Turn the ``dreamdata`` mapping of ``record`` into one serialised message.

    ``defaults`` (from :func:`dreamdata_logging.bind`) fill fields the event leaves out;
    ``extra_fields`` (from ``include_extra``) become properties or traits, below explicit ones;
    ``name`` is a track's default ``event`` when it is not the record's formatted message;
    ``check(type, message)`` sees the message's fields before they are serialised (a tracking plan);
    ``limit`` is the most bytes the message may take.
    Raises :class:`InvalidEventError` naming the reason; never modifies ``event``.

    The fields this library fills in (``type``, ``messageId``, ``timestamp``, ``context.library``) are
    spliced around the encoder's output for the caller's own fields, rather than copied into them.
    """
    if type(event) is not dict and not isinstance(event, Mapping):
        raise InvalidEventError(fields.wrong_kind("the 'dreamdata' attribute", Kind.MAPPING, type(event).__name__))
    message = merged(defaults, event) if defaults else dict(event)  # a copy: the caller's dict stays as it is
    kind = message.pop("type", "track")
    if type(kind) is not str or kind not in REQUIRED_FIELDS:
        raise InvalidEventError(fields.unknown_type(_show(kind)), describe(message))
    if kind == "track" and "event" not in message:
        message["event"] = record.getMessage() if name is None else name
    try:
        _check(kind, message)
        if extra_fields:
            target = "traits" if kind in ("identify", "group") else "properties"
            message[target] = {**extra_fields, **message.get(target, {})}
        if check is not None:
            check(kind, message)
        data = _serialise(_head(kind, message, record), message)
    except InvalidEventError as error:
        if error.event == "event":
            raise InvalidEventError(error.reason, describe({"type": kind, **message})) from None
        raise
    size = len(data)
    if size > limit - _NEAR_LIMIT:  # near the limit: measure as the endpoint's side would
        size = max(size, encoding.standard_size(data))
    if size > limit:
        raise InvalidEventError(too_big(size), describe({"type": kind, **message}))
    return data


#: Below this many bytes under the limit, no encoder's spelling of numbers can take a message over it.
_NEAR_LIMIT = 8_000
_LIBRARY_FIELD = b"," + encoding.dumps(_LIBRARY_ONLY)[1:]  # ,"library":{...}} (closes the context)
_CONTEXT_FIELD = b',"context":' + encoding.dumps(_LIBRARY_ONLY) + b"}"  # closes the message too


def _check(kind: str, message: dict[str, Any]) -> None:
    """Mapping fields are mappings (None means absent), ids are text, and the type's fields are there."""
    for field in MAPPING_FIELDS:
        value = message.get(field)
        if value is None:
            if field in message:
                del message[field]
        elif type(value) is not dict and not isinstance(value, Mapping):
            raise InvalidEventError(fields.wrong_kind(quoted(field), Kind.MAPPING, type(value).__name__))
    for field in ID_FIELDS:
        value = message.get(field)
        if value is not None and type(value) is not str:
            try:
                message[field] = fields.id_text(quoted(field), value)
            except TypeError as error:
                raise InvalidEventError(str(error)) from None
    if not (message.get("userId") or message.get("anonymousId")):
        raise InvalidEventError(NO_IDENTITY)
    for field in REQUIRED_FIELDS[kind]:
        value = message.get(field)
        if not isinstance(value, str) or not value:
            raise InvalidEventError(fields.missing(field, kind))


def _head(kind: str, message: dict[str, Any], record: logging.LogRecord) -> bytes:
    """``{"type":...,"messageId":...,"timestamp":...`` (taken out of ``message``)."""
    message_id = message.pop("messageId", None)
    if message_id is None:
        id_json = f'"{new_message_id()}"'
    else:
        if type(message_id) is not str:
            message_id = str(encoding.convert(message_id))
        if message_id == "":  # the endpoint would refuse the whole batch over it
            raise InvalidEventError(fields.empty(quoted("messageId")))
        id_json = encoding.quoted(message_id)
    timestamp = message.pop("timestamp", None)
    if timestamp is None:
        timestamp = format_timestamp(int(record.created), int(record.msecs))
    else:
        timestamp = user_timestamp(timestamp)
    return f'{{"type":"{kind}","messageId":{id_json},"timestamp":"{timestamp}"'.encode()


def _serialise(head: bytes, message: dict[str, Any]) -> bytes:
    """``head`` and the rest of ``message`` as one message, naming this library in its context unless the
    caller names one: one encoder call, with the context moved last so the library is spliced in before
    the context's closing brace."""
    context = message.pop("context", None)
    if not context:
        body = encoding.dumps(message)[1:-1]
        return b"".join((head, b"," if body else b"", body, _CONTEXT_FIELD))
    message["context"] = context  # now the last field: the text ends with the context's "}" and the message's
    if "library" in context:  # a library the caller names is kept
        return b"".join((head, b",", encoding.dumps(message)[1:]))
    return b"".join((head, b",", encoding.dumps(message)[1:-2], _LIBRARY_FIELD, b"}"))
