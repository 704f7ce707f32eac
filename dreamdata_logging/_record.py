"""Where a log record carries event data, and which of its attributes are the caller's ``extra`` keys."""

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

#: What :func:`elsewhere` finds: the partial message, a track's default name (None: the record's
#: formatted message), and the fields ``include_extra`` would add.
Found = tuple[Mapping[str, Any], Optional[str], dict[str, Any]]


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra`` keys besides ``dreamdata``: every attribute logging itself does not set."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in RESERVED_RECORD_ATTRS and not key.startswith("_")
    }


def elsewhere(record: logging.LogRecord) -> Optional[Found]:
    """Event data of a record without a ``dreamdata`` attribute, where other logging libraries put it."""
    return None
