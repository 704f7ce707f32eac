"""One contender, one workload, one scenario, in a fresh interpreter (so peak RSS is its own).

Started by ``benchmarks.run``; prints ``RESULT {json}`` on stdout (and, for the outage scenario
of the dreamdata contender, a later ``CLOSE {json}`` with how long ``close()`` took).

    python -m benchmarks.contender --contender dreamdata --workload small --events 100000 \
        --endpoint http://127.0.0.1:8765/v1/batch [--scenario outage] [--no-orjson] [--send-false]

Contenders:
  null       logger.info(..., extra=...) to a logging.NullHandler (the floor)
  queue      the same to a bare logging.handlers.QueueHandler(queue.SimpleQueue()), no listener
  dreamdata  dreamdata_logging.DreamdataHandler with default settings (plus queue capacity);
             with --send-false, a handler that builds and counts but never queues (no worker)
  segment    segment.analytics.Client(...).track(...) with default settings (plus queue capacity)
"""

from __future__ import annotations

import argparse
import os
import sys

# Hide the accelerator before anything can import it: the env var is the package's documented
# switch, and ``sys.modules[...] = None`` makes any ``import orjson`` fail even if it ignores it.
if "--no-orjson" in sys.argv:
    os.environ["DREAMDATA_LOGGING_NO_ORJSON"] = "1"
    sys.modules["orjson"] = None  # type: ignore[assignment]

import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import logging.handlers  # noqa: E402
import queue  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from benchmarks.workload import CONTEXT, USER_ID, WORKLOADS, wire_size  # noqa: E402

WRITE_KEY = "bench"


def mem_kib() -> dict:
    """Current and peak resident set size of this process, KiB (Linux: /proc/self/status)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    if "VmHWM" not in out:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = r // 1024 if sys.platform == "darwin" else r
        out.setdefault("VmRSS", out["VmHWM"])
    return {"rss_kib": out["VmRSS"], "peak_rss_kib": out["VmHWM"]}


def thread_cpu_s(native_id: int) -> float | None:
    """CPU seconds one thread of this process has used so far (Linux /proc; schedstat has ns resolution)."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _worker_thread():
    """The handler's sending thread (by its name), once it has started."""
    import threading

    return next((t for t in threading.enumerate() if t.name == "dreamdata-logging-worker" and t.native_id), None)


def _logger(handler: logging.Handler, name: str = "bench.analytics") -> logging.Logger:
    log = logging.getLogger(name)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    return log


def _defaults(cls) -> dict:
    out = {}
    for name, p in inspect.signature(cls).parameters.items():
        if p.default is not inspect.Parameter.empty and isinstance(p.default, (int, float, bool, str, type(None))):
            out[name] = p.default
    return out


def run(args) -> dict:
    n = args.events
    w = WORKLOADS[args.workload]
    event, props, ctx, uid = w["event"], w["properties"], CONTEXT, USER_ID
    outage = args.scenario == "outage"
    checkpoints = {n * k // 10 for k in range(1, 11)} if outage else set()
    rss_curve = []
    res: dict = {"contender": args.contender, "workload": args.workload, "scenario": args.scenario, "events": n}
    c = args.contender

    # ---------------------------------------------------------------- set up
    handler = client = None
    if c == "null":
        log = _logger(logging.NullHandler())
    elif c == "queue":
        log = _logger(logging.handlers.QueueHandler(queue.SimpleQueue()))
    elif c == "dreamdata":
        import dreamdata_logging
        from dreamdata_logging import track

        defaults = _defaults(dreamdata_logging.DreamdataHandler)
        kw = {"endpoint": args.endpoint}
        if outage:
            # default queue bounds (this scenario is about them); just don't linger at exit
            kw["shutdown_timeout"] = 1.0
        else:
            # same capacity as Segment's, at least the burst, so that neither drops
            kw["max_queue_size"] = max(n, int(defaults.get("max_queue_size") or 0))
            if "max_queue_bytes" in defaults:
                need = n * wire_size(args.workload) * 2
                kw["max_queue_bytes"] = max(need, int(defaults["max_queue_bytes"] or 0))
        if args.send_false:  # built, checked and counted, never queued: no worker runs
            kw = {"endpoint": args.endpoint, "send": False}
        handler = dreamdata_logging.DreamdataHandler(WRITE_KEY, **kw)
        log = _logger(handler)
        res["package_version"] = getattr(dreamdata_logging, "__version__", None)
        res["handler_defaults"] = defaults
        res["handler_kwargs"] = kw
    elif c == "segment":
        from segment.analytics import Client
        from segment.analytics.version import VERSION

        u = urlsplit(args.endpoint)
        kw = {"host": f"{u.scheme}://{u.netloc}"}  # it posts to host + "/v1/batch"
        if not outage:
            kw["max_queue_size"] = n
        client = Client(WRITE_KEY, **kw)
        res["package_version"] = VERSION
        res["handler_defaults"] = _defaults(Client)
        res["handler_kwargs"] = kw
    else:
        raise SystemExit(f"unknown contender {c!r}")

    info = log.info if client is None else None
    res["before"] = mem_kib()
    dropped_by_return = 0

    # ---------------------------------------------------------------- the emit loop
    # Loops are written out per contender so each costs exactly what the user's call costs.
    t0 = time.perf_counter_ns()
    c0 = time.thread_time_ns()  # the caller thread's own CPU: what the loop costs it besides waiting
    if not outage:
        if c in ("null", "queue"):
            for _ in range(n):
                info(event, extra={"dreamdata": {"userId": uid, "properties": props, "context": ctx}})
        elif c == "dreamdata":
            for _ in range(n):
                info(event, extra=track(user_id=uid, properties=props, context=ctx))
        else:
            ctrack = client.track
            for _ in range(n):
                if not ctrack(user_id=uid, event=event, properties=props, context=ctx)[0]:
                    dropped_by_return += 1
    else:
        i = 0
        if c == "dreamdata":
            for i in range(1, n + 1):
                info(event, extra=track(user_id=uid, properties=props, context=ctx))
                if i in checkpoints:
                    rss_curve.append((i, mem_kib()["rss_kib"]))
        else:
            ctrack = client.track
            for i in range(1, n + 1):
                if not ctrack(user_id=uid, event=event, properties=props, context=ctx)[0]:
                    dropped_by_return += 1
                if i in checkpoints:
                    rss_curve.append((i, mem_kib()["rss_kib"]))
    t1 = time.perf_counter_ns()
    c1 = time.thread_time_ns()

    res["caller_us"] = (t1 - t0) / n / 1000.0
    res["caller_cpu_us"] = (c1 - c0) / n / 1000.0
    worker = _worker_thread() if handler is not None else None
    if worker is not None:
        cpu = thread_cpu_s(worker.native_id)
        res["worker_cpu_loop_us"] = None if cpu is None else cpu * 1e6 / n
    res["emit_seconds"] = (t1 - t0) / 1e9

    # ---------------------------------------------------------------- drain
    if handler is not None:
        res["backlog_after_emits"] = handler.stats().get("queued")
    elif client is not None:
        res["backlog_after_emits"] = client.queue.qsize()

    if not outage and not args.send_false and (handler is not None or client is not None):
        if handler is not None:
            ok = handler.flush(timeout=args.flush_timeout)
        else:
            client.flush()  # queue.join(): returns once every batch was posted (or given up)
            ok = None
        t2 = time.perf_counter_ns()
        if worker is not None:
            cpu = thread_cpu_s(worker.native_id)
            res["worker_cpu_us"] = None if cpu is None else cpu * 1e6 / n
        res["flush_ok"] = ok
        res["e2e_seconds"] = (t2 - t0) / 1e9
        res["e2e_events_per_s"] = n / ((t2 - t0) / 1e9)
        res["flush_seconds"] = (t2 - t1) / 1e9

    res["after"] = mem_kib()
    res["peak_rss_kib"] = res["after"]["peak_rss_kib"]
    if rss_curve:
        res["rss_curve"] = rss_curve
    if handler is not None:
        res["stats"] = dict(handler.stats())
        res["dropped"] = res["stats"].get("dropped_queue_full", 0)
    elif client is not None:
        res["dropped"] = dropped_by_return
        res["stats"] = {"dropped_queue_full": dropped_by_return, "queued": client.queue.qsize()}
    for mod_name, mod in list(sys.modules.items()):  # the package's own report, if it has one
        if mod_name.startswith("dreamdata_logging") and isinstance(getattr(mod, "BACKEND", None), str):
            res["json_backend"] = mod.BACKEND
    orj = sys.modules.get("orjson")
    res["orjson_loaded"] = orj is not None
    res["no_orjson_requested"] = bool(args.no_orjson)
    return res, handler, client


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contender", required=True, choices=["null", "queue", "dreamdata", "segment"])
    ap.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--endpoint", default="http://127.0.0.1:8765/v1/batch")
    ap.add_argument("--scenario", default="throughput", choices=["throughput", "outage"])
    ap.add_argument("--no-orjson", action="store_true")
    ap.add_argument("--send-false", action="store_true", help="dreamdata with send=False: the caller's path alone")
    ap.add_argument("--flush-timeout", type=float, default=240.0)
    args = ap.parse_args(argv)

    res, handler, client = run(args)
    print("RESULT " + json.dumps(res), flush=True)

    if handler is not None:
        t = time.perf_counter()
        handler.close()
        print("CLOSE " + json.dumps({"close_seconds": time.perf_counter() - t}), flush=True)
    if client is not None:
        if args.scenario == "outage":
            # Segment would keep retrying the batch in hand (10 retries with backoff);
            # what we wanted is measured, so leave without waiting for it.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        client.shutdown()


if __name__ == "__main__":
    main()
