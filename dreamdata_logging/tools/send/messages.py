"""Completing and checking the messages of ``dreamdata-logging send``, as the handler would make them.

A message is completed (``type``, ``messageId``, ``timestamp``, int ids) then checked with the package's
wire rules (:func:`dreamdata_logging.wire.rules.wire_problem` and the 32,000-byte limit).
"""

from __future__ import annotations

from typing import Any, Optional

from dreamdata_logging.errors import InvalidEventError
from dreamdata_logging.events.encoding import encode_message
from dreamdata_logging.tools.send.files import Item
from dreamdata_logging.wire.fields import ID_FIELDS
from dreamdata_logging.wire.rules import (
    is_wire_timestamp,
    new_message_id,
    now_timestamp,
    user_timestamp,
    wire_problem,
)


def complete(message: Any) -> Any:
    """Fill in what the handler would: a missing ``type`` (track), ``messageId`` or ``timestamp`` (now),
    a timestamp in another ISO 8601 form, and int ids as text. Other problems are left for the check."""
    if not isinstance(message, dict):
        return message
    message = {"type": "track", **message}
    if message.get("messageId") in (None, ""):
        message["messageId"] = new_message_id()
    if message.get("timestamp") is None:
        message["timestamp"] = now_timestamp()
    elif not is_wire_timestamp(message["timestamp"]):
        message["timestamp"] = user_timestamp(message["timestamp"])
    for key in ID_FIELDS:
        value = message.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            message[key] = str(value)
    return message


def check(item: Item) -> tuple[Optional[bytes], Optional[str]]:
    """The message's compact bytes, or why it cannot be sent."""
    if item.problem is not None:
        return None, item.problem
    try:
        message = complete(item.value)
    except InvalidEventError as error:
        return None, error.reason
    problem = wire_problem(message)
    if problem is not None:
        return None, problem
    return encode_message(message)
