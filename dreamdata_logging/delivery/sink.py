"""Where a handler's events go once built: its queue, or whatever a test swaps in to capture them.

Each :class:`~dreamdata_logging.delivery.delivery.Delivery` has a ``sink``. By default it is the delivery's
:class:`QueueSink`: message bytes are queued for the worker (or counted ``unsent`` with ``send=False``).
A capture (``dreamdata_logging.testing``) installs its own sink on each handler's delivery and puts the
queue back when it ends: the handler itself knows nothing of tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from dreamdata_logging._diagnostics import Report
from dreamdata_logging.delivery import lifecycle
from dreamdata_logging.delivery.buffer import CLOSED, FULL
from dreamdata_logging.errors import InvalidEventError
from dreamdata_logging.wire.plan import Violation

if TYPE_CHECKING:
    from dreamdata_logging.delivery.delivery import Delivery
    from dreamdata_logging.delivery.worker import Worker


class Sink(Protocol):
    """Takes each built message; is told of each refused event and of each tracking-plan violation."""

    def message(self, data: bytes, worker: Worker) -> None:
        """One message's bytes, built in the caller's thread (``worker``: this process's, for the queue)."""

    def invalid(self, error: InvalidEventError) -> None:
        """An event refused as invalid (counted and reported by the delivery's problems, whatever the sink)."""

    def violation(self, violation: Violation) -> None:
        """How an event broke the handler's tracking plan (counted and reported, whatever the sink)."""


class QueueSink:
    """The default sink: queues messages for the worker thread; counts them ``unsent`` when ``send`` is off."""

    def __init__(self, delivery: Delivery, *, send: bool = True) -> None:
        self._delivery = delivery  # its ledger is renewed in a new process: looked up on every use
        self.send = send

    def message(self, data: bytes, worker: Worker) -> None:
        delivery = self._delivery
        if not self.send:
            delivery.ledger.add("unsent")
            return
        if worker.closing and not lifecycle.exiting():
            worker = delivery.renew(worker)  # closed (by a reconfiguration?) but still attached: reopen
        if delivery.forking_master:
            delivery.from_forking_master(data)
            return
        status = worker.put(data)  # the common case: queued, or ready to send
        if status is CLOSED:  # closed since the check above (by another thread)
            status = delivery.put_after_closed(data, worker)
        if status is FULL:
            settings = delivery.settings
            delivery.report(
                Report.QUEUE_FULL,
                f"queue full ({settings.max_queue_size:,} events or {settings.max_queue_bytes:,} bytes): "
                "new events are dropped until it drains (is the endpoint down or slow?)",
            )
        elif status is CLOSED:
            delivery.report(Report.CLOSED, "an event was emitted after the handler was closed; it was dropped")

    def invalid(self, error: InvalidEventError) -> None:
        pass  # counted and reported by the delivery's problems

    def violation(self, violation: Violation) -> None:
        pass  # counted and reported by the handler's shaper
