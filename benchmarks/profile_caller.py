"""Where the caller's time goes in ``log.info(..., extra=track(...))`` with a DreamdataHandler.

    python -m benchmarks.profile_caller [--events 50000] [--no-orjson] [--workload small|large]

1. Stage costs, one thread, no worker (best of 5 loops each): the NullHandler floor, the ``track()``
   helper, ``makeRecord``, the handler's ``emit`` (message building and serialisation) with
   ``send=False``, and the whole call with and without sending.
2. The whole call with the worker draining to a local receiver (as in ``benchmarks.run``), and the
   difference to ``send=False``: what the worker thread costs the caller through the GIL.
3. cProfile of the caller thread in that loop (the worker thread is not profiled), top functions.

Uses package internals (``dreamdata_logging.events.message``/``encoding``) where they exist, for the
breakdown only; stages it cannot find are skipped.
"""

from __future__ import annotations

import os
import sys

if "--no-orjson" in sys.argv:
    os.environ["DREAMDATA_LOGGING_NO_ORJSON"] = "1"
    sys.modules["orjson"] = None  # type: ignore[assignment]

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import pstats  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from benchmarks.workload import CONTEXT, USER_ID, WORKLOADS  # noqa: E402


def thread_cpu(native_id: int) -> float:
    """CPU seconds one thread of this process has used (Linux /proc; schedstat has ns resolution)."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def best_us(fn, n: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t) / n / 1000)
    return best


def logger(name: str, handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(name)
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--workload", default="small", choices=sorted(WORKLOADS))
    ap.add_argument("--no-orjson", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)

    import dreamdata_logging as dd
    from dreamdata_logging import track

    backend = next(
        (
            m.BACKEND
            for k, m in list(sys.modules.items())
            if k.startswith("dreamdata_logging") and hasattr(m, "BACKEND")
        ),
        "?",
    )
    w = WORKLOADS[args.workload]
    ev, props, ctx, uid = w["event"], w["properties"], CONTEXT, USER_ID
    n = args.events // 5
    print(f"workload {args.workload}, serialiser {backend}, Python {sys.version.split()[0]}")

    # -- 1. stages ----------------------------------------------------------------------------
    null = logger("prof.null", logging.NullHandler())
    quiet = dd.DreamdataHandler("bench", endpoint="http://127.0.0.1:9/v1/batch", send=False)
    unsent = logger("prof.unsent", quiet)
    extra = track(user_id=uid, properties=props, context=ctx)
    record = null.makeRecord(null.name, logging.INFO, __file__, 1, ev, None, None, extra=extra)
    stages = {
        "NullHandler floor: info(extra={...})": lambda: null.info(
            ev, extra={"dreamdata": {"userId": uid, "properties": props, "context": ctx}}
        ),
        "track(...) helper": lambda: track(user_id=uid, properties=props, context=ctx),
        "Logger.makeRecord": lambda: null.makeRecord(null.name, logging.INFO, __file__, 1, ev, None, None, extra=extra),
        "handler.emit(record), send=False": lambda: quiet.emit(record),
    }
    try:
        from dreamdata_logging.events import encoding, message
        from dreamdata_logging.wire import rules as wire

        msg = {
            "type": "track",
            "messageId": wire.new_message_id(),
            "timestamp": "2012-12-02T00:30:12.984Z",
            "userId": uid,
            "event": ev,
            "properties": props,
            "context": {**ctx, "library": wire.LIBRARY},
        }
        stages["  message.build_message(...)"] = lambda: message.build_message(extra["dreamdata"], record, None, None)
        stages["    encoding.dumps(finished message)"] = lambda: encoding.dumps(msg)
        stages["    wire.new_message_id()"] = wire.new_message_id
        stages["    format_timestamp(...)"] = lambda: wire.format_timestamp(int(record.created), int(record.msecs))
    except (ImportError, AttributeError) as e:
        print("(internals not found, breakdown skipped:", e, ")")
    stages["whole call, send=False"] = lambda: unsent.info(ev, extra=track(user_id=uid, properties=props, context=ctx))
    print(f"\n1. Stage costs, single thread, no worker (best of 5 x {n} calls)")
    results = {}
    for name, fn in stages.items():
        results[name] = best_us(fn, n)
        print(f"   {name:<44}{results[name]:8.2f} us")

    # -- 2. with the worker draining ------------------------------------------------------------
    from benchmarks.run import ReceiverProc

    recv = ReceiverProc()
    try:
        h = dd.DreamdataHandler(
            "bench", endpoint=recv.endpoint, max_queue_size=args.events * 2, max_queue_bytes=args.events * 64_000
        )
        live = logger("prof.live", h)
        info = live.info

        def loop():
            t = time.perf_counter_ns()
            for _ in range(args.events):
                info(ev, extra=track(user_id=uid, properties=props, context=ctx))
            return (time.perf_counter_ns() - t) / args.events / 1000

        recv.reset()
        drained = loop()
        others = [t for t in threading.enumerate() if t is not threading.main_thread() and t.native_id]
        worker = next((t for t in others if "dreamdata" in t.name), others[0] if others else None)
        worker_cpu = thread_cpu(worker.native_id) if worker else None
        h.flush(timeout=120)
        worker_cpu_total = thread_cpu(worker.native_id) if worker else None
        recv.reset()
        prof = cProfile.Profile()
        prof.enable()
        loop()
        prof.disable()
        h.flush(timeout=120)
        h.close()
        stats = recv.stats()
    finally:
        recv.stop()
    print(f"\n2. Whole call while the worker drains to the receiver ({args.events:,} calls)")
    print(f"   {'with worker draining':<44}{drained:8.2f} us")
    print(f"   {'send=False (no worker)':<44}{results['whole call, send=False']:8.2f} us")
    print(f"   {'=> cost of sharing the GIL with the worker':<44}{drained - results['whole call, send=False']:8.2f} us")
    if worker_cpu is not None:
        print(
            f"   worker thread CPU during the emit loop: {worker_cpu * 1e6 / args.events:.2f} us per event "
            f"(until flushed: {worker_cpu_total * 1e6 / args.events:.2f} us per event)"
        )
    print(f"   receiver got {stats['messages']:,} messages in {stats['requests']} requests (profiled loop)")
    idle = dd.DreamdataHandler(
        "bench",
        endpoint="http://127.0.0.1:9/v1/batch",
        max_queue_size=args.events * 2,
        flush_at=10**9,
        flush_interval=3600,
        max_queue_bytes=args.events * 64_000,
        shutdown_timeout=0,
    )
    idle_log = logger("prof.idle", idle)
    t = time.perf_counter_ns()
    for _ in range(args.events):
        idle_log.info(ev, extra=track(user_id=uid, properties=props, context=ctx))
    queued_only = (time.perf_counter_ns() - t) / args.events / 1000
    print(f"   {'send=True, endpoint down (queue, no sending)':<44}{queued_only:8.2f} us")
    idle.close()

    print(f"\n3. cProfile of the caller thread (worker not profiled), top {args.top} by own time")
    out = io.StringIO()
    ps = pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime")
    ps.print_stats(args.top)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:12000])


if __name__ == "__main__":
    main()
