"""Python values to compact UTF-8 JSON, converting what JSON lacks.

The fast path hands the whole message to one C encoder call (orjson when installed,
else the standard library's ``json``); only when that refuses (NaN, odd keys, lone
surrogates, cycles) does the careful path walk the value in Python and write the text.

Keys, one rule on every path: a string key stays; any other key is converted as a value would be
until it is a string (that string is the key) or JSON's own kind of value (the key is that value's
compact JSON text: ``null``, ``true``, ``1``, ``0.1``, ``[1,"a"]``; NaN and Infinity as ``null``).
Two keys that become the same text are both written, as the standard library's ``json`` does.
orjson is not asked to convert keys (its float and Enum key texts differ): a non-string key takes the
careful path there, whose text is the standard library's.
"""

from __future__ import annotations

import base64
import dataclasses
import decimal
import importlib
import json
import math
import os
import uuid
from collections.abc import Mapping
from typing import Any, Callable, Optional

from pythonjsonlogger import defaults

from dreamdata_logging.errors import InvalidEventError
from dreamdata_logging.wire.rules import MAX_MESSAGE_BYTES, too_big

_orjson: Any = None
if not os.environ.get("DREAMDATA_LOGGING_NO_ORJSON"):
    try:  # the optional accelerator: pip install "dreamdata-logging[fast]"
        _orjson = importlib.import_module("orjson")
    except ImportError:  # pragma: no cover - depends on the environment
        _orjson = None

#: Name of the JSON encoder in use: "orjson" or "json".
BACKEND = "orjson" if _orjson is not None else "json"


def convert(value: Any) -> Any:
    """Turn one value JSON lacks into one it has (the ``default`` hook of both encoders)."""
    if defaults.use_datetime_any(value):
        return defaults.datetime_any(value)
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if defaults.use_enum_default(value):
        return defaults.enum_default(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Shallow: the encoder calls us again for nested values.
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return dict(value)
    return defaults.unknown_default(value)


def _standard_encoder() -> Callable[[Any], str]:
    """The standard library's C encoder, made once (``JSONEncoder.encode`` makes a new one per call).

    It keeps no record of the containers it is in (``check_circular=False``): a cycle ends in a
    RecursionError instead, and the careful path names it. So one encoder serves every thread."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - a Python built without the _json accelerator
        return json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=convert).encode
    encoder = make(None, convert, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    join = "".join
    return lambda value: join(encoder(value, 0))


_json_text = _standard_encoder()


def _dumps_json(value: Any) -> bytes:
    return _json_text(value).encode("utf-8")


_fast_dumps: Callable[[Any], bytes] = _dumps_json
_fast_errors: tuple[type[BaseException], ...] = (ValueError, TypeError, UnicodeEncodeError)
if _orjson is not None:
    _orjson_dumps = _orjson.dumps
    # Datetimes go through convert() as on the json path: orjson itself rounds a UTC offset that has
    # seconds (historic zones, e.g. +03:25:44) to whole minutes.
    _orjson_option = _orjson.OPT_PASSTHROUGH_DATETIME

    def _dumps_orjson(value: Any) -> bytes:
        # orjson's bytes keep their whole working buffer (several kB for a small message); an exact
        # copy makes a queued message cost its length, which is what the queue's byte bound counts.
        return bytes(memoryview(_orjson_dumps(value, default=convert, option=_orjson_option)))

    _fast_dumps = _dumps_orjson
    _fast_errors = (_orjson.JSONEncodeError, *_fast_errors)


def dumps(value: Any, *, fast: Optional[bool] = None) -> bytes:
    """Serialise ``value`` to compact UTF-8 JSON, converting what JSON lacks (see docs/events.md).

    Raises :class:`InvalidEventError` for circular or absurdly deep data.
    ``fast=False`` forces the standard-library path (used by the tests to compare both).
    """
    encode = _fast_dumps if fast is not False else _dumps_json
    try:
        return encode(value)
    except _fast_errors:
        pass  # NaN, a non-string key, a lone surrogate or a cycle: take the careful path
    except RecursionError:
        pass
    try:
        return _render(value, set()).encode("utf-8")
    except RecursionError:
        raise InvalidEventError("data is nested too deeply to serialise") from None


def quoted(text: str) -> str:
    """``text`` as a JSON string, as :func:`dumps` writes it (the common ASCII case without the encoder)."""
    return _encode_str(text) if text.isascii() else dumps(text).decode("utf-8")


def encode_message(message: Any) -> tuple[Optional[bytes], Optional[str]]:
    """A decoded message's compact UTF-8 JSON as the endpoint's side writes it (the standard library's
    spelling of numbers), or why it cannot travel: text that is not Unicode, a number JSON cannot hold,
    or over :data:`~dreamdata_logging.wire.rules.MAX_MESSAGE_BYTES` serialised."""
    try:
        data = _dumps_json(message)
    except UnicodeEncodeError:  # a lone surrogate escape, e.g. "\ud800": valid JSON, not Unicode
        return None, "contains text that is not valid Unicode (a lone surrogate)"
    except ValueError:  # a number too large for a float, e.g. 1e400, is read as infinity
        return None, "contains a number too large to be sent as JSON (it reads as infinity)"
    if len(data) > MAX_MESSAGE_BYTES:
        return None, f"is {too_big(len(data))}"
    return data, None


# 19 digits in a row may be an integer beyond 64 bits, which orjson would read as a float. Found by
# turning every digit into "0" and looking for 19 of them (two C passes; a regular expression is ten
# times slower).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


def loads(data: bytes) -> Any:
    """The value of JSON this module wrote: orjson's decoder where it reads every value exactly (not
    integers beyond 64 bits), else the standard library's."""
    if _orjson is not None and _LONG_NUMBER not in data.translate(_DIGITS_AS_ZERO):
        return _orjson.loads(data)
    return json.loads(data)


def standard_size(data: bytes) -> int:
    """Bytes of ``data`` once re-serialised compactly by the standard library, as the local collector
    (and any Python endpoint) measures it: orjson writes some numbers shorter (``1e-7`` for ``1e-07``)."""
    if _fast_dumps is _dumps_json:
        return len(data)
    return len(_dumps_json(json.loads(data)))


_encode_str: Callable[[str], str] = json.encoder.encode_basestring  # as json.dumps(ensure_ascii=False)


def _key(key: Any, active: set[int]) -> str:
    """A key's text (see the module's docstring): the same as the standard library writes, where it can."""
    if isinstance(key, str):
        return _clean_str(key)
    if key is None or isinstance(key, (bool, int, float, dict, list)) or _is_dataclass(key):
        return _render(key, active)
    return _key(convert(key), active)


def _clean_str(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # lone surrogates: keep the text, replace what UTF-8 cannot hold
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _is_dataclass(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _render(value: Any, active: set[int]) -> str:
    """``value`` as compact JSON text, converting what JSON lacks; ``active`` holds the containers on the
    path. Scalars are written exactly as the standard library's encoder writes them."""
    if isinstance(value, str):
        return _encode_str(_clean_str(value))
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value) if math.isfinite(value) else "null"
    if isinstance(value, (dict, list, tuple)) or _is_dataclass(value):
        marker = id(value)
        if marker in active:
            raise InvalidEventError("data contains a circular reference")
        active.add(marker)
        try:
            if isinstance(value, dict):
                items = [f"{_encode_str(_key(k, active))}:{_render(v, active)}" for k, v in value.items()]
                return "{" + ",".join(items) + "}"
            if isinstance(value, (list, tuple)):
                return "[" + ",".join([_render(v, active) for v in value]) + "]"
            return _render(convert(value), active)
        finally:
            active.discard(marker)
    return _render(convert(value), active)
