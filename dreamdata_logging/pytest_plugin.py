"""The pytest plugin installed with the package (entry point ``pytest11``): the ``dreamdata_events`` fixture.

::

    def test_signup_is_tracked(dreamdata_events):
        signup("019mr8mf4r", plan="pro")
        dreamdata_events.assert_tracked("Signed Up", plan="pro")

While the fixture is in use, every ``DreamdataHandler`` in the process, whenever it was made, hands its
events to the fixture instead of sending them. Disable the plugin with ``-p no:dreamdata_logging``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dreamdata_logging import testing
from dreamdata_logging.testing import CapturedEvents

__all__ = ["dreamdata_events"]

#: The write key the fixture puts in ``DREAMDATA_WRITE_KEY`` when that is unset, so that code under
#: test can make handlers; nothing is sent with it while the fixture is active.
FIXTURE_WRITE_KEY = "dreamdata-events-fixture"


@pytest.fixture
def dreamdata_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[CapturedEvents]:
    """The messages every ``DreamdataHandler`` would send during the test, captured with no network.

    ``.messages`` (dicts in wire spelling), ``.of_type(t)``, ``.tracks(event=None)``, ``.identifies()``,
    ``.pages()``, ``.screens()``, ``.groups()``, ``.aliases()``, ``.find(**fields)``,
    ``.assert_tracked(event, **properties)``, ``.invalid``, ``.assert_nothing_invalid()``,
    ``.plan_violations`` and ``.assert_plan_followed()`` (handlers with a ``tracking_plan``),
    ``.check_plan(path)``, ``.clear()``.
    """

    if not os.environ.get("DREAMDATA_WRITE_KEY"):
        monkeypatch.setenv("DREAMDATA_WRITE_KEY", FIXTURE_WRITE_KEY)
    events = testing.start()
    try:
        yield events
    finally:
        testing.stop(events)
