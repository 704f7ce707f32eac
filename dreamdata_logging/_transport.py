"""HTTP transport: posts request bodies to the batch endpoint with retries. Knows HTTP, not logging."""

from __future__ import annotations

import base64
import email.utils
import gzip as gzip_module
import ipaddress
import os
import platform
import random
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Callable, Optional, Union
from urllib.parse import urlsplit, urlunsplit

import requests

from ._version import __version__
from ._wire import Batch
from .errors import DeliveryError, PayloadTooLargeError

DEFAULT_ENDPOINT = "https://api.dreamdata.cloud/v1/batch"
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

RETRYABLE_STATUSES = frozenset({408, 429})


class InsecureEndpointWarning(UserWarning):
    """The endpoint is plain http on a non-loopback host: the write key would travel in clear."""


class _WriteKeyAuth(requests.auth.AuthBase):
    """HTTP Basic auth with the write key as username and an empty password; never shows the key."""

    def __init__(self, write_key: str) -> None:
        self._header = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode("ascii")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "<write key hidden>"


def normalise_endpoint(endpoint: str) -> str:
    """Accept a base URL too: ``http://127.0.0.1:8765`` means ``http://127.0.0.1:8765/v1/batch``."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1/batch")
    return urlunsplit(parts)


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


class Transport:
    """Sends :class:`~dreamdata_logging._message.Batch` es over one keep-alive ``requests.Session``.

    Used from one thread at a time (the handler's worker). Counters are plain ints for that reason.
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
        self.endpoint = normalise_endpoint(endpoint)
        host = urlsplit(self.endpoint).hostname or ""
        if self.endpoint.startswith("http://") and not is_loopback(host):
            warnings.warn(
                f"dreamdata-logging: endpoint {self.endpoint} is plain http on a non-loopback host; "
                "the write key would travel unencrypted. Use https.",
                InsecureEndpointWarning,
                stacklevel=3,  # the code that built the handler (Transport is made in its __init__)
            )
        self.timeout = timeout
        self.max_retries = max_retries
        self.gzip = gzip
        self.verify = verify
        self.proxies = dict(proxies) if proxies else None
        self._auth = _WriteKeyAuth(write_key)
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._session: Optional[requests.Session] = None
        self._verify: Union[bool, str] = verify
        self.requests_sent = 0
        self.retries = 0
        self.bytes_sent = 0

    def __repr__(self) -> str:
        return f"<Transport {self.endpoint}>"

    def _get_session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers.update(self._headers)
            # Read the proxy and CA-bundle environment once, as requests would, instead of on every
            # request (requests re-scans the whole environment per request when trust_env is on).
            session.trust_env = False
            no_proxy = (self.proxies or {}).get("no_proxy")
            session.proxies.update(requests.utils.get_environ_proxies(self.endpoint, no_proxy=no_proxy))
            if self.proxies:
                session.proxies.update(self.proxies)
            self._verify = self.verify
            if self.verify is True:
                self._verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            self._session = session
        return self._session

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
            error, retry_after = self._attempt(batch, timeout)
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

    def _attempt(self, batch: Batch, timeout: float) -> tuple[Optional[DeliveryError], Optional[float]]:
        """One POST: (None, None) on success, else the error and any Retry-After."""
        body = batch.body()
        payload = gzip_module.compress(body, 6) if self.gzip else body
        try:
            response = self._get_session().post(
                self.endpoint, data=payload, auth=self._auth, timeout=timeout, verify=self._verify
            )
        except requests.RequestException as exc:
            return DeliveryError(f"network error: {type(exc).__name__}: {_excerpt(str(exc))}", retryable=True), None
        finally:
            self.requests_sent += 1
        status = response.status_code
        if 200 <= status < 300:
            self.bytes_sent += len(payload)
            return None, None
        detail = f"HTTP {status} from {self.endpoint}: {_excerpt(response.text)}"
        if status == 413:
            return PayloadTooLargeError(detail, status=status), None
        if status in (401, 403):
            return DeliveryError(
                f"the write key was rejected (HTTP {status}); check write_key / DREAMDATA_WRITE_KEY", status=status
            ), None
        if status in RETRYABLE_STATUSES or status >= 500:
            return DeliveryError(detail, status=status, retryable=True), retry_after_seconds(
                response.headers.get("Retry-After")
            )
        return DeliveryError(detail, status=status), None

    def reset_after_fork(self) -> None:
        """Forget the parent's connections without closing them (closing would disturb the parent's)."""
        self._session = None
        self.requests_sent = self.retries = self.bytes_sent = 0

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
