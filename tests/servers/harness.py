"""Run a server as a subprocess against the local collector, with a hard timeout, and count messageIds.

Every app writes the messageId of each event it logged to ``ids_file`` (one line, one write). The test
compares that list with what the collector accepted: nothing lost, nothing twice, nothing unknown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import dreamdata_logging
from dreamdata_logging.tools.collector import Collector

from ..conftest import WRITE_KEY

APPS = Path(__file__).parent / "apps"
#: The apps import the same dreamdata_logging as this test process.
LIBRARY_ROOT = Path(dreamdata_logging.__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: No subprocess of this suite lives longer than this, whatever happens.
HARD_TIMEOUT = 60.0
#: Added to any bound on elapsed time: the machine is small and shared.
MARGIN = 3.0
#: The apps' shutdown_timeout (DD_SHUTDOWN_TIMEOUT).
SHUTDOWN_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    """A console script installed beside this interpreter (the servers extra puts them there)."""
    return str(BIN / name)


class Server:
    """One subprocess (in its own process group, so every child it makes can be killed with it)."""

    def __init__(
        self,
        argv: Sequence[str],
        collector: Optional[Collector],
        tmp_path: Path,
        env: Optional[dict[str, str]] = None,
        endpoint: Optional[str] = None,
    ) -> None:
        self.ids_file = tmp_path / "ids.txt"
        self.ids_file.touch()
        self.out_file = tmp_path / "output.txt"
        full_env = dict(os.environ)
        full_env.update(
            DREAMDATA_ENDPOINT=endpoint or (collector.url if collector is not None else "http://127.0.0.1:9"),
            DREAMDATA_WRITE_KEY=WRITE_KEY,
            DD_IDS_FILE=str(self.ids_file),
            DD_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
            PYTHONPATH=os.pathsep.join(filter(None, [str(APPS), str(LIBRARY_ROOT), os.environ.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
            PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        )
        full_env.update(env or {})
        self.env = full_env
        self._out = open(self.out_file, "wb")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            list(argv), env=full_env, cwd=str(APPS), stdout=self._out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.deadline = self.started + HARD_TIMEOUT

    # -- observing --

    def output(self) -> str:
        self._out.flush()
        return self.out_file.read_text(errors="replace")

    def ids(self) -> list[str]:
        return [line for line in self.ids_file.read_text().splitlines() if line]

    def _left(self, timeout: float) -> float:
        return max(0.0, min(timeout, self.deadline - time.monotonic()))

    def wait_ids(self, count: int, timeout: float = 30.0) -> list[str]:
        """Until the app noted at least ``count`` events (polling the file it appends to)."""
        end = time.monotonic() + self._left(timeout)
        while len(self.ids()) < count:
            assert self.popen.poll() is None, f"the server ended early ({self.popen.returncode}):\n{self.output()}"
            assert time.monotonic() < end, f"only {len(self.ids())} of {count} events were logged:\n{self.output()}"
            time.sleep(0.05)
        return self.ids()

    def wait_output(self, text: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + self._left(timeout)
        while text not in self.output():
            assert self.popen.poll() is None, f"the server ended early ({self.popen.returncode}):\n{self.output()}"
            assert time.monotonic() < end, f"{text!r} never appeared:\n{self.output()}"
            time.sleep(0.05)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + self._left(timeout)
        while not condition():
            assert self.popen.poll() is None, f"the server ended early ({self.popen.returncode}):\n{self.output()}"
            assert time.monotonic() < end, f"{what} never happened:\n{self.output()}"
            time.sleep(0.05)

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        """Until ``url`` answers 200 (the server is up and its app loaded)."""
        end = time.monotonic() + self._left(timeout)
        while True:
            assert self.popen.poll() is None, f"the server ended early ({self.popen.returncode}):\n{self.output()}"
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < end, f"{url} never answered:\n{self.output()}"
            time.sleep(0.1)

    # -- ending --

    def signal(self, sig: int, group: bool = False) -> float:
        """Send ``sig`` to the server (or its whole process group, as a terminal's Ctrl-C does); the time sent."""
        if group:
            os.killpg(self.popen.pid, sig)
        else:
            self.popen.send_signal(sig)
        return time.monotonic()

    def wait_exit(self, timeout: float) -> tuple[int, float]:
        """(returncode, seconds since the call); kills the group and fails when it takes longer than ``timeout``."""
        start = time.monotonic()
        try:
            code = self.popen.wait(self._left(timeout))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server did not end within {timeout:.1f}s:\n{self.output()}") from None
        return code, time.monotonic() - start

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        """Kill whatever is left of the group (children that outlived their parent included)."""
        self.kill()
        self._out.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        body: bytes = answer.read()
        return body


def assert_all_arrived(collector: Collector, ids: Sequence[str], output: str = "", timeout: float = 10.0) -> None:
    """Every logged messageId arrived exactly once, and nothing else arrived."""
    assert ids, "the app logged nothing"
    assert len(set(ids)) == len(ids), "the app noted a messageId twice"
    collector.wait_for(len(ids), timeout)
    got = [message["messageId"] for message in collector.received()]
    lost = set(ids) - set(got)
    twice = sorted(key for key, n in Counter(got).items() if n > 1)
    unknown = set(got) - set(ids)
    assert not lost and not twice and not unknown, (
        f"{len(lost)} of {len(ids)} lost, {len(twice)} arrived twice, {len(unknown)} never logged\n{output[-3000:]}"
    )


def killed_by(code: int, sig: int) -> bool:
    return code == -sig
