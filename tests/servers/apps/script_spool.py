"""kill -9 during an outage, with a spool.

    python script_spool.py emit SPOOL COUNT
        Log COUNT events while the endpoint is down, wait (flush) until each was given up on and kept in
        the spool, print "spooled N", then sleep until killed.
    python script_spool.py drain SPOOL
        Open the same spool and deliver it from the background; print "drained" and exit once it is empty
        (giving up after 90 s).
"""

from __future__ import annotations

import sys
import time

import dd_common

mode, spool = sys.argv[1], sys.argv[2]
if mode == "emit":
    handler = dd_common.attach(spool=spool, max_retries=1)
    for n in range(int(sys.argv[3])):
        dd_common.log_event("Spooled Event", n=n)
    handler.flush(timeout=50)
    print(f"spooled {handler.stats()['spooled']}", flush=True)
    time.sleep(120)
elif mode == "drain":
    handler = dd_common.attach(spool=spool)
    started = time.monotonic()
    while handler.stats()["spooled"] and time.monotonic() - started < 90:
        time.sleep(0.1)
    print(f"drained in {time.monotonic() - started:.1f}s: {handler.stats()}", flush=True)
