"""Where a log record carries event data, and which of its attributes are the caller's ``extra`` keys.

Besides ``extra={"dreamdata": {...}}`` on a standard record, two other logging libraries are understood:

- structlog with ``ProcessorFormatter.wrap_for_formatter`` as its last processor: ``record.msg`` is the
  event dict; its ``dreamdata`` key is the event and its ``event`` key a track's default name.
- loguru with ``logger.add(DreamdataHandler())``: ``record.extra`` is loguru's bound and keyword data;
  its ``dreamdata`` key is the event and the logged message a track's default name.

structlog with ``render_to_log_kwargs`` needs nothing here: its event dict arrives as ordinary ``extra``
keys, and :func:`extra_fields` leaves out the bookkeeping its processors add.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Optional

from pythonjsonlogger.core import RESERVED_ATTRS as _JSON_LOGGER_RESERVED

#: Record attributes that are never ``extra`` keys: python-json-logger's reserved set, what this
#: Python's LogRecord sets itself, and what formatting adds later (``message``, ``asctime``).
RESERVED_RECORD_ATTRS = frozenset(
    {*_JSON_LOGGER_RESERVED, *vars(logging.makeLogRecord({})), "message", "asctime", "taskName", "dreamdata"}
)

#: Keys structlog's own processors put in an event dict: never event properties.
STRUCTLOG_KEYS = frozenset(
    {
        "event",
        "dreamdata",
        "level",
        "level_number",
        "timestamp",
        "logger",
        "logger_name",
        "exc_info",
        "stack_info",
        "exception",
        "positional_args",
    }
)

#: What structlog's ``add_log_level`` writes for each standard level (the log method's name).
_STRUCTLOG_LEVEL_NAMES = {
    "DEBUG": ("debug",),
    "INFO": ("info",),
    "WARNING": ("warning", "warn"),
    "ERROR": ("error", "exception"),
    "CRITICAL": ("critical", "fatal"),
}

#: What :func:`found_in_structlog_or_loguru` finds: the partial message, a track's default name (None: the record's
#: formatted message), and the fields ``include_extra`` would add.
Found = tuple[Mapping[str, Any], Optional[str], dict[str, Any]]


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra`` keys besides ``dreamdata``: every attribute logging itself does not set.

    A record logged by structlog through ``render_to_log_kwargs`` (recognised by the ``level`` that
    ``add_log_level`` or the ``logger`` that ``add_logger_name`` put beside the record's own) also
    leaves out structlog's bookkeeping: ``level``, ``timestamp``, ``logger`` and the like.
    """
    attributes = record.__dict__
    fields = {
        key: value for key, value in attributes.items() if key not in RESERVED_RECORD_ATTRS and not key.startswith("_")
    }
    if ("level" in fields or "logger" in fields) and _from_structlog_kwargs(record, fields):
        for key in STRUCTLOG_KEYS:
            fields.pop(key, None)
    return fields


def _from_structlog_kwargs(record: logging.LogRecord, fields: Mapping[str, Any]) -> bool:
    level = fields.get("level")
    if isinstance(level, str) and level in _STRUCTLOG_LEVEL_NAMES.get(record.levelname, ()):
        return True
    return fields.get("logger") == record.name


def found_in_structlog_or_loguru(record: logging.LogRecord) -> Optional[Found]:
    """Event data of a record without a ``dreamdata`` attribute, where other logging libraries put it.

    Runs for every plain record that reaches the handler, so a record of neither kind costs two checks.
    """
    msg = record.msg
    if type(msg) is dict:  # structlog's ProcessorFormatter.wrap_for_formatter: the event dict itself
        event = msg.get("dreamdata")
        if event is None:
            return None
        name = msg.get("event")
        return event, name if isinstance(name, str) else None, _structlog_fields(msg)
    extra = record.__dict__.get("extra")
    if type(extra) is dict:  # loguru's StandardSink: its bound and keyword data
        event = extra.get("dreamdata")
        if event is None:
            return None
        return event, _loguru_message(record), _plain_fields(extra)
    return None


def _structlog_fields(event_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in event_dict.items()
        if key not in STRUCTLOG_KEYS and not (isinstance(key, str) and key.startswith("_"))
    }


def _plain_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in data.items()
        if key != "dreamdata" and not (isinstance(key, str) and key.startswith("_"))
    }


def _loguru_message(record: logging.LogRecord) -> Optional[str]:
    """The logged message without loguru's format around it.

    loguru hands the standard handler its formatted line. With its default format the message follows
    ``name:function:line - ``; with ``format="{message}"`` the line is the message. Another format
    gives its whole line (pass ``event=`` in the event to name a track then).
    """
    text = record.msg
    if not isinstance(text, str):
        return None
    marker = f"{record.name}:{record.funcName}:{record.lineno} - "
    at = text.find(marker)
    if at >= 0:
        text = text[at + len(marker) :]
        if record.exc_info and "\n" in text:  # loguru appends the formatted traceback
            text = text.split("\n", 1)[0]
    return text
