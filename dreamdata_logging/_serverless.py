"""Flush every handler of the process: before a serverless function returns, or at a server's shutdown.

A function platform (AWS Lambda, Google Cloud Functions, Azure Functions) freezes or ends the process
once the function returns, so events still queued may be sent late or never. ``flush()`` waits for them;
``@flush_after`` does it after each call, within the time the platform has left.
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any, Callable, Optional, TypeVar, Union, cast, overload

from dreamdata_logging.delivery import lifecycle as _lifecycle

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds ``@flush_after`` leaves of a Lambda invocation's remaining time, for the platform's own work.
DEFAULT_MARGIN = 0.5


def flush(timeout: Optional[float] = None) -> bool:
    """Wait until every event emitted so far, by every ``DreamdataHandler`` of the process, is delivered.

    ``timeout`` bounds the whole call, in seconds; ``None`` gives each handler its own
    ``shutdown_timeout`` (counted from the call, so the call takes at most the largest of them).
    Returns True when every event was delivered, False when some were not (yet), and never raises.
    With nothing queued it returns at once.
    """
    return _flush_all(timeout, None)


def _flush_all(timeout: Optional[float], cap: Optional[float]) -> bool:
    start = time.monotonic()
    delivered = True
    for handler in _lifecycle.handlers():
        if handler.closed:  # closed: it delivered what it could and takes no more
            continue
        try:
            bound = handler.shutdown_timeout if timeout is None else timeout
            if cap is not None:
                bound = min(bound, cap)
            delivered = handler.flush(timeout=max(0.0, start + bound - time.monotonic())) and delivered
        except Exception:  # a handler in a broken state must not fail the function that flushes
            delivered = False
    return delivered


def _remaining(args: tuple[Any, ...], kwargs: dict[str, Any], margin: float) -> Optional[float]:
    """Seconds left of a Lambda invocation (its context is the second argument), less ``margin``."""
    for candidate in (*args[1:2], kwargs.get("context")):
        remaining = getattr(candidate, "get_remaining_time_in_millis", None)
        if callable(remaining):
            try:
                return max(0.0, float(remaining()) / 1000.0 - margin)
            except Exception:
                return None
    return None


@overload
def flush_after(function: F) -> F: ...


@overload
def flush_after(function: None = None, *, margin: float = DEFAULT_MARGIN) -> Callable[[F], F]: ...


def flush_after(function: Optional[F] = None, *, margin: float = DEFAULT_MARGIN) -> Union[F, Callable[[F], F]]:
    """Decorate a serverless function so that every handler is flushed after each call, even one that raises.

    ::

        @dreamdata_logging.flush_after
        def handler(event, context): ...

    On AWS Lambda (a second argument with ``get_remaining_time_in_millis()``) the flush ends ``margin``
    seconds (default 0.5) before the invocation's time runs out, and within each handler's
    ``shutdown_timeout``; elsewhere within each handler's ``shutdown_timeout``. Works on ``async def``
    functions too. The function's result and exceptions pass through unchanged.
    """
    if function is None:
        return functools.partial(flush_after, margin=margin)
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await function(*args, **kwargs)
            finally:
                _flush_all(None, _remaining(args, kwargs, margin))

        return cast(F, run_async)

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            _flush_all(None, _remaining(args, kwargs, margin))

    return cast(F, run)
