"""What the caller's thread may do to a message before it is queued: ``before_send`` and the tracking plan.

A handler with neither builds message bytes directly (``_message.build_message``) and never comes here.
With ``before_send``, the message is built, decoded to the dict that would be sent, handed to the hook,
and what the hook returns is checked and serialised as any event is (the size rules apply after it).
With only a plan, the plan sees the message's fields while it is built: no second serialisation.

Filtered events (``before_send`` returned None, or the plan's ``"drop"`` policy) are counted in
``filtered``; like ``invalid`` ones they never enter ``emitted``. Each event that breaks the plan is
counted once in ``plan_violations`` and reported, rate-limited by event name and field.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from dreamdata_logging import _options as options
from dreamdata_logging._diagnostics import Report
from dreamdata_logging.delivery.problems import safe_text
from dreamdata_logging.errors import InvalidEventError
from dreamdata_logging.events import encoding
from dreamdata_logging.events.message import build_message
from dreamdata_logging.wire.plan import TrackingPlan, Violation, load_plan

if TYPE_CHECKING:
    from dreamdata_logging.delivery.delivery import Delivery

BeforeSend = Callable[[dict[str, Any]], Any]
POLICIES = ("report", "drop")
#: Distinct kinds (event name and field) of plan violations reported separately; past this, one kind.
MAX_PLAN_KINDS = 64
_NO_LIMIT = sys.maxsize  # the message before before_send: the size rules apply to what it returns


class _Dropped(Exception):
    """The plan's "drop" policy: the event is not sent."""


def _as_json(value: Any) -> Any:
    """``value`` as it is sent: what the encoder makes of dates, decimals, tuples..."""
    return encoding.loads(encoding.dumps(value))


class Shaper:
    """Runs ``before_send`` and the tracking plan on each event, in the caller's thread."""

    def __init__(
        self, delivery: Delivery, before_send: Optional[BeforeSend], plan: Optional[TrackingPlan], policy: str
    ) -> None:
        self._delivery = delivery  # its counters and reports are renewed in a new process: look them up
        self.before_send = before_send
        self.plan = plan
        self.drop = policy == "drop"
        self._check = self._check_fields if plan is not None else None
        self._kinds: set[str] = set()

    def build(
        self,
        event: Any,
        record: logging.LogRecord,
        defaults: Optional[Mapping[str, Any]],
        extra_fields: Optional[Mapping[str, Any]],
        name: Optional[str],
    ) -> Optional[bytes]:
        """The message bytes to queue, or None when the event was filtered (and counted)."""
        try:
            if self.before_send is None:
                return build_message(event, record, defaults, extra_fields, name, self._check)
            message = encoding.loads(build_message(event, record, defaults, extra_fields, name, limit=_NO_LIMIT))
            result = self._call_hook(message)
            if result is None:
                self._delivery.ledger.add("filtered")
                return None
            try:
                return build_message(result, record, check=self._check)
            except InvalidEventError as error:
                raise InvalidEventError(f"{error.reason} (in what before_send returned)", error.event) from None
        except _Dropped:
            self._delivery.ledger.add("filtered")
            return None

    def _call_hook(self, message: dict[str, Any]) -> Optional[Mapping[str, Any]]:
        assert self.before_send is not None
        try:
            result = self.before_send(message)
        except Exception as exc:
            raise InvalidEventError(f"before_send raised {safe_text(exc)}") from exc
        if result is not None and not isinstance(result, Mapping):
            raise InvalidEventError(f"before_send must return the message or None, not {type(result).__name__}")
        return result

    def _check_fields(self, kind: str, message: dict[str, Any]) -> None:
        """The plan's check of a message being built: a failure is confirmed on the values as sent."""
        plan = self.plan
        assert plan is not None
        if plan.check(message, kind) is None:
            return
        violation = plan.confirm(message, kind, _as_json)
        if violation is None:
            return
        self.violated(violation)
        if self.drop:
            raise _Dropped

    def violated(self, violation: Violation) -> None:
        delivery = self._delivery
        delivery.ledger.add("plan_violations")
        delivery.sink.violation(violation)  # a test's capture collects it
        outcome = "dropped" if self.drop else "sent anyway"
        text = f"event does not follow the tracking plan ({outcome}): {violation}"
        delivery.report(Report.PLAN_VIOLATION, text, detail=self._detail(violation.kind))

    def _detail(self, kind: str) -> str:
        """The violation's event name and field, reported apart from others (up to MAX_PLAN_KINDS of them)."""
        detail = kind[:120]
        if detail not in self._kinds:
            if len(self._kinds) >= MAX_PLAN_KINDS:
                return "other"
            self._kinds.add(detail)
        return detail


def make_shaper(
    delivery: Delivery,
    before_send: Optional[BeforeSend],
    tracking_plan: Union[None, str, os.PathLike[str], TrackingPlan],
    plan_policy: str,
) -> Optional[Shaper]:
    """A :class:`Shaper` when the handler has a ``before_send`` or a plan; None (no cost at all) otherwise."""
    policy = plan_policy.strip().lower() if isinstance(plan_policy, str) else plan_policy
    if policy not in POLICIES:
        raise ValueError(f"plan_policy must be 'report' or 'drop', got {plan_policy!r}")
    if not isinstance(tracking_plan, TrackingPlan):
        tracking_plan = options.as_path("tracking_plan", tracking_plan)  # "" or "none" from a config file: none
    plan = load_plan(tracking_plan) if tracking_plan is not None else None
    if before_send is None and plan is None:
        return None
    return Shaper(delivery, before_send, plan, policy)
