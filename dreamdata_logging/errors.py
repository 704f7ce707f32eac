"""Exceptions raised or reported by dreamdata-logging."""

from __future__ import annotations

from typing import Optional


class DreamdataError(Exception):
    """Base class of every error this library reports."""


class InvalidEventError(DreamdataError, ValueError):
    """An event cannot be turned into a valid message; it is dropped on its own."""

    def __init__(self, reason: str, event: str = "event") -> None:
        super().__init__(f"{event} dropped: {reason}")
        self.reason = reason
        self.event = event


class DeliveryError(DreamdataError):
    """A batch could not be delivered (after any retries)."""

    def __init__(self, message: str, *, status: Optional[int] = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class PayloadTooLargeError(DeliveryError):
    """The endpoint answered 413: the batch must be split."""


class QueueFullError(DreamdataError):
    """Events were dropped because the in-memory queue was full (the endpoint is down, or slower than the
    events come). ``dropped`` is how many were dropped since the last such error."""

    def __init__(self, message: str, *, dropped: int) -> None:
        super().__init__(message)
        self.dropped = dropped
