"""Where the caller's time goes in ``log.info(..., extra=track(...))`` with a DreamdataHandler.

    python -m benchmarks.profile_caller [--events 50000] [--no-orjson] [--workload small|large]

1. Stage costs in the calling thread (best of 5 loops each): the NullHandler floor, the ``track()``
   helper, ``makeRecord``, the handler's ``emit`` (message building and serialisation) with
   ``send=False``, its parts, queueing one built message (a worker drains it without HTTP), and the whole
   call with ``send=False``.
2. The whole call step by step, the caller thread's own CPU beside the wall time, in alternating rounds:
   ``send=False``; queued, with the worker cutting and joining batches whose POST is replaced by one that
   drops the body; queued and posted to a local receiver (as in ``benchmarks.run``). Each step's CPU
   difference is what that step costs the calling thread.
3. cProfile of the caller thread in the posting loop (the worker thread is not profiled), top functions.

Uses package internals (``dreamdata_logging.events.message``/``encoding``, the handler's delivery and
its transport's exchange) for the breakdown only; stages it cannot find are skipped.
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


def _without_http(handler: logging.Handler) -> logging.Handler:
    """The handler, its transport's POST replaced by one that drops the body and answers 200 (internals)."""
    handler._transport._exchange.post = lambda payload, timeout: 200  # type: ignore[attr-defined]
    return handler


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
    queued = None  # a handler whose worker drains without HTTP, for the queueing stage
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
        queued = _without_http(dd.DreamdataHandler("bench", endpoint="http://127.0.0.1:9/v1/batch"))
        delivery, built = queued._delivery, message.build_message(extra["dreamdata"], record, None, None)
        stages["  queueing the built message"] = lambda: delivery.sink.message(built, delivery.worker)
    except (ImportError, AttributeError) as e:
        print("(internals not found, breakdown skipped:", e, ")")
    stages["whole call, send=False"] = lambda: unsent.info(ev, extra=track(user_id=uid, properties=props, context=ctx))
    print(f"\n1. Stage costs in the calling thread (best of 5 x {n} calls; only the queueing stage has a worker)")
    results = {}
    for name, fn in stages.items():
        results[name] = best_us(fn, n)
        print(f"   {name:<44}{results[name]:8.2f} us")
    if queued is not None:
        queued.flush(timeout=60)
        queued.close()

    # -- 2. the caller's CPU, queueing and sending step by step -------------------------------------
    from benchmarks.run import ReceiverProc

    def caller_loop(log: logging.Logger) -> tuple[float, float]:
        """Wall and caller-thread CPU per call (us) over args.events calls."""
        info = log.info
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(args.events):
            info(ev, extra=track(user_id=uid, properties=props, context=ctx))
        return (time.perf_counter_ns() - t) / args.events / 1000, (time.thread_time_ns() - c) / args.events / 1000

    bounds = {"max_queue_size": args.events * 2, "max_queue_bytes": args.events * 64_000}
    recv = ReceiverProc()
    steps = {
        "send=False: built, checked, counted": lambda: dd.DreamdataHandler("bench", endpoint=recv.endpoint, send=False),
        # the worker cuts and joins every batch; its transport drops each body instead of posting it
        "+ worker taking batches (no HTTP)": lambda: _without_http(
            dd.DreamdataHandler("bench", endpoint=recv.endpoint, **bounds)
        ),
        "+ worker posting them (HTTP, loopback)": lambda: dd.DreamdataHandler(
            "bench", endpoint=recv.endpoint, **bounds
        ),
    }
    best: dict[str, tuple[float, float]] = {}
    worker_cpu = None
    try:
        for round_ in range(3):  # alternating rounds, best of each: the machine's drift hits all alike
            for i, (name, make) in enumerate(steps.items()):
                h = make()
                wall, cpu = caller_loop(logger(f"prof.step{i}.{round_}", h))
                if name.startswith("+ worker posting"):
                    worker = next((t for t in threading.enumerate() if t.name.startswith("dreamdata")), None)
                    if worker is not None and worker.native_id:
                        worker_cpu = thread_cpu(worker.native_id) * 1e6 / args.events
                h.flush(timeout=120)  # the never-woken one's events go out here, after the loop
                h.close()
                old = best.get(name)
                best[name] = (wall, cpu) if old is None or cpu < old[1] else old
        recv.reset()
        h = dd.DreamdataHandler("bench", endpoint=recv.endpoint, **bounds)
        live = logger("prof.live", h)
        prof = cProfile.Profile()
        prof.enable()
        caller_loop(live)
        prof.disable()
        h.flush(timeout=120)
        h.close()
        stats = recv.stats()
    finally:
        recv.stop()
    print(f"\n2. The caller's thread, queueing and sending step by step ({args.events:,} calls, best of 3 rounds)")
    print(f"   {'':<44}{'wall':>8}{'its CPU':>10}{'step':>8}")
    previous = None
    for name, (wall, cpu) in best.items():
        step = "" if previous is None else f"{cpu - previous:+8.2f}"
        print(f"   {name:<44}{wall:8.2f}{cpu:10.2f}{step}")
        previous = cpu
    print(
        "   (its CPU: the caller thread's own CPU time per call; wall minus it is time it waited while another\n"
        "   thread or process ran. Each step adds one thing to the one above.)"
    )
    if worker_cpu is not None:
        print(f"   worker thread CPU while posting, during the loop: {worker_cpu:.2f} us per event")
    print(f"   receiver got {stats['messages']:,} messages in {stats['requests']} requests (profiled loop below)")

    print(f"\n3. cProfile of the caller thread (worker not profiled), top {args.top} by own time")
    out = io.StringIO()
    ps = pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime")
    ps.print_stats(args.top)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:12000])


if __name__ == "__main__":
    main()
