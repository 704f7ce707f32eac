"""``dreamdata_logging.metrics``: the handlers' counters in prometheus_client's own exposition format."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dreamdata_logging import track
from dreamdata_logging.metrics import KEYS, OUTCOMES, PrometheusCollector, totals
from dreamdata_logging.tools.collector import Collector, Fault

from .conftest import WRITE_KEY


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text, parsed back by prometheus_client's own parser."""
    text = generate_latest(registry).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_every_outcome_is_exposed_as_the_handler_counts_it(
    collector: Collector, make_handler, make_logger, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"track": {"Signed Up": {"properties": {"required": ["plan"]}}}}))
    handler = make_handler(
        tracking_plan=str(plan),
        before_send=lambda m: None if m["event"] == "Heartbeat" else m,
        max_retries=1,
        flush_at=1,
    )
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(handlers=[handler]))
    log = make_logger(handler)
    collector.script(Fault(503))  # a retried request
    log.info("Signed Up", extra=track(user_id="1", properties={"plan": "pro"}))  # 503, retried, delivered
    assert handler.flush(timeout=15), handler.stats()
    collector.script(Fault(400))  # a request refused for good
    log.info("Signed Up", extra=track(user_id="2"))  # breaks the plan; 400: failed
    assert not handler.flush(timeout=15)
    log.info("Heartbeat", extra=track(user_id="3"))  # filtered by before_send
    log.info("Signed Up", extra=track(properties={"plan": "pro"}))  # invalid: no user id
    log.info("an ordinary line")  # skipped
    log.info("Signed Up", extra=track(user_id="4", properties={"plan": "free"}))
    assert handler.flush(timeout=15)
    stats = handler.stats()
    samples = scrape(registry)
    expected = {"delivered": 2, "failed": 1, "invalid": 1, "filtered": 1, "skipped": 1}
    for outcome in OUTCOMES:
        assert samples[("dreamdata_logging_events_total", (("outcome", outcome),))] == stats[outcome]
        assert stats[outcome] == expected.get(outcome, 0), outcome
    assert samples[("dreamdata_logging_plan_violations_total", ())] == stats["plan_violations"] == 1
    assert samples[("dreamdata_logging_requests_total", ())] == stats["requests"] == 4
    assert samples[("dreamdata_logging_retries_total", ())] == stats["retries"] == 1
    assert samples[("dreamdata_logging_queued_events", ())] == 0
    assert samples[("dreamdata_logging_spooled_events", ())] == 0
    assert len(collector.received()) == 2


def test_the_default_collector_sums_every_handler_of_the_process(collector: Collector, tmp_path: Path) -> None:
    """In a fresh interpreter: two handlers, one with a spool holding events while the endpoint is down."""
    code = textwrap.dedent(
        f"""
        import logging
        from prometheus_client import REGISTRY, generate_latest
        from dreamdata_logging import DreamdataHandler, track
        from dreamdata_logging.metrics import PrometheusCollector, totals

        REGISTRY.register(PrometheusCollector())  # before the handlers exist: read at scrape time
        up = DreamdataHandler({WRITE_KEY!r}, endpoint={collector.url!r})
        down = DreamdataHandler({WRITE_KEY!r}, endpoint="http://127.0.0.1:9/v1/batch", max_retries=0,
                                spool={str(tmp_path / "spool.db")!r}, timeout=1)
        for handler, name in ((up, "up"), (down, "down")):
            log = logging.getLogger(name)
            log.propagate = False
            log.setLevel(logging.INFO)
            log.addHandler(handler)
            for n in range(3):
                log.info("Signed Up", extra=track(user_id=str(n)))
        assert up.flush(timeout=15)
        down.flush(timeout=15)
        print(totals()["delivered"], totals()["spooled"])
        print(generate_latest(REGISTRY).decode())
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first, text = result.stdout.split("\n", 1)
    assert first == "3 3"
    samples: dict[tuple[str, Any], float] = {
        (s.name, tuple(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert samples[("dreamdata_logging_events_total", (("outcome", "delivered"),))] == 3
    assert samples[("dreamdata_logging_spooled_events", ())] == 3
    assert samples[("dreamdata_logging_requests_total", ())] >= 2
    assert collector.wait_for(3, timeout=5)


def test_totals_of_no_handlers_are_zero() -> None:
    assert totals([]) == dict.fromkeys(KEYS, 0)
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(handlers=[]))
    assert scrape(registry)[("dreamdata_logging_events_total", (("outcome", "delivered"),))] == 0
