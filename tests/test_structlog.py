"""structlog through a real DreamdataHandler: both of structlog's standard-library recipes, no glue code."""

from __future__ import annotations

import logging

import pytest

from dreamdata_logging import bind, identify, track

structlog = pytest.importorskip("structlog")


def delivered(handler, collector, count):
    assert handler.flush(timeout=20)
    assert collector.wait_for(count, timeout=20)
    return collector.received()


def formatter_logger(stdlib_logger: logging.Logger):
    """structlog's main stdlib recipe: the event dict travels to logging as ``record.msg``."""
    return structlog.wrap_logger(
        stdlib_logger,
        processors=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def kwargs_logger(stdlib_logger: logging.Logger):
    """The other recipe: the event dict becomes the record's ``extra``."""
    return structlog.wrap_logger(
        stdlib_logger,
        processors=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.stdlib.render_to_log_kwargs,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def test_wrap_for_formatter_events_arrive(collector, make_handler, make_logger):
    handler = make_handler()
    stdlib_logger = make_logger(handler)
    # A ProcessorFormatter on another handler of the same logger renders the same record: both work.
    console = logging.StreamHandler(open("/dev/null", "w"))  # noqa: SIM115 - closed below
    console.setFormatter(structlog.stdlib.ProcessorFormatter(processors=[structlog.dev.ConsoleRenderer()]))
    stdlib_logger.addHandler(console)
    try:
        log = formatter_logger(stdlib_logger)
        log.info("Signed Up", **track(user_id="u1", properties={"plan": "pro"}))
        log.bind(request_id="r-9").info("identify", **identify(user_id="u1", traits={"email": "a@b.c"}))
        log.info("just a log line", request_id="r-10")  # no event data: skipped, as a plain record is
        with bind(user_id="bound-user"):
            log.warning("Checkout Failed", dreamdata={"properties": {"step": 2}})
    finally:
        stdlib_logger.removeHandler(console)
        console.stream.close()
    signed_up, identified, failed = delivered(handler, collector, 3)
    assert signed_up["type"] == "track" and signed_up["event"] == "Signed Up"
    assert signed_up["userId"] == "u1" and signed_up["properties"] == {"plan": "pro"}
    assert identified["type"] == "identify" and identified["traits"] == {"email": "a@b.c"}
    assert "properties" not in identified
    assert failed["event"] == "Checkout Failed" and failed["userId"] == "bound-user"
    assert failed["properties"] == {"step": 2}
    stats = handler.stats()
    assert stats["skipped"] == 1 and stats["invalid"] == 0 and stats["emitted"] == 3


def test_wrap_for_formatter_include_extra_takes_user_keys_only(collector, make_handler, make_logger):
    handler = make_handler(include_extra=True)
    log = formatter_logger(make_logger(handler)).bind(request_id="r-1")
    log.info("Signed Up", source="ads", **track(user_id="u1", properties={"plan": "pro"}))
    log.info("identify", company="Acme", **identify(user_id="u1"))
    (signed_up, identified) = delivered(handler, collector, 2)
    # level, timestamp, logger (structlog's processors) and _record/_from_structlog never become properties
    assert signed_up["properties"] == {"request_id": "r-1", "source": "ads", "plan": "pro"}
    assert identified["traits"] == {"request_id": "r-1", "company": "Acme"}


def test_render_to_log_kwargs_events_and_include_extra(collector, make_handler, make_logger):
    handler = make_handler(include_extra=True)
    log = kwargs_logger(make_logger(handler)).bind(request_id="r-2")
    log.info("Signed Up", source="ads", **track(user_id="u1", properties={"plan": "pro"}))
    log.error("Payment Failed", **track(user_id="u1", properties={"amount": 10}))
    log.info("Plain Line")
    signed_up, failed = delivered(handler, collector, 2)
    assert signed_up["event"] == "Signed Up"
    assert signed_up["properties"] == {"request_id": "r-2", "source": "ads", "plan": "pro"}
    assert failed["event"] == "Payment Failed"
    assert failed["properties"] == {"request_id": "r-2", "amount": 10}
    assert handler.stats()["skipped"] == 1


def test_plain_records_keep_their_level_and_logger_extras(collector, make_handler, make_logger):
    """Only structlog's own bookkeeping is left out: a plain record's ``level`` extra is the caller's."""
    handler = make_handler(include_extra=True)
    log = make_logger(handler)
    log.info("Upgraded", extra={**track(user_id="u1"), "level": "gold", "timestamp": "yesterday"})
    (upgraded,) = delivered(handler, collector, 1)
    assert upgraded["properties"] == {"level": "gold", "timestamp": "yesterday"}


def test_a_plain_dict_message_is_not_an_event(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    log.info({"event": "looks like structlog", "level": "info"})
    log.info("Real", extra=track(user_id="u1"))
    (real,) = delivered(handler, collector, 1)
    assert real["event"] == "Real"
    assert handler.stats()["skipped"] == 1
