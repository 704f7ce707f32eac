"""An endpoint's answer: read within bounds, and put in words as the :class:`DeliveryError` it means.

At most :data:`MAX_ANSWER_BYTES` of any answer are read, raw (never inflated past that bound). A connection
whose answer was not read to its end is closed rather than reused. Redirects are never followed: a 3xx answer
is a failed delivery that names where it pointed. No error text carries the write key or the endpoint's
query string or fragment.
"""

from __future__ import annotations

import zlib
from typing import Optional
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests

from dreamdata_logging.errors import DeliveryError, PayloadTooLargeError
from dreamdata_logging.transport.redact import Redactor

#: Most bytes read of any answer's body (enough for an error excerpt); the rest is never read.
MAX_ANSWER_BYTES = 8192
#: Characters of an answer quoted in an error message.
EXCERPT_CHARS = 200

RETRYABLE_STATUSES = frozenset({408, 429})


def read_answer(response: requests.Response) -> bytes:
    """At most MAX_ANSWER_BYTES of the body, raw; closes the connection unless the answer was read whole."""
    raw = response.raw
    complete = False
    body = b""
    try:
        body = raw.read(MAX_ANSWER_BYTES + 1, decode_content=False) or b""
        complete = len(body) <= MAX_ANSWER_BYTES  # a short read is the end of the answer
    except Exception:
        pass  # cut off (deadline) or broken: what was read is lost, the status still counts
    if complete:
        raw.release_conn()  # usually done already, as the answer ended
    else:
        response.close()  # closes the connection: its unread rest must not reach the next request
        body = body[:MAX_ANSWER_BYTES]
    return body


def answer_text(response: requests.Response, body: bytes) -> str:
    """The start of an answer as text; a compressed one is inflated to at most MAX_ANSWER_BYTES."""
    coding = response.headers.get("Content-Encoding", "").strip().lower()
    if coding in ("gzip", "x-gzip", "deflate"):
        try:
            body = zlib.decompressobj(47).decompress(body, MAX_ANSWER_BYTES)  # 47: gzip or zlib header
        except zlib.error:
            try:
                body = zlib.decompressobj(-15).decompress(body, MAX_ANSWER_BYTES)  # raw deflate
            except zlib.error:
                return f"(a {coding} answer that could not be inflated)"
    elif coding not in ("", "identity"):
        return f"(an answer compressed with {excerpt(coding, 20)})"
    try:
        return body.decode(response.encoding or "utf-8", "replace")
    except LookupError:  # an unknown charset
        return body.decode("utf-8", "replace")


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters; other unprintable characters shown as ``?``."""
    text = " ".join(text.split())
    if not text.isprintable():
        text = "".join(char if char.isprintable() else "?" for char in text)
    return text if len(text) <= limit else text[:limit] + "..."


def scrubbed_location(location: str, base: str) -> str:
    """Where a redirect points, without userinfo, query or fragment (they may carry secrets)."""
    try:
        parts = urlsplit(urljoin(base, location.strip()))
        netloc = parts.netloc.rpartition("@")[2]
        return excerpt(urlunsplit((parts.scheme, netloc, parts.path, "", "")), 300)
    except ValueError:
        return "(an unreadable Location)"


def delivery_error(
    text: str, redactor: Redactor, *, status: Optional[int] = None, retryable: bool = False
) -> DeliveryError:
    """A :class:`DeliveryError` saying ``text``, scrubbed of secrets and cut to one line."""
    return DeliveryError(excerpt(redactor.scrub(text), 600), status=status, retryable=retryable)


def refusal(status: int, answer: str, endpoint: str, redactor: Redactor) -> DeliveryError:
    """The error an answer other than 2xx means: ``answer`` is a 3xx's Location, else the start of the body.

    Retryable: 408, 429 and 5xx. A redirect is not, nor is a rejected write key (401, 403) or 413
    (:class:`PayloadTooLargeError`).
    """
    if 300 <= status < 400:
        where = scrubbed_location(answer, endpoint) if answer else "(no Location)"
        return delivery_error(
            f"HTTP {status} from {endpoint}: a redirect to {where}; redirects are not followed "
            "(the batch would be re-sent elsewhere or lost). Configure the final URL of the batch endpoint "
            "as the endpoint",
            redactor,
            status=status,
        )
    detail = f"HTTP {status} from {endpoint}: {excerpt(redactor.scrub(answer))}"
    if status == 413:
        return PayloadTooLargeError(redactor.scrub(detail), status=status)
    if status in (401, 403):
        return DeliveryError(
            f"the write key was rejected (HTTP {status}); check write_key / DREAMDATA_WRITE_KEY", status=status
        )
    if status in RETRYABLE_STATUSES or status >= 500:
        return delivery_error(detail, redactor, status=status, retryable=True)
    return delivery_error(detail, redactor, status=status)
