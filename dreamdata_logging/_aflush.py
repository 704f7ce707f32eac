"""``await aflush()``: flush from asyncio code without blocking the event loop.

The coroutine asks the worker thread to send everything queued (as ``flush()`` does), then polls the
buffer's counters with ``asyncio.sleep`` between looks (from 1 ms, doubling, to 50 ms): no thread is made
or borrowed for the wait, and other tasks run meanwhile. The same limits as ``flush()`` hold: nothing to
wait for in the worker thread or with logging's lock held; where no thread can run (interpreter exit) the
events are shipped inline first.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Optional

from dreamdata_logging.delivery import flushing, lifecycle

if TYPE_CHECKING:
    from dreamdata_logging.delivery.delivery import Delivery
    from dreamdata_logging.delivery.worker import Worker

FIRST_POLL = 0.001
LAST_POLL = 0.05


async def aflush(timeout: Optional[float] = None) -> bool:
    """Await delivery of every event emitted so far by every ``DreamdataHandler`` of the process.

    As :func:`dreamdata_logging.flush`, without blocking the event loop: ``timeout`` bounds the whole call,
    ``None`` gives each handler its own ``shutdown_timeout``. True when every event was delivered; never raises
    (but may be cancelled, like any coroutine: the events keep going out from the worker thread).
    """
    start = time.monotonic()
    delivered = True
    for handler in lifecycle.handlers():
        if handler.closed:  # closed: it delivered what it could and takes no more
            continue
        try:
            bound = handler.shutdown_timeout if timeout is None else timeout
            delivered = await handler.aflush(max(0.0, start + bound - time.monotonic())) and delivered
        except Exception:  # a handler in a broken state must not fail the caller
            delivered = False
    return delivered


async def flush_worker(worker: Worker, timeout: Optional[float]) -> Optional[bool]:
    """Await the worker's delivery of what it holds now (see :meth:`DreamdataHandler.aflush`): True when
    all was delivered, False when some was not, None when some is still held (time ran out)."""
    buffer = worker.buffer
    if buffer.idle or worker.pid != os.getpid():
        return True  # nothing held (or nothing of this process's)
    if lifecycle.logging_lock_held() or worker.is_worker_thread():
        return True if buffer.empty else None  # the worker may need that lock, or is the caller
    marked = worker.begin_flush(timeout)
    if marked is None:
        return True
    target, start = marked
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = FIRST_POLL
    while buffer.finished < target:  # a plain int, read without the lock
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return None
        await asyncio.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, LAST_POLL)
    return buffer.wait_finished(target, start, 0)  # finished: True unless some were given up on



async def flush_delivery(delivery: Delivery, timeout: Optional[float]) -> bool:
    """As ``Delivery.flush``, awaited: every worker still holding events, then the spool (see its docs)."""
    workers = delivery.workers()
    if not workers:
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    lost = flushing.lost(delivery)
    delivered = True
    for worker in workers:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        outcome = await flush_worker(worker, left)
        if outcome is None:  # time ran out with events still in memory: neither delivered nor spooled
            return False
        delivered = outcome and delivered
    if delivery.spool is None or lifecycle.logging_lock_held():
        return delivered
    outcome, failures = flushing.kick_spool(delivery)
    pause = FIRST_POLL
    while outcome is None:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        await asyncio.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, LAST_POLL)
        outcome = flushing.spool_outcome(delivery, failures)
    return outcome and (delivered or flushing.lost(delivery) == lost)
