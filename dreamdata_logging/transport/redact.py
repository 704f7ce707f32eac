"""Keeps secrets out of every text the library produces: the write key and the private parts of the endpoint URL.

A :class:`Redactor` knows the write key and the endpoint URL it was made with, and replaces in any text:

- the write key as written, in base64 (of ``KEY:``, the HTTP Basic credentials, and of ``KEY``; standard and
  URL-safe alphabets; with and without ``=`` padding) and URL-encoded (``quote``, ``quote_plus``, upper- and
  lower-case hex digits);
- the endpoint's userinfo (``user:password``), user name and password, query string, each query value and its
  fragment, as written and percent-decoded.

Each is replaced by :data:`REDACTED`. Forms of fewer than :data:`MIN_SECRET_CHARS` characters are left alone:
they would turn ordinary words into noise and are too short to be secrets.
"""

from __future__ import annotations

import base64
import re
from typing import Optional
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

REDACTED = "[redacted]"
#: A form shorter than this is not scrubbed (a one-letter "key" would otherwise redact every such letter).
MIN_SECRET_CHARS = 4

_HEX_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def _base64_forms(data: bytes) -> set[str]:
    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(data).decode("ascii")
        forms.add(text)
        forms.add(text.rstrip("="))
    return forms


def _url_forms(text: str) -> set[str]:
    forms = {text, unquote(text)}
    for form in (quote(text, safe=""), quote(text), quote_plus(text)):
        forms.add(form)
        forms.add(_HEX_ESCAPE.sub(lambda m: m.group(0).lower(), form))
    return forms


def secret_forms(write_key: str, endpoint_url: Optional[str] = None) -> set[str]:
    """Every text form of the secrets in ``write_key`` and ``endpoint_url`` that :class:`Redactor` replaces."""
    forms: set[str] = set()
    if write_key:
        forms |= _url_forms(write_key)
        for raw in (f"{write_key}:", write_key):
            forms |= _base64_forms(raw.encode("utf-8", "surrogatepass"))
    if endpoint_url:
        try:
            parts = urlsplit(endpoint_url)
            username, password = parts.username, parts.password
        except ValueError:  # a malformed URL: scrub what can be told apart without parsing it fully
            parts, username, password = None, None, None
        if parts is not None:
            userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
            secrets = [userinfo, username or "", password or "", parts.query, parts.fragment]
            secrets += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
            for secret in secrets:
                if secret:
                    forms |= _url_forms(secret)
        else:
            for marker in ("?", "#"):
                if marker in endpoint_url:
                    forms.add(endpoint_url.split(marker, 1)[1])
    return {form for form in forms if len(form) >= MIN_SECRET_CHARS}


class Redactor:
    """Replaces the write key and the endpoint URL's private parts in text; see the module documentation."""

    __slots__ = ("_pattern",)

    def __init__(self, write_key: str, endpoint_url: Optional[str] = None) -> None:
        forms = sorted(secret_forms(write_key, endpoint_url), key=lambda form: (-len(form), form))
        # Longest first, so that a form containing another is replaced whole.
        self._pattern: Optional[re.Pattern[str]] = re.compile("|".join(map(re.escape, forms))) if forms else None

    def scrub(self, text: str) -> str:
        """``text`` with every known form of a secret replaced by ``[redacted]``."""
        if not isinstance(text, str):
            text = str(text)
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def __call__(self, text: str) -> str:
        return self.scrub(text)

    def __repr__(self) -> str:
        return "<Redactor>"
