"""An RQ app: the job ``rq_app.emit`` logs events; ``rq worker -c rq_app`` reads this module as its settings.

    rq worker -c rq_app                the worker (it imports this module before it forks work horses)
    rq worker -c rq_app -w rq_app.SpawnedWorker
                                       the same with spawned work horses (each imports this module)
    python rq_app.py COUNT EVENTS      enqueue COUNT jobs of EVENTS events each, and exit

Environment: REDIS_URL (RQ reads it from this module too), DD_RQ_SETUP ("false": leave out the one line).
"""

from __future__ import annotations

import os
import sys

import dd_common

import dreamdata_logging.rq

REDIS_URL = os.environ["REDIS_URL"]

dd_common.attach()
if os.environ.get("DD_RQ_SETUP", "true") != "false":
    dreamdata_logging.rq.setup()  # the one line


try:  # RQ 2.2+: a worker whose work horse is a new interpreter, not a fork (RQ 3.0+ imports this class there)
    from rq.worker import SpawnWorker
except ImportError:  # older RQ
    pass
else:

    class SpawnedWorker(SpawnWorker):
        """Defined here so that each spawned work horse imports this module (and runs the line above)."""


def emit(n: int, events: int) -> None:
    for k in range(events):
        dd_common.log_event("Job Ran", n=n, k=k)


if __name__ == "__main__":
    from redis import Redis
    from rq import Queue

    queue = Queue(connection=Redis.from_url(REDIS_URL))
    for n in range(int(sys.argv[1])):
        queue.enqueue("rq_app.emit", n, int(sys.argv[2]))
