"""HTTP transport: posts request bodies to the batch endpoint with retries. Knows HTTP, not logging.

Safety against a misbehaving endpoint:

- Redirects are never followed: a 3xx answer is a failed delivery that names where it pointed.
- Every request has a total deadline (connect, send and the whole answer, headers included): one watchdog
  thread per transport shuts down the socket of a request still running at its deadline.
- At most :data:`MAX_ANSWER_BYTES` of any answer are read, raw (never inflated past that bound). A connection
  whose answer was not read to its end is closed rather than reused.
- No error text carries the write key or the endpoint's query string or fragment (see ``_redact``).
"""

from __future__ import annotations

import email.utils
import gzip as gzip_module
import os
import platform
import random
import threading
import time
import warnings
import zlib
from collections.abc import Mapping
from typing import Callable, Optional, Union
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import requests.adapters
import requests.utils

from ._endpoint import DEFAULT_ENDPOINT as DEFAULT_ENDPOINT
from ._endpoint import InsecureEndpointWarning as InsecureEndpointWarning
from ._endpoint import WriteKeyAuth as _WriteKeyAuth
from ._endpoint import check_write_key, is_loopback
from ._endpoint import split_endpoint as _split_endpoint
from ._redact import Redactor
from ._version import __version__
from ._watchdog import Watchdog, WatchedAdapter
from ._wire import Batch
from .errors import DeliveryError, PayloadTooLargeError

USER_AGENT = (
    f"dreamdata-logging/{__version__} python/{platform.python_version_tuple()[0]}.{platform.python_version_tuple()[1]}"
)

#: Backoff before retry n is uniform in [0, min(BACKOFF_CAP, BACKOFF_BASE * 2**n)] ("full jitter").
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
#: A Retry-After longer than this is clamped to it.
RETRY_AFTER_CAP = 60.0
#: Most seconds one batch may spend waiting between its retries, in total.
RETRY_WAIT_BUDGET = 120.0
#: Most bytes read of any answer's body (enough for an error excerpt); the rest is never read.
MAX_ANSWER_BYTES = 8192
#: Characters of an answer quoted in an error message.
EXCERPT_CHARS = 200

RETRYABLE_STATUSES = frozenset({408, 429})


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
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
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters; other unprintable characters shown as ``?``."""
    text = " ".join(text.split())
    if not text.isprintable():
        text = "".join(char if char.isprintable() else "?" for char in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _scrubbed_location(location: str, base: str) -> str:
    """Where a redirect points, without userinfo, query or fragment (they may carry secrets)."""
    try:
        parts = urlsplit(urljoin(base, location.strip()))
        netloc = parts.netloc.rpartition("@")[2]
        return _excerpt(urlunsplit((parts.scheme, netloc, parts.path, "", "")), 300)
    except ValueError:
        return "(an unreadable Location)"


def _answer_text(response: requests.Response, body: bytes) -> str:
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
        return f"(an answer compressed with {_excerpt(coding, 20)})"
    try:
        return body.decode(response.encoding or "utf-8", "replace")
    except LookupError:  # an unknown charset
        return body.decode("utf-8", "replace")


# -- the transport -------------------------------------------------------------------------------------------


class Transport:
    """Sends :class:`~dreamdata_logging._wire.Batch` es over keep-alive connections through ``requests``.

    Used from one thread at a time (the handler's worker). Counters are plain ints for that reason.
    ``endpoint`` is the display form of the URL (no userinfo, query or fragment); ``redactor`` scrubs the write
    key and the URL's secrets from any text.
    """

    def __init__(
        self,
        endpoint: str,
        write_key: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 8,
        gzip: bool = False,
        verify: Union[bool, str] = True,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> None:
        check_write_key(write_key)
        self._url, self.endpoint = _split_endpoint(endpoint)
        self.redactor = Redactor(write_key, endpoint)
        self.timeout = timeout
        self.max_retries = max_retries
        self.gzip = gzip
        self.verify = verify
        self.proxies = dict(proxies) if proxies else None
        self._auth = _WriteKeyAuth(write_key)
        self._request = self._prepare()
        self._proxies, self._verify = self._environment()
        host = urlsplit(self._url).hostname or ""
        if self._url.startswith("http://") and not is_loopback(host):
            warnings.warn(
                f"dreamdata-logging: endpoint {self.endpoint} is plain http on a non-loopback host; "
                "the write key would travel unencrypted. Use https.",
                InsecureEndpointWarning,
                stacklevel=3,  # the code that built the handler (Transport is made in its __init__)
            )
        self._adapter: Optional[WatchedAdapter] = None
        self._watchdog = Watchdog()
        self.requests_sent = 0
        self.retries = 0
        self.bytes_sent = 0

    def __repr__(self) -> str:
        return f"<Transport {self.endpoint}>"

    def _prepare(self) -> requests.PreparedRequest:
        """The request, prepared once; each attempt only sets its body and Content-Length."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Accept": "*/*",
            "Accept-Encoding": "identity",  # answers are only ever glanced at: ask for them uncompressed
        }
        if self.gzip:
            headers["Content-Encoding"] = "gzip"
        request = requests.PreparedRequest()
        request.prepare_method("POST")
        try:
            request.prepare_url(self._url, None)
        except requests.RequestException as exc:
            raise ValueError(f"endpoint {self.endpoint} is not a usable URL: {type(exc).__name__}") from None
        request.prepare_headers(headers)
        self._auth(request)
        return request

    def _environment(self) -> tuple[dict[str, str], Union[bool, str]]:
        """Proxies and CA bundle from the environment and options, read once as requests would read them."""
        proxies: dict[str, str] = {}
        no_proxy = (self.proxies or {}).get("no_proxy")
        proxies.update(requests.utils.get_environ_proxies(self._url, no_proxy=no_proxy))
        if self.proxies:
            proxies.update(self.proxies)
        verify: Union[bool, str] = self.verify
        if verify is True:
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        return proxies, verify

    def send(
        self,
        batch: Batch,
        *,
        deadline: Union[None, float, Callable[[], Optional[float]]] = None,
        cancel: Optional[threading.Event] = None,
    ) -> None:
        """Deliver ``batch``, retrying what is worth retrying; raise :class:`DeliveryError` if it cannot.

        ``deadline`` (a ``time.monotonic()`` value, or a callable returning one or None, read again before
        every request and wait) bounds every request and wait. Setting ``cancel`` (close) cuts the current
        backoff wait short, or replaces one that would end past the deadline, with one immediate last
        attempt; later waits stay within the deadline. With ``cancel`` set and no deadline, the send gives up.
        """
        body = batch.body()
        payload = gzip_module.compress(body, 6) if self.gzip else body
        waited = 0.0
        attempt = 0
        interrupted = False
        while True:
            limit = deadline() if callable(deadline) else deadline
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
            if not error.retryable:
                raise error
            if attempt >= self.max_retries:
                raise DeliveryError(f"{error} (gave up after {attempt} retries)", status=error.status, retryable=True)
            delay = (
                retry_after
                if retry_after is not None
                else random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
            )
            if waited + delay > RETRY_WAIT_BUDGET:
                raise DeliveryError(
                    f"{error} (retry budget of {RETRY_WAIT_BUDGET:.0f}s used up)", status=error.status, retryable=True
                )
            limit = deadline() if callable(deadline) else deadline
            if limit is not None and time.monotonic() + delay >= limit:
                if cancel is None or not cancel.is_set() or interrupted:
                    raise DeliveryError(
                        f"{error} (not retried: deadline reached)", status=error.status, retryable=True
                    )
                interrupted = True  # closing: one last attempt now instead of a wait past the deadline
                delay = 0.0
            if cancel is None or interrupted:
                time.sleep(delay)  # after an interruption a deadline is set, and the delay fits before it
            elif cancel.wait(delay):  # close(): try once more now, within its deadline
                interrupted = True
                if (deadline() if callable(deadline) else deadline) is None:
                    raise DeliveryError(f"{error} (retry cancelled by close)", status=error.status, retryable=True)
            waited += delay
            attempt += 1
            self.retries += 1

    def _attempt(self, payload: bytes, timeout: float) -> tuple[Optional[DeliveryError], Optional[float]]:
        """One POST within ``timeout`` seconds in all: (None, None) on success, else the error and any Retry-After."""
        adapter = self._adapter
        if adapter is None:
            adapter = self._adapter = WatchedAdapter(pool_connections=2, pool_maxsize=2)
        request = self._request
        request.body = payload
        request.headers["Content-Length"] = str(len(payload))
        watchdog = self._watchdog
        failure: Optional[str] = None
        status = 0
        retry_after: Optional[str] = None
        answer = ""
        started = time.monotonic()
        watchdog.arm(started + timeout)
        try:
            response = adapter.send(
                request, stream=True, timeout=(timeout, timeout), verify=self._verify, proxies=self._proxies
            )
            status = response.status_code
            if 300 <= status < 400:
                answer = response.headers.get("Location") or ""
            elif status >= 400:
                retry_after = response.headers.get("Retry-After")
            body, complete = self._read_answer(response)
            if status >= 400 and body:
                answer = _answer_text(response, body)
        except Exception as exc:  # anything requests or urllib3 raise: a failed attempt, never a crash
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            cut_off = watchdog.disarm()
            self.requests_sent += 1
        if failure is not None and not status:
            if cut_off:
                failure = f"no complete answer within {timeout:.3g}s (the request's total deadline)"
            return self._error(f"network error: {failure}", retryable=True), None
        if 200 <= status < 300:  # accepted, even if the rest of the answer was cut off at the deadline
            self.bytes_sent += len(payload)
            return None, None
        return self._refusal(status, answer), retry_after_seconds(retry_after)

    def _read_answer(self, response: requests.Response) -> tuple[bytes, bool]:
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
        return body, complete

    def _refusal(self, status: int, answer: str) -> DeliveryError:
        if 300 <= status < 400:
            where = _scrubbed_location(answer, self.endpoint) if answer else "(no Location)"
            return self._error(
                f"HTTP {status} from {self.endpoint}: a redirect to {where}; redirects are not followed "
                "(the batch would be re-sent elsewhere or lost). Configure the final URL of the batch endpoint "
                "as the endpoint",
                status=status,
            )
        detail = f"HTTP {status} from {self.endpoint}: {_excerpt(self.redactor.scrub(answer))}"
        if status == 413:
            return PayloadTooLargeError(self.redactor.scrub(detail), status=status)
        if status in (401, 403):
            return DeliveryError(
                f"the write key was rejected (HTTP {status}); check write_key / DREAMDATA_WRITE_KEY", status=status
            )
        if status in RETRYABLE_STATUSES or status >= 500:
            return self._error(detail, status=status, retryable=True)
        return self._error(detail, status=status)

    def _error(self, text: str, *, status: Optional[int] = None, retryable: bool = False) -> DeliveryError:
        return DeliveryError(_excerpt(self.redactor.scrub(text), 600), status=status, retryable=retryable)

    def reset_after_fork(self) -> None:
        """Forget the parent's connections without closing them (closing would disturb the parent's)."""
        self._adapter = None
        self._watchdog = Watchdog()  # the parent's thread does not exist here, and its lock may be held
        self.requests_sent = self.retries = self.bytes_sent = 0

    def close(self) -> None:
        self._watchdog.close()
        if self._adapter is not None:
            self._adapter.close()
            self._adapter = None
