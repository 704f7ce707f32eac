"""Where batches go and with which credentials: checks of the write key and the endpoint URL, and the auth.

Every check fails at construction with a ValueError that never quotes the write key, nor the endpoint's
userinfo, query or fragment.
"""

from __future__ import annotations

import base64
import ipaddress
from urllib.parse import urlsplit, urlunsplit

import requests

DEFAULT_ENDPOINT = "https://api.dreamdata.cloud/v1/batch"


class InsecureEndpointWarning(UserWarning):
    """The endpoint is plain http on a non-loopback host: the write key would travel in clear."""


class WriteKeyAuth(requests.auth.AuthBase):
    """HTTP Basic auth with the write key as username and an empty password; never shows the key."""

    def __init__(self, write_key: str) -> None:
        self._header = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode("ascii")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "<write key hidden>"


def check_write_key(write_key: object) -> str:
    """Return ``write_key`` if it can be sent as HTTP Basic credentials; else ValueError (never quoting it)."""
    if not isinstance(write_key, str) or not write_key:
        raise ValueError("write_key must be a non-empty string")
    for position, char in enumerate(write_key, 1):
        code = ord(char)
        if char == ":":
            raise ValueError(
                f"write_key must not contain ':' (character {position}): "
                "HTTP Basic auth would cut the key there; check that the whole key, and only the key, was given"
            )
        if code < 0x20 or code == 0x7F:
            raise ValueError(
                f"write_key must not contain control characters (character {position}; "
                "a stray newline from a file or an environment variable?)"
            )
        if code > 0x7E:
            raise ValueError(f"write_key must be ASCII (character {position} is not)")
    return write_key


def split_endpoint(endpoint: object) -> tuple[str, str]:
    """(URL to send to, display form scheme://host[:port]/path) of an endpoint; ValueError if it cannot work."""
    if not isinstance(endpoint, str) or not endpoint:
        raise ValueError("endpoint must be a non-empty http(s) URL such as " + DEFAULT_ENDPOINT)
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in endpoint):
        raise ValueError("endpoint must not contain spaces or control characters")
    parts = urlsplit(endpoint)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f" (scheme {scheme!r})" if scheme else ""
        raise ValueError(f"endpoint must be an http:// or https:// URL such as {DEFAULT_ENDPOINT}{shown}")
    if "@" in parts.netloc:
        raise ValueError(
            "endpoint must not carry credentials (user:password@): put credentials in write_key, not in the URL"
        )
    if not parts.hostname:
        raise ValueError(f"endpoint has no host: {scheme}://{parts.netloc}{parts.path}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"endpoint has a bad port (must be a number from 1 to 65535): {scheme}://{parts.netloc}")
    path = "/v1/batch" if parts.path in ("", "/") else parts.path
    url = urlunsplit((scheme, parts.netloc, path, parts.query, ""))  # a fragment is never sent anyway
    return url, f"{scheme}://{parts.netloc}{path}"


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_insecure(url: str) -> bool:
    """True if ``url`` (as :func:`split_endpoint` gives it) is plain http on a non-loopback host."""
    return url.startswith("http://") and not is_loopback(urlsplit(url).hostname or "")
