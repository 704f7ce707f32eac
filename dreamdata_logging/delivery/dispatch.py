"""Decides one batch's fate: send it, halve it on a 413 or a 400, keep it in the spool, or give it up.

The one owner of that decision. It knows the transport as a small protocol (``send(batch, deadline=,
cancel=)`` raising :class:`DeliveryError`), so it can be tested with any object that has that method.
"""

from __future__ import annotations

import enum
import threading
from typing import Optional, Protocol, Union

from dreamdata_logging.delivery import outage
from dreamdata_logging.delivery.deadlines import Budget, Deadlines, set_unless_busy
from dreamdata_logging.delivery.outage import ClaimOutcome, OutageState
from dreamdata_logging.delivery.problems import Problems, safe_text
from dreamdata_logging.delivery.refusals import Splits, refused_for_its_messages
from dreamdata_logging.errors import DeliveryError, PayloadTooLargeError
from dreamdata_logging.spool.spool import Claim, Spool, SpoolUnavailable
from dreamdata_logging.wire.rules import Batch

OUTAGE = DeliveryError("the endpoint is unavailable (outage mode)", retryable=True)


class Fate(enum.Enum):
    """What became of a live batch (of a split batch: the worst of its parts')."""

    DELIVERED = 0  # the endpoint took every message
    SPOOLED = 1  # kept in the spool for later delivery (counted in spool_written)
    FAILED = 2  # given up on for good (counted in failed, reported, passed to on_error)

    def worst(self, other: Fate) -> Fate:
        return self if self.value >= other.value else other


class Transport(Protocol):
    """What the dispatcher needs of a transport."""

    timeout: float

    def send(self, batch: Batch, *, deadline: Union[None, float, Budget], cancel: Optional[threading.Event]) -> None:
        """Deliver the batch (retrying what is worth it within ``deadline``) or raise DeliveryError."""


def worth_spooling(error: DeliveryError) -> bool:
    """Whether events that failed with ``error`` may succeed later: network errors, 408, 429, 5xx,
    a deadline, and a rejected write key (fixing the key and restarting then delivers them).

    Not a 400 or an oversized message: sending those again would fail again."""
    return error.retryable or error.status in (401, 403)


class Dispatcher:
    """Sends batches for one worker and settles each: counted, spooled or reported as lost."""

    def __init__(
        self,
        transport: Transport,
        problems: Problems,
        deadlines: Deadlines,
        *,
        spool: Optional[Spool] = None,
        outage: Optional[OutageState] = None,
        own_threads: Optional[set[int]] = None,
    ) -> None:
        self._transport = transport
        self._problems = problems
        self._ledger = problems.ledger
        self._deadlines = deadlines
        self._spool = spool
        self.outage = outage if outage is not None else OutageState()  # the handler's: shared across reopens
        self.cancel = threading.Event()  # set by close() (and by a spill): ends a backoff wait now
        self.own_threads: set[int] = own_threads if own_threads is not None else set()
        self._sending = False
        self._spilling = False

    # -- live batches ---------------------------------------------------------------------------

    def deliver(self, items: list[bytes], size: int, splits: Optional[Splits] = None) -> Fate:
        """Send one batch and settle it. A batch refused for some of its messages
        (400) is split until they are alone, within ``splits`` (see ``_refusals``)."""
        if self._spool is not None and self.outage.active:
            return self._not_delivered(items, OUTAGE)  # the endpoint is failing: straight to the spool
        spooling = self._spool is not None
        budget = Budget(
            self._deadlines,
            limit=self.outage.timing.after if spooling else None,
            reserve=outage.SPOOL_RESERVE if spooling else 0.0,
            stop_retrying=self._spill_requested if spooling else None,
        )
        try:
            self._send(Batch(items, size), budget)
        except PayloadTooLargeError as error:
            if len(items) <= 1:
                return self._not_delivered(items, error)
            return self._halves(items, splits)  # the endpoint's limit is lower than ours: halve and resend
        except DeliveryError as error:
            if refused_for_its_messages(error) and len(items) > 1:
                splits = splits or Splits(len(items))
                if splits.take():
                    return self._halves(items, splits)
                error = splits.spent(error, len(items))
            return self._not_delivered(items, error)
        except Exception as error:  # a bug or an unexpected library error must not kill the thread
            return self._not_delivered(items, self._unexpected(error))
        self._ledger.add("delivered", len(items))
        self._ledger.add("batches")
        self.outage.recovered()
        return Fate.DELIVERED

    def _halves(self, items: list[bytes], splits: Optional[Splits]) -> Fate:
        half = len(items) // 2
        first = self.deliver(items[:half], sum(map(len, items[:half])), splits)
        return self.deliver(items[half:], sum(map(len, items[half:])), splits).worst(first)

    def _not_delivered(self, items: list[bytes], error: DeliveryError) -> Fate:
        spool = self._spool
        if spool is not None and worth_spooling(error):
            if error is not OUTAGE:
                self.outage.failed()
            try:
                dropped = spool.put(items)
            except SpoolUnavailable:  # reported by the spool; the events fail as without one
                pass
            else:
                self._problems.spooled(len(items), error, spool.path)
                if dropped:
                    full = DeliveryError(
                        f"the spool {spool.path} is full (spool_max_bytes={spool.max_bytes:,}): "
                        f"its {len(dropped)} oldest event(s) were dropped"
                    )
                    self._problems.spool_dropped(dropped, full)
                return Fate.SPOOLED
        self._problems.failed(items, error)
        return Fate.FAILED

    # -- spooled batches ------------------------------------------------------------------------

    def send_claim(self, claim: Claim, limit: float, single_attempt: bool) -> ClaimOutcome:
        """Send spooled rows; the outcome tells the drain what to do with them (see :class:`ClaimOutcome`)."""
        budget = Budget(
            self._deadlines,
            limit=limit,
            reserve=outage.SPOOL_RESERVE,
            stop_retrying=(lambda: True) if single_attempt else self._spill_requested,
        )
        try:
            self._send(Batch(claim.messages, claim.size), budget)
        except DeliveryError as error:
            return self._claim_failed(claim, error, budget)
        except Exception as error:  # a bug or an unexpected library error must not kill the thread
            return self._claim_failed(claim, self._unexpected(error), budget)
        self._ledger.add("spool_delivered", len(claim))
        self._ledger.add("batches")
        self.outage.recovered()
        return ClaimOutcome.DELIVERED

    def _claim_failed(self, claim: Claim, error: DeliveryError, budget: Budget) -> ClaimOutcome:
        if budget.stopped and self._spilling:
            return ClaimOutcome.NOT_NOW  # live events are piling up: they go first; this claim waits its turn
        if (isinstance(error, PayloadTooLargeError) or refused_for_its_messages(error)) and len(claim) > 1:
            return ClaimOutcome.TOO_LARGE  # smaller claims, down to one message: a refused one alone is dropped
        if worth_spooling(error) or not error.status:
            self.outage.failed()
            return ClaimOutcome.NOT_NOW
        self._problems.failed(claim.messages, error)
        return ClaimOutcome.REFUSED

    def _unexpected(self, error: Exception) -> DeliveryError:
        """A bug or an unexpected library error, as a failed delivery (its text may quote a URL: scrubbed)."""
        return DeliveryError(self._problems.scrub(f"unexpected error while sending: {safe_text(error)}"))

    # -- one send -------------------------------------------------------------------------------

    def spill(self) -> None:
        """The queue passed its high-water mark: the send under way, or else the next one, stops retrying
        after its attempt (to the spool). Asked between two sends (the callers filled the queue before the
        thread began one), it holds for the next."""
        if not self._spilling:
            self._spilling = True
            if self._sending:
                set_unless_busy(self.cancel)  # ends a backoff wait now (put() may run in a signal handler)

    def _spill_requested(self) -> bool:
        return self._spilling

    def _send(self, batch: Batch, budget: Budget) -> None:
        ident = threading.get_ident()
        ours = ident in self.own_threads
        self.own_threads.add(ident)  # what requests/urllib3 log from here on is about our send
        self._sending = True
        try:
            self._transport.send(batch, deadline=budget, cancel=self.cancel)
        finally:
            self._sending = False
            if self._spilling:
                self._spilling = False
                if self._deadlines.closing is None:  # close() sets the event after setting its deadline
                    self.cancel.clear()
            if not ours:
                self.own_threads.discard(ident)
