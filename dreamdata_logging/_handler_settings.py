"""The settings of a ``DreamdataHandler`` as attributes: each is checked when set and takes effect at once.

Batching, memory and shutdown settings are kept in the handler's delivery (its worker reads them where
they are used); the others are read from the part they belong to. ``DreamdataHandler`` inherits them.
"""

from __future__ import annotations

from typing import Any, Optional

from dreamdata_logging import _options as options
from dreamdata_logging.delivery.delivery import Delivery
from dreamdata_logging.delivery.problems import OnError
from dreamdata_logging.delivery.worker import Worker
from dreamdata_logging.spool.spool import Spool
from dreamdata_logging.transport.transport import Transport
from dreamdata_logging.wire.rules import MAX_MESSAGE_BYTES

_NUMBERS: dict[str, tuple[Any, float]] = {  # name: (type, smallest value)
    "flush_at": (int, 1),
    "flush_interval": (float, 0.001),
    "max_queue_size": (int, 1),
    "max_queue_bytes": (int, MAX_MESSAGE_BYTES),
    "shutdown_timeout": (float, 0),
    "block_on_full": (float, 0),
}


def check_number(name: str, value: Any) -> Any:
    """One of the delivery's numeric settings, converted and checked (a ValueError naming it)."""
    kind, minimum = _NUMBERS[name]
    return options.as_number(name, value, kind, minimum)


def _setting(name: str, doc: str) -> Any:
    """A handler attribute kept in its delivery's settings: read there, checked and applied when set."""

    def get(self: HandlerSettings) -> Any:
        return getattr(self._delivery.settings, name)

    def set_(self: HandlerSettings, value: Any) -> None:
        self._delivery.apply(name, check_number(name, value))

    return property(get, set_, doc=doc)


class HandlerSettings:
    """The handler's settings and read-only state, read from (and written to) the parts that use them."""

    _delivery: Delivery
    _transport: Transport
    _spool: Optional[Spool]
    _spool_max_bytes: int
    _handle_sigterm: bool

    flush_at = _setting("flush_at", "most messages in one request")
    flush_interval = _setting("flush_interval", "seconds a message may wait before its batch is sent")
    max_queue_size = _setting("max_queue_size", "events held in memory; past it new ones are dropped and counted")
    max_queue_bytes = _setting("max_queue_bytes", "bytes of events held in memory")
    shutdown_timeout = _setting("shutdown_timeout", "seconds close() and interpreter exit may spend delivering")
    block_on_full = _setting("block_on_full", "seconds a caller may wait for room in a full queue (0: drop)")

    @property
    def send(self) -> bool:
        """Whether events are sent; with False they are built and checked, then counted ``unsent``."""
        return self._delivery.queue.send

    @send.setter
    def send(self, value: Any) -> None:
        self._delivery.queue.send = options.as_bool("send", value)

    @property
    def on_error(self) -> Optional[OnError]:
        """Called as ``on_error(exception, messages)`` for events that are refused or cannot be delivered."""
        return self._delivery.on_error

    @on_error.setter
    def on_error(self, value: Optional[OnError]) -> None:
        self._delivery.on_error = options.as_callable("on_error", value)

    @property
    def spool_max_bytes(self) -> int:
        """Bytes the spool file may hold; past it the oldest spooled events are dropped (counted)."""
        return self._spool.max_bytes if self._spool is not None else self._spool_max_bytes

    @spool_max_bytes.setter
    def spool_max_bytes(self, value: Any) -> None:
        self._spool_max_bytes = options.as_number("spool_max_bytes", value, int, MAX_MESSAGE_BYTES)
        if self._spool is not None:
            self._spool.max_bytes = self._spool_max_bytes

    @property
    def handle_sigterm(self) -> bool:
        """Read-only: whether SIGTERM delivers what is queued (decided when the handler is made)."""
        return self._handle_sigterm

    @property
    def _worker(self) -> Worker:
        return self._delivery.worker

    @property
    def closed(self) -> bool:
        """Closed and not used since (an event reopens it, as ``logging.FileHandler`` reopens its file)."""
        return self._delivery.worker.closing

    @property
    def reopened(self) -> bool:
        """The handler was closed and then used again (logging.shutdown() no longer closes it at exit)."""
        return self._delivery.renewed

    @property
    def endpoint(self) -> str:
        return self._transport.endpoint
