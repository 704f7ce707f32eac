"""Process lifecycle: the handlers alive in this process, exit, fork, children's ends and SIGTERM.

- Exit: our atexit hook runs before ``logging.shutdown()`` (atexit is last-in, first-out, and logging
  registered its hook when it was imported), so flush/close during exit keep to ``shutdown_timeout``.
- Fork: handlers check the process id where events enter, so a child made by any means (``os.fork``,
  ``multiprocessing``, billiard, uWSGI's fork in C) starts clean. The fork hook is the fast path.
- Children that end with ``os._exit()`` (multiprocessing and billiard pool workers) skip atexit: their
  handlers are closed from those libraries' own exit hooks. A billiard pool worker ends with ``os._exit()``
  from its ``Worker._do_exit``, before any hook of billiard's runs: in that child only, ``_do_exit`` is
  wrapped to close the handlers after the pool's ``on_exit`` and before ``os._exit()``.
- SIGTERM: where the process keeps the default action, queued events are delivered first, then the
  process ends by SIGTERM as it would have. Where a server holds SIGTERM and SIGINT in Python and
  re-raises them after its graceful shutdown (uvicorn), events are delivered at the end of that
  shutdown (see :mod:`._server_shutdown`).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional

from dreamdata_logging.delivery import server_shutdown
from dreamdata_logging.delivery import uwsgi as uwsgi_hooks
from dreamdata_logging.spool import fork_guard
from dreamdata_logging.wire.rules import reseed_ids

if TYPE_CHECKING:
    from dreamdata_logging._handler import DreamdataHandler

_handlers: tuple[weakref.ReferenceType[DreamdataHandler], ...] = ()
_exiting = False
#: Called with each handler as it is registered (a test's capture installs its sink on new handlers).
on_register: list[Callable[[DreamdataHandler], None]] = []


def register(handler: DreamdataHandler) -> None:
    """Remember a handler for process-wide actions (flush all, close at a child's end, SIGTERM)."""
    global _handlers
    _handlers = (*(ref for ref in _handlers if ref() is not None), weakref.ref(handler))
    for hook in list(on_register):
        hook(handler)
    if in_uwsgi_master():  # uWSGI forks its workers in C, running no fork hook: its own hook does
        uwsgi_hooks.hook_post_fork(in_new_process)


def handlers() -> list[DreamdataHandler]:
    """Every DreamdataHandler alive in this process, oldest first."""
    return [handler for handler in (ref() for ref in _handlers) if handler is not None]


# -- exit ----------------------------------------------------------------------------------------


def exiting() -> bool:
    """True once the interpreter has begun exiting (our atexit hook ran, before ``logging.shutdown``)."""
    return _exiting


def _at_exit() -> None:
    global _exiting
    _exiting = True
    # A handler that reopened after a reconfiguration closed it is no longer in logging's list of
    # handlers to close at exit: close those here (the others are closed by logging.shutdown()).
    for handler in handlers():
        if handler.reopened:
            _close_quietly(handler)


atexit.register(_at_exit)


def _close_quietly(handler: DreamdataHandler) -> None:
    try:
        handler.close()
    except Exception:  # one handler's failure must not stop the others
        pass


def logging_lock_held() -> bool:
    """True when this thread holds the ``logging`` module's lock (inside dictConfig, fileConfig, ...).

    The worker thread may need that lock (requests and urllib3 log while sending), so whoever holds it
    must not wait for the worker.
    """
    is_owned = getattr(logging._lock, "_is_owned", None)  # type: ignore[attr-defined]
    try:
        return bool(is_owned()) if is_owned is not None else False
    except Exception:
        return False


# -- fork and children ---------------------------------------------------------------------------

_child_hooks_pid = 0


def in_new_process() -> None:
    """Called in a process that is not the one where the handlers were made (by the fork hook, or by a
    handler that noticed the process id change): each handler starts clean; children's ends are hooked."""
    reseed_ids()  # the fork hook does this too; uWSGI's fork in C runs no hooks
    fork_guard.renew_in_child()  # before any spool is touched here (its own fork hook may run after this one)
    for handler in handlers():
        handler.start_fresh_if_forked()
    _hook_child_exit()


def _hook_child_exit() -> None:
    """Close every handler when a multiprocessing or billiard child ends (they skip atexit)."""
    global _child_hooks_pid
    pid = os.getpid()
    if _child_hooks_pid == pid:
        return
    _child_hooks_pid = pid
    _hook_celery_child_exit()
    _hook_billiard_worker_exit()
    for name in ("multiprocessing.util", "billiard.util"):
        util: Any = sys.modules.get(name)
        if util is None:
            continue
        try:
            # The child clears the parent's finalizers after the fork hooks ran, then runs its after-fork
            # callbacks: register from there, so the finalizer survives the clearing.
            util.register_after_fork(_close_all_at_child_exit, _finalize_with(util))
            util.Finalize(None, _close_all_at_child_exit, exitpriority=10)
        except Exception:
            pass


def _finalize_with(util: Any) -> Any:
    def register(_: object) -> None:
        util.Finalize(None, _close_all_at_child_exit, exitpriority=10)

    return register


def _hook_celery_child_exit() -> None:
    """A Celery prefork pool child ends with os._exit() from inside its task loop, before billiard's exit
    hooks run; Celery announces it first with its worker_process_shutdown signal."""
    signals: Any = sys.modules.get("celery.signals")
    if signals is None:
        return
    try:
        signals.worker_process_shutdown.connect(
            _close_all_at_child_exit, weak=False, dispatch_uid="dreamdata_logging.close_at_child_exit"
        )
    except Exception:
        pass


def _hook_billiard_worker_exit() -> None:
    """A billiard pool worker (a Pool outside Celery, maxtasksperchild) leaves through ``Worker._do_exit``,
    which calls the pool's ``on_exit`` and then ``os._exit()``: close every handler between the two.
    Patched in this child process only."""
    pool: Any = sys.modules.get("billiard.pool")
    worker = getattr(pool, "Worker", None)
    do_exit = getattr(worker, "_do_exit", None)
    if not callable(do_exit) or getattr(do_exit, "_dreamdata_closes_handlers", False):
        return

    def _do_exit(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:  # after the pool's own on_exit (Celery's worker_process_shutdown receivers may log), then close
            self.on_exit = _then_close_all(getattr(self, "on_exit", None))
        except Exception:
            _close_all_at_child_exit()
        return do_exit(self, *args, **kwargs)

    _do_exit._dreamdata_closes_handlers = True  # type: ignore[attr-defined]
    try:
        setattr(worker, "_do_exit", _do_exit)  # noqa: B010
    except Exception:  # a billiard that does not allow it: the child's events wait for its atexit, if any
        pass


def _then_close_all(on_exit: Any) -> Any:
    def closing(*args: Any, **kwargs: Any) -> Any:
        try:
            return on_exit(*args, **kwargs) if callable(on_exit) else None
        finally:
            _close_all_at_child_exit()

    return closing


def _close_all_at_child_exit(*_: object, **__: object) -> None:
    for handler in handlers():
        _close_quietly(handler)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=in_new_process)


def threads_unavailable() -> Optional[str]:
    """Why a background thread cannot run in this process, when we can tell (uWSGI without threads)."""
    uwsgi: Any = sys.modules.get("uwsgi")
    if uwsgi is None:
        return None
    try:
        opt = getattr(uwsgi, "opt", {}) or {}
        enabled = any(opt.get(key) for key in ("enable-threads", b"enable-threads", "threads", b"threads"))
        version = tuple(getattr(uwsgi, "version_info", (9, 9, 9))[:3])
    except Exception:
        return None
    if enabled or version >= (2, 0, 27):
        return None
    return (
        "this uWSGI runs without Python threads, so events would be sent only at exit: "
        "start it with --enable-threads (or --threads N)"
    )


def in_uwsgi_master() -> bool:
    """True in a uWSGI master that forks workers from a loaded app (no --lazy-apps). It runs no Python
    exit hooks, and a thread of ours there could be mid-request, holding locks, when it forks a worker."""
    uwsgi: Any = sys.modules.get("uwsgi")
    if uwsgi is None:
        return False
    try:
        return bool(uwsgi.masterpid() == os.getpid())
    except Exception:
        return False


# -- SIGTERM -------------------------------------------------------------------------------------

_sigterm_installed = False
#: Servers that embed Python and handle signals in C (uWSGI, Apache's mod_wsgi).
_EMBEDDING_SERVERS = ("uwsgi", "mod_wsgi")


def install_sigterm() -> None:
    """Deliver queued events on SIGTERM where the process keeps SIGTERM's default action.

    Only from the main thread, and only over the default action: a handler the application (or a
    server) installed is never replaced. Safe in a signal handler: it takes none of our locks, only
    asks each worker to close and waits for the threads.
    """
    global _sigterm_installed
    watch_servers()
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if any(name in sys.modules for name in _EMBEDDING_SERVERS):
        return  # their signal handlers are set in C, out of Python's sight: getsignal() would say "default"
    try:
        if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # not the main interpreter, or no SIGTERM here
        return
    _sigterm_installed = True


def watch_servers() -> None:
    """Where a server such as uvicorn holds SIGTERM/SIGINT (and re-raises them after its graceful shutdown),
    deliver at the end of that shutdown. Called when a handler is made and when a worker starts; cheap
    and idempotent; only for handlers with ``handle_sigterm``."""
    try:
        if any(getattr(handler, "handle_sigterm", False) for handler in handlers()):
            server_shutdown.hook_server_shutdown(_deliver_at_server_shutdown)
    except Exception:  # never in the way of logging
        pass


def _deliver_at_server_shutdown() -> None:
    server_shutdown.deliver_now(handlers())


def _on_sigterm(signum: int, frame: object) -> None:
    global _sigterm_installed
    try:
        deliver_before_exit()
    finally:
        _sigterm_installed = False
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # end as SIGTERM would have ended the process


def deliver_before_exit() -> None:
    """Close every handler's worker without waiting on locks, then wait for them together."""
    live = handlers()
    for handler in live:
        handler.begin_shutdown()
    for handler in live:
        handler.finish_shutdown()
