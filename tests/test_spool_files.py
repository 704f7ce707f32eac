"""The spool and its file system: leases, a full disk, a file removed or replaced, a newer schema, modes.

Real files and real SQLite throughout; a second process, a kill or a resource limit runs as a
subprocess with a hard timeout.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dreamdata_logging.spool import spool as _spool
from dreamdata_logging.spool.spool import LEASE_SECONDS, SCHEMA_VERSION, Spool, SpoolUnavailable

HARD_TIMEOUT = 60  # seconds any subprocess may take before the test fails


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=HARD_TIMEOUT, check=False
    )


def leases(path: Path) -> list[tuple[str, float]]:
    with sqlite3.connect(path) as conn:
        return [(lease, until) for lease, until in conn.execute("SELECT lease, lease_until FROM events ORDER BY id")]


def rows(path: Path) -> list[bytes]:
    conn = sqlite3.connect(path)
    try:
        return [bytes(data) for (data,) in conn.execute("SELECT data FROM events ORDER BY id")]
    finally:
        conn.close()


def errors(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]


# -- leases ---------------------------------------------------------------------------------------------


def test_a_claim_takes_the_lease_length_it_asks_for_and_the_default_is_a_minute(tmp_path):
    path = tmp_path / "s.sqlite3"
    spool = Spool(path)
    spool.put([b"a", b"b"])
    before = time.time()
    short = spool.claim(1, 1000, lease_seconds=7)
    default = spool.claim(1, 1000)
    after = time.time()
    assert short is not None and default is not None and short.messages == [b"a"] and default.messages == [b"b"]
    (_, short_until), (_, default_until) = leases(path)
    assert before + 7 <= short_until <= after + 7
    assert LEASE_SECONDS <= 60
    assert before + LEASE_SECONDS <= default_until <= after + LEASE_SECONDS


def test_rows_of_a_process_killed_holding_a_claim_are_taken_by_another(tmp_path):
    path = tmp_path / "s.sqlite3"
    Spool(path).put([b'{"n":%d}' % n for n in range(10)])
    code = (
        "import json, os, signal, sys, time\n"
        "from dreamdata_logging.spool.spool import Spool\n"
        "claim = Spool(sys.argv[1]).claim(100, 500_000, lease_seconds=2.0)\n"
        "print(json.dumps({'ids': claim.ids, 'until': time.time() + 2.0}), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = run_python(code, str(path))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    held = json.loads(killed.stdout)
    assert len(held["ids"]) == 10
    # The dead process's lease is in the file: the rows are not available until it runs out.
    assert all(lease and until > time.time() - 1 for lease, until in leases(path))
    survivor = Spool(path)
    deadline = time.monotonic() + 30  # generous: the lease is 2 s
    claim = survivor.claim(100, 500_000)
    while claim is None and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for a clock, not for another thread
        claim = survivor.claim(100, 500_000)
    assert claim is not None and claim.ids == held["ids"]
    assert time.time() >= held["until"] - 2.0 - 0.001  # not before the lease was taken
    survivor.ack(claim)
    assert survivor.pending() == (0, 0)


def test_claims_keep_to_their_bounds_and_skip_rows_leased_elsewhere(tmp_path):
    spool = Spool(tmp_path / "s.sqlite3")
    spool.put([b"x" * 50, b"y" * 10, b"z" * 10, b"w" * 10])
    first = spool.claim(1, 20)  # a row larger than the bound still goes alone (it is never stuck)
    assert first is not None and first.messages == [b"x" * 50]
    other = Spool(tmp_path / "s.sqlite3")
    middle = other.claim(1, 1000)
    assert middle is not None and middle.messages == [b"y" * 10]
    rest = spool.claim(10, 21)  # 10 + "," + 10 = 21 bytes
    assert rest is not None and rest.messages == [b"z" * 10, b"w" * 10] and rest.size == 20
    spool.release(first)
    again = spool.claim(10, 1000)
    assert again is not None and again.messages == [b"x" * 50]


# -- a full disk ----------------------------------------------------------------------------------------


def test_a_full_database_refuses_puts_keeps_draining_and_recovers_by_itself(tmp_path, caplog):
    path = tmp_path / "s.sqlite3"
    spool = Spool(path, free_space_reserve=0)
    held = [b'{"n":%d,"pad":"%s"}' % (n, b"p" * 600) for n in range(100)]
    spool.put(held)
    conn = spool._connection()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 10}")  # SQLite's own SQLITE_FULL past 10 more pages
    failures = 0
    with caplog.at_level(logging.INFO, logger="dreamdata_logging"):
        for _ in range(5):
            try:
                spool.put([b"f" * 700] * 20)
            except SpoolUnavailable:
                failures += 1
        assert failures >= 3
        assert len(errors(caplog, "has no room on its disk")) == 1  # reported once, not per put
        # No transaction was left open: another connection (another process) can still write.
        assert conn.in_transaction is False
        other = sqlite3.connect(path, timeout=5, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        other.close()
        # What the spool holds is still sent: claim, release and ack work on the full file.
        stored = spool.pending()[0]
        claim = spool.claim(30, 500_000)
        assert claim is not None and claim.messages == held[:30]
        spool.release(claim)
        claim = spool.claim(60, 500_000)
        assert claim is not None and len(claim) == 60
        spool.ack(claim)
        assert spool.pending()[0] == stored - 60
        # The freed pages take new events again, with no restart and nothing switched back on.
        assert spool.put([b"after" * 100] * 20) == []
        assert spool.pending()[0] == stored - 60 + 20
    assert any("has room again" in r.getMessage() for r in caplog.records)
    assert rows(path)[-1] == b"after" * 100


def test_a_file_size_limit_fails_the_put_and_the_spool_works_again_when_lifted(tmp_path):
    # RLIMIT_FSIZE makes writes past the limit fail with EFBIG (SQLite: a disk I/O error).
    code = (
        "import json, resource, signal, sys\n"
        "from dreamdata_logging.spool.spool import Spool, SpoolUnavailable\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "spool = Spool(sys.argv[1], free_space_reserve=0)\n"
        "spool.put([b'{\"first\":%d}' % n for n in range(50)])\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))\n"
        "failed = []\n"
        "for n in range(20):\n"
        "    try:\n"
        "        spool.put([b'x' * 20_000] * 5)\n"
        "    except SpoolUnavailable as error:\n"
        "        failed.append(str(error))\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))\n"
        "spool.put([b'{\"last\":1}'])\n"
        "claim = spool.claim(1000, 10_000_000)\n"
        "print(json.dumps({'failed': failed, 'pending': spool.pending()[0],\n"
        "                  'first': [m.decode() for m in claim.messages[:50]], 'last': claim.messages[-1].decode()}))\n"
    )
    result = run_python(code, str(tmp_path / "s.sqlite3"))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["failed"], "no put failed past the file size limit"
    assert "has no room on its disk" in result.stderr
    assert "Traceback" not in result.stderr
    assert out["first"] == [f'{{"first":{n}}}' for n in range(50)]  # what was there before is intact
    assert out["last"] == '{"last":1}'


def _mount_tmpfs(where: Path, size: str) -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a Linux tmpfs")
def test_a_spool_that_fills_its_disk_still_drains_and_then_takes_events_again(tmp_path, caplog):
    disk = tmp_path / "small-disk"
    if not _mount_tmpfs(disk, "4m"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        (disk / "other-files").write_bytes(b"\0" * 1_500_000)  # the rest of the disk is someone else's
        spool = Spool(disk / "s.sqlite3", free_space_reserve=500_000)
        written: list[bytes] = []
        with caplog.at_level(logging.INFO, logger="dreamdata_logging"):
            for batch in range(100):
                items = [b'{"n":%d,"pad":"%s"}' % (batch * 100 + n, b"p" * 680) for n in range(100)]
                try:
                    spool.put(items)
                except SpoolUnavailable:
                    break
                written += items
            else:
                pytest.fail("the disk never filled")
            assert written and len(errors(caplog, "has no room on its disk")) == 1
            # Nothing was freed by anyone else, and yet all of it drains.
            sent: list[bytes] = []
            while True:
                claim = spool.claim(100, 500_000)
                if claim is None:
                    break
                sent += claim.messages
                spool.ack(claim)
            assert sent == written
            # Draining gave the pages back: the spool takes events again, by itself.
            assert spool.put([b'{"again":1}']) == []
            assert spool.pending() == (1, 11)
        assert any("has room again" in r.getMessage() for r in caplog.records)
    finally:
        if "spool" in locals():
            spool.close()
        if subprocess.run(["umount", str(disk)], capture_output=True, timeout=HARD_TIMEOUT).returncode:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=HARD_TIMEOUT)


# -- the file removed or replaced -----------------------------------------------------------------------


@pytest.mark.parametrize("remove", ["main file", "with its -wal and -shm"])
def test_a_removed_file_is_reported_with_its_lost_events_and_a_new_one_started(tmp_path, caplog, remove):
    path = tmp_path / "s.sqlite3"
    spool = Spool(path)
    spool.put([b"1", b"2", b"3"])
    path.unlink()
    if remove != "main file":
        for side in ("-wal", "-shm"):
            Path(f"{path}{side}").unlink()
    with caplog.at_level(logging.ERROR, logger="dreamdata_logging"):
        spool.put([b"new"])
    reported = errors(caplog, "was removed or replaced while in use")
    assert len(reported) == 1 and "the 3 event(s) it held are lost" in reported[0]
    assert path.exists() and rows(path) == [b"new"]  # a new file at the path, not the old one
    assert spool.pending() == (1, 3)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    spool.put([b"newer"])  # noticed once: no more reports
    assert len(errors(caplog, "was removed or replaced")) == 1 and rows(path) == [b"new", b"newer"]


def test_a_file_replaced_by_another_spool_is_used_and_its_events_kept(tmp_path, caplog):
    path = tmp_path / "s.sqlite3"
    spool = Spool(path)
    spool.put([b"old-1", b"old-2"])
    elsewhere = tmp_path / "elsewhere.sqlite3"
    other = Spool(elsewhere)
    other.put([b"other-1", b"other-2", b"other-3"])
    other.close()
    os.replace(elsewhere, path)  # e.g. a restored copy moved into place while this process runs
    with caplog.at_level(logging.ERROR, logger="dreamdata_logging"):
        spool.put([b"mine"])
        assert spool.pending() == (4, 25)
    reported = errors(caplog, "was removed or replaced while in use")
    assert len(reported) == 1 and "the 2 event(s) it held are lost" in reported[0]
    # The old file's -wal was not carried over into the new one; another process sees the same file.
    code = (
        "import sqlite3, sys\n"
        "from dreamdata_logging.spool.spool import Spool\n"
        "spool = Spool(sys.argv[1])\n"
        "spool.put([b'theirs'])\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "print(conn.execute('PRAGMA integrity_check').fetchone()[0], spool.pending()[0])\n"
    )
    result = run_python(code, str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "5"]
    assert rows(path) == [b"other-1", b"other-2", b"other-3", b"mine", b"theirs"]
    assert spool.pending()[0] == 5


def test_an_unchanged_file_keeps_its_connection(tmp_path):
    spool = Spool(tmp_path / "s.sqlite3")
    spool.put([b"a"])
    conn = spool._conn
    for _ in range(3):
        claim = spool.claim(10, 1000)
        assert claim is not None
        spool.release(claim)
    assert spool._conn is conn and spool.moved_aside == []


# -- a newer or unknown file ----------------------------------------------------------------------------


def test_a_spool_of_a_newer_schema_is_moved_aside_not_downgraded(tmp_path, caplog):
    path = tmp_path / "s.sqlite3"
    writer = Spool(path)
    writer.put([b"from-the-future"])
    writer.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with caplog.at_level(logging.ERROR, logger="dreamdata_logging"):
        spool = Spool(path)
        assert spool.put([b"today"]) == []
    assert len(spool.moved_aside) == 1 and ".newer-" in spool.moved_aside[0]
    assert errors(caplog, "newer version of dreamdata-logging")
    aside = Path(spool.moved_aside[0])
    with sqlite3.connect(aside) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert rows(aside) == [b"from-the-future"]
    assert rows(path) == [b"today"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_database_with_another_application_id_is_moved_aside(tmp_path):
    path = tmp_path / "s.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 4660")  # no tables, but it is someone's
    spool = Spool(path)
    assert spool.put([b"x"]) == []
    assert len(spool.moved_aside) == 1 and ".corrupt-" in spool.moved_aside[0]
    with sqlite3.connect(spool.moved_aside[0]) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 4660
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == _spool.APPLICATION_ID


# -- file modes -----------------------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_new_spool_files_are_for_their_owner_only_whatever_the_umask(tmp_path, umask):
    path = tmp_path / "s.sqlite3"
    old = os.umask(umask)
    try:
        spool = Spool(path)
        spool.put([b"secret-ish"])
        modes: dict[str, Any] = {side: stat.S_IMODE(os.stat(f"{path}{side}").st_mode) for side in ("", "-wal", "-shm")}
    finally:
        os.umask(old)
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    assert spool.pending() == (1, 10)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_an_existing_files_mode_is_left_as_the_user_set_it(tmp_path):
    path = tmp_path / "s.sqlite3"
    Spool(path).put([b"a"])
    os.chmod(path, 0o640)
    spool = Spool(path)
    spool.put([b"b"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert spool.pending()[0] == 2
