"""dictConfig called twice in one process, with an event queued at the time of the second call.

    python script_dictconfig.py MODE COUNT [BEFORE] [debug]

The first dictConfig puts the handler on the "analytics" logger, COUNT events are logged (and stay queued:
DD_FLUSH_INTERVAL is high), then a second dictConfig runs:
- "other": a config without our handler, as a server's own logging setup (uvicorn.run(), Celery, a test
  runner) does; the handler is closed by it but stays attached to "analytics";
- "same": the same config again, as an app that reconfigures does; a new handler replaces the old one.
Then COUNT more events are logged and the script ends normally (interpreter exit). BEFORE (default COUNT)
is how many are queued at the second dictConfig; "debug" puts a console handler at DEBUG on the root logger
and urllib3 at DEBUG, so every request the worker makes is logged while logging is being reconfigured.
"""

from __future__ import annotations

import logging.config
import sys
import time

import dd_common

mode, count = sys.argv[1], int(sys.argv[2])
before = int(sys.argv[3]) if len(sys.argv) > 3 else count
debug = "debug" in sys.argv[4:]
console = {"class": "logging.StreamHandler", "level": "DEBUG" if debug else "WARNING"}
ours = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": console, "dreamdata": dd_common.handler_config()},
    "loggers": {"analytics": {"handlers": ["dreamdata"], "level": "INFO", "propagate": False}},
    "root": {"handlers": ["console"], "level": "DEBUG" if debug else "WARNING"},
}
if debug:
    ours["loggers"]["urllib3"] = {"level": "DEBUG"}
theirs = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"default": console},
    "loggers": {"server": {"handlers": ["default"], "level": "INFO", "propagate": False}},
}
if debug:
    theirs["root"] = {"handlers": ["default"], "level": "DEBUG"}

logging.config.dictConfig(ours)
for n in range(before):
    dd_common.log_event("Before Reconfiguration", n=n)
started = time.monotonic()
logging.config.dictConfig(theirs if mode == "other" else ours)
print(f"second dictConfig took {time.monotonic() - started:.3f}s", flush=True)
for n in range(count):
    dd_common.log_event("After Reconfiguration", n=n)
print("done", flush=True)
