"""billiard's own Pool, outside Celery: each child runs one task (maxtasksperchild=1), logs one event and ends
with os._exit() from billiard's worker exit path.   python script_billiard.py TASKS"""

from __future__ import annotations

import sys

import billiard
import dd_common


def task(n: int) -> int:
    dd_common.log_event("Task Done", n=n)
    return n


if __name__ == "__main__":
    dd_common.attach()
    count = int(sys.argv[1])
    pool = billiard.Pool(2, maxtasksperchild=1)
    assert pool.map(task, range(count), chunksize=1) == list(range(count))
    pool.close()
    pool.join()
    print("done", flush=True)
