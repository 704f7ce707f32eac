"""HTTP transport: posts request bodies to the batch endpoint with retries. Knows HTTP, not logging.

:class:`Transport` ties the parts together and keeps the counters; this module holds the retry policy:

- which failures are retried: network errors, 408, 429 and 5xx (see ``answer``), at most ``max_retries`` times;
- how long to wait before each retry (a :class:`Backoff`, given to the transport): an answer's Retry-After
  (clamped to :data:`RETRY_AFTER_CAP`), else a full-jitter exponential backoff, and at most
  :data:`RETRY_WAIT_BUDGET` seconds in all for one batch;
- a deadline and ``close()`` cut the waits short (see :meth:`Transport.send`).

Safety against a misbehaving endpoint lives in the parts: redirects are never followed and answers are read
within bounds (``answer``), every request has a total deadline (``watchdog``), no error text carries the write
key or the endpoint's query string or fragment (``redact``), and bad settings fail at construction
(``endpoint``). The POST itself is ``exchange``.
"""

from __future__ import annotations

import email.utils
import gzip as gzip_module
import random
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Optional, Union

from dreamdata_logging.errors import DeliveryError
from dreamdata_logging.transport.answer import MAX_ANSWER_BYTES, delivery_error, refusal
from dreamdata_logging.transport.endpoint import (
    DEFAULT_ENDPOINT,
    InsecureEndpointWarning,
    check_write_key,
    is_insecure,
    split_endpoint,
)
from dreamdata_logging.transport.endpoint import WriteKeyAuth as _WriteKeyAuth
from dreamdata_logging.transport.exchange import USER_AGENT, Exchange
from dreamdata_logging.transport.redact import Redactor
from dreamdata_logging.wire.rules import Batch

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "Backoff",
    "DEFAULT_ENDPOINT",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_ANSWER_BYTES",
    "RETRY_AFTER_CAP",
    "RETRY_WAIT_BUDGET",
    "USER_AGENT",
    "InsecureEndpointWarning",
    "Transport",
    "_WriteKeyAuth",
    "retry_after_seconds",
]

#: Seconds one request may take (connecting, sending and reading the answer), unless told otherwise.
DEFAULT_TIMEOUT = 10.0
#: Retries of one batch after its first attempt, unless told otherwise.
DEFAULT_MAX_RETRIES = 8
#: Backoff before retry n is uniform in [0, min(BACKOFF_CAP, BACKOFF_BASE * 2**n)] ("full jitter").
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
#: A Retry-After longer than this is clamped to it.
RETRY_AFTER_CAP = 60.0
#: Most seconds one batch may spend waiting between its retries, in total.
RETRY_WAIT_BUDGET = 120.0

Deadline = Union[None, float, Callable[[], Optional[float]]]


@dataclass(frozen=True)
class Backoff:
    """The waits between one batch's attempts (the defaults are the library's; tests shorten them)."""

    base: float = BACKOFF_BASE  # retry n waits uniform in [0, min(cap, base * 2**n)] ("full jitter")
    cap: float = BACKOFF_CAP
    retry_after_cap: float = RETRY_AFTER_CAP  # a longer Retry-After is clamped to this
    wait_budget: float = RETRY_WAIT_BUDGET  # most seconds of waits for one batch, in total

    def delay(self, attempt: int) -> float:
        """A wait before retry ``attempt`` (0 for the first) when the answer said nothing."""
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


DEFAULT_BACKOFF = Backoff()


def retry_after_seconds(value: Optional[str], cap: float = RETRY_AFTER_CAP) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), clamped; None if absent or bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)


class _Retries:
    """The waits between one batch's attempts, made only once an attempt has failed."""

    __slots__ = ("_backoff", "_deadline", "_cancel", "attempt", "_waited", "_interrupted")

    def __init__(self, backoff: Backoff, deadline: Deadline, cancel: Optional[threading.Event]) -> None:
        self._backoff = backoff
        self._deadline = deadline
        self._cancel = cancel
        self.attempt = 0  # retries made so far
        self._waited = 0.0
        self._interrupted = False  # close() cut a wait short: what is left is one last attempt

    def wait(self, error: DeliveryError, retry_after: Optional[float], max_retries: int) -> None:
        """Wait before retrying after ``error``; raise a :class:`DeliveryError` instead if there is no retry."""
        if not error.retryable:
            raise error
        attempt, cancel = self.attempt, self._cancel
        if attempt >= max_retries:
            raise DeliveryError(f"{error} (gave up after {attempt} retries)", status=error.status, retryable=True)
        backoff = self._backoff
        delay = retry_after if retry_after is not None else backoff.delay(attempt)
        if self._waited + delay > backoff.wait_budget:
            raise DeliveryError(
                f"{error} (retry budget of {backoff.wait_budget:g}s used up)", status=error.status, retryable=True
            )
        limit = _read(self._deadline)
        if limit is not None and time.monotonic() + delay >= limit:
            if cancel is None or not cancel.is_set() or self._interrupted:
                raise DeliveryError(f"{error} (not retried: deadline reached)", status=error.status, retryable=True)
            self._interrupted = True  # closing: one last attempt now instead of a wait past the deadline
            delay = 0.0
        if cancel is None or self._interrupted:
            time.sleep(delay)  # after an interruption a deadline is set, and the delay fits before it
        elif cancel.wait(delay):  # close(): try once more now, within its deadline
            self._interrupted = True
            if _read(self._deadline) is None:
                raise DeliveryError(f"{error} (retry cancelled by close)", status=error.status, retryable=True)
        self._waited += delay
        self.attempt = attempt + 1


def _read(deadline: Deadline) -> Optional[float]:
    return deadline() if callable(deadline) else deadline


class Transport:
    """Sends :class:`~dreamdata_logging.wire.rules.Batch` es over keep-alive connections through ``requests``.

    Sends one POST at a time (a closed worker still finishing and its successor share one transport);
    the counters change under that same lock.
    ``endpoint`` is the display form of the URL (no userinfo, query or fragment); ``redactor`` scrubs the write
    key and the URL's secrets from any text.
    """

    def __init__(
        self,
        endpoint: str,
        write_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        gzip: bool = False,
        verify: Union[bool, str] = True,
        proxies: Optional[Mapping[str, str]] = None,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        check_write_key(write_key)
        url, self.endpoint = split_endpoint(endpoint)
        self.redactor = Redactor(write_key, endpoint)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.gzip = gzip
        self.verify = verify
        self.proxies = dict(proxies) if proxies else None
        self._auth = _WriteKeyAuth(write_key)
        self._exchange = Exchange(url, self.endpoint, self._auth, gzip=gzip, verify=verify, proxies=self.proxies)
        if is_insecure(url):
            warnings.warn(
                f"dreamdata-logging: endpoint {self.endpoint} is plain http on a non-loopback host; "
                "the write key would travel unencrypted. Use https.",
                InsecureEndpointWarning,
                stacklevel=4,  # the code that built the handler (its __init__ makes the Transport through a helper)
            )
        self.requests_sent = 0
        self.retries = 0
        self.bytes_sent = 0
        # One POST at a time: a worker still finishing after close() and the one that replaced it share this.
        self._posting = threading.Lock()

    def __repr__(self) -> str:
        return f"<Transport {self.endpoint}>"

    def send(self, batch: Batch, *, deadline: Deadline = None, cancel: Optional[threading.Event] = None) -> None:
        """Deliver ``batch``, retrying what is worth retrying; raise :class:`DeliveryError` if it cannot.

        ``deadline`` (a ``time.monotonic()`` value, or a callable returning one or None, read again before
        every request and wait) bounds every request and wait. Setting ``cancel`` (close) cuts the current
        backoff wait short, or replaces one that would end past the deadline, with one immediate last
        attempt; later waits stay within the deadline. With ``cancel`` set and no deadline, the send gives up.
        """
        body = batch.body()
        payload = gzip_module.compress(body, 6) if self.gzip else body
        retries: Optional[_Retries] = None
        while True:
            limit = _read(deadline)
            timeout = self.timeout
            if limit is not None:
                timeout = min(timeout, limit - time.monotonic())
                if timeout <= 0:
                    raise DeliveryError(
                        "not delivered before its deadline (closing, or the spool took over)", retryable=True
                    )
            error, retry_after = self._attempt(payload, timeout)
            if error is None:
                return
            if retries is None:
                retries = _Retries(self.backoff, deadline, cancel)
            retries.wait(error, retry_after, self.max_retries)
            with self._posting:
                self.retries += 1

    def _attempt(self, payload: bytes, timeout: float) -> tuple[Optional[DeliveryError], Optional[float]]:
        """One POST within ``timeout`` seconds in all: (None, None) on success, else the error and any Retry-After."""
        exchange = self._exchange
        with self._posting:  # the exchange's request and its answer are one POST's at a time
            try:
                status = exchange.post(payload, timeout)
            finally:
                self.requests_sent += 1
            if 200 <= status < 300:  # accepted, even if the rest of the answer was cut off at the deadline
                self.bytes_sent += len(payload)
                return None, None
            failure, answer, retry_after = exchange.failure, exchange.answer, exchange.retry_after
        if not status:
            return delivery_error(f"network error: {failure}", self.redactor, retryable=True), None
        wait = retry_after_seconds(retry_after, self.backoff.retry_after_cap)
        return refusal(status, answer, self.endpoint, self.redactor), wait

    def reset_after_fork(self) -> None:
        """Forget the parent's connections without closing them (closing would disturb the parent's)."""
        self._exchange.reset_after_fork()
        self._posting = threading.Lock()  # the parent's may have been held at the fork
        self.requests_sent = self.retries = self.bytes_sent = 0

    def close(self, wait: float = 0.0) -> None:
        """Close the connections and stop the deadline thread (with ``wait``: until it ended, at most that
        long); the next send opens them again (a reopen)."""
        with self._posting:  # never under a POST in progress (a closing worker's last one)
            self._exchange.close(wait)
