"""RQ: the events a job logs reach the endpoint before RQ's work horse ends.

RQ runs each job in a forked child, the *work horse*, which ends with ``os._exit()`` as soon as the job
is done: ``atexit`` hooks, ``logging.shutdown()`` and every other exit hook are skipped, so what the job
logged in its last ``flush_interval`` would be lost. One line in the worker process fixes that::

    import dreamdata_logging.rq

    dreamdata_logging.rq.setup()

Call it where the worker process runs it before it forks a work horse: in the settings module given to
``rq worker -c``, or in the script that starts your worker. ``setup()`` wraps RQ's ``perform_job`` (the
work horse's whole job: the function, then the success or failure handling and callbacks); in a work
horse, every ``DreamdataHandler`` then delivers what is queued, each within its ``shutdown_timeout``,
before RQ ends the process. Jobs run without a work horse (``SimpleWorker``) are left alone: their
process delivers at its normal exit.

RQ is imported only when ``setup()`` is called.
"""

from __future__ import annotations

import functools
import importlib
import threading
from typing import Any, Callable

from dreamdata_logging.delivery import lifecycle

_MARK = "_dreamdata_logging_delivers"
_setup_lock = threading.Lock()


def setup() -> None:
    """Deliver every handler's events at the end of each job in an RQ work horse. Calling it again does nothing."""
    worker_module: Any = importlib.import_module("rq.worker")  # imported here: only setup() needs RQ
    owner = next(cls for cls in worker_module.Worker.__mro__ if "perform_job" in vars(cls))
    with _setup_lock:
        original = owner.perform_job
        if getattr(original, _MARK, False):
            return
        owner.perform_job = _delivering(original)


def _delivering(perform_job: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(perform_job)
    def perform_job_then_deliver(worker: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return perform_job(worker, *args, **kwargs)
        finally:
            if getattr(worker, "is_horse", False):  # RQ ends this process with os._exit() next
                deliver_now()

    setattr(perform_job_then_deliver, _MARK, True)
    return perform_job_then_deliver


def deliver_now() -> None:
    """Deliver what every handler of this process holds, within each one's ``shutdown_timeout``; never raises."""
    try:
        lifecycle.deliver_before_exit()
    except Exception:  # a job runner's own end must never fail because of analytics
        pass
