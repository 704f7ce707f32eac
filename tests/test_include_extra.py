"""``include_extra=True``: the record's other ``extra`` keys become properties (or traits)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import logging.config

from dreamdata_logging import group, identify, page, screen, track
from dreamdata_logging.events.record import RESERVED_RECORD_ATTRS

from .conftest import WRITE_KEY


def delivered(handler, collector, count):
    assert handler.flush(timeout=20)
    assert collector.wait_for(count, timeout=20)
    return collector.received()


def test_extra_keys_become_properties_or_traits(collector, make_handler, make_logger):
    handler = make_handler(include_extra=True)
    log = make_logger(handler)
    log.info("Signed Up", extra={**track(user_id="u1", properties={"plan": "pro"}), "source": "ads", "plan": "free"})
    log.info("identify", extra={**identify(user_id="u1", traits={"email": "a@b.c"}), "company": "Acme"})
    log.info("group", extra={**group("g1", user_id="u1"), "employees": 120})
    log.info("page", extra={**page("Pricing", user_id="u1"), "path": "/pricing"})
    log.info("screen", extra={**screen("Home", user_id="u1"), "when": datetime.date(2024, 1, 2)})
    signed_up, identified, grouped, paged, screened = delivered(handler, collector, 5)
    assert signed_up["properties"] == {"source": "ads", "plan": "pro"}  # the explicit value wins
    assert identified["traits"] == {"company": "Acme", "email": "a@b.c"}
    assert grouped["traits"] == {"employees": 120} and "properties" not in grouped
    assert paged["properties"] == {"path": "/pricing"}
    assert screened["properties"] == {"when": "2024-01-02"}


def test_standard_record_attributes_never_leak(collector, make_handler, make_logger):
    handler = make_handler(include_extra=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))  # formatting adds message/asctime
    log = make_logger(handler)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("Failed Checkout", extra={**track(user_id="u1"), "cart": 3}, stack_info=True)
    log.info("Order %s", 17, extra={**track(user_id="u1"), "_private": 1})

    async def in_task() -> None:  # Python 3.12+ adds taskName to records
        log.info("From Task", extra={**track(user_id="u1"), "task_extra": True})

    asyncio.run(in_task())
    failed, order, from_task = delivered(handler, collector, 3)
    assert failed["properties"] == {"cart": 3}
    assert order["event"] == "Order 17" and "properties" not in order
    assert from_task["properties"] == {"task_extra": True}
    for name in ("message", "asctime", "taskName", "args", "msg", "exc_info", "exc_text", "stack_info", "dreamdata"):
        assert name in RESERVED_RECORD_ATTRS


def test_off_by_default_and_settable_from_config_strings(collector, make_handler, make_logger, monkeypatch):
    off = make_handler()
    log = make_logger(off)
    log.info("Plain", extra={**track(user_id="u1"), "source": "ads"})
    [plain] = delivered(off, collector, 1)
    assert "properties" not in plain

    monkeypatch.setenv("DREAMDATA_WRITE_KEY", WRITE_KEY)
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "dd": {"class": "dreamdata_logging.DreamdataHandler", "endpoint": collector.url, "include_extra": "yes"}
            },
            "loggers": {"extra.test": {"handlers": ["dd"], "level": "INFO", "propagate": False}},
        }
    )
    configured = logging.getLogger("extra.test")
    [handler] = configured.handlers
    try:
        assert handler.include_extra is True
        configured.info("Configured", extra={**track(user_id="u2"), "source": "config"})
        _, message = delivered(handler, collector, 2)
        assert message["properties"] == {"source": "config"}
    finally:
        handler.close()
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
