"""``bind()``: request-scoped defaults (who the user is) for every event emitted inside a block.

The bindings live in a :class:`contextvars.ContextVar`, so they follow the code that set them: each
thread starts with none, each asyncio task sees what was bound when it was created and its own
binds stay inside it. ``DreamdataHandler.emit`` reads them in the thread that logs.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Optional, TypeVar, cast

from dreamdata_logging.events.helpers import Id
from dreamdata_logging.wire.fields import check_id, check_mapping, id_text, merged

F = TypeVar("F", bound=Callable[..., Any])

#: The defaults in force here, in wire spelling (``userId``, ``anonymousId``, ``context``,
#: ``integrations``), or None when nothing is bound. Never mutated: a bind sets a new mapping.
_BOUND: contextvars.ContextVar[Optional[Mapping[str, Any]]] = contextvars.ContextVar(
    "dreamdata_logging_bound", default=None
)
# The tokens of the binds entered with ``with`` in this context, innermost last.
_TOKENS: contextvars.ContextVar[tuple[contextvars.Token[Optional[Mapping[str, Any]]], ...]] = contextvars.ContextVar(
    "dreamdata_logging_bind_tokens", default=()
)

#: What the handler calls at every emit: the current bindings or None (one ContextVar lookup).
current: Callable[[], Optional[Mapping[str, Any]]] = _BOUND.get


def bound() -> dict[str, Any]:
    """A copy of the defaults bound here, in wire spelling; ``{}`` when nothing is bound."""
    value = _BOUND.get()
    if not value:
        return {}
    copy = dict(value)
    if "context" in copy:
        copy["context"] = dict(copy["context"])
    return copy


class bind:  # noqa: N801 - used like a function: ``with bind(user_id=...)``
    """Set defaults for every event emitted inside a ``with`` block or a decorated function.

    ::

        with dreamdata_logging.bind(user_id=request.user.id, context={"ip": request.remote_addr}):
            log.info("Signed Up", extra=track(properties={"plan": "pro"}))  # userId and context.ip filled in

        @dreamdata_logging.bind(anonymous_id="batch-job")
        def nightly(): ...

    Values left out (or None) are not bound. Binds nest: an inner one adds fields and overrides the
    outer one's, and ``context`` mappings merge key by key (inner wins). A value the event gives itself
    wins over a bound one; an event's ``context`` merges with the bound one (the event's keys win).
    ``integrations`` is replaced, not merged. Works with ``async with`` and on ``async def`` functions.
    """

    __slots__ = ("_fields",)

    def __init__(
        self,
        *,
        user_id: Optional[Id] = None,
        anonymous_id: Optional[Id] = None,
        context: Optional[Mapping[str, Any]] = None,
        integrations: Optional[Mapping[str, Any]] = None,
    ) -> None:
        for name, value, check in (
            ("user_id", user_id, check_id),
            ("anonymous_id", anonymous_id, check_id),
            ("context", context, check_mapping),
            ("integrations", integrations, check_mapping),
        ):
            if value is not None:  # None binds nothing
                check(name, value)
        fields: dict[str, Any] = {}
        if user_id is not None:
            fields["userId"] = id_text("user_id", user_id)
        if anonymous_id is not None:
            fields["anonymousId"] = id_text("anonymous_id", anonymous_id)
        if context is not None:
            fields["context"] = dict(context)  # a snapshot: later changes to the caller's dict are not seen
        if integrations is not None:
            fields["integrations"] = dict(integrations)
        self._fields = fields

    def __repr__(self) -> str:
        inner = ", ".join(f"{key}={value!r}" for key, value in self._fields.items())
        return f"bind({inner})"

    def _merged(self) -> Mapping[str, Any]:
        outer = _BOUND.get()
        return merged(outer, self._fields) if outer else self._fields

    # -- context manager ---------------------------------------------------------------------------

    def __enter__(self) -> bind:
        token = _BOUND.set(self._merged())
        _TOKENS.set((*_TOKENS.get(), token))
        return self

    def __exit__(self, *exc_info: object) -> None:
        tokens = _TOKENS.get()
        if not tokens:
            raise RuntimeError("bind.__exit__ without a matching __enter__ in this context")
        _TOKENS.set(tokens[:-1])
        _BOUND.reset(tokens[-1])

    async def __aenter__(self) -> bind:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)

    # -- decorator ---------------------------------------------------------------------------------

    def __call__(self, function: F) -> F:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                token = _BOUND.set(self._merged())
                try:
                    return await function(*args, **kwargs)
                finally:
                    _BOUND.reset(token)

            return cast(F, run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            token = _BOUND.set(self._merged())
            try:
                return function(*args, **kwargs)
            finally:
                _BOUND.reset(token)

        return cast(F, run)
