"""Events logged where the handler is already busy: from a signal handler, and from on_error.

    python script_reentrancy.py signal COUNT
        A SIGALRM timer fires every millisecond while the main thread logs COUNT events; each signal logs an
        event too (often while the main thread is inside the handler). Then flush, print "done".
    python script_reentrancy.py on_error
        A second handler with a refused write key calls on_error from its worker; on_error calls that
        handler's flush() (which must return at once, not wait for itself) and logs an event through the
        good handler. Prints how long the flush inside on_error took, then "done".
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any

import dd_common

from dreamdata_logging import DreamdataHandler, track

mode = sys.argv[1]
good = dd_common.attach()

if mode == "signal":
    in_signal = 0

    def on_alarm(signum: int, frame: Any) -> None:
        global in_signal
        in_signal += 1
        dd_common.log_event("From Signal Handler")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    for n in range(int(sys.argv[2])):
        dd_common.log_event("From Main Thread", n=n)
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    print(f"{in_signal} events from the signal handler; flush: {good.flush(timeout=20)}", flush=True)
elif mode == "on_error":
    called = threading.Event()
    bad: list[DreamdataHandler] = []

    def on_error(exc: BaseException, messages: Any) -> None:
        if called.is_set():
            return
        started = time.monotonic()
        result = bad[0].flush()
        took = time.monotonic() - started
        dd_common.log_event("From on_error")
        bad_log.info("Again", extra=track(user_id="u-again"))  # back into the failing handler: must not hang
        print(f"flush inside on_error returned {result} in {took:.3f}s", flush=True)
        called.set()

    bad.append(DreamdataHandler("refused-write-key", on_error=on_error, flush_interval=0.05, max_retries=0))
    bad_log = logging.getLogger("refused")
    bad_log.addHandler(bad[0])
    bad_log.setLevel(logging.INFO)
    bad_log.propagate = False
    bad_log.info("Refused", extra=track(user_id="u-refused"))
    print(f"on_error ran: {called.wait(20)}; flush: {good.flush(timeout=20)}", flush=True)
print("done", flush=True)
