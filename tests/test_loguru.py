"""loguru through a real DreamdataHandler: ``logger.add(DreamdataHandler())`` with no glue code."""

from __future__ import annotations

import pytest

from dreamdata_logging import bind, identify, track

loguru = pytest.importorskip("loguru")


def delivered(handler, collector, count):
    assert handler.flush(timeout=20)
    assert collector.wait_for(count, timeout=20)
    return collector.received()


@pytest.fixture
def add_sink():
    """Add a handler to loguru's global logger; removed after the test."""
    ids = []

    def add(handler, **options):
        ids.append(loguru.logger.add(handler, **options))

    yield add
    for sink_id in ids:
        loguru.logger.remove(sink_id)


def test_default_format_events_arrive_with_the_bare_message(collector, make_handler, add_sink):
    handler = make_handler()
    add_sink(handler)  # loguru's default format: "time | level | name:function:line - message"
    log = loguru.logger
    log.info("Signed Up", **track(user_id="u1", properties={"plan": "pro"}))
    log.bind(**identify(user_id="u1", traits={"email": "a@b.c"})).info("identify")
    log.info("Order {} Placed", 17, **track(user_id="u1"))  # loguru's own formatting
    log.info("a plain line")  # no event data: skipped
    with bind(anonymous_id="anon-7"):
        log.warning("Cart Abandoned", dreamdata={"properties": {"items": 3}})
    signed_up, identified, order, abandoned = delivered(handler, collector, 4)
    assert signed_up["type"] == "track" and signed_up["event"] == "Signed Up"
    assert signed_up["userId"] == "u1" and signed_up["properties"] == {"plan": "pro"}
    assert identified["type"] == "identify" and identified["traits"] == {"email": "a@b.c"}
    assert order["event"] == "Order 17 Placed"
    assert abandoned["event"] == "Cart Abandoned" and abandoned["anonymousId"] == "anon-7"
    assert handler.stats()["skipped"] == 1


def test_message_only_format_and_include_extra(collector, make_handler, add_sink):
    handler = make_handler(include_extra=True)
    add_sink(handler, format="{message}")
    log = loguru.logger.bind(request_id="r-1")
    log.info("Signed Up", source="ads", **track(user_id="u1", properties={"plan": "pro"}))
    (signed_up,) = delivered(handler, collector, 1)
    assert signed_up["event"] == "Signed Up"
    assert signed_up["properties"] == {"request_id": "r-1", "source": "ads", "plan": "pro"}


def test_other_format_gives_its_line_unless_the_event_is_named(collector, make_handler, add_sink):
    handler = make_handler()
    add_sink(handler, format="{level} {message}")
    loguru.logger.info("Signed Up", **track(user_id="u1"))
    loguru.logger.info("whatever", **track("Named", user_id="u1"))
    formatted, named = delivered(handler, collector, 2)
    assert formatted["event"] == "INFO Signed Up"  # a custom format's whole line: documented
    assert named["event"] == "Named"


def test_exception_does_not_end_up_in_the_name(collector, make_handler, add_sink):
    handler = make_handler()
    add_sink(handler)
    try:
        raise ValueError("boom")
    except ValueError:
        loguru.logger.exception("Checkout Failed", **track(user_id="u1"))
    (failed,) = delivered(handler, collector, 1)
    assert failed["event"] == "Checkout Failed"
