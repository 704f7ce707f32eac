"""dictConfig called twice in one process, with an event queued at the time of the second call.

    python script_dictconfig.py MODE COUNT

The first dictConfig puts the handler on the "analytics" logger, COUNT events are logged (and stay queued:
DD_FLUSH_INTERVAL is high), then a second dictConfig runs:
- "other": a config without our handler, as a server's own logging setup (uvicorn.run(), Celery, a test
  runner) does; the handler is closed by it but stays attached to "analytics";
- "same": the same config again, as an app that reconfigures does; a new handler replaces the old one.
Then COUNT more events are logged and the script ends normally (interpreter exit).
"""

from __future__ import annotations

import logging.config
import sys
import time

import dd_common

mode, count = sys.argv[1], int(sys.argv[2])
console = {"class": "logging.StreamHandler", "level": "WARNING"}
ours = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": console, "dreamdata": dd_common.handler_config()},
    "loggers": {"analytics": {"handlers": ["dreamdata"], "level": "INFO", "propagate": False}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
theirs = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"default": console},
    "loggers": {"server": {"handlers": ["default"], "level": "INFO", "propagate": False}},
}

logging.config.dictConfig(ours)
for n in range(count):
    dd_common.log_event("Before Reconfiguration", n=n)
started = time.monotonic()
logging.config.dictConfig(theirs if mode == "other" else ours)
print(f"second dictConfig took {time.monotonic() - started:.3f}s", flush=True)
for n in range(count):
    dd_common.log_event("After Reconfiguration", n=n)
print("done", flush=True)
