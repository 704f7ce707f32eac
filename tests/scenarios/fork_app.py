"""Scenario: a process that forks after queueing events. argv: ENDPOINT MODE. Prints JSON lines on stdout.

MODE "os-fork": the parent queues 5 events, forks; the child emits 3 of its own and exits normally;
the parent then emits 2 more and exits. "in-flight": as "os-fork", but the parent's first batch is inside
a request when it forks. "multiprocessing": the parent queues 2, then two multiprocessing "fork" children
each emit 3 and return (they end with os._exit). "stress": a thread keeps emitting while the main thread
forks 10 times; each child emits one event, flushes and leaves with os._exit(). "no-hooks": as "os-fork",
but the fork is libc's own, with none of Python's fork hooks run (as uWSGI forks its workers); the child
flushes and leaves with os._exit().
Every event's userId names the process that emitted it.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import threading
import time

from dreamdata_logging import DreamdataHandler, track

endpoint, mode = sys.argv[1], sys.argv[2]
if os.environ.get("FORK_APP_NO_PROCESS_IDS"):
    logging.logProcesses = False  # records carry no process id: the handler reads its own
handler = DreamdataHandler(
    "test-write-key-7c1f", endpoint=endpoint, flush_interval=0.01 if mode == "in-flight" else 60, timeout=2
)
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(handler)


def emit(prefix: str, count: int) -> None:
    for i in range(count):
        log.info("Fork", extra=track(user_id=f"{prefix}-{i}"))


def say(document: object) -> None:
    # One write of one line: parent and children share stdout, and print() may write in pieces
    # that interleave between processes.
    sys.stdout.flush()
    os.write(1, (json.dumps(document) + "\n").encode())


def report(who: str) -> None:
    say({"who": who, "pid": os.getpid(), "stats": handler.stats()})


def wait_child(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status


def mp_task(n: int) -> None:
    emit(f"mp{n}", 3)
    report(f"mp{n}")


if mode in ("os-fork", "in-flight"):
    emit("parent", 5)
    if mode == "in-flight":
        deadline = time.monotonic() + 10
        watchdog = handler._transport._exchange._watchdog
        # The batch has left the queue and its request has a connection (it is being sent).
        while (handler._worker.buffer._batched < 5 or watchdog._connection is None) and time.monotonic() < deadline:
            time.sleep(0.005)
    pid = os.fork()
    if pid == 0:
        report("child-start")
        emit("child", 3)
        report("child")
        sys.exit(0)  # a normal exit: atexit, logging.shutdown(), close()
    code = wait_child(pid)
    emit("parent-after", 2)
    report("parent")
    say({"child_exit": code})
elif mode == "no-hooks":
    import ctypes

    emit("parent", 5)
    pid = ctypes.PyDLL(None).fork()  # PyDLL: the GIL stays held, as in a C fork from the interpreter
    if pid == 0:  # the first call into the handler here is an event
        emit("child", 3)
        flushed = handler.flush(timeout=20)
        report("child")
        os._exit(0 if flushed else 3)
    code = wait_child(pid)
    emit("parent-after", 2)
    report("parent")
    say({"child_exit": code})
elif mode == "multiprocessing":
    emit("parent", 2)
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=mp_task, args=(n,)) for n in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    say({"child_exit": [c.exitcode for c in children]})
elif mode == "stress":
    stop = threading.Event()

    def keep_emitting() -> None:
        i = 0
        while not stop.is_set():
            log.info("Busy", extra=track(user_id=f"busy-{i}"))
            i += 1

    busy = threading.Thread(target=keep_emitting)
    busy.start()
    codes = []
    for n in range(10):
        pid = os.fork()
        if pid == 0:
            log.info("Child", extra=track(user_id=f"stress-{n}"))
            os._exit(0 if handler.flush(timeout=20) else 3)
        codes.append(wait_child(pid))
    stop.set()
    busy.join(30)
    say({"child_exit": codes})
