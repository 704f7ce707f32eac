"""The durable spool: serialised messages kept in an SQLite file until the endpoint takes them.

Knows storage, not HTTP. Rows hold the exact message bytes (so a message's ``messageId`` never
changes, however often it is retried or whichever process sends it). Several processes may share
one file: it runs in WAL mode with a busy timeout and short transactions, and a process takes rows
to send by *leasing* them (a random token and an expiry), so two processes never hold the same row
at once, and the rows of a process that dies mid-send become available again when the lease expires.

Each process opens its own connection lazily and opens a new one after ``fork()`` (the parent's
connection is never used, nor closed, in the child). A file that SQLite cannot read as our spool
(corrupt, or another program's database) is moved aside to ``<path>.corrupt-<timestamp>``, reported
through the library's diagnostics, and replaced by a fresh spool; the application never sees an
exception from here.
"""

from __future__ import annotations

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
#: Seconds a claimed row stays reserved for the process that claimed it. A process sends a claim
#: within a much shorter deadline (see ``worker.SPOOL_AFTER``), so a lease only runs out when its
#: process died or hung; then another process may take the rows.
LEASE_SECONDS = 300.0
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


class Spool:
    """Message bytes in an SQLite file, oldest first; ``put``, ``claim``, ``ack``, ``release``.

    When a ``put`` takes the stored bytes over ``max_bytes``, the **oldest** rows not currently
    leased are deleted until it fits (newer events are worth more to attribution than the first
    hour of a long outage, and this keeps the spool bounded whatever happens); ``put`` returns them.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        lease_seconds: float = LEASE_SECONDS,
        reporter: Optional[RateLimitedReporter] = None,
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.max_bytes = max_bytes
        self.lease_seconds = lease_seconds
        self._reporter = reporter or RateLimitedReporter()
        self._lock = threading.Lock()
        self._conn: Optional[sqlite3.Connection] = None
        self._pid = 0
        self._file_id: Optional[tuple[int, int]] = None
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
                return self._trim(conn, now)

        return self._run(write, retry_on_fresh=True)

    def claim(self, max_messages: int, max_bytes: int) -> Optional[Claim]:
        """Lease the oldest available rows, at most ``max_messages`` and ``max_bytes`` (counting a
        comma between messages, as in a request body); None when there is nothing to take."""

        def take(conn: sqlite3.Connection) -> Optional[Claim]:
            now = time.time()
            # A read first: an idle process polling an empty spool takes no write lock.
            if conn.execute("SELECT 1 FROM events WHERE lease_until <= ? LIMIT 1", (now,)).fetchone() is None:
                return None
            token = os.urandom(12).hex()
            ids: list[int] = []
            data: list[bytes] = []
            size = 0
            with _transaction(conn):
                rows = conn.execute(
                    "SELECT id, data FROM events WHERE lease_until <= ? ORDER BY id LIMIT ?", (now, max_messages)
                )
                for row_id, blob in rows:
                    length = len(blob)
                    if data and size + length + len(data) > max_bytes:
                        break
                    ids.append(row_id)
                    data.append(bytes(blob))
                    size += length
                rows.close()
                if not ids:
                    return None
                # The rows between the first and last taken are ours or leased by someone else
                # (lease_until > now): one statement leases exactly ours.
                conn.execute(
                    "UPDATE events SET lease = ?, lease_until = ? WHERE id BETWEEN ? AND ? AND lease_until <= ?",
                    (token, now + self.lease_seconds, ids[0], ids[-1], now),
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
            if empty:  # give the pages of a drained spool back to the file system
                conn.execute("PRAGMA incremental_vacuum").fetchall()  # runs a step per row fetched
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # never waits for other processes

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
                except OSError as error:  # e.g. its directory cannot be created
                    self._reporter.report(
                        "spool_unavailable", f"spool {self.path} is unavailable: {error}", logging.ERROR
                    )
                    raise SpoolUnavailable(str(error)) from None
                except sqlite3.Error as error:
                    if not _is_corrupt(error):
                        self._reporter.report(
                            "spool_unavailable", f"spool {self.path} is unavailable: {error}", logging.ERROR
                        )
                        raise SpoolUnavailable(str(error)) from None
                    self._move_aside(error)
                    if attempt == 2 or not retry_on_fresh:
                        raise SpoolUnavailable(f"the spool file was unreadable ({error})") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._conn is not None and self._pid != pid:  # forked: the parent's connection is not ours
            _inherited.append(self._conn)
            self._conn = None
        if self._conn is None:
            self._conn = self._open()
            self._pid = pid
        return self._conn

    def _open(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id != APPLICATION_ID:
                if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise sqlite3.DatabaseError(f"not a dreamdata-logging spool (application_id {app_id:#x})")
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before the first table exists
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
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self, error: sqlite3.Error) -> None:
        """Move the unreadable file (and its WAL files) to ``<path>.corrupt-<timestamp>``; report it."""
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
        aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            self._reporter.report(
                "spool_corrupt",
                f"spool {self.path} is unreadable ({error}) and could not be moved aside: {exc}",
                logging.ERROR,
            )
            return
        for suffix in ("-wal", "-shm", "-journal"):
            try:
                os.replace(self.path + suffix, aside + suffix)
            except OSError:
                pass
        self._file_id = None
        self.moved_aside.append(aside)
        self._reporter.report(
            "spool_corrupt",
            f"spool {self.path} is unreadable ({error}); moved it aside to {aside} and started a new spool "
            "(events in the old file were not sent)",
            logging.ERROR,
        )


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
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
