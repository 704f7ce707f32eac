"""The durable spool: serialised messages kept in an SQLite file until the endpoint takes them.

Knows storage, not HTTP. Rows hold the exact message bytes (so a message's ``messageId`` never
changes, however often it is retried or whichever process sends it). Several processes may share
one file: it runs in WAL mode with a busy timeout and short transactions, and a process takes rows
to send by *leasing* them (a random token and an expiry), so two processes never hold the same row
at once, and the rows of a process that dies mid-send become available again when the lease expires
(a lease lasts about as long as the send that holds it may take, so that is soon).

Each process opens its own connection lazily and opens a new one after ``fork()`` (the parent's
connection is never used, nor closed, in the child). A file that SQLite cannot read as our spool
(corrupt, or another program's database) is moved aside to ``<path>.corrupt-<timestamp>``, reported
through the library's diagnostics, and replaced by a fresh spool; so is a spool written by a newer
version of this library (to ``<path>.newer-<timestamp>``: it is never downgraded in place). The
application never sees an exception from here.

The file system under the spool is watched, cheaply (a ``stat`` per operation, and operations are per
batch): a full disk (or a write error) makes ``put`` fail with ``SpoolUnavailable`` while what the spool
holds can still be claimed and acknowledged, and writing resumes by itself once there is room; a file
removed or replaced while in use is reported with the number of events it held and a new file is
started at the path. New files are created readable and writable by their owner only (0600).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Callable, Optional, TypeVar, Union

from ._diagnostics import RateLimitedReporter
from .errors import DeliveryError

#: Default bound on the bytes of messages held in the spool (the file itself is somewhat larger).
DEFAULT_MAX_BYTES = 100_000_000
#: Seconds a claimed row stays reserved for the process that claimed it, unless the claim says otherwise
#: (the worker asks for about its send's own deadline plus a margin). A lease only runs out when its
#: process died or hung; then another process may take the rows.
LEASE_SECONDS = 60.0
#: Bytes of free disk space a ``put`` leaves for claiming and acknowledging what the spool holds (those
#: write too): a spool that fills its disk could otherwise never drain until something else frees space.
FREE_SPACE_RESERVE = 8_000_000
#: Mode of a spool file this library creates (its ``-wal`` and ``-shm`` files follow the main file's).
FILE_MODE = 0o600
#: Seconds to wait for another process's write transaction before giving up on one operation.
BUSY_TIMEOUT = 10.0

#: ``PRAGMA application_id`` of a spool file ("DDLG"): tells our file from someone else's database.
APPLICATION_ID = 0x44444C47
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    data BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    lease TEXT NOT NULL DEFAULT '',
    lease_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS events_inserted AFTER INSERT ON events BEGIN
    UPDATE totals SET rows = rows + 1, bytes = bytes + NEW.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS events_deleted AFTER DELETE ON events BEGIN
    UPDATE totals SET rows = rows - 1, bytes = bytes - OLD.size WHERE id = 0;
END;
"""

T = TypeVar("T")

_INSERT_PREFIX = "INSERT INTO events (data, size, created) VALUES "
#: Rows per INSERT statement (2 parameters each): SQLite allows 32,766 parameters from 3.32, 999 before.
_ROWS_PER_INSERT = 16_000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 499

# Connections a forked child inherited from its parent: kept referenced so they are never closed
# (closing them in the child could disturb the parent's locks and WAL).
_inherited: list[sqlite3.Connection] = []
# Connections to a file that was removed or replaced while open: never closed either, as closing the
# last connection to a WAL database deletes ``<path>-wal`` and ``<path>-shm`` *by name*, which may be
# the new file's by then. They hold a few descriptors until the process exits.
_retired: list[sqlite3.Connection] = []

# Primary result codes of a full disk and of an I/O error (the extended codes keep them in the low byte).
_SQLITE_IOERR = 10
_SQLITE_FULL = 13


def worth_spooling(error: DeliveryError) -> bool:
    """Whether events that failed with ``error`` may succeed later: network errors, 408, 429, 5xx,
    a deadline, and a rejected write key (fixing the key and restarting then delivers them).

    Not a 400 or an oversized message: sending those again would fail again."""
    return error.retryable or error.status in (401, 403)


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


def _is_corrupt(error: sqlite3.Error) -> bool:
    # SQLITE_CORRUPT and SQLITE_NOTADB arrive as DatabaseError itself; locked, busy, read-only,
    # disk full and cannot-open are OperationalError (a subclass) and say nothing about the file.
    return type(error) is sqlite3.DatabaseError


def _is_out_of_space(error: BaseException) -> bool:
    """A full disk or quota (SQLITE_FULL, ENOSPC, EDQUOT, EFBIG) or a write error (SQLITE_IOERR)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
    text = str(error).lower()
    return "disk is full" in text or "disk i/o error" in text


class _Unusable(Exception):
    """The file is a database this spool must not use: moved aside to ``<path>.<suffix>-...``."""

    def __init__(self, reason: str, suffix: str) -> None:
        super().__init__(reason)
        self.suffix = suffix


def _file_id(path: str) -> Optional[tuple[int, int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


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
        self._conn: Optional[sqlite3.Connection] = None
        self._pid = 0
        self._file_id: Optional[tuple[int, int]] = None
        # The -wal and -shm files that belong to the open file (they stay the same while it is open).
        self._side_ids: dict[str, Optional[tuple[int, int]]] = {}
        self._out_of_space = False  # the last write failed for want of space: give pages back on ack
        self.moved_aside: list[str] = []  # where unreadable files went, in this process

    def __repr__(self) -> str:
        return f"<Spool {self.path}>"

    # -- the public operations (each one short transaction; never raise into the caller but
    #    SpoolUnavailable, which the handler and worker treat as "no spool just now") --

    def put(self, messages: Sequence[bytes]) -> list[bytes]:
        """Store ``messages``; returns the messages deleted to stay within ``max_bytes`` (oldest first)."""
        if not messages:
            return []

        def write(conn: sqlite3.Connection) -> list[bytes]:
            self._check_room(conn, sum(len(item) for item in messages))
            now = time.time()
            with _transaction(conn):
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
                self._reporter.report("spool_room", f"spool {self.path} has room again: writing to it", logging.INFO)
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
            with _transaction(conn):
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
            with _transaction(conn):
                conn.execute(
                    "DELETE FROM events WHERE id BETWEEN ? AND ? AND lease = ?",
                    (claim.ids[0], claim.ids[-1], claim.token),
                )
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
            with _transaction(conn):
                conn.execute(
                    "UPDATE events SET lease = '', lease_until = 0 WHERE id BETWEEN ? AND ? AND lease = ?",
                    (claim.ids[0], claim.ids[-1], claim.token),
                )

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
        if self._conn is not None:
            _inherited.append(self._conn)
            self._conn = None

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                try:
                    conn.close()
                except sqlite3.Error:
                    pass

    # -- inside --

    def _check_room(self, conn: sqlite3.Connection, size: int) -> None:
        """Refuse a write that would leave less than ``free_space_reserve`` bytes free on the disk. Rows
        pass through the WAL and then the main file, hence twice their size; and what the WAL holds
        that is not in the main file yet needs as much room there when it is checkpointed."""
        if self.free_space_reserve <= 0 or not hasattr(os, "statvfs"):
            return
        try:
            free = _free_bytes(self.path)
            wal = os.stat(self.path + "-wal").st_size
        except OSError:
            return  # unknown: let SQLite find out
        need = self.free_space_reserve + 2 * size
        if free >= need + wal:
            return  # the usual case: two stats
        # Short of room: move what the WAL holds into the main file now (never waiting for other
        # processes) and count only what is left in it.
        _, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        free = _free_bytes(self.path)
        if frames < 0 or free < need + max(0, frames - done) * (page + 24):
            raise OSError(
                errno.ENOSPC,
                f"{free:,} bytes free on its disk; {self.free_space_reserve:,} are kept for sending what it holds",
            )

    def _trim(self, conn: sqlite3.Connection, now: float) -> list[bytes]:
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
        with self._lock:
            for attempt in (1, 2):
                try:
                    return operation(self._connection())
                except _Unusable as error:
                    self._move_aside(str(error), error.suffix)
                    if attempt == 2 or not retry_on_fresh:
                        raise SpoolUnavailable(f"the spool file could not be used ({error})") from None
                except (OSError, sqlite3.Error) as error:
                    if isinstance(error, sqlite3.Error) and _is_corrupt(error):
                        self._move_aside(f"it is unreadable ({error})", "corrupt")
                        if attempt == 2 or not retry_on_fresh:
                            raise SpoolUnavailable(f"the spool file was unreadable ({error})") from None
                        continue
                    if _is_out_of_space(error):
                        self._out_of_space = True
                        self._reporter.report(
                            "spool_full",
                            f"spool {self.path} has no room on its disk ({_describe(error)}): events that "
                            "cannot be delivered now are not kept; what it holds is still sent, and writing "
                            "resumes by itself when there is room",
                            logging.ERROR,
                        )
                    else:  # e.g. its directory cannot be created, no permission, locked too long
                        self._reporter.report(
                            "spool_unavailable", f"spool {self.path} is unavailable: {_describe(error)}", logging.ERROR
                        )
                    raise SpoolUnavailable(_describe(error)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._conn is not None and self._pid != pid:  # forked: the parent's connection is not ours
            _inherited.append(self._conn)
            self._conn = None
        if self._conn is not None and _file_id(self.path) != self._file_id:
            self._retire(self._conn)
            self._conn = None
        if self._conn is None:
            self._conn = self._open()
            self._pid = pid
        return self._conn

    def _retire(self, conn: sqlite3.Connection) -> None:
        """The file at the path is no longer the one open here (removed, or replaced by another file):
        report what the old one held and leave it, so that the next operation starts on the path's file."""
        try:
            held: Optional[int] = int(conn.execute("SELECT rows FROM totals WHERE id = 0").fetchone()[0])
        except sqlite3.Error:
            held = None
        # Its -wal and -shm files, if still at the path, belong to the old file: a new file must not
        # find them (SQLite would read the old file's pages into it). Files of another database there
        # (a process that started the new file already) are left alone.
        for suffix, known in self._side_ids.items():
            if known is not None and _file_id(self.path + suffix) == known:
                try:
                    os.unlink(self.path + suffix)
                except OSError:
                    pass
        _retired.append(conn)
        self._file_id = None
        self._side_ids = {}
        if held is None:
            lost = "events it held (if any) are lost"
        elif held:
            lost = f"the {held:,} event(s) it held are lost (they will not be sent)"
        else:
            lost = "it held no events"
        self._reporter.report(
            "spool_replaced",
            f"spool {self.path} was removed or replaced while in use; {lost}; starting a new spool file there",
            logging.ERROR,
        )

    def _open(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        _create(self.path)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id != APPLICATION_ID:
                if app_id:
                    raise _Unusable(f"it is another program's database (application_id {app_id:#x})", "corrupt")
                if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise _Unusable("it is another program's database (tables but no application_id)", "corrupt")
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before the first table exists
            else:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise _Unusable(
                        f"it was written by a newer version of dreamdata-logging (spool schema {version}; "
                        f"this version reads {SCHEMA_VERSION})",
                        "newer",
                    )
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                self._reporter.report("spool_wal", f"spool {self.path}: WAL mode unavailable on this file system")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes; see the README
            conn.execute("PRAGMA journal_size_limit = 4000000")  # the WAL shrinks back after a big drain
            with _transaction(conn):
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            stat = os.stat(self.path)
            self._file_id = (stat.st_dev, stat.st_ino)
            self._side_ids = {suffix: _file_id(self.path + suffix) for suffix in ("-wal", "-shm")}
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self, reason: str, suffix: str) -> None:
        """Move the file (and its WAL files) to ``<path>.<suffix>-<timestamp>-<pid>``; report it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        try:
            stat = os.stat(self.path)
        except OSError:
            return  # already gone (moved by another process): the next operation starts a new file
        if self._file_id is not None and self._file_id != (stat.st_dev, stat.st_ino):
            return  # another process already replaced it; our connection was to the old one
        aside = f"{self.path}.{suffix}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            self._reporter.report(
                "spool_corrupt",
                f"spool {self.path} cannot be used: {reason}, and could not be moved aside: {exc}",
                logging.ERROR,
            )
            return
        for side in ("-wal", "-shm", "-journal"):
            try:
                os.replace(self.path + side, aside + side)
            except OSError:
                pass
        self._file_id = None
        self._side_ids = {}
        self.moved_aside.append(aside)
        self._reporter.report(
            "spool_corrupt",
            f"spool {self.path} cannot be used: {reason}; moved it aside to {aside} and started a new spool "
            "(events in the old file were not sent)",
            logging.ERROR,
        )


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


def _free_bytes(path: str) -> int:
    stat = os.statvfs(os.path.dirname(path))
    return stat.f_bavail * stat.f_frsize


def _create(path: str) -> None:
    """Create the file with mode 0600 whatever the umask (SQLite gives its -wal and -shm files the main
    file's mode); an existing file is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    except OSError:
        return  # let SQLite try, and say why it cannot
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror if not error.filename else f"{error.strerror}: {error.filename}"
    return str(error)


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.Error:
                # A COMMIT that fails (a full disk, say) may leave the transaction open, holding the
                # write lock: every later BEGIN would fail, here and in every other process.
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass


def _statements(script: str) -> list[str]:
    """Split the schema into statements (``executescript`` would commit our transaction)."""
    statements: list[str] = []
    current = ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
