"""The collector's checks of one request: its ``Authorization``, its gzip body, the batch envelope and each message.

The rules themselves (what a message needs, the size limits, the timestamp forms) are the package's wire
rules; this module applies them to a request and words the answer.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import zlib
from typing import Any, Dict, List, Mapping, Optional, Tuple

from dreamdata_logging.events.encoding import encode_message
from dreamdata_logging.wire.rules import (
    MAX_BODY_BYTES,
    STRICT_JSON,
    api_problem,
    is_rfc3339_timestamp,
    is_wire_timestamp,
    with_batch_context,
)
from dreamdata_logging.wire.rules import _filled as filled
from dreamdata_logging.wire.rules import _show as show
from dreamdata_logging.wire.rules import wire_problem as strict_problem

# One message as judged: (the message as received, its compact JSON when it could be made, why it is refused)
Judged = Tuple[Any, Optional[bytes], Optional[str]]


class Reject(Exception):
    """The answer to a request that fails a check."""

    def __init__(self, status: int, reason: str, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class Refused(Exception):
    """A batch whose body and envelope are fine but some message is not: each message keeps its verdict."""

    def __init__(self, reject: Reject, judged: List[Judged]) -> None:
        super().__init__(reject.reason)
        self.reject = reject
        self.judged = judged


def auth_problem(header: Optional[str], write_key: Optional[str]) -> Optional[str]:
    """Why ``Authorization`` is refused, or None. Never quotes the key or the header."""
    if not header:
        return "missing Authorization header (HTTP Basic with the write key as username)"
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return "Authorization must use the Basic scheme"
    try:
        credentials = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "Authorization Basic credentials are not valid base64 of 'KEY:'"
    user, colon, _ = credentials.partition(":")
    if not colon:
        return "Authorization Basic credentials must be 'KEY:' (a colon, then an empty password)"
    if not user:
        return "empty write key in Authorization"
    if write_key is not None and not hmac.compare_digest(user.encode(), write_key.encode()):
        return "invalid write key"
    return None


def gunzip(raw: bytes) -> bytes:
    """Decompress every gzip member, giving up just past the body limit (a bomb stays small)."""
    parts: List[bytes] = []
    size = 0
    while raw:
        member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            part = member.decompress(raw, MAX_BODY_BYTES + 1 - size)
        except zlib.error as exc:
            raise Reject(400, f"body is not valid gzip: {exc}") from None
        size += len(part)
        parts.append(part)
        if size > MAX_BODY_BYTES:
            raise Reject(413, f"decoded body is over {MAX_BODY_BYTES:,} bytes")
        if not member.eof:
            raise Reject(400, "gzip body is truncated")
        raw = member.unused_data
    return b"".join(parts)


def parse_batch(body: bytes, strict: bool) -> Tuple[List[Any], Optional[Dict[str, Any]]]:
    """The envelope's ``batch`` list and batch-level ``context``, after checking the body and the envelope."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Reject(400, f"body is not valid UTF-8 (at byte {exc.start})") from None
    try:
        document = STRICT_JSON.decode(text)
    except (ValueError, RecursionError) as exc:
        raise Reject(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Reject(400, "body must be a JSON object")
    batch = document.get("batch")
    if not isinstance(batch, list):
        raise Reject(400, f"'batch' must be a list, not {show(batch)}")
    context = document.get("context")
    if context is not None and not isinstance(context, dict):
        raise Reject(400, f"the batch's 'context' must be an object, not {show(context)}")
    _check_envelope(document, strict)
    return batch, context


def _check_envelope(document: Dict[str, Any], strict: bool) -> None:
    """The envelope's own ``messageId`` and ``sentAt``: required in this package's format, optional otherwise."""
    if strict:
        if not filled(document.get("messageId")):
            raise Reject(400, "the batch needs a non-empty string 'messageId' (strict)")
        if not is_wire_timestamp(document.get("sentAt")):
            raise Reject(
                400,
                "'sentAt' must be RFC 3339 UTC with milliseconds, like 2015-12-02T00:30:08.276Z,"
                f" not {show(document.get('sentAt'))} (strict)",
            )
    else:
        if "messageId" in document and not filled(document["messageId"]):
            shown = show(document["messageId"])
            raise Reject(400, f"the batch's 'messageId' must be a non-empty string, not {shown}")
        if "sentAt" in document and not is_rfc3339_timestamp(document["sentAt"]):
            raise Reject(400, f"'sentAt' must be an RFC 3339 date-time, not {show(document['sentAt'])}")


def merge_context(batch: List[Any], context: Optional[Dict[str, Any]]) -> List[Any]:
    """Each message with the batch-level ``context`` merged into its own (the message's keys win)."""
    if not context:
        return batch
    return [with_batch_context(message, context) for message in batch]


def judge_messages(batch: List[Any], strict: bool) -> List[Judged]:
    """Each message with its compact JSON (the out line; its size is checked) or why it is refused."""
    rule = strict_problem if strict else api_problem
    judged: List[Judged] = []
    for message in batch:
        problem = rule(message)
        line: Optional[bytes] = None
        if problem is None:
            line, problem = encode_message(message)
        judged.append((message, line, problem))
    return judged


def first_problem(judged: List[Judged]) -> Optional[Tuple[int, str]]:
    for index, (_, _, problem) in enumerate(judged):
        if problem is not None:
            return index, problem
    return None


def peek(raw: Optional[bytes], gzipped: bool) -> Tuple[int, int]:
    """Decoded size and message count of a body that a fault answers instead of judging; best effort."""
    if raw is None:
        return 0, 0
    try:
        body = gunzip(raw) if gzipped else raw
    except Reject:
        return 0, 0
    try:
        batch = json.loads(body).get("batch")
    except (ValueError, AttributeError, RecursionError):
        batch = None
    return len(body), len(batch) if isinstance(batch, list) else 0
