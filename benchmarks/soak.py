"""Soak: the handler's states, over and over, for minutes, with memory sampled every second.

    python -m benchmarks.soak [--minutes 10] [--seed 1] [--spool] [--out benchmarks/results/soak.json]

Four threads log numbered events the whole time while the main thread, every few tens of milliseconds,
closes the handler (it reopens), reconfigures logging (the same config, or another that leaves ours closed
but attached), flushes, forks a child that logs and flushes, and flips the endpoint (the project's
collector, keeping nothing in memory and streaming what it accepts to a file) between healthy, 503, 429,
dropped connections and slow errors. The resident set size of the process is read from /proc every second,
with glibc's own account of its heap (bytes in use, and freed bytes it keeps) where it gives one.
The collector runs in a process of its own (its connection threads and their memory are not the library's),
told over a pipe which fault to play.

At the end the endpoint is healthy, every handler flushes and closes, and the run checks: each handler's
ledger adds up; every event that did not arrive is counted (failed, dropped, or still in the spool); what the
ledgers count as delivered is exactly what arrived, so no event was sent by two workers and counted twice.
Delivery is at least once: a request whose answer never came back (cut at its deadline, say by a close)
is sent again, so the endpoint may see its events twice, under the same messageIds, and count them once
(Dreamdata deduplicates by messageId). The run reports how many arrived twice; it does not fail on them.
It prints a summary and writes every sample to ``--out``.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import json
import logging
import logging.config
import os
import random
import select
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

from dreamdata_logging import DreamdataHandler, track
from dreamdata_logging.tools.collector import Collector, Fault

KEY = "soak-key"
#: Where every emitted event is, at a quiet point: emitted = the sum of these.
ACCOUNTED = (
    "delivered", "failed", "dropped_queue_full", "dropped_closed", "queued", "spool_written", "unsent", "captured",
)  # fmt: skip
FAULTS = [None, None, Fault(503), Fault(429, headers={"Retry-After": "0"}), Fault(drop=True), Fault(503, delay=0.3)]


class RemoteCollector:
    """The project's collector in a child process: it streams what it accepts to ``out`` and keeps nothing;
    :meth:`set_down` sends it the index of a fault in FAULTS (-1: healthy) over its stdin."""

    def __init__(self, out: Path) -> None:
        command = [sys.executable, "-m", "benchmarks.soak", "--serve-collector", str(out)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError("the collector did not start")

    def set_down(self, fault: Any) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{-1 if fault is None else FAULTS.index(fault)}\n")
        self.process.stdin.flush()
        self.process.stdout.readline()  # played from now on

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # the child stops its collector (the file is complete) and exits
        self.process.wait(60)


def serve_collector(out: str) -> int:
    """The child's side of :class:`RemoteCollector`."""
    collector = Collector(write_key=KEY, keep=0, out=out).start()
    print(collector.url, flush=True)
    for line in sys.stdin:
        index = int(line)
        collector.set_down(None if index < 0 else FAULTS[index])
        print("ok", flush=True)
    collector.stop()
    return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]  # fmt: skip


def _mallinfo2() -> Optional[Callable[[], _MallInfo2]]:
    """glibc's own account of its heap (2.33 and later), or None elsewhere."""
    try:
        function = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    function.restype = _MallInfo2
    return function  # type: ignore[no-any-return]


MALLINFO = _mallinfo2()


def malloc_bytes() -> Optional[tuple[int, int]]:
    """(bytes malloc has handed out and not had back, bytes it holds free), glibc only: RSS that is free
    memory kept by the allocator is not a leak."""
    if MALLINFO is None:
        return None
    info = MALLINFO()
    return info.uordblks + info.hblkhd, info.fordblks


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Soak:
    def __init__(self, seed: int, spool: bool, folder: str) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        # The collector streams what it accepts to a file, in a process of its own: the RSS is the library's.
        self.out = Path(folder) / "arrived.jsonl"
        self.collector = RemoteCollector(self.out)
        entry: dict[str, Any] = {
            "class": "dreamdata_logging.DreamdataHandler", "write_key": KEY, "endpoint": self.collector.url,
            "flush_at": "200", "flush_interval": "0.05", "timeout": "3", "max_retries": "2",
            "shutdown_timeout": "1", "max_queue_size": "20000",
        }  # fmt: skip
        if spool:
            entry["spool"] = str(Path(folder) / "events.sqlite")
        self.ours = {
            "version": 1, "disable_existing_loggers": False,
            "handlers": {"dreamdata": entry, "quiet": {"class": "logging.NullHandler"}},
            "loggers": {"analytics": {"handlers": ["dreamdata"], "level": "INFO", "propagate": False},
                        "urllib3": {"handlers": ["quiet"], "level": "DEBUG", "propagate": False}},
        }  # fmt: skip
        self.theirs = {"version": 1, "disable_existing_loggers": False,
                       "handlers": {"plain": {"class": "logging.NullHandler"}},
                       "loggers": {"server": {"handlers": ["plain"], "level": "INFO"}}}  # fmt: skip
        self.log = logging.getLogger("analytics")
        self.retired: list[DreamdataHandler] = []  # detached and closed (an event still under way may reopen one)
        self.final: list[dict[str, int]] = []  # the counts of handlers retired for good
        self.handlers: list[DreamdataHandler] = []
        self.logged = 0
        self.logged_lock = threading.Lock()
        self.children: list[dict[str, Any]] = []
        self.running = threading.Event()
        self.samples: list[tuple[float, int]] = []
        self.heap: list[tuple[float, int, int]] = []  # (seconds, malloc in use, malloc holding free)
        self.blocks: list[int] = []  # Python's allocated memory blocks (objects), each second
        self.actions: Counter[str] = Counter()

    def configure(self, config: dict[str, Any]) -> None:
        logging.config.dictConfig(config)
        for handler in self.log.handlers:
            if isinstance(handler, DreamdataHandler) and handler not in self.handlers:
                self.handlers.append(handler)
        # Handlers detached for good: closed (a logging call under way at the reconfiguration may reopen one)
        # and kept one more round; a round later nothing can reach them: keep only their final counts, so
        # the process holds no more than the handlers in use (memory must stay flat).
        for handler in list(self.retired):
            if handler.closed:
                self.retired.remove(handler)
                self.final.append(handler.stats())
            else:
                handler.close()  # reopened by a call that was under way: closed again, settled next round
        attached = set(self.log.handlers)
        for handler in [h for h in self.handlers if h not in attached]:
            handler.close()
            self.handlers.remove(handler)
            self.retired.append(handler)

    def emit(self, source: str) -> None:
        self.log.info("Soak Step", extra=track(user_id=source, message_id=f"{source}-{uuid.uuid4().hex}"))
        with self.logged_lock:
            self.logged += 1

    def writer(self, n: int) -> None:
        local = random.Random(self.seed * 100 + n)
        while self.running.is_set():
            for _ in range(local.randint(1, 20)):
                self.emit(f"t{n}")
            time.sleep(local.uniform(0, 0.01))

    def sampler(self, started: float) -> None:
        while self.running.is_set():
            self.samples.append((round(time.monotonic() - started, 1), rss_bytes()))
            heap = malloc_bytes()
            if heap is not None:
                self.heap.append((self.samples[-1][0], *heap))
            self.blocks.append(sys.getallocatedblocks())
            time.sleep(1.0)

    def fork_child(self) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: log, flush, report, and end without exit hooks, whatever happens
            code = 1
            try:
                os.close(read_end)
                faulthandler.dump_traceback_later(50, exit=True)  # a hang shows where, then ends the child
                for _ in range(5):
                    self.log.info("Child", extra=track(user_id="child", message_id=f"child-{uuid.uuid4().hex}"))
                current = [h for h in self.log.handlers if isinstance(h, DreamdataHandler)]
                current += [h for h in self.retired + self.handlers if h not in current]  # closed ones count too
                for handler in current:
                    handler.flush(10)
                    handler.close()  # stops its thread (it may be draining the spool), so the counts are final
                os.write(write_end, json.dumps([h.stats() for h in current]).encode())
                code = 0
            except BaseException:
                traceback.print_exc()  # on stderr: the run says the child failed
            finally:
                os._exit(code)
        os.close(write_end)
        data, deadline = b"", time.monotonic() + 60
        while time.monotonic() < deadline:
            if not select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            data += chunk
        os.close(read_end)
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:  # hung (or very slow): end it, and say so in the result
            time.sleep(1.0)
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                status = -1
        self.children.append({"status": status, "stats": json.loads(data) if data else [], "logged": 5})

    def step(self) -> None:
        action = self.rng.choice(["log", "close", "same", "other", "flush", "fault", "fault", "fork"])
        self.actions[action] += 1
        if action == "log":
            for _ in range(self.rng.randint(1, 200)):
                self.emit("main")
        elif action == "close":
            for handler in list(self.log.handlers):
                handler.close()
        elif action in ("same", "other"):
            self.configure(self.ours if action == "same" else self.theirs)
        elif action == "flush":
            for handler in list(self.log.handlers):
                handler.flush(self.rng.uniform(0, 0.5))
        elif action == "fault":
            self.collector.set_down(self.rng.choice(FAULTS))
        elif action == "fork":
            self.fork_child()

    def run(self, seconds: float) -> dict[str, Any]:
        self.configure(self.ours)
        self.running.set()
        started = time.monotonic()
        threads = [threading.Thread(target=self.writer, args=(n,), daemon=True) for n in range(4)]
        threads.append(threading.Thread(target=self.sampler, args=(started,), daemon=True))
        for thread in threads:
            thread.start()
        while time.monotonic() - started < seconds:
            self.step()
            time.sleep(self.rng.uniform(0, 0.05))
        self.running.clear()
        for thread in threads:
            thread.join(10)
        self.collector.set_down(None)
        self.emit("main")  # reopens whatever a close or a reconfiguration left closed but attached
        flushed = [h.flush(120) for h in self.log.handlers if isinstance(h, DreamdataHandler)]
        for handler in self.retired + self.handlers:
            handler.close()
        final = self.final + [h.stats() for h in self.retired + self.handlers]
        self.collector.stop()
        return self.check(final, flushed, time.monotonic() - started)

    def check(self, final: list[dict[str, int]], flushed: list[bool], seconds: float) -> dict[str, Any]:
        arrived: Counter[str] = Counter()
        with open(self.out, encoding="utf-8") as lines:
            for line in lines:
                arrived[json.loads(line)["messageId"]] += 1
        everyone = final + [s for child in self.children for s in child["stats"]]
        totals: Counter[str] = Counter()
        for stats in everyone:
            totals.update(stats)
        unbalanced = [s for s in everyone if s["emitted"] != sum(s[k] for k in ACCOUNTED)]
        logged = self.logged + sum(child["logged"] for child in self.children)
        spooled = final[-1]["spooled"] if final else 0
        lost = totals["failed"] + totals["dropped_queue_full"] + totals["dropped_closed"] + totals["spool_dropped"]
        rss = [value for _, value in self.samples]
        quarter = max(1, len(rss) // 4)
        return {
            "seed": self.seed, "seconds": round(seconds, 1), "actions": dict(self.actions),
            "logged": logged, "arrived": len(arrived), "twice": sum(1 for c in arrived.values() if c > 1),
            "twice_from": dict(Counter(i.split("-")[0] for i, c in arrived.items() if c > 1)),
            "delivered_per_ledgers": totals["delivered"] + totals["spool_delivered"],
            "lost_counted": lost, "spooled_at_end": spooled, "unbalanced_ledgers": len(unbalanced),
            "uncounted": logged - len(arrived) - lost - spooled, "flushed": flushed,
            "handlers": len(everyone), "children": len(self.children),
            "children_failed": sum(1 for child in self.children if child["status"] != 0),
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        "rss_first_quarter_mib": round(max(rss[:quarter]) / 2**20, 1) if rss else None,
            "rss_last_quarter_mib": round(max(rss[-quarter:]) / 2**20, 1) if rss else None,
            "malloc_in_use_first_quarter_mib": quarter_max(self.heap, 1, first=True),
            "malloc_in_use_last_quarter_mib": quarter_max(self.heap, 1, first=False),
            "malloc_free_held_last_quarter_mib": quarter_max(self.heap, 2, first=False),
            "python_blocks_first_quarter": max(self.blocks[: max(1, len(self.blocks) // 4)], default=None),
            "python_blocks_last_quarter": max(self.blocks[-max(1, len(self.blocks) // 4) :], default=None),
            "rss_samples": self.samples,
            "malloc_samples": self.heap,
        }  # fmt: skip


def quarter_max(samples: list[tuple[float, int, int]], column: int, first: bool) -> Optional[float]:
    """The largest value of ``column`` in the first or last quarter of the run, in MiB."""
    if not samples:
        return None
    quarter = max(1, len(samples) // 4)
    part = samples[:quarter] if first else samples[-quarter:]
    return round(max(row[column] for row in part) / 2**20, 1)


def main() -> int:
    if sys.argv[1:2] == ["--serve-collector"]:
        return serve_collector(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--spool", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/soak.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = Soak(args.seed, args.spool, folder).run(args.minutes * 60)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    summary = {k: v for k, v in result.items() if not k.endswith("_samples")}
    print(json.dumps(summary, indent=1))
    good = not result["unbalanced_ledgers"] and not result["uncounted"]
    good = good and not result["children_failed"]
    good = good and result["arrived"] == result["delivered_per_ledgers"]
    print("soak:", "every event counted once" if good else "FAILED", file=sys.stderr)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
