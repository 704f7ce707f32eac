"""The ledger: every event's outcome for one handler, in one process.

One ledger lives as long as the handler lives in a process: across ``close()`` and the reopen that
follows, whatever number of workers the handler went through. A new process starts a new one at zero
(the parent's events are the parent's). Each outcome is counted once, where it is decided:

- the buffers count what they took (``accepted``) and refused for want of room (``dropped_queue_full``);
- the handler counts what it left out (``skipped``, ``invalid``, ``filtered``); its sink, what it built
  without sending (``unsent`` with ``send=False``, ``captured`` by a test) or refused at exit (``dropped_closed``);
- the dispatcher counts each batch's fate (``delivered``, ``failed``, ``spool_written``, ...).

At every quiet point (nothing being handed over between two of them):

    emitted = delivered + failed + dropped_queue_full + dropped_closed + queued + spool_written
              + unsent + captured

where ``queued`` is what the handler's buffers still hold, in flight included.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dreamdata_logging.delivery.buffer import Buffer

#: Outcomes counted by name (``Ledger.add``); the buffers' own counts come on top of these.
OUTCOMES = (
    "skipped",
    "invalid",
    "filtered",
    "plan_violations",
    "unsent",
    "captured",
    "dropped_closed",
    "delivered",
    "failed",
    "batches",
    "spool_written",
    "spool_delivered",
    "spool_dropped",
)


class Ledger:
    """Counts every outcome once. Additions take a re-entrant lock (a signal handler may interrupt an
    addition on its own thread); reads are plain."""

    skipped: int
    invalid: int
    filtered: int
    plan_violations: int
    unsent: int
    captured: int
    dropped_closed: int
    delivered: int
    failed: int
    batches: int
    spool_written: int
    spool_delivered: int
    spool_dropped: int

    def __init__(self) -> None:
        self._lock = threading.RLock()
        for name in OUTCOMES:
            setattr(self, name, 0)
        # Buffers this handler has used in this process and that may still change; finished ones are folded in.
        self._buffers: list[Buffer] = []
        self._folded_accepted = 0
        self._folded_full = 0

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    # -- the buffers ----------------------------------------------------------------------------

    def attach(self, buffer: Buffer) -> None:
        """Count what ``buffer`` takes from now on (a new worker's, after a reopen)."""
        with self._lock:
            self._fold_finished()
            self._buffers.append(buffer)

    def _fold_finished(self) -> None:
        """Buffers that are sealed (no message can enter) and empty will never change again: keep their sums."""
        keep = []
        for buffer in self._buffers:
            if buffer.sealed and buffer.held == 0:
                self._folded_accepted += buffer.accepted
                self._folded_full += buffer.dropped_full
            else:
                keep.append(buffer)
        self._buffers = keep

    @property
    def accepted(self) -> int:
        return self._folded_accepted + sum(buffer.accepted for buffer in list(self._buffers))

    @property
    def dropped_queue_full(self) -> int:
        return self._folded_full + sum(buffer.dropped_full for buffer in list(self._buffers))

    @property
    def queued(self) -> int:
        """Messages in the handler's buffers now: waiting, or in a request being sent."""
        return sum(buffer.held for buffer in list(self._buffers))

    @property
    def emitted(self) -> int:
        return self.accepted + self.dropped_queue_full + self.dropped_closed + self.unsent + self.captured

    def counts(self) -> dict[str, int]:
        """Every count, read as close to one instant as plain reads allow."""
        with self._lock:
            self._fold_finished()
            return {
                "emitted": self.emitted,
                "skipped": self.skipped,
                "invalid": self.invalid,
                "filtered": self.filtered,
                "plan_violations": self.plan_violations,
                "unsent": self.unsent,
                "captured": self.captured,
                "dropped_queue_full": self.dropped_queue_full,
                "dropped_closed": self.dropped_closed,
                "delivered": self.delivered,
                "failed": self.failed,
                "batches": self.batches,
                "queued": self.queued,
                "spool_written": self.spool_written,
                "spool_delivered": self.spool_delivered,
                "spool_dropped": self.spool_dropped,
            }
