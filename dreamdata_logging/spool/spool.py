"""The durable spool: serialised messages kept in an SQLite file until the endpoint takes them.

Knows storage, not HTTP. Rows hold the exact message bytes (so a message's ``messageId`` never
changes, however often it is retried or whichever process sends it). Several processes may share
one file: it runs in WAL mode with a busy timeout and short transactions, and a process takes rows
to send by *leasing* them (a random token and an expiry), so two processes never hold the same row
at once, and the rows of a process that dies mid-send become available again when the lease expires
(a lease lasts about as long as the send that holds it may take, so that is soon).

This module holds the operations (put, claim, ack, release, discard, pending, and trimming to the
size bound); the file itself (opening, forks, damaged, newer, removed or replaced files, free space)
is :mod:`dreamdata_logging.spool.file`'s. The application never sees an exception from here: a full
disk (or a write error) makes ``put`` fail with ``SpoolUnavailable`` while what the spool holds can
still be claimed and acknowledged, and writing resumes by itself once there is room.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Callable, Optional, TypeVar, Union

from dreamdata_logging._diagnostics import RateLimitedReporter, Report
from dreamdata_logging.spool import fork_guard
from dreamdata_logging.spool.file import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    SpoolFile,
    Unusable,
    check_room,
    describe,
    is_corrupt,
    is_out_of_space,
    transaction,
)

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_MAX_BYTES",
    "FREE_SPACE_RESERVE",
    "LEASE_SECONDS",
    "SCHEMA_VERSION",
    "Claim",
    "Spool",
    "SpoolUnavailable",
]

#: Default bound on the bytes of messages held in the spool (the file itself is somewhat larger).
DEFAULT_MAX_BYTES = 100_000_000
#: Seconds a claimed row stays reserved for the process that claimed it, unless the claim says otherwise
#: (the worker asks for about its send's own deadline plus a margin). A lease only runs out when its
#: process died or hung; then another process may take the rows.
LEASE_SECONDS = 60.0
#: Bytes of free disk space a ``put`` leaves for claiming and acknowledging what the spool holds (those
#: write too): a spool that fills its disk could otherwise never drain until something else frees space.
FREE_SPACE_RESERVE = 8_000_000

T = TypeVar("T")

_INSERT_PREFIX = "INSERT INTO events (data, size, created) VALUES "
#: Rows per INSERT statement (2 parameters each): SQLite allows 32,766 parameters from 3.32, 999 before.
_ROWS_PER_INSERT = 16_000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 499


class Claim:
    """Rows leased to this process: send ``messages``, then ``ack`` (delivered) or ``release`` (not)."""

    __slots__ = ("ids", "messages", "size", "token")

    def __init__(self, ids: list[int], messages: list[bytes], size: int, token: str) -> None:
        self.ids = ids
        self.messages = messages
        self.size = size
        self.token = token

    def __len__(self) -> int:
        return len(self.ids)


class SpoolUnavailable(Exception):
    """The spool could not be used just now (locked too long, disk full, no permission, ...)."""


class Spool:
    """Message bytes in an SQLite file, oldest first; ``put``, ``claim``, ``ack``, ``release``.

    When a ``put`` takes the stored bytes over ``max_bytes``, the **oldest** rows not currently
    leased are deleted until it fits (newer events are worth more to attribution than the first
    hour of a long outage, and this keeps the spool bounded whatever happens); ``put`` returns them.
    A ``put`` that would leave less than ``free_space_reserve`` bytes free on the file's disk is
    refused, so that what the spool holds can still be claimed and acknowledged.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        lease_seconds: float = LEASE_SECONDS,
        free_space_reserve: int = FREE_SPACE_RESERVE,
        reporter: Optional[RateLimitedReporter] = None,
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.max_bytes = max_bytes
        self.lease_seconds = lease_seconds
        self.free_space_reserve = free_space_reserve
        self._reporter = reporter or RateLimitedReporter()
        self._lock = threading.Lock()
        self._file = SpoolFile(self.path, self._reporter)
        self._out_of_space = False  # the last write failed for want of space: give pages back on ack

    def __repr__(self) -> str:
        return f"<Spool {self.path}>"

    @property
    def moved_aside(self) -> list[str]:
        """Where unusable files went, in this process."""
        return self._file.moved_aside

    @property
    def _conn(self) -> Optional[sqlite3.Connection]:
        return self._file.conn

    # -- the public operations (each one short transaction; never raise into the caller but
    #    SpoolUnavailable, which the handler and worker treat as "no spool just now") --

    def put(self, messages: Sequence[bytes]) -> list[bytes]:
        """Store ``messages``; returns the messages deleted to stay within ``max_bytes`` (oldest first)."""
        if not messages:
            return []

        def write(conn: sqlite3.Connection) -> list[bytes]:
            check_room(conn, self.path, self.free_space_reserve, sum(len(item) for item in messages))
            now = time.time()
            with transaction(conn):
                # Many rows per statement: Python's sqlite3 releases the GIL at every step, and a
                # step per row would make this thread queue for the GIL behind busy loggers each time.
                row = f"(?,?,{now!r})"
                for start in range(0, len(messages), _ROWS_PER_INSERT):
                    chunk = messages[start : start + _ROWS_PER_INSERT]
                    values: list[object] = []
                    for item in chunk:
                        values += (item, len(item))
                    conn.execute(_INSERT_PREFIX + ",".join([row] * len(chunk)), values)
                dropped = self._trim(conn, now)
            if self._out_of_space:
                self._out_of_space = False
                text = f"spool {self.path} has room again: writing to it"
                self._reporter.report(Report.SPOOL_ROOM_AGAIN, text, logging.INFO)
            return dropped

        return self._run(write, retry_on_fresh=True)

    def claim(self, max_messages: int, max_bytes: int, lease_seconds: Optional[float] = None) -> Optional[Claim]:
        """Lease the oldest available rows, at most ``max_messages`` and ``max_bytes`` (counting a
        comma between messages, as in a request body); None when there is nothing to take.

        The rows stay reserved for ``lease_seconds`` (default: the spool's ``lease_seconds``): about as
        long as sending them may take, after which another process may take them."""
        lease = self.lease_seconds if lease_seconds is None else float(lease_seconds)

        def take(conn: sqlite3.Connection) -> Optional[Claim]:
            now = time.time()
            # A read first: an idle process polling an empty spool takes no write lock.
            if conn.execute("SELECT 1 FROM events WHERE lease_until <= ? LIMIT 1", (now,)).fetchone() is None:
                return None
            token = os.urandom(12).hex()
            with transaction(conn):
                picked = _claim_rows(conn, now, max_messages, max_bytes)
                if picked is None:
                    return None
                ids, data, size = picked
                # The rows between the first and last taken are ours or leased by someone else
                # (lease_until > now): one statement leases exactly ours.
                conn.execute(
                    "UPDATE events SET lease = ?, lease_until = ? WHERE id BETWEEN ? AND ? AND lease_until <= ?",
                    (token, now + lease, ids[0], ids[-1], now),
                )
            return Claim(ids, data, size, token)

        return self._run(take)

    def ack(self, claim: Claim) -> None:
        """The claim's messages were delivered: delete them (only rows still leased under its token)."""

        def delete(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                _change_claimed(conn, claim, "DELETE FROM events")
                empty = conn.execute("SELECT rows FROM totals WHERE id = 0").fetchone()[0] == 0
            if empty or self._out_of_space:  # give the pages of a drained spool back to the file system
                try:
                    conn.execute("PRAGMA incremental_vacuum").fetchall()  # runs a step per row fetched
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # never waits for other processes
                except sqlite3.OperationalError:  # no room to do it now; the rows are deleted all the same
                    pass

        self._run(delete)

    def release(self, claim: Claim) -> None:
        """The claim's messages were not delivered: make them available again (to any process)."""

        def give_back(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                _change_claimed(conn, claim, "UPDATE events SET lease = '', lease_until = 0")

        self._run(give_back)

    def discard(self, claim: Claim) -> None:
        """Delete a claim's rows that can never be delivered (the endpoint refused them as invalid)."""
        self.ack(claim)

    def pending(self) -> tuple[int, int]:
        """(events, message bytes) in the spool now, every process's included."""

        def count(conn: sqlite3.Connection) -> tuple[int, int]:
            row = conn.execute("SELECT rows, bytes FROM totals WHERE id = 0").fetchone()
            return int(row[0]), int(row[1])

        return self._run(count)

    def reset_after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread may have held ours at the fork); the parent's
        connection is set aside unused and a new one opens on the next operation."""
        self._lock = threading.Lock()
        self._file.set_aside()

    def close(self) -> None:
        with self._lock, fork_guard.guard():
            self._file.close()

    # -- inside --

    def _connection(self) -> sqlite3.Connection:
        return self._file.connection()

    def _trim(self, conn: sqlite3.Connection, now: float) -> list[bytes]:
        """Delete the oldest rows not leased until the spool holds at most ``max_bytes``; returns them."""
        total = conn.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()[0]
        excess = total - self.max_bytes
        if excess <= 0:
            return []
        dropped: list[bytes] = []
        ids: list[int] = []
        rows = conn.execute("SELECT id, data FROM events WHERE lease_until <= ? ORDER BY id", (now,))
        for row_id, blob in rows:
            ids.append(row_id)
            dropped.append(bytes(blob))
            excess -= len(blob)
            if excess <= 0:
                break
        rows.close()
        if ids:  # the rows up to the last one taken, bar those leased (sent right now)
            conn.execute("DELETE FROM events WHERE id <= ? AND lease_until <= ?", (ids[-1], now))
        return dropped

    def _run(self, operation: Callable[[sqlite3.Connection], T], retry_on_fresh: bool = False) -> T:
        """Run one operation on this process's connection; a corrupt file is moved aside and replaced."""
        if not fork_guard.usable_here():
            raise SpoolUnavailable(
                "this process was forked while its parent was using the spool file: SQLite cannot be used here"
            )
        with self._lock, fork_guard.guard():
            for attempt in (1, 2):
                try:
                    return operation(self._file.connection())
                except Unusable as error:
                    self._file.move_aside(str(error), error.suffix)
                    if attempt == 2 or not retry_on_fresh:
                        raise SpoolUnavailable(f"the spool file could not be used ({error})") from None
                except (OSError, sqlite3.Error) as error:
                    if isinstance(error, sqlite3.Error) and is_corrupt(error):
                        self._file.move_aside(f"it is unreadable ({error})", "corrupt")
                        if attempt == 2 or not retry_on_fresh:
                            raise SpoolUnavailable(f"the spool file was unreadable ({error})") from None
                        continue
                    self._report_failure(error)
                    raise SpoolUnavailable(describe(error)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _report_failure(self, error: BaseException) -> None:
        """Say why an operation failed (the file is fine): no room on its disk, or unavailable."""
        if is_out_of_space(error):
            self._out_of_space = True
            self._reporter.report(
                Report.SPOOL_NO_ROOM,
                f"spool {self.path} has no room on its disk ({describe(error)}): events that "
                "cannot be delivered now are not kept; what it holds is still sent, and writing "
                "resumes by itself when there is room",
                logging.ERROR,
            )
        else:  # e.g. its directory cannot be created, no permission, locked too long
            self._reporter.report(
                Report.SPOOL_UNAVAILABLE, f"spool {self.path} is unavailable: {describe(error)}", logging.ERROR
            )


def _change_claimed(conn: sqlite3.Connection, claim: Claim, change: str) -> None:
    """Run ``change`` (a DELETE or an UPDATE ... SET) on the claim's rows still leased under its token."""
    conn.execute(change + " WHERE id BETWEEN ? AND ? AND lease = ?", (claim.ids[0], claim.ids[-1], claim.token))


def _claim_rows(
    conn: sqlite3.Connection, now: float, max_messages: int, max_bytes: int
) -> Optional[tuple[list[int], list[bytes], int]]:
    """The oldest available rows within the bounds: (ids, messages, bytes), or None.

    One statement, read until the byte bound is met: the rows past it are never read. (Computing the
    bound inside SQLite, with a window function, and fetching all rows at once, measured slower.)"""
    ids: list[int] = []
    data: list[bytes] = []
    size = 0
    rows = conn.execute("SELECT id, data FROM events WHERE lease_until <= ? ORDER BY id LIMIT ?", (now, max_messages))
    for row_id, item in rows:
        length = len(item)
        if data and size + length + len(data) > max_bytes:
            break
        ids.append(row_id)
        data.append(bytes(item))
        size += length
    rows.close()
    return (ids, data, size) if ids else None
