"""Process lifecycle: which handlers live in this process, and when the interpreter is exiting."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._handler import DreamdataHandler

_handlers: weakref.WeakSet[DreamdataHandler] = weakref.WeakSet()


def register(handler: DreamdataHandler) -> None:
    """Remember a handler for process-wide actions (flush all, close at a child's end)."""
    _handlers.add(handler)


def handlers() -> list[DreamdataHandler]:
    """Every DreamdataHandler alive in this process, oldest first is not guaranteed."""
    return list(_handlers)
