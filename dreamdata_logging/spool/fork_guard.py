"""SQLite across ``fork()``: no thread of ours may be inside SQLite at the moment a process forks.

SQLite keeps process-wide mutexes (the list of open files, their locks). A thread that holds one when
another thread forks leaves it held forever in the child, and the child's first SQLite call hangs there:
seen as a forked child stuck in ``sqlite3.connect()`` while its parent's worker was writing to the spool.
So every SQLite call of this package runs holding :func:`guard`, and a fork waits (at most
:data:`FORK_WAIT` seconds) for the call in progress to end. A child forked while a call was still going
cannot use SQLite safely: its spools say they are unavailable there (counted, not hung).
"""

from __future__ import annotations

import os
import threading

#: Most seconds a fork() waits for an SQLite call of ours to end.
FORK_WAIT = 5.0

_lock = threading.Lock()
_taken_for_fork = False
_renewed_in = 0  # the process id where the lock was last made new
_unsafe_in = 0  # the process id of a child forked while an SQLite call was going on


def guard() -> threading.Lock:
    """The lock every SQLite call of this package holds (a new one in each forked child)."""
    return _lock


def usable_here() -> bool:
    """False in a child forked while one of our SQLite calls was in progress."""
    return _unsafe_in != os.getpid()


def before_fork() -> None:
    global _taken_for_fork
    _taken_for_fork = _lock.acquire(timeout=FORK_WAIT)


def after_fork_in_parent() -> None:
    global _taken_for_fork
    if _taken_for_fork:
        _taken_for_fork = False
        _lock.release()


def renew_in_child() -> None:
    """In a new process: a fresh lock (idempotent; also called where a fork ran no hooks)."""
    global _lock, _renewed_in, _unsafe_in, _taken_for_fork
    pid = os.getpid()
    if _renewed_in == pid:
        return
    _renewed_in = pid
    if not _taken_for_fork and _lock.locked():
        _unsafe_in = pid  # a call was going on at the fork: SQLite's own mutexes may be held for good
    _taken_for_fork = False
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=before_fork, after_in_parent=after_fork_in_parent, after_in_child=renew_in_child)
