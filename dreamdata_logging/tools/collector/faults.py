"""Fault injection for the collector: scripted answers (error statuses, stalls, dropped connections) and outages."""

from __future__ import annotations

import collections
import json
import threading
from dataclasses import dataclass, field
from typing import Deque, Dict, Mapping, Optional, Tuple


@dataclass(frozen=True)
class Fault:
    """One injected answer; see :meth:`Collector.script` and :meth:`Collector.set_down`."""

    status: int = 503
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. {"Retry-After": "2"}
    body: str = ""
    delay: float = 0.0  # seconds to stall before answering; stop() ends the stall early
    drop: bool = False  # read the request, then close the connection without answering

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise ValueError(f"Fault status must be 200..599, not {self.status}")
        if self.delay < 0:
            raise ValueError("Fault delay must be >= 0")

    def answer(self) -> Tuple[bytes, Dict[str, str]]:
        """The body and headers to answer with (a body without a ``Content-Type`` gets one)."""
        body = self.body.encode("utf-8")
        headers = dict(self.headers)
        if body and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json" if _is_json(body) else "text/plain; charset=utf-8"
        return body, headers


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


class FaultInjection:
    """The faults waiting for the next requests, and the outage (a fault for every request) if one is set."""

    def __init__(self) -> None:
        self._faults_lock = threading.Lock()
        self._faults: Deque[Fault] = collections.deque()
        self._down: Optional[Fault] = None

    def script(self, *faults: Fault) -> None:
        """Queue faults: each next request consumes one (FIFO) instead of normal handling."""
        with self._faults_lock:
            self._faults.extend(faults)

    def set_down(self, fault: Optional[Fault]) -> None:
        """While set, every request gets ``fault`` (scripted faults wait); None brings it back up."""
        with self._faults_lock:
            self._down = fault

    def _next_fault(self) -> Optional[Fault]:
        with self._faults_lock:
            if self._down is not None:
                return self._down
            return self._faults.popleft() if self._faults else None
