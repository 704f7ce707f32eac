"""The collector's tracking plan (``--plan``): how each accepted message breaks it, and how many did.

Messages that break the plan are accepted, as the real endpoint accepts them; the debugger page flags
them beside the refusals and the command prints them under their request's line.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional, Union

from dreamdata_logging.wire.plan import TrackingPlan, load_plan

PlanSource = Union[str, "os.PathLike[str]", TrackingPlan, None]
Flags = Optional[List[Optional[str]]]


class PlanCheck:
    """Mixed into the collector: ``plan_violations``, and the check of each accepted batch."""

    _lock: threading.Lock
    _plan: Optional[TrackingPlan]
    _plan_violations: int

    def _init_plan(self, plan: PlanSource) -> None:
        self._plan = load_plan(plan) if plan is not None else None
        self._plan_violations = 0

    @property
    def plan_violations(self) -> int:
        """How many accepted messages broke the tracking plan (``plan=``) since the start or ``reset()``."""
        with self._lock:
            return self._plan_violations

    def _check_plan(self, messages: Optional[List[Dict[str, Any]]]) -> Flags:
        """For each accepted message, how it breaks the plan (None: it follows it); None without a plan."""
        if not messages or self._plan is None:
            return None
        flags = [None if v is None else v.with_value() for v in map(self._plan.check, messages)]
        broken = sum(flag is not None for flag in flags)
        if broken:
            with self._lock:
                self._plan_violations += broken
        return flags
