"""A randomised schedule of the handler's own operations against a collector whose faults flip.

    python state_schedule.py SEED STEPS SPOOL_DIR_OR_-

Four threads log numbered events the whole time while the main thread, step by step, picks one of:
log a burst, close the handler (it reopens on the next event), a second dictConfig with the same config
(a new handler replaces the old) or with another (ours closed but still attached), flush, fork a child
that logs and flushes, and flip the endpoint between healthy, 503, 429, dropped connections and slow
errors. At the end the endpoint is healthy, an event reopens whatever is closed, every handler flushes
and closes. Prints one JSON line: every messageId logged and arrived, and each handler's stats().
"""

from __future__ import annotations

import faulthandler
import json
import logging
import logging.config
import os
import random
import sys
import threading
import time
import uuid

from dreamdata_logging import DreamdataHandler, track
from dreamdata_logging.tools.collector import Collector, Fault

KEY = "state-key"
seed, steps, spool_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
faulthandler.dump_traceback_later(150, exit=True)  # a hang shows every thread's stack, then ends the run
rng = random.Random(seed)
collector = Collector(write_key=KEY, keep=None).start()
handler_entry = {
    "class": "dreamdata_logging.DreamdataHandler",
    "write_key": KEY,
    "endpoint": collector.url,
    "flush_at": "50",
    "flush_interval": "0.05",
    "timeout": "3",
    "max_retries": "2",
    "shutdown_timeout": "2",
    "max_queue_size": "20000",
}
if spool_dir != "-":
    handler_entry["spool"] = os.path.join(spool_dir, "events.sqlite")
ours = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"dreamdata": handler_entry, "quiet": {"class": "logging.NullHandler"}},
    "loggers": {
        "analytics": {"handlers": ["dreamdata"], "level": "INFO", "propagate": False},
        "urllib3": {"handlers": ["quiet"], "level": "DEBUG", "propagate": False},
    },
}
theirs = {"version": 1, "disable_existing_loggers": False, "handlers": {"plain": {"class": "logging.NullHandler"}},
          "loggers": {"server": {"handlers": ["plain"], "level": "INFO"}}}  # fmt: skip

handlers: list[DreamdataHandler] = []  # every handler ever made here, to read their stats at the end
logged: list[str] = []
logged_lock = threading.Lock()
log = logging.getLogger("analytics")


def configure(config: dict) -> None:
    logging.config.dictConfig(config)
    for handler in log.handlers:
        if isinstance(handler, DreamdataHandler) and handler not in handlers:
            handlers.append(handler)


def emit(source: str) -> None:
    message_id = f"{source}-{uuid.uuid4().hex}"
    log.info("State Step", extra=track(user_id=source, message_id=message_id))
    with logged_lock:
        logged.append(message_id)


running = threading.Event()
running.set()


def logging_thread(n: int) -> None:
    local = random.Random(seed * 100 + n)
    while running.is_set():
        for _ in range(local.randint(1, 20)):
            emit(f"t{n}")
        time.sleep(local.uniform(0, 0.01))


FAULTS = [None, Fault(503), Fault(429, headers={"Retry-After": "0"}), Fault(drop=True), Fault(503, delay=0.3)]


def fork_child() -> dict:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: log, flush, report its own ids and ledger, and end without exit hooks
        os.close(read_end)
        code = 0
        try:
            ids = []
            for _ in range(5):
                message_id = f"child-{uuid.uuid4().hex}"
                log.info("Child Step", extra=track(user_id="child", message_id=message_id))
                ids.append(message_id)
            current = [h for h in log.handlers if isinstance(h, DreamdataHandler)]
            current += [h for h in handlers if h not in current]  # closed ones count here too
            for handler in current:
                handler.flush(10)
                handler.close()  # stops its thread (it may be draining the spool), so the counts are final
            report = {"ids": ids, "stats": [h.stats() for h in current]}
            os.write(write_end, json.dumps(report).encode())
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write_end)
    data = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return {"status": status, **(json.loads(data) if data else {"ids": [], "stats": []})}


configure(ours)
threads = [threading.Thread(target=logging_thread, args=(n,), daemon=True) for n in range(4)]
for thread in threads:
    thread.start()
children = []
actions = []
for _ in range(steps):
    action = rng.choice(["log", "close", "same", "other", "flush", "fault", "fault", "fork"])
    actions.append(action)
    if action == "log":
        for _ in range(rng.randint(1, 200)):
            emit("main")
    elif action == "close":
        for handler in list(log.handlers):
            handler.close()
    elif action == "same":
        configure(ours)
    elif action == "other":
        configure(theirs)
    elif action == "flush":
        for handler in list(log.handlers):
            handler.flush(rng.uniform(0, 0.5))
    elif action == "fault":
        collector.set_down(rng.choice(FAULTS))
    elif action == "fork" and hasattr(os, "fork"):
        children.append(fork_child())
    time.sleep(rng.uniform(0, 0.05))

running.clear()
for thread in threads:
    thread.join(10)
collector.set_down(None)
emit("main")  # reopens a handler that a close or a reconfiguration left closed but attached
flushed = [handler.flush(60) for handler in log.handlers if isinstance(handler, DreamdataHandler)]
for handler in handlers:
    handler.close()  # a second close() waits for the first one's end (it may have begun inside dictConfig)
arrived = [m["messageId"] for m in collector.received()]
print(json.dumps({
    "seed": seed, "actions": actions, "logged": logged, "arrived": arrived, "flushed": flushed,
    "stats": [h.stats() for h in handlers], "children": children,
}))  # fmt: skip
collector.stop()
