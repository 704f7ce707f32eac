"""uWSGI's master when it loads the app and forks the workers from it (no ``--lazy-apps``).

- Workers: uWSGI forks in C, so Python's fork hooks do not run there. A handler notices the new process
  at its first event (by process id) and starts over; and from uWSGI's ``post_fork_hook`` (through
  ``uwsgidecorators``' chain when that module is in use) every handler starts over right after the fork,
  so a spool found at start is drained by the workers even when they log nothing.
- Master: it runs no Python exit hooks, and a thread of ours there could hold a lock (or be mid-request)
  when the master forks a worker, so no thread is ever started there. An event logged in the master (at
  import, say) is written to the spool when there is one (the workers send it), else it is sent at once
  from the caller's thread, within ``shutdown_timeout``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

from dreamdata_logging.delivery.buffer import ACCEPTED, READY
from dreamdata_logging.delivery.dispatch import Fate
from dreamdata_logging.errors import DeliveryError
from dreamdata_logging.spool.spool import SpoolUnavailable

if TYPE_CHECKING:
    from dreamdata_logging.delivery.problems import Problems
    from dreamdata_logging.delivery.worker import Worker
    from dreamdata_logging.spool.spool import Spool
    from dreamdata_logging.transport.transport import Transport

#: Marks our post-fork hook (so it is installed once).
_MARK = "_dreamdata_logging_post_fork"
#: Seconds to wait for the deadline thread of a send from the master to end (it ends at once when told).
THREAD_END = 5.0


def hook_post_fork(on_fork: Callable[[], None]) -> None:
    """Run ``on_fork`` in each uWSGI worker right after the fork (uWSGI's ``post_fork_hook``), keeping any
    hook already there. Never raises.

    When ``uwsgidecorators`` is imported it owns ``uwsgi.post_fork_hook`` (its ``@postfork`` chain): we join
    that chain. Imported only after this ran, it replaces our hook; the workers then start over at their
    first event instead."""
    uwsgi: Any = sys.modules.get("uwsgi")
    if uwsgi is None:
        return
    try:
        current = getattr(uwsgi, "post_fork_hook", None)
        decorators: Any = sys.modules.get("uwsgidecorators")
        chain = getattr(decorators, "postfork_chain", None)
        if isinstance(chain, list) and current is getattr(decorators, "postfork_chain_hook", None):
            if on_fork not in chain:
                chain.append(on_fork)
            return
        if getattr(current, _MARK, False):
            return

        def post_fork_hook() -> None:
            try:
                on_fork()
            except Exception:  # never in the way of the worker
                pass
            if current is not None:
                current()

        setattr(post_fork_hook, _MARK, True)
        uwsgi.post_fork_hook = post_fork_hook
    except Exception:  # an embedding that does not take the hook: the first event does it
        pass


def from_master(
    worker: Worker, transport: Transport, spool: Optional[Spool], problems: Problems, timeout: float, data: bytes
) -> None:
    """An event logged in a uWSGI master that forks: into the spool (the workers send it), else sent now.

    A send leaves nothing behind that a fork would copy: its connection is closed and the thread that
    enforces its deadline has ended before this returns."""
    if worker.buffer.put(data) not in (ACCEPTED, READY):
        return  # full or closed: counted by the buffer
    if spool is not None:
        batch = worker.buffer.next_batch(force=True)
        if batch is not None:
            _into_spool(worker, transport, spool, problems, *batch)
            return
    try:
        worker.ship_here(timeout)
    finally:
        transport.close(wait=THREAD_END)


def _into_spool(
    worker: Worker, transport: Transport, spool: Spool, problems: Problems, items: list[bytes], size: int
) -> None:
    try:
        dropped = spool.put(items)
    except SpoolUnavailable:  # reported by the spool: send them instead (within the spool's own time limit)
        try:
            fate = worker.dispatcher.deliver(items, size)
            worker.buffer.finish(len(items), size, delivered=fate is Fate.DELIVERED)
        finally:
            transport.close(wait=THREAD_END)
        return
    problems.ledger.add("spool_written", len(items))
    worker.buffer.finish(len(items), size, False)  # kept, not delivered (yet): a flush here says so
    if dropped:
        full = DeliveryError(
            f"the spool {spool.path} is full (spool_max_bytes={spool.max_bytes:,}): "
            f"its {len(dropped)} oldest event(s) were dropped"
        )
        problems.spool_dropped(dropped, full)
