"""Capture the messages every ``DreamdataHandler`` would send, without any network: for tests.

With pytest, use the ``dreamdata_events`` fixture (installed with the package). Elsewhere::

    from dreamdata_logging.testing import capture

    with capture() as events:
        signup("019mr8mf4r")
    events.assert_tracked("Signed Up", plan="pro")

While a capture is active, every handler in the process (made before or during it) hands each valid
event to the capture instead of its queue, so nothing is sent; invalid events are collected too. The
capture does it by swapping in its own sink on each handler's delivery (see
:mod:`dreamdata_logging.delivery.sink`) and putting the queue back when the last capture ends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Optional

from dreamdata_logging.delivery import lifecycle
from dreamdata_logging.errors import InvalidEventError

if TYPE_CHECKING:
    from dreamdata_logging._handler import DreamdataHandler
    from dreamdata_logging.delivery.delivery import Delivery
    from dreamdata_logging.delivery.worker import Worker
    from dreamdata_logging.wire.plan import Violation

__all__ = ["CapturedEvents", "capture"]

#: The captures in force; while this is non-empty every handler's delivery has a :class:`_CaptureSink`.
active: list[CapturedEvents] = []
_active_lock = threading.Lock()

# snake_case spellings accepted by find() for the wire's camelCase fields
_WIRE_NAMES = {
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "group_id": "groupId",
    "previous_id": "previousId",
    "message_id": "messageId",
}


class CapturedEvents:
    """The messages captured so far, decoded to dicts in wire spelling, in the order they were logged."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        #: Events the handler refused (no user id, wrong field type, too big...), as the errors it raised.
        self.invalid: list[InvalidEventError] = []
        #: How events broke a handler's tracking plan (``tracking_plan=``): one per event, sent or dropped.
        self.plan_violations: list[Violation] = []

    # -- fed by the handler ------------------------------------------------------------------------

    def _add(self, data: bytes) -> None:
        self.messages.append(json.loads(data))

    def _add_invalid(self, error: InvalidEventError) -> None:
        self.invalid.append(error)

    def _add_violation(self, violation: Violation) -> None:
        self.plan_violations.append(violation)

    # -- reading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self.messages))

    def __repr__(self) -> str:
        return (
            f"<CapturedEvents {len(self.messages)} message(s), {len(self.invalid)} invalid, "
            f"{len(self.plan_violations)} breaking the tracking plan>"
        )

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """The messages of one type: ``"track"``, ``"identify"``, ``"page"``, ``"screen"``, ``"group"``, ``"alias"``."""
        return [m for m in self.messages if m.get("type") == kind]

    def tracks(self, event: Optional[str] = None) -> list[dict[str, Any]]:
        """Track messages, only those named ``event`` when it is given."""
        return [m for m in self.of_type("track") if event is None or m.get("event") == event]

    def identifies(self) -> list[dict[str, Any]]:
        return self.of_type("identify")

    def pages(self) -> list[dict[str, Any]]:
        return self.of_type("page")

    def screens(self) -> list[dict[str, Any]]:
        return self.of_type("screen")

    def groups(self) -> list[dict[str, Any]]:
        return self.of_type("group")

    def aliases(self) -> list[dict[str, Any]]:
        return self.of_type("alias")

    def find(self, **fields: Any) -> list[dict[str, Any]]:
        """Messages whose top-level fields equal the ones given: ``find(event="Signed Up", user_id="42")``.

        Keywords may be in wire spelling (``userId``) or snake_case (``user_id``); ``type=`` selects a type.
        """
        wanted = {_WIRE_NAMES.get(key, key): value for key, value in fields.items()}
        return [m for m in self.messages if all(key in m and m[key] == value for key, value in wanted.items())]

    def assert_tracked(self, event: str, **properties: Any) -> dict[str, Any]:
        """Assert that a track named ``event`` was captured whose properties include ``properties``.

        Returns the first such message. The error lists what was tracked instead.
        """
        named = self.tracks(event)
        for message in named:
            got = message.get("properties") or {}
            if all(key in got and got[key] == value for key, value in properties.items()):
                return message
        tracked = [m.get("event") for m in self.tracks()]
        if not named:
            raise AssertionError(f"no track {event!r} was captured; tracked: {tracked!r}")
        raise AssertionError(
            f"track {event!r} was captured {len(named)} time(s), but none with properties including "
            f"{properties!r}; their properties: {[m.get('properties') for m in named]!r}"
        )

    def assert_nothing_invalid(self) -> None:
        """Assert that no event was refused as invalid."""
        if self.invalid:
            raise AssertionError(f"{len(self.invalid)} invalid event(s): " + "; ".join(map(str, self.invalid)))

    def assert_plan_followed(self) -> None:
        """Assert that no event broke a handler's tracking plan."""
        if self.plan_violations:
            raise AssertionError(
                f"{len(self.plan_violations)} event(s) broke the tracking plan: "
                + "; ".join(violation.with_value() for violation in self.plan_violations)
            )

    def check_plan(self, plan: Any) -> list[Violation]:
        """How the captured messages break the tracking plan ``plan`` (a file path), whatever the handlers' plans."""
        from dreamdata_logging.wire.plan import load_plan

        checked = load_plan(plan)
        return [v for v in map(checked.check, self.messages) if v is not None]

    def clear(self) -> None:
        """Forget what was captured so far."""
        self.messages.clear()
        self.invalid.clear()
        self.plan_violations.clear()


class _CaptureSink:
    """A handler's sink while a capture is active: every capture gets the events; nothing is queued or sent."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery  # its ledger is renewed in a new process: looked up on every use

    def message(self, data: bytes, worker: Worker) -> None:
        feed(data)
        self._delivery.ledger.add("captured")

    def invalid(self, error: InvalidEventError) -> None:
        feed_invalid(error)

    def violation(self, violation: Violation) -> None:
        feed_violation(violation)


def _capture_from(handler: DreamdataHandler) -> None:
    delivery = handler._delivery
    if not isinstance(delivery.sink, _CaptureSink):
        delivery.sink = _CaptureSink(delivery)


def _release(handler: DreamdataHandler) -> None:
    delivery = handler._delivery
    if isinstance(delivery.sink, _CaptureSink):
        delivery.sink = delivery.queue


def start(events: Optional[CapturedEvents] = None) -> CapturedEvents:
    """Begin capturing into ``events`` (a new one by default); end it with :func:`stop`."""
    events = events if events is not None else CapturedEvents()
    with _active_lock:
        active.append(events)
        if len(active) == 1:  # the first capture: every handler, and each one made from now on, captures
            lifecycle.on_register.append(_capture_from)
            for handler in lifecycle.handlers():
                _capture_from(handler)
    return events


def stop(events: CapturedEvents) -> None:
    """End the capture into ``events``; when it was the last one, every handler goes back to its queue."""
    with _active_lock:
        for index, item in enumerate(active):
            if item is events:
                del active[index]
                break
        else:
            return
        if not active:
            if _capture_from in lifecycle.on_register:
                lifecycle.on_register.remove(_capture_from)
            for handler in lifecycle.handlers():
                _release(handler)


@contextmanager
def capture() -> Iterator[CapturedEvents]:
    """Capture, inside the block, what every ``DreamdataHandler`` would send; nothing is sent."""
    events = start()
    try:
        yield events
    finally:
        stop(events)


def feed(data: bytes) -> None:
    """Called by a capturing sink for each valid event."""
    for events in list(active):
        events._add(data)


def feed_invalid(error: InvalidEventError) -> None:
    for events in list(active):
        events._add_invalid(error)


def feed_violation(violation: Violation) -> None:
    for events in list(active):
        events._add_violation(violation)
