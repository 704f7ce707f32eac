"""What sharing the process with the worker thread costs the caller's thread, variant by variant.

    python -m benchmarks.handover [--events 100000] [--rounds 2] [--no-orjson]

Each variant runs the benchmark's small workload (``log.info(..., extra=track(...))``) in a fresh
interpreter and prints the caller thread's wall time and its own CPU per event, beside the worker
thread's CPU. The variants change one thing at a time, so the differences say what the caller pays for:

- ``send=False``: the message built, checked and counted; not queued, no worker.
- ``no HTTP``: queued; the worker cuts and joins every batch, and its transport's POST (an internal,
  replaced here) drops the body and answers 200.
- ``no HTTP, 32 sleeps``: as ``no HTTP``, but the POST sleeps 32 times 50 us: each sleep gives the
  interpreter lock up and takes it back, as a real request's system calls do.
- ``no HTTP, busy 1 ms``: as ``no HTTP``, but the POST holds the interpreter lock, busy, for 1 ms.
- ``no HTTP, one CPU``: as ``no HTTP``, with the process pinned to one CPU (Linux only).
- ``HTTP``: posted to the benchmark's receiver on loopback, as ``benchmarks.run`` does.

Rounds alternate the variants, and the best of each is printed: the machine's drift hits all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = ("send=False", "no HTTP", "no HTTP, 32 sleeps", "no HTTP, busy 1 ms", "no HTTP, one CPU", "HTTP")


def child(variant: str, events: int, endpoint: str) -> dict:
    """Run one variant in this process and return its figures."""
    from benchmarks import contender
    from dreamdata_logging.transport import exchange

    def post(self: object, payload: bytes, timeout: float) -> int:
        if variant == "no HTTP, 32 sleeps":
            for _ in range(32):
                time.sleep(0.00005)
        elif variant == "no HTTP, busy 1 ms":
            end = time.perf_counter() + 0.001
            while time.perf_counter() < end:
                pass
        return 200

    if variant.startswith("no HTTP"):
        exchange.Exchange.post = post  # type: ignore[method-assign]
    if variant == "no HTTP, one CPU":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    args = argparse.Namespace(
        contender="dreamdata",
        workload="small",
        events=events,
        endpoint=endpoint,
        scenario="throughput",
        no_orjson="DREAMDATA_LOGGING_NO_ORJSON" in os.environ,
        send_false=variant == "send=False",
        flush_timeout=120.0,
    )
    res, handler, _ = contender.run(args)
    handler.close()
    return {k: res.get(k) for k in ("caller_us", "caller_cpu_us", "worker_cpu_loop_us", "json_backend")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-orjson", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.events, args.endpoint)), flush=True)
        return

    from benchmarks.run import ReceiverProc, _child_env

    env = _child_env()
    if args.no_orjson:
        env["DREAMDATA_LOGGING_NO_ORJSON"] = "1"
    best: dict[str, dict] = {}
    recv = ReceiverProc()
    try:
        for _ in range(args.rounds):
            for variant in VARIANTS:
                if variant == "no HTTP, one CPU" and not hasattr(os, "sched_setaffinity"):
                    continue
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.handover",
                        "--child",
                        variant,
                        "--events",
                        str(args.events),
                        "--endpoint",
                        recv.endpoint,
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=True,
                ).stdout
                res = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
                if variant not in best or res["caller_cpu_us"] < best[variant]["caller_cpu_us"]:
                    best[variant] = res
    finally:
        recv.stop()
    backend = next(iter(best.values()))["json_backend"]
    print(f"small workload, {args.events:,} events, serialiser {backend}, best of {args.rounds} rounds (us per event)")
    print(f"  {'variant':<22}{'caller':>9}{'its CPU':>9}{'vs send=False':>15}{'worker CPU':>12}")
    base = best["send=False"]["caller_cpu_us"]
    for variant, res in best.items():
        worker = res["worker_cpu_loop_us"]
        print(
            f"  {variant:<22}{res['caller_us']:9.2f}{res['caller_cpu_us']:9.2f}"
            f"{res['caller_cpu_us'] - base:+15.2f}{'' if worker is None else f'{worker:12.2f}'}"
        )


if __name__ == "__main__":
    main()
