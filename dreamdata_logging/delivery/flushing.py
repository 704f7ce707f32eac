"""``flush()``: wait until every event emitted before it is delivered, the spool's included.

A flush waits for every worker of the handler that still holds events (one still finishing after
``close()`` as well as the current one), then, with a spool, for the spool to drain: it has the worker
look at the spool at once (a probe, even during an outage's backoff) and returns False as soon as that
probe fails. Events that went to the spool during the flush count as delivered once it drains, provided
none was lost meanwhile. ``dreamdata_logging.aflush()`` awaits the same steps.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

from dreamdata_logging.delivery import lifecycle

if TYPE_CHECKING:
    from dreamdata_logging.delivery.delivery import Delivery

#: Seconds between two looks at the spool while a flush waits for it to drain.
SPOOL_FLUSH_POLL = 0.05


def flush(delivery: Delivery, timeout: Optional[float]) -> bool:
    """True when every event emitted before the call was delivered (one kept in the spool was not)."""
    workers = delivery.workers()
    if not workers:
        return True  # nothing of this process's: that worker is the parent's
    if lifecycle.logging_lock_held():  # inside dictConfig: the worker may need logging's lock
        return all(worker.buffer.empty for worker in workers) and not delivery.spool_rows()
    deadline = None if timeout is None else time.monotonic() + timeout
    lost_before = lost(delivery)
    delivered = True
    for worker in workers:
        if not worker.buffer.idle:
            outcome = worker.flush(_remaining(deadline))
            if outcome is None:  # time ran out with events still in memory: neither delivered nor spooled
                return False
            delivered = outcome and delivered
    if delivery.spool is None:
        return delivered
    # Batches that went to the spool (an outage) are delivered once it drains, if none was lost meanwhile.
    return _drain_spool(delivery, deadline) and (delivered or lost(delivery) == lost_before)


def lost(delivery: Delivery) -> int:
    """Events given up on or dropped so far (a flush that saw this grow did not deliver everything)."""
    ledger = delivery.ledger
    return ledger.failed + ledger.dropped_queue_full + ledger.dropped_closed + ledger.spool_dropped


def _drain_spool(delivery: Delivery, deadline: Optional[float]) -> bool:
    """Wait for the spool to empty: True once it has; False when the endpoint still fails, or on time."""
    outcome, failures = kick_spool(delivery)
    while outcome is None:
        left = _remaining(deadline)
        if left is not None and left <= 0:
            return False
        time.sleep(SPOOL_FLUSH_POLL if left is None else min(SPOOL_FLUSH_POLL, left))
        outcome = spool_outcome(delivery, failures)
    return outcome


def kick_spool(delivery: Delivery) -> tuple[Optional[bool], int]:
    """Have the worker look at the spool now: (True: it is empty | False: nothing here drains it now |
    None: wait and ask :func:`spool_outcome`, the outage's failures at the kick)."""
    if not delivery.spool_rows():
        return True, 0
    worker = delivery.worker
    if worker.closing or delivery.forking_master or worker.is_worker_thread():
        return False, 0
    failures = delivery.outage.failures
    delivery.outage.due = 0.0  # look now: a probe if in an outage, else a drain
    worker.wake()
    return None, failures


def spool_outcome(delivery: Delivery, failures: int) -> Optional[bool]:
    """True: the spool is empty; False: a probe failed since the kick, or the handler closed; None: not yet."""
    if not delivery.spool_rows():
        return True
    if delivery.outage.failures != failures or delivery.worker.closing:
        return False
    return None


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
