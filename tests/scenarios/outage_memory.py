"""Scenario: a long outage. argv: ENDPOINT COUNT. Emits COUNT events of ~500 bytes into a 2,000-event queue
while every request fails, and prints (as the last line of stdout, JSON) the Python heap and RSS after
a warm-up and at the end, and the handler's stats."""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import tracemalloc

from timings import tune

from dreamdata_logging import DreamdataHandler, track
from dreamdata_logging.transport.transport import Backoff

#: Keeps the worker busy retrying, giving up and taking the next batch.
BUSY = Backoff(base=0.001, cap=0.01)


def rss() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def main() -> None:
    endpoint, count = sys.argv[1], int(sys.argv[2])
    handler = DreamdataHandler(
        "test-write-key-7c1f", endpoint=endpoint, max_queue_size=2000, flush_at=100, flush_interval=0.01,
        shutdown_timeout=1,
    )  # fmt: skip
    tune(handler, backoff=BUSY)
    log = logging.getLogger("scenario")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    logging.getLogger("dreamdata_logging").addHandler(logging.NullHandler())
    logging.getLogger("dreamdata_logging").propagate = False
    tracemalloc.start()
    warm_at = count // 6
    traced_warm = rss_warm = 0
    for i in range(count):
        log.info("Outage", extra=track(user_id=f"user-{i}", properties={"i": i, "pad": "x" * 450}))
        if i == warm_at:
            gc.collect()
            traced_warm, rss_warm = tracemalloc.get_traced_memory()[0], rss()
    gc.collect()
    traced_end, rss_end = tracemalloc.get_traced_memory()[0], rss()
    result = {
        "traced_warm": traced_warm, "traced_end": traced_end, "rss_warm": rss_warm, "rss_end": rss_end,
        "stats": handler.stats(),
    }  # fmt: skip
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
