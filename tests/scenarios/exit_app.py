"""Scenario: an app that emits events and then exits. argv: ENDPOINT MODE COUNT SHUTDOWN_TIMEOUT.

MODE "exit": emit, then leave main normally. "sigint": emit, print "ready", then sleep until Ctrl-C (SIGINT),
which is left uncaught. "atexit": emit only from an atexit hook that runs after our exit flag is set and
before logging.shutdown(). The handler's flush_interval is 60 s, so nothing is sent before exit begins.
On stderr, the last line is "exit took N.NNNs": from the start of exit to the end of logging.shutdown().
"""

from __future__ import annotations

import atexit
import sys
import time

_started: list[float] = []
# Registered first, so it runs last (atexit is last-in first-out), after logging.shutdown().
atexit.register(lambda: sys.stderr.write(f"exit took {time.monotonic() - _started[0]:.3f}s\n"))

import logging  # noqa: E402 - logging.shutdown() is registered here, after the line above
import threading  # noqa: E402

endpoint, mode, count, shutdown_timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
log = logging.getLogger("app")
log.setLevel(logging.INFO)


def emit(prefix: str) -> None:
    from dreamdata_logging import track

    for i in range(count):
        log.info("Exit", extra=track(user_id=f"{prefix}-{i}"))


def emit_during_exit() -> None:
    from dreamdata_logging.delivery.lifecycle import exiting as interpreter_exiting

    emit("atexit")
    threads = [t.name for t in threading.enumerate()]
    sys.stderr.write(f"during exit: exiting={interpreter_exiting()} threads={threads}\n")


if mode == "atexit":
    atexit.register(emit_during_exit)  # runs after dreamdata_logging's exit flag, before logging.shutdown

from dreamdata_logging import DreamdataHandler  # noqa: E402

atexit.register(lambda: _started.append(time.monotonic()))  # registered last, runs first
log.addHandler(
    DreamdataHandler("test-write-key-7c1f", endpoint=endpoint, flush_interval=60, shutdown_timeout=shutdown_timeout)
)

if mode == "exit":
    emit(mode)
elif mode == "sigint":
    emit(mode)
    print("ready", flush=True)
    time.sleep(120)  # interrupted by SIGINT: KeyboardInterrupt, uncaught
