"""Scenario: the worst logging setup, during interpreter exit. argv: ENDPOINT.

The handler sits on the root logger at DEBUG, urllib3 and requests log at DEBUG, and a record factory turns
every record of theirs and ours into an event (at most 200, so a loop would end). Four events are logged
from an atexit hook that runs after dreamdata_logging's exit flag is set and before logging.shutdown(): no
thread may start, flush() ships from this thread, and what urllib3 logs there about our request must not
become events. The hook prints one JSON line: the worker threads running before the flush, flush()'s
result, the records turned into events by library, and stats().
"""

from __future__ import annotations

import atexit
import json
import logging  # logging.shutdown() is registered here: it runs after the hook below
import sys
import threading
from collections import Counter
from typing import Any

endpoint = sys.argv[1]
converted: Counter[str] = Counter()
factory = logging.getLogRecordFactory()


def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = factory(*args, **kwargs)
    top = record.name.split(".")[0]
    if top in ("urllib3", "requests", "dreamdata_logging") and sum(converted.values()) < 200:
        converted[top] += 1
        record.dreamdata = {"userId": "loop", "event": "recursion"}
    return record


def during_exit() -> None:
    from dreamdata_logging import track

    app = logging.getLogger("app.analytics")
    for i in range(4):
        app.info("Delivered", extra=track(user_id=f"app-{i}", properties={"seq": i}))
    workers = [t.name for t in threading.enumerate() if t.name.startswith("dreamdata-logging")]
    flushed = handler.flush(timeout=10)
    found = {"workers": workers, "flushed": flushed, "converted": dict(converted), "stats": handler.stats()}
    print(json.dumps(found), flush=True)


atexit.register(during_exit)  # before dreamdata_logging registers its exit flag: runs after it is set

from dreamdata_logging import DreamdataHandler  # noqa: E402

handler = DreamdataHandler("test-write-key-7c1f", endpoint=endpoint, flush_interval=60)
root = logging.getLogger()
root.addHandler(handler)
root.setLevel(logging.DEBUG)
logging.getLogger("urllib3").setLevel(logging.DEBUG)
logging.getLogger("requests").setLevel(logging.DEBUG)
logging.setLogRecordFactory(make_record)
