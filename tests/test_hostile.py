"""Hostile input at ``logger.info(..., extra=...)``, property-based (hypothesis), on both encoder paths.

Whatever the values (nested, huge, odd keys, NaN, bytes, cycles, objects whose ``__str__`` raises,
mappings that raise), the call never raises, every message the collector accepts is valid JSON within
the limits, and every refused event is counted with its reason.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dreamdata_logging import DreamdataHandler
from dreamdata_logging.errors import InvalidEventError
from dreamdata_logging.events import encoding
from dreamdata_logging.tools.collector import Collector
from dreamdata_logging.wire.rules import MAX_MESSAGE_BYTES

from .conftest import WRITE_KEY

# -- hostile values ------------------------------------------------------------------------------------


class Unprintable:
    """str() and repr() both raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class UnprintableInt(int):
    def __str__(self) -> str:
        raise RuntimeError("int without str")

    __repr__ = __str__


class ExplodingMapping(Mapping[str, Any]):
    """A mapping whose every access raises."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("no items")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("no iteration")

    def __len__(self) -> int:
        raise RuntimeError("no len")


class Color(enum.Enum):
    RED = "red"
    NAN = float("nan")


@dataclasses.dataclass
class Point:
    x: Any
    y: Any


def cyclic(value: Any) -> Any:
    container: dict[str, Any] = {"value": value}
    container["self"] = container
    return [value, container]


surrogates = st.sampled_from(["\ud800", "a\udfffb", "\udcff" * 3])
text = st.text(max_size=30) | surrogates
huge_text = st.sampled_from([1_000, 20_000, 31_000, 40_000]).map(lambda n: "é" * (n // 2))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.binary(max_size=40),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.uuids(),
    st.sampled_from(list(Color)),
    st.fractions(),
    st.complex_numbers(allow_nan=True),
    st.builds(Unprintable),
    st.builds(UnprintableInt, st.integers()),
    st.builds(object),
    st.just(ExplodingMapping()),
)
hashable = st.one_of(
    text,
    st.integers(),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
    st.binary(max_size=10),
    st.uuids(),
    st.tuples(st.integers(), text),
    st.builds(Unprintable),
    st.sampled_from(list(Color)),
    st.dates(),
)
values = st.recursive(
    scalars | huge_text,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(hashable, children, max_size=4),
        st.tuples(children, children),
        st.frozensets(hashable, max_size=3),
        st.builds(Point, children, children),
        children.map(cyclic),
    ),
    max_leaves=12,
)
# Odd but convertible: NaN, bytes, big ints, odd keys, dates, sets... no poison, no cycles.
poison = (Unprintable, UnprintableInt, ExplodingMapping, object)
convertible = st.recursive(
    scalars.filter(lambda v: type(v) not in poison) | huge_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(hashable.filter(lambda k: not isinstance(k, Unprintable)), children, max_size=4)
        | st.builds(Point, children, children)
    ),
    max_leaves=12,
)
ids = st.one_of(st.text(min_size=1, max_size=20), st.integers(), values)
events = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]) | values,
        "userId": ids,
        "anonymousId": ids,
        "event": st.text(min_size=1, max_size=20) | values,
        "properties": st.dictionaries(hashable, values, max_size=5) | values,
        "traits": st.dictionaries(hashable, values, max_size=5) | values,
        "context": st.dictionaries(text, values, max_size=3) | values,
        "integrations": values,
        "timestamp": st.datetimes() | st.floats() | text | values,
        "messageId": st.uuids().map(str) | st.just("") | values,
        "groupId": ids,
        "previousId": ids,
        "name": values,
        "unknownTopLevel": values,
    },
)
# Valid identity and name, hostile payload: these mostly pass, converted.
payloads = st.fixed_dictionaries(
    {"userId": st.text(min_size=1, max_size=20), "event": st.text(min_size=1, max_size=20)},
    optional={
        "properties": st.dictionaries(hashable, values, max_size=5)
        | st.dictionaries(hashable, convertible, max_size=5),
        "traits": st.dictionaries(text, convertible, max_size=5),
        "context": st.dictionaries(text, convertible, max_size=3),
        "integrations": st.dictionaries(text, values, max_size=3),
        "timestamp": st.datetimes(timezones=st.none() | st.timezones()),
        "unknownTopLevel": values,
    },
)
dreamdata = st.one_of(payloads, payloads, payloads, payloads, events, st.just(ExplodingMapping()), values)
messages = st.one_of(
    st.tuples(text, st.just(())),
    st.just(("%s and %d", ("only one",))),  # a format that fails in getMessage()
    st.tuples(st.builds(Unprintable), st.just(())),
)
# Keys logging lets through ``extra`` (it refuses to overwrite a LogRecord attribute).
_RESERVED = set(vars(logging.LogRecord("n", 0, "p", 0, "m", (), None))) | {"message", "asctime"}
extra_keys = st.text(min_size=1, max_size=10).filter(lambda k: k not in _RESERVED and k != "dreamdata")


# -- the property ----------------------------------------------------------------------------------------


@pytest.fixture(params=["orjson", "json"] if encoding.BACKEND == "orjson" else ["json"])
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both encoder paths: orjson's fast path, and the standard library's (as DREAMDATA_LOGGING_NO_ORJSON=1)."""
    if request.param == "json":
        monkeypatch.setattr(encoding, "_fast_dumps", encoding._dumps_json)
        monkeypatch.setattr(encoding, "_fast_errors", (ValueError, TypeError, UnicodeEncodeError))
    return str(request.param)


@pytest.mark.parametrize("include_extra", [False, True])
def test_logger_info_never_raises_and_only_valid_json_reaches_the_endpoint(encoder, include_extra):
    refused: list[tuple[BaseException, list[Any]]] = []
    handled_errors: list[logging.LogRecord] = []
    with Collector(write_key=WRITE_KEY, strict=True, keep=None) as collector:
        handler = DreamdataHandler(
            WRITE_KEY,
            endpoint=collector.url,
            on_error=lambda error, batch: refused.append((error, batch)),
            include_extra=include_extra,
            flush_at=50,
            flush_interval=0.05,
        )
        handler.handleError = handled_errors.append  # type: ignore[method-assign]
        log = logging.getLogger(f"hostile.{encoder}.{include_extra}")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(handler)
        attempts = 0

        @given(event=dreamdata, message=messages, extra=st.dictionaries(extra_keys, values, max_size=3))
        def emit(event: Any, message: tuple[Any, tuple[Any, ...]], extra: dict[str, Any]) -> None:
            nonlocal attempts
            attempts += 1
            log.info(message[0], *message[1], extra={"dreamdata": event, **extra})  # must not raise

        try:
            emit()
            assert handler.flush(timeout=60)
        finally:
            log.removeHandler(handler)
            handler.close()
        received, requests = collector.received(), collector.requests()

    stats = handler.stats()
    assert handled_errors == []  # emit() itself never failed
    assert stats["failed"] == 0  # the collector accepted every batch: each message valid, strict JSON, in limits
    assert stats["emitted"] + stats["invalid"] + stats["skipped"] == attempts
    assert stats["delivered"] == stats["emitted"] == len(received)
    assert all(r.status == 200 for r in requests)  # no batch was refused, none sent twice
    for message in received:
        assert len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()) <= MAX_MESSAGE_BYTES
    # every refused event was counted and reported with a reason
    assert len(refused) == stats["invalid"]
    for error, _ in refused:
        assert isinstance(error, InvalidEventError) and error.reason
    assert stats["emitted"] > 0 and stats["invalid"] > 0  # the strategies reach both outcomes


# -- the encoders themselves ---------------------------------------------------------------------------


def _pairs(data: bytes) -> Any:
    """Decoded strictly, objects as lists of (key, value) pairs: key order and repeated keys count too."""
    strict = lambda c: pytest.fail(f"{c} in output")  # noqa: E731
    return json.loads(data.decode("utf-8"), object_pairs_hook=list, parse_constant=strict)


def _outcome(value: Any, fast: Any) -> tuple[str, Any]:
    try:
        data = encoding.dumps(value, fast=fast)
    except InvalidEventError as error:
        assert error.reason
        return "refused", error.reason
    except RuntimeError as error:  # only our unprintable/unreadable objects raise; the handler catches it
        assert str(error) in ("no str for you", "no repr either", "int without str", "no iteration", "no len")
        return "raised", None
    return "ok", _pairs(data)


# Every example the property tests below ever found, kept: each failed once on one path or the other.
FOUND: list[Any] = [
    {Color.NAN: None},  # orjson wrote the key "null", the standard library "nan"
    {float("nan"): 1, float("inf"): 2, float("-inf"): 3},
    {1e-07: 0},  # orjson wrote the key "1e-7", the standard library "1e-07"
    {0: "int", "0": "str"},  # two keys with one text: both written on both paths
    {(1, "a"): None, b"k": None, b"\xff": None, decimal.Decimal("1.10"): None, None: 0, True: 1, False: 2},
    {datetime.date(2020, 1, 2): None, uuid.UUID(int=1): None, frozenset(): None},
    [Color.NAN, {"k": float("nan")}, "\ud800"],
]


@given(value=values)
@example(value=FOUND[0])
@example(value=FOUND[1])
@example(value=FOUND[2])
@example(value=FOUND[3])
@example(value=FOUND[4])
@example(value=FOUND[5])
@example(value=FOUND[6])
def test_both_encoder_paths_give_strict_json_or_a_clear_refusal(value):
    fast, stdlib = _outcome(value, None), _outcome(value, False)
    assert fast[0] == stdlib[0]
    assert fast == stdlib  # the same keys in the same order, equal values (numbers may be spelt differently)


@given(value=values)
@example(value=FOUND[3])
@example(value=FOUND[4])
def test_the_careful_path_writes_what_the_standard_library_writes(value):
    """Where the standard library's encoder takes a value as it is, the careful path writes the same bytes."""
    try:
        expected = encoding._dumps_json(value)
    except (ValueError, TypeError, RecursionError, RuntimeError):
        return  # the standard library refused it: only the careful path can write it
    assert encoding._render(value, set()).encode("utf-8") == expected


KEYS: list[tuple[Any, str]] = [
    (Color.NAN, "null"),
    (Color.RED, "red"),
    (float("nan"), "null"),
    (float("inf"), "null"),
    (float("-inf"), "null"),
    (1e-07, "1e-07"),
    (2.5, "2.5"),
    (10**30, "1" + "0" * 30),
    (None, "null"),
    (True, "true"),
    (b"caf\xc3\xa9", "café"),
    (b"\xff", "/w=="),
    (decimal.Decimal("1.10"), "1.10"),
    (decimal.Decimal("NaN"), "NaN"),
    (datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), "2020-01-02T03:04:05+00:00"),
    (datetime.date(2020, 1, 2), "2020-01-02"),
    ((1, "a"), '[1,"a"]'),
    (frozenset({1}), "[1]"),
    (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ("lone \ud800", "lone \ufffd"),
]


@pytest.mark.parametrize("fast", [None, False], ids=["default", "stdlib"])
@pytest.mark.parametrize("key,text", KEYS, ids=[repr(k)[:30] for k, _ in KEYS])
def test_every_key_type_has_one_text_on_both_paths(key, text, fast):
    data = encoding.dumps({key: 0}, fast=fast)
    assert data == b"{" + json.dumps(text, ensure_ascii=False).encode() + b":0}"


@pytest.mark.parametrize("value", FOUND, ids=[repr(v)[:30] for v in FOUND])
def test_examples_found_give_the_same_bytes_on_both_paths(value):
    assert encoding.dumps(value) == encoding.dumps(value, fast=False)


CONVERSIONS: list[tuple[Any, Any]] = [
    (float("nan"), None),
    (float("inf"), None),
    ({1: "a", None: "b", 2.5: "c", False: "d"}, {"1": "a", "null": "b", "2.5": "c", "false": "d"}),
    (b"caf\xc3\xa9", "café"),
    (b"\xff\xfe", "//4="),
    ({"a"}, ["a"]),
    ((1, 2), [1, 2]),
    (decimal.Decimal("1.10"), "1.10"),
    (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    (datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), "2020-01-02T03:04:05+00:00"),
    (datetime.date(2020, 1, 2), "2020-01-02"),
    (Color.RED, "red"),
    (Point(1, float("nan")), {"x": 1, "y": None}),
    ("lone \ud800 surrogate", "lone \ufffd surrogate"),
    (2**100, 2**100),
]


@pytest.mark.parametrize("fast", [None, False], ids=["default", "stdlib"])
@pytest.mark.parametrize("value,expected", CONVERSIONS, ids=[repr(v)[:30] for v, _ in CONVERSIONS])
def test_conversions_are_the_same_on_both_paths(value, expected, fast):
    assert json.loads(encoding.dumps({"v": value}, fast=fast)) == {"v": expected}


@pytest.mark.parametrize("fast", [None, False], ids=["default", "stdlib"])
def test_cycles_and_absurd_depth_are_refused_with_a_reason(fast):
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidEventError, match="circular"):
        encoding.dumps({"v": loop}, fast=fast)
    deep: Any = "bottom"
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidEventError, match="deeply"):
        encoding.dumps(deep, fast=fast)


def test_without_orjson_the_package_uses_the_standard_library_end_to_end(collector):
    script = (
        "import logging, sys\n"
        "from dreamdata_logging import DreamdataHandler, track\nfrom dreamdata_logging.events import encoding\n"
        "assert encoding.BACKEND == 'json', encoding.BACKEND\n"
        "h = DreamdataHandler(sys.argv[2], endpoint=sys.argv[1], flush_interval=60)\n"
        "log = logging.getLogger('x'); log.setLevel(logging.INFO); log.addHandler(h)\n"
        "odd = {1: float('nan'), 'b': b'\\xff', 'c': {1, 2}, 's': '\\ud800'}\n"
        "log.info('Odd', extra=track(user_id='u1', properties=odd))\n"
        "loop = {}; loop['loop'] = loop\n"
        "log.info('Loop', extra=track(user_id='u2', properties=loop))\n"
        "assert h.flush(timeout=30)\n"
        "print(h.stats()['delivered'], h.stats()['invalid'])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, collector.url, WRITE_KEY],
        env={**os.environ, "DREAMDATA_LOGGING_NO_ORJSON": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "1"]
    [message] = collector.received()
    assert message["properties"] == {"1": None, "b": "/w==", "c": [1, 2], "s": "\ufffd"}


def test_the_size_limit_means_the_same_for_the_handler_and_the_collector(collector: Collector):
    """orjson writes 1e-07 as 1e-7: a message it makes 32,000 bytes long is longer once a Python endpoint
    (the bundled collector) re-serialises it. The handler measures as the endpoint would, so such a message
    is refused on its own instead of making the endpoint refuse its whole batch."""
    pytest.importorskip("orjson")
    handler = DreamdataHandler(WRITE_KEY, endpoint=collector.url, flush_interval=60)
    log = logging.getLogger("test.size-limit")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        floats = [1e-7] * 6_000  # 5 bytes each with orjson ("1e-7,"), 6 with the standard library
        fast = len(encoding.dumps({"f": floats}))
        assert fast < MAX_MESSAGE_BYTES < len(encoding.dumps({"f": floats}, fast=False))
        log.info("Near", extra={"dreamdata": {"userId": "u1", "properties": {"f": floats}}})
        log.info("Fine", extra={"dreamdata": {"userId": "u1"}})
        assert handler.flush(timeout=10)
        assert [m["event"] for m in collector.received()] == ["Fine"]
        assert handler.stats()["invalid"] == 1
        assert all(r.status == 200 for r in collector.requests())
    finally:
        log.removeHandler(handler)
        handler.close()
