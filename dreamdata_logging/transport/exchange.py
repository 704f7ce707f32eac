"""One POST of a request body to the batch endpoint, and nothing more: no retries, no counters, no error words.

The request is prepared once (each post only sets its body and Content-Length) and goes through requests'
adapter, so proxies, TLS and CA bundles work as they do in requests. Every post has a total deadline (see
``_watchdog``) and reads at most a bounded start of the answer (see ``_answer``).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from typing import Optional, Union

import requests
import requests.utils

from dreamdata_logging._version import __version__
from dreamdata_logging.transport.answer import answer_text, read_answer
from dreamdata_logging.transport.endpoint import WriteKeyAuth
from dreamdata_logging.transport.watchdog import Watchdog, WatchedAdapter

USER_AGENT = (
    f"dreamdata-logging/{__version__} python/{platform.python_version_tuple()[0]}.{platform.python_version_tuple()[1]}"
)


def prepare_request(url: str, endpoint: str, auth: WriteKeyAuth, gzip: bool) -> requests.PreparedRequest:
    """The POST to ``url`` (shown as ``endpoint``) with every header but Content-Length; ValueError if unusable."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        "Accept-Encoding": "identity",  # answers are only ever glanced at: ask for them uncompressed
    }
    if gzip:
        headers["Content-Encoding"] = "gzip"
    request = requests.PreparedRequest()
    request.prepare_method("POST")
    try:
        request.prepare_url(url, None)
    except requests.RequestException as exc:
        raise ValueError(f"endpoint {endpoint} is not a usable URL: {type(exc).__name__}") from None
    request.prepare_headers(headers)
    auth(request)
    return request


def environment(
    url: str, proxies: Optional[Mapping[str, str]], verify: Union[bool, str]
) -> tuple[dict[str, str], Union[bool, str]]:
    """Proxies and CA bundle from the environment and options, read once as requests would read them."""
    found: dict[str, str] = {}
    no_proxy = (proxies or {}).get("no_proxy")
    found.update(requests.utils.get_environ_proxies(url, no_proxy=no_proxy))
    if proxies:
        found.update(proxies)
    if not url.startswith("https:") and not any(proxy.startswith("https:") for proxy in found.values()):
        verify = True  # no TLS anywhere: a CA bundle path would only cost requests a stat() per request
    elif verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return found, verify


class Exchange:
    """Posts bodies over keep-alive connections, one at a time, each within its total deadline.

    After :meth:`post`, ``answer`` is a 3xx's Location or the start of a 4xx/5xx body as text, ``retry_after``
    a 4xx/5xx's Retry-After header, and ``failure`` why there was no answer at all (when post returned 0).
    """

    def __init__(
        self,
        url: str,
        endpoint: str,
        auth: WriteKeyAuth,
        *,
        gzip: bool,
        verify: Union[bool, str],
        proxies: Optional[Mapping[str, str]],
    ) -> None:
        self._request = prepare_request(url, endpoint, auth, gzip)
        self._proxies, self._verify = environment(url, proxies, verify)
        self._adapter: Optional[WatchedAdapter] = None
        self._watchdog = Watchdog()
        self.answer = ""
        self.retry_after: Optional[str] = None
        self.failure: Optional[str] = None

    def post(self, payload: bytes, timeout: float) -> int:
        """POST ``payload`` within ``timeout`` seconds in all; the answer's status, or 0 if there was none."""
        adapter = self._adapter
        if adapter is None:
            adapter = self._adapter = WatchedAdapter(pool_connections=2, pool_maxsize=2)
        request = self._request
        request.body = payload
        request.headers["Content-Length"] = str(len(payload))
        watchdog = self._watchdog
        status = 0
        self.answer, self.retry_after, self.failure = "", None, None
        watchdog.arm(time.monotonic() + timeout)
        try:
            response = adapter.send(
                request, stream=True, timeout=(timeout, timeout), verify=self._verify, proxies=self._proxies
            )
            status = response.status_code
            if 300 <= status < 400:
                self.answer = response.headers.get("Location") or ""
            elif status >= 400:
                self.retry_after = response.headers.get("Retry-After")
            body = read_answer(response)
            if status >= 400 and body:
                self.answer = answer_text(response, body)
        except Exception as exc:  # anything requests or urllib3 raise: a failed post, never a crash
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            cut_off = watchdog.disarm()
            request.body = None  # the body (up to 500 kB) is not kept until the next request
        if cut_off and not status:
            self.failure = f"no complete answer within {timeout:.3g}s (the request's total deadline)"
        return status

    def reset_after_fork(self) -> None:
        """Forget the parent's connections without closing them (closing would disturb the parent's)."""
        self._adapter = None
        self._watchdog = Watchdog()  # the parent's thread does not exist here, and its lock may be held

    def close(self, wait: float = 0.0) -> None:
        self._watchdog.close(wait)
        if self._adapter is not None:
            self._adapter.close()
            self._adapter = None
