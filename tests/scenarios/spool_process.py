"""A process that uses a spool, for tests/test_spool.py (run as a script, with a hard timeout).

    python spool_process.py emit SPOOL ENDPOINT COUNT TAG [exit|kill]
        Emit COUNT events (properties: {"tag": TAG, "n": 0..COUNT-1}). With "exit", leave through normal
        interpreter exit (logging.shutdown closes the handler); with "kill", wait until every event is
        in the spool (flush returns) and then SIGKILL itself.
    python spool_process.py drain SPOOL ENDPOINT FLUSH_AT
        Open the spool and deliver what is in it from the background, until stdin closes; then print
        stats() as JSON on stdout and exit.

The write key comes from DREAMDATA_WRITE_KEY. Retry and spool timings are shortened (given to each handler's
transport and delivery, see timings.py) so tests run quickly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

from timings import QUICK_BACKOFF, QUICK_SPOOL, tune

from dreamdata_logging import DreamdataHandler, track


def main(argv: list[str]) -> int:
    mode, spool, endpoint = argv[0], argv[1], argv[2]
    if mode == "emit":
        count, tag, ending = int(argv[3]), argv[4], argv[5]
        handler = DreamdataHandler(
            endpoint=endpoint, spool=spool, max_retries=1, flush_at=100, flush_interval=0.05, shutdown_timeout=3
        )
        tune(handler, backoff=QUICK_BACKOFF, spool_timing=QUICK_SPOOL)
        log = logging.getLogger("analytics")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        for n in range(count):
            log.info("Spooled Event", extra=track(user_id=f"user-{n % 7}", properties={"tag": tag, "n": n}))
        if ending == "kill":
            handler.flush(timeout=30)  # False: not delivered, but every event is in the spool now
            sys.stdout.write(json.dumps(handler.stats()) + "\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return 0  # interpreter exit: logging.shutdown() closes the handler within shutdown_timeout
    if mode == "drain":
        handler = DreamdataHandler(endpoint=endpoint, spool=spool, flush_at=int(argv[3]), flush_interval=0.05)
        tune(handler, backoff=QUICK_BACKOFF, spool_timing=QUICK_SPOOL)
        sys.stdin.read()  # the test closes stdin once the collector has everything
        handler.close()  # waits for a send in progress, so its ack is counted
        stats = handler.stats()
        sys.stdout.write(json.dumps(stats) + "\n")
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
