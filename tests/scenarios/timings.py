"""Shorter waits for the delivery machinery of a handler under test (imported by tests and by scenario scripts).

The retry backoff is an argument of the transport (:class:`Backoff`) and the spool's timing one of the
delivery (:class:`SpoolTiming`); :func:`tune` gives a handler's parts other values. Nothing in a module is
patched: every other handler, and the policies themselves, stay as they are.
"""

from __future__ import annotations

from typing import Optional

from dreamdata_logging import DreamdataHandler
from dreamdata_logging.delivery.outage import SpoolTiming
from dreamdata_logging.transport.transport import Backoff

#: Retry waits of milliseconds, for tests that retry.
QUICK_BACKOFF = Backoff(base=0.01, cap=0.05)
#: A live batch goes to the spool after a second; an outage is probed every 50 to 200 ms.
QUICK_SPOOL = SpoolTiming(after=1.0, retry_base=0.05, retry_cap=0.2)


def tune(
    handler: DreamdataHandler, *, backoff: Optional[Backoff] = None, spool_timing: Optional[SpoolTiming] = None
) -> DreamdataHandler:
    """``handler``, its transport retrying after ``backoff`` and its delivery spooling on ``spool_timing``."""
    delivery = handler._delivery
    if backoff is not None:
        delivery.transport.backoff = backoff
    if spool_timing is not None:
        delivery.spool_timing = delivery.outage.timing = spool_timing  # this process's, and a forked one's
    return handler
