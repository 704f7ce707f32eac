"""The SQLite file under a spool, as one process sees it: which file it is, opening it, and moving it aside.

Each process opens its own connection lazily and opens a new one after ``fork()`` (the parent's
connection is never used, nor closed, in the child). A file that SQLite cannot read as our spool
(corrupt, or another program's database) is moved aside to ``<path>.corrupt-<timestamp>``, reported
through the library's diagnostics, and replaced by a fresh spool; so is a spool written by a newer
version of this library (to ``<path>.newer-<timestamp>``: it is never downgraded in place).

The file is watched, cheaply (a ``stat`` per operation, and operations are per batch): a file removed
or replaced while in use is reported with the number of events it held and a new file is started at
the path. New files are created readable and writable by their owner only (0600). Free space on the
file's disk is checked before a write, so that a full disk never stops what the spool holds from
being claimed and acknowledged.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from typing import Optional

from dreamdata_logging._diagnostics import RateLimitedReporter, Report

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


class Unusable(Exception):
    """The file is a database this spool must not use: to be moved aside to ``<path>.<suffix>-...``."""

    def __init__(self, reason: str, suffix: str) -> None:
        super().__init__(reason)
        self.suffix = suffix


class SpoolFile:
    """This process's connection to the spool file at ``path``: opened on first use, again after a fork,
    and again when the file at the path is no longer the one open (removed or replaced)."""

    def __init__(self, path: str, reporter: RateLimitedReporter) -> None:
        self.path = path
        self._reporter = reporter
        self.conn: Optional[sqlite3.Connection] = None
        self._pid = 0
        self._file_id: Optional[tuple[int, int]] = None
        # The -wal and -shm files that belong to the open file (they stay the same while it is open).
        self._side_ids: dict[str, Optional[tuple[int, int]]] = {}
        self.moved_aside: list[str] = []  # where unusable files went, in this process

    def connection(self) -> sqlite3.Connection:
        """The connection to use now, for the file at the path (opening it, or a new one, if need be)."""
        pid = os.getpid()
        if self.conn is not None and self._pid != pid:  # forked: the parent's connection is not ours
            self.set_aside()
        if self.conn is not None and file_id(self.path) != self._file_id:
            self._retire(self.conn)
            self.conn = None
        if self.conn is None:
            self.conn = self._open()
            self._pid = pid
        return self.conn

    def set_aside(self) -> None:
        """In a forked child: keep the parent's connection unused (never closed); the next use opens one."""
        if self.conn is not None:
            _inherited.append(self.conn)
            self.conn = None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and self._pid == os.getpid():
            _close(conn)

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
            if known is not None and file_id(self.path + suffix) == known:
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
            Report.SPOOL_REPLACED,
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
            _check_ours(conn)
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                text = f"spool {self.path}: WAL mode unavailable on this file system"
                self._reporter.report(Report.SPOOL_NO_WAL, text)
            conn.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes; see the README
            conn.execute("PRAGMA journal_size_limit = 4000000")  # the WAL shrinks back after a big drain
            with transaction(conn):
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            stat = os.stat(self.path)
            self._file_id = (stat.st_dev, stat.st_ino)
            self._side_ids = {suffix: file_id(self.path + suffix) for suffix in ("-wal", "-shm")}
        except BaseException:
            conn.close()
            raise
        return conn

    def move_aside(self, reason: str, suffix: str) -> None:
        """Move the file (and its WAL files) to ``<path>.<suffix>-<timestamp>-<pid>``; report it."""
        conn, self.conn = self.conn, None
        if conn is not None:
            _close(conn)
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
                Report.SPOOL_UNUSABLE,
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
            Report.SPOOL_UNUSABLE,
            f"spool {self.path} cannot be used: {reason}; moved it aside to {aside} and started a new spool "
            "(events in the old file were not sent)",
            logging.ERROR,
        )


def check_room(conn: sqlite3.Connection, path: str, reserve: int, size: int) -> None:
    """Refuse (``OSError(ENOSPC)``) a write of ``size`` bytes that would leave less than ``reserve`` bytes
    free on the disk. Rows pass through the WAL and then the main file, hence twice their size; and what
    the WAL holds that is not in the main file yet needs as much room there when it is checkpointed."""
    if reserve <= 0 or not hasattr(os, "statvfs"):
        return
    try:
        free = _free_bytes(path)
        wal = os.stat(path + "-wal").st_size
    except OSError:
        return  # unknown: let SQLite find out
    need = reserve + 2 * size
    if free >= need + wal:
        return  # the usual case: two stats
    # Short of room: move what the WAL holds into the main file now (never waiting for other
    # processes) and count only what is left in it.
    _, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    free = _free_bytes(path)
    if frames < 0 or free < need + max(0, frames - done) * (page + 24):
        raise OSError(errno.ENOSPC, f"{free:,} bytes free on its disk; {reserve:,} are kept for sending what it holds")


def is_corrupt(error: sqlite3.Error) -> bool:
    # SQLITE_CORRUPT and SQLITE_NOTADB arrive as DatabaseError itself; locked, busy, read-only,
    # disk full and cannot-open are OperationalError (a subclass) and say nothing about the file.
    return type(error) is sqlite3.DatabaseError


def is_out_of_space(error: BaseException) -> bool:
    """A full disk or quota (SQLITE_FULL, ENOSPC, EDQUOT, EFBIG) or a write error (SQLITE_IOERR)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
    text = str(error).lower()
    return "disk is full" in text or "disk i/o error" in text


def describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror if not error.filename else f"{error.strerror}: {error.filename}"
    return str(error)


def file_id(path: str) -> Optional[tuple[int, int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class transaction:
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


def _check_ours(conn: sqlite3.Connection) -> None:
    """Raise ``Unusable`` unless the file is empty, or a spool of a schema this version reads."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id != APPLICATION_ID:
        if app_id:
            raise Unusable(f"it is another program's database (application_id {app_id:#x})", "corrupt")
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise Unusable("it is another program's database (tables but no application_id)", "corrupt")
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before the first table exists
        return
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise Unusable(
            f"it was written by a newer version of dreamdata-logging (spool schema {version}; "
            f"this version reads {SCHEMA_VERSION})",
            "newer",
        )


def _close(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        pass


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
