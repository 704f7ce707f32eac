"""The handlers' own counters as metrics: what was delivered, and every event lost, with its reason.

Nothing is counted per event for this: the handlers already keep their counters (``stats()``), and
they are read when metrics are asked for. :func:`totals` sums ``stats()`` over the handlers alive in
this process (for StatsD, OpenTelemetry or anything else); :class:`PrometheusCollector` exposes the
same to ``prometheus_client`` (the ``prometheus`` extra), which is imported only when it is used::

    from prometheus_client import REGISTRY
    from dreamdata_logging.metrics import PrometheusCollector

    REGISTRY.register(PrometheusCollector())

Counters are per process (a forked worker starts at zero), like every Prometheus client's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Optional

from dreamdata_logging.delivery import lifecycle

if TYPE_CHECKING:
    from dreamdata_logging._handler import DreamdataHandler

__all__ = ["KEYS", "OUTCOMES", "PrometheusCollector", "totals"]

#: The ``outcome`` label of ``dreamdata_logging_events_total``: each is a key of ``stats()``.
OUTCOMES = ("delivered", "failed", "invalid", "filtered", "skipped", "dropped_queue_full", "dropped_closed")
#: Keys :func:`totals` always has (0 without handlers), besides any other key of ``stats()``.
KEYS = ("emitted", *OUTCOMES, "plan_violations", "retries", "batches", "requests", "bytes_sent", "queued", "spooled")


def totals(handlers: Optional[Iterable[DreamdataHandler]] = None) -> dict[str, int]:
    """``stats()`` summed over ``handlers`` (by default every DreamdataHandler alive in this process).

    ``spooled`` (events in a spool file now) is counted once per spool file, however many handlers share it.
    """
    summed = dict.fromkeys(KEYS, 0)
    spools: dict[str, int] = {}
    for handler in lifecycle.handlers() if handlers is None else handlers:
        stats = handler.stats()
        for key, value in stats.items():
            if key != "spooled":
                summed[key] = summed.get(key, 0) + value
        spool = getattr(handler, "_spool", None)
        if spool is not None:
            spools[str(spool.path)] = stats["spooled"]
    summed["spooled"] = sum(spools.values())
    return summed


def _prometheus() -> Any:
    try:
        from prometheus_client import core
    except ImportError:
        raise ImportError(
            "dreamdata_logging.metrics.PrometheusCollector needs prometheus_client: "
            'pip install "dreamdata-logging[prometheus]"'
        ) from None
    return core


class PrometheusCollector:
    """A ``prometheus_client`` collector of the handlers' counters, read at scrape time.

    ``handlers``: the handlers to report (by default every DreamdataHandler alive in this process,
    whenever it was made). Register it once: ``REGISTRY.register(PrometheusCollector())``.
    """

    def __init__(self, handlers: Optional[Iterable[DreamdataHandler]] = None) -> None:
        self._core = _prometheus()
        self._handlers = list(handlers) if handlers is not None else None

    def collect(self) -> Iterator[Any]:
        core = self._core
        stats = totals(self._handlers)
        events = core.CounterMetricFamily(
            "dreamdata_logging_events",
            "Events by what became of them: delivered, failed (given up on), invalid, filtered (before_send or the "
            "tracking plan), skipped (log records without event data), dropped_queue_full, dropped_closed",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            events.add_metric([outcome], stats.get(outcome, 0))
        yield events
        yield core.CounterMetricFamily(
            "dreamdata_logging_plan_violations",
            "Events that broke the tracking plan (each once; sent or dropped by plan_policy)",
            value=stats.get("plan_violations", 0),
        )
        yield core.CounterMetricFamily(
            "dreamdata_logging_requests", "Batch requests sent to the endpoint", value=stats.get("requests", 0)
        )
        yield core.CounterMetricFamily(
            "dreamdata_logging_retries", "Batch requests retried", value=stats.get("retries", 0)
        )
        yield core.GaugeMetricFamily(
            "dreamdata_logging_queued_events", "Events in memory waiting to be sent", value=stats.get("queued", 0)
        )
        yield core.GaugeMetricFamily(
            "dreamdata_logging_spooled_events",
            "Events in the spool files, waiting for the endpoint",
            value=stats.get("spooled", 0),
        )
