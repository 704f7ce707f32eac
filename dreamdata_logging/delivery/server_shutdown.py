"""Servers that catch SIGTERM and SIGINT in Python, shut down gracefully, then end by the signal.

uvicorn (one process or ``--workers``, and gunicorn's ``UvicornWorker``) installs its own handler for
both signals while it serves, and imports the app inside that: so a handler made at import, or by a
``dictConfig`` the app runs, sees uvicorn's handler where SIGTERM's default action would be. After its
graceful shutdown (requests in flight finish, the lifespan shutdown runs) uvicorn puts the earlier
handlers back and raises the signal again, which, with the default action, ends the process before any
exit hook of ours runs. So whatever was logged during that shutdown would die with the process.

How it is recognised (duck-typed, so no import of uvicorn): the handler of SIGTERM or SIGINT is a bound
method named ``handle_exit`` whose object has ``should_exit``, ``capture_signals`` and an ``async``
``shutdown`` method, as ``uvicorn.Server`` has. That object's ``shutdown`` is wrapped, on that object
only: once the server's own shutdown has finished, every handler of this process that handles SIGTERM
(``handle_sigterm=True``) delivers what it holds within its ``shutdown_timeout``. Checked when a handler
is made and when a handler's worker starts (its first event); wrapping is done once per server object,
and nothing here ever raises.
"""

from __future__ import annotations

import inspect
import signal
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from dreamdata_logging._handler import DreamdataHandler

#: Marks a server object whose shutdown is already wrapped.
_MARK = "_dreamdata_logging_delivers_at_shutdown"
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT") if hasattr(signal, name))


def looks_like_uvicorn_server(handler: object) -> bool:
    """True for a signal handler that is ``handle_exit`` bound to an object shaped like ``uvicorn.Server``."""
    server = getattr(handler, "__self__", None)
    if server is None or getattr(handler, "__name__", None) != "handle_exit":
        return False
    shutdown = getattr(server, "shutdown", None)
    return (
        hasattr(server, "should_exit")
        and callable(getattr(server, "capture_signals", None))
        and callable(shutdown)
        and inspect.iscoroutinefunction(shutdown)
    )


def hook_server_shutdown(close_all: Callable[[], None]) -> bool:
    """Wrap the shutdown of a server whose handler holds SIGTERM or SIGINT; True when one is (or was) hooked.

    ``close_all`` runs after the server's shutdown finished (in the server's event loop, which has
    nothing left to do then), before the server re-raises the signal."""
    hooked = False
    for signum in _SIGNALS:
        try:
            handler = signal.getsignal(signum)  # readable from any thread
            if looks_like_uvicorn_server(handler):
                hooked = _wrap(handler.__self__, close_all) or hooked  # type: ignore[union-attr]
        except Exception:  # an odd object, or no signals here: leave it as it is
            continue
    return hooked


def _wrap(server: Any, close_all: Callable[[], None]) -> bool:
    if vars(server).get(_MARK):
        return True
    original = server.shutdown

    async def shutdown(*args: Any, **kwargs: Any) -> Any:
        try:
            return await original(*args, **kwargs)
        finally:
            try:
                close_all()
            except Exception:  # never in the way of the server's own ending
                pass

    try:
        setattr(server, _MARK, True)
        server.shutdown = shutdown
    except Exception:  # a server object that takes no new attributes: left as it is
        return False
    return True


def deliver_now(handlers: list[DreamdataHandler]) -> None:
    """Every handler that handles SIGTERM delivers what it holds, each within its ``shutdown_timeout``."""
    chosen = [handler for handler in handlers if getattr(handler, "handle_sigterm", False)]
    for handler in chosen:
        handler.begin_shutdown()
    for handler in chosen:
        handler.finish_shutdown()
