"""Outage mode and the spool's drain (only with ``spool=``).

A batch not delivered within SPOOL_AFTER seconds goes to the spool instead of being retried for the
whole retry budget, and the worker enters *outage mode*: live batches go straight to the spool while
one small spooled batch probes the endpoint with a single attempt, after SPOOL_RETRY_BASE seconds,
doubling up to SPOOL_RETRY_CAP. A 2xx ends it, and the spool drains whenever no live batch is waiting.
Rows are leased for about as long as the send that holds them may take, so a process killed mid-send
strands them for seconds, not minutes.
"""

from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass
from typing import Callable

from dreamdata_logging.spool.spool import Claim, Spool, SpoolUnavailable
from dreamdata_logging.transport.transport import DEFAULT_TIMEOUT

#: Seconds a live batch may take (retries included) before it goes to the spool.
SPOOL_AFTER = 15.0
#: Backoff between probes during an outage: the first after about SPOOL_RETRY_BASE seconds, doubling to the cap.
SPOOL_RETRY_BASE = 1.0
SPOOL_RETRY_CAP = 60.0
#: Seconds of close()'s deadline kept for writing what is left to the spool.
SPOOL_RESERVE = 0.5
#: Seconds between looks at a spool that was empty (other processes, expired leases).
SPOOL_POLL_INTERVAL = 30.0
#: Most messages a probe risks.
PROBE_MESSAGES = 20
#: Seconds a lease outlives the send that holds it (the send's own deadline bounds it).
LEASE_MARGIN = 10.0


@dataclass(frozen=True)
class SpoolTiming:
    """How soon a live batch goes to the spool, and how often an outage is probed (tests shorten these)."""

    after: float = SPOOL_AFTER  # seconds a live batch may take, retries included
    retry_base: float = SPOOL_RETRY_BASE  # the first probe after about this, doubling...
    retry_cap: float = SPOOL_RETRY_CAP  # ...up to this


DEFAULT_SPOOL_TIMING = SpoolTiming()


class OutageState:
    """Whether the endpoint is failing, and when the spool is next worth a look."""

    def __init__(self, timing: SpoolTiming = DEFAULT_SPOOL_TIMING) -> None:
        self.timing = timing
        self.active = False
        self.due = 0.0  # time.monotonic() of the next look at the spool
        self._failures = 0  # in a row, for the backoff
        self.failures = 0  # in all: a flush() waiting for the spool sees a probe fail by it

    def failed(self) -> None:
        """The endpoint failed: outage mode, and the next probe after a growing backoff."""
        self.active = True
        timing = self.timing
        delay = min(timing.retry_cap, timing.retry_base * 2 ** min(self._failures, 30))
        self._failures += 1
        self.failures += 1
        self.due = time.monotonic() + random.uniform(delay / 2, delay)

    def recovered(self) -> None:
        """A 2xx: leave outage mode, and drain the spool now."""
        if self.active or self._failures:
            self._failures = 0
            self.due = 0.0
        self.active = False

    def idle(self) -> None:
        """The spool was empty: nothing to probe with; live batches find out for themselves."""
        self.active = False
        self.due = time.monotonic() + SPOOL_POLL_INTERVAL


class ClaimOutcome(enum.Enum):
    """What became of one send of spooled rows, and so what the drain does with them."""

    DELIVERED = "delivered"  # the endpoint took them: acknowledge (delete) the rows, go on draining
    TOO_LARGE = "too large"  # refused for its size or for some of its messages: give back, claim fewer, go on
    REFUSED = "refused"  # one message the endpoint refuses for good: delete it, go on draining
    NOT_NOW = "not now"  # the endpoint fails, or live events wait: give the rows back and stop for now


#: What sends one claim: (claim, seconds the send may take, single attempt?) -> its outcome.
SendClaim = Callable[[Claim, float, bool], ClaimOutcome]


class SpoolDrain:
    """Sends spooled batches while no live batch waits: acks on a 2xx, releases (and backs off) otherwise."""

    def __init__(self, spool: Spool, state: OutageState, send_claim: SendClaim, flush_at: int, body_room: int) -> None:
        self._spool = spool
        self._state = state
        self._send_claim = send_claim
        self._flush_at = flush_at
        self._body_room = body_room
        self._claim_limit = flush_at  # halved after a 413 from the endpoint
        self._timeout = DEFAULT_TIMEOUT  # one request's time: set by the owner from the transport

    def set_request_timeout(self, seconds: float) -> None:
        self._timeout = seconds

    def run(self, live_waiting: Callable[[], bool], closing: Callable[[], bool]) -> None:
        state = self._state
        while not closing() and time.monotonic() >= state.due:
            if live_waiting():
                return  # live events first; the next wake comes back here
            probe = state.active
            # A probe risks one small batch and one attempt; a drain may retry within SPOOL_AFTER.
            limit = self._timeout if probe else state.timing.after
            count = min(PROBE_MESSAGES, self._claim_limit) if probe else self._claim_limit
            try:
                claim = self._spool.claim(count, self._body_room, lease_seconds=limit + LEASE_MARGIN)
            except SpoolUnavailable:  # reported by the spool
                claim = None
            if claim is None:
                state.idle()
                return
            outcome = self._send_claim(claim, limit, probe)
            if not self._settle(claim, outcome):
                return

    def _settle(self, claim: Claim, outcome: ClaimOutcome) -> bool:
        """Ack, release or discard the claim's rows; True to go on draining."""
        try:
            if outcome is ClaimOutcome.DELIVERED:
                self._spool.ack(claim)
                self._claim_limit = self._flush_at
                return True
            if outcome is ClaimOutcome.TOO_LARGE and len(claim) > 1:
                self._spool.release(claim)  # the endpoint's limit is lower than ours: smaller claims
                self._claim_limit = max(1, len(claim) // 2)
                return True
            if outcome is ClaimOutcome.REFUSED:
                self._spool.discard(claim)  # refused as invalid: sending them again would fail again
                return True
            self._spool.release(claim)
        except SpoolUnavailable:  # the rows stay leased until the lease runs out, then go again
            return outcome is ClaimOutcome.DELIVERED
        return False
