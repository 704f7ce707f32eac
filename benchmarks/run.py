"""Benchmark: dreamdata-logging vs the logging floor vs segment-analytics-python.

    python -m benchmarks.run                   # the full run (100,000 events per workload)
    python -m benchmarks.run --events 5000     # a quick smoke run
    python benchmarks/run.py --out /tmp/bench  # same thing, results elsewhere

Every contender runs in its own fresh interpreter against one local receiver process (loopback,
TCP_NODELAY, counts messages without parsing). Prints a table, writes ``results.json`` and
``chart.png`` to ``--out`` (default ``benchmarks/results``). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workload import properties_size, wire_size  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BODY_LIMIT = 500_000
#: A run is flagged when processes outside the benchmark used more than this many cores on average.
CONTENDED = 0.15

# name -> (child --contender, extra child args, label)
CONTENDERS = {
    "null": ("null", [], "NullHandler (floor)"),
    "queue": ("queue", [], "QueueHandler (floor)"),
    "dreamdata-json": ("dreamdata", ["--no-orjson"], "dreamdata, json"),
    "dreamdata-orjson": ("dreamdata", [], "dreamdata, orjson"),
    # The caller's path alone (send=False: built, checked, counted; no queue, no worker), in a fresh
    # interpreter like the others, so it is as cold as the contender it is compared with.
    "dreamdata-json-unsent": ("dreamdata", ["--no-orjson", "--send-false"], "dreamdata, json, unsent"),
    "dreamdata-orjson-unsent": ("dreamdata", ["--send-false"], "dreamdata, orjson, unsent"),
    "segment": ("segment", [], "segment-analytics"),
}
DELIVERING = ("dreamdata-json", "dreamdata-orjson", "segment")
WORKLOAD_NAMES = ("small", "large")


# ------------------------------------------------------------------------------------ receiver
class ReceiverProc:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.receiver", "--port", "0"],
            cwd=REPO,
            env=_child_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.port = int(line.split()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}/v1/batch"

    def _call(self, method: str, path: str) -> dict:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(method, path)
            r = c.getresponse()
            return json.loads(r.read())
        finally:
            c.close()

    def reset(self, status: int = 200) -> None:
        self._call("POST", f"/__bench/mode?status={status}")
        self._call("POST", "/__bench/reset")

    def stats(self) -> dict:
        return self._call("GET", "/__bench/stats")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("DREAMDATA_LOGGING_NO_ORJSON", None)
    return env


# ------------------------------------------------------------------------------------ running
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...
    vals = [int(v) for v in parts[1:]]
    return (sum(vals[:3]) + sum(vals[5:8])) / _HZ


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def wait_for_idle(max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until other processes use at most CONTENDED cores; return their last share."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, o0, t0 = _busy_seconds(), _own_cpu(), time.perf_counter()
        time.sleep(1.0)
        b1, o1, t1 = _busy_seconds(), _own_cpu(), time.perf_counter()
        if b0 is None or b1 is None:
            return 0.0
        share = max(0.0, (b1 - b0) - (o1 - o0)) / (t1 - t0)
        if share <= CONTENDED or time.monotonic() >= deadline:
            return share


def run_child(recv: ReceiverProc, name: str, workload: str, events: int, scenario: str, timeout: float) -> dict:
    child, extra, label = CONTENDERS[name]
    recv.reset(503 if scenario == "outage" else 200)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.contender",
        "--contender",
        child,
        "--workload",
        workload,
        "--events",
        str(events),
        "--endpoint",
        recv.endpoint,
        "--scenario",
        scenario,
        *extra,
    ]
    with tempfile.TemporaryFile("w+") as err:
        busy0, kids0, own0 = _busy_seconds(), _children_cpu(), _own_cpu()
        t = time.perf_counter()
        try:
            p = subprocess.run(
                cmd, cwd=REPO, env=_child_env(), stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout
            )
            rc, out = p.returncode, p.stdout
        except subprocess.TimeoutExpired as e:
            rc, out = "timeout", (e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout) or ""
        wall = time.perf_counter() - t
        busy1, kids1, own1 = _busy_seconds(), _children_cpu(), _own_cpu()
        err.seek(0)
        err_text = err.read()
    res: dict = {"name": name, "label": label, "workload": workload, "scenario": scenario, "events": events}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            res.update(json.loads(line[7:]))
        elif line.startswith("CLOSE "):
            res.update(json.loads(line[6:]))
    res["name"], res["label"] = name, label
    res["returncode"] = rc
    res["process_seconds"] = round(wall, 2)
    res["stderr_lines"] = err_text.count("\n")
    if "caller_us" not in res:
        res["error"] = f"exit {rc}; stderr tail:\n" + err_text[-3000:]
    elif rc != 0:  # measured, but did not exit cleanly (e.g. hung at interpreter exit)
        res["exit_problem"] = f"exit {rc} after {wall:.0f} s; stderr tail:\n" + err_text[-3000:]
    res["receiver"] = recv.stats()
    # CPU that neither this benchmark's processes used: other work on the machine during the run.
    child_cpu = kids1 - kids0
    res["child_cpu_seconds"] = round(child_cpu, 3)
    if busy0 is not None and busy1 is not None:
        foreign = (busy1 - busy0) - child_cpu - res["receiver"]["cpu_seconds"] - (own1 - own0)
        res["foreign_cpu_share"] = round(max(0.0, foreign) / wall, 3)  # in cores, averaged over the run
    rs = res["receiver"]
    if rs["requests"]:
        res["requests"] = rs["requests"]
        res["mean_body"] = rs["body_bytes"] / rs["requests"]
        res["delivered"] = rs["messages"]
    return res


def dreamdata_available() -> str | None:
    """None when the package imports and has the handler; else the reason."""
    p = subprocess.run(
        [sys.executable, "-c", "import dreamdata_logging as d; d.DreamdataHandler; d.track"],
        cwd=REPO,
        env=_child_env(),
        capture_output=True,
        text=True,
    )
    return None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["import failed"])[-1]


# ------------------------------------------------------------------------------------ machine
def machine() -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for dist in ("dreamdata-logging", "segment-analytics-python", "orjson", "requests", "urllib3", "matplotlib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    if versions["dreamdata-logging"] is None:  # not installed, imported from the checkout
        p = subprocess.run(
            [sys.executable, "-c", "import dreamdata_logging as d; print(getattr(d, '__version__', ''))"],
            cwd=REPO,
            env=_child_env(),
            capture_output=True,
            text=True,
        )
        versions["dreamdata-logging"] = (p.stdout.strip() or None) and p.stdout.strip() + " (checkout)"
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem,
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
    }


# ------------------------------------------------------------------------------------ analysis
def _median_merge(items: list):
    """Field-wise median of repeated runs (numbers), recursing into dicts; other values from the first."""
    first = items[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(i, dict) and k in i for i in items)]
        return {**first, **{k: _median_merge([i[k] for i in items]) for k in keys}}
    if all(isinstance(i, (int, float)) and not isinstance(i, bool) for i in items):
        m = statistics.median(items)
        return int(m) if all(isinstance(i, int) for i in items) and m == int(m) else m
    return first


def _get(runs, name, workload, scenario="throughput"):
    """The run of this contender (the field-wise median when repeated), or None."""
    found = [
        r
        for r in runs
        if r["name"] == name and r["workload"] == workload and r["scenario"] == scenario and "error" not in r
    ]
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    merged = _median_merge(found)
    merged["repeats"] = len(found)
    return merged


def _split(r: dict, unsent: dict | None) -> dict:
    """Where a contender's caller time goes (µs per event), from the children's thread clocks.

    caller_cpu_us: the caller thread's own CPU in the emit loop; caller_us minus it is time the thread
    waited (for the interpreter lock while the worker held it, or for a core other processes held).
    unsent_*: the same loop to a ``send=False`` handler (no queue, no worker), in its own fresh child.
    handover_cpu_us: the caller's CPU with the worker minus without it: queueing plus handing the lock
    to and from the worker. worker_cpu_*: the sending thread's own CPU, during the loop and until flushed.
    """
    out = {k: r.get(k) for k in ("caller_cpu_us", "worker_cpu_loop_us", "worker_cpu_us")}
    out["unsent_caller_us"] = unsent["caller_us"] if unsent else None
    out["unsent_caller_cpu_us"] = unsent.get("caller_cpu_us") if unsent else None
    cpu, unsent_cpu = r.get("caller_cpu_us"), out["unsent_caller_cpu_us"]
    out["waiting_us"] = None if cpu is None else r["caller_us"] - cpu
    out["handover_cpu_us"] = None if cpu is None or unsent_cpu is None else cpu - unsent_cpu
    return out


def analyse(runs: list, events: int) -> tuple[dict, list]:
    summary: dict = {"throughput": {}, "outage": {}}
    for wl in WORKLOAD_NAMES:
        floor = _get(runs, "null", wl)
        seg = _get(runs, "segment", wl)
        rows = {}
        for name in CONTENDERS:
            r = _get(runs, name, wl)
            if r is None:
                continue
            row = {
                "label": r["label"],
                "caller_us": r["caller_us"],
                "caller_x_floor": r["caller_us"] / floor["caller_us"] if floor else None,
                "e2e_events_per_s": r.get("e2e_events_per_s"),
                "e2e_x_segment": (r["e2e_events_per_s"] / seg["e2e_events_per_s"])
                if seg and r.get("e2e_events_per_s")
                else None,
                "requests": r.get("requests"),
                "mean_body": r.get("mean_body"),
                "max_body": r["receiver"].get("max_body") if r.get("requests") else None,
                "over_limit": r["receiver"].get("over_limit"),
                "delivered": r.get("delivered"),
                "dropped": r.get("dropped"),
                "peak_rss_mib": r["peak_rss_kib"] / 1024,
                "backlog_after_emits": r.get("backlog_after_emits"),
                "receiver_cpu_s": r["receiver"].get("cpu_seconds"),
                "e2e_seconds": r.get("e2e_seconds"),
                "flush_ok": r.get("flush_ok"),
                **_split(r, _get(runs, name + "-unsent", wl) if name in DELIVERING else None),
            }
            rows[name] = row
        summary["throughput"][wl] = rows
    for name in DELIVERING:
        r = _get(runs, name, "small", "outage")
        if r is None:
            continue
        curve = r.get("rss_curve") or []
        base = r["before"]["rss_kib"]
        half = next((kib for i, kib in curve if i >= r["events"] // 2), None)
        peak = r["peak_rss_kib"]
        stats = r.get("stats") or {}
        kw = r.get("handler_kwargs") or {}
        dflt = r.get("handler_defaults") or {}
        summary["outage"][name] = {
            "label": r["label"],
            "emits": r["events"],
            "peak_rss_mib": peak / 1024,
            "rss_growth_mib": (peak - base) / 1024,
            "rss_growth_second_half_mib": (peak - half) / 1024 if half is not None else None,
            "dropped": r.get("dropped"),
            "queued": stats.get("queued"),
            "max_queue_size": kw.get("max_queue_size", dflt.get("max_queue_size")),
            "max_queue_bytes": kw.get("max_queue_bytes", dflt.get("max_queue_bytes")),
            "emit_us": r["caller_us"],
            "close_seconds": r.get("close_seconds"),
            "rss_curve_mib": [(i, kib / 1024) for i, kib in curve],
            "rejected_requests": r["receiver"].get("rejected_requests"),
            "process_seconds": r["process_seconds"],
            "exit_problem": r.get("exit_problem"),
            "shutdown_timeout": kw.get("shutdown_timeout"),
        }

    targets = []

    def target(what, value, op, limit, note=""):
        ok = None if value is None else (value >= limit if op == ">=" else value <= limit)
        targets.append({"target": what, "value": value, "op": op, "limit": limit, "met": ok, "note": note})

    for wl in WORKLOAD_NAMES:
        rows = summary["throughput"].get(wl, {})
        for name, need in (("dreamdata-json", 4.5), ("dreamdata-orjson", 6)):
            row = rows.get(name) or {}
            target(f"{wl}: e2e throughput vs Segment, {name.split('-')[1]}", row.get("e2e_x_segment"), ">=", need)
        for name, need in (("dreamdata-json", 3), ("dreamdata-orjson", 2.3)):
            row = rows.get(name) or {}
            target(
                f"{wl}: caller cost vs NullHandler floor, {name.split('-')[1]}", row.get("caller_x_floor"), "<=", need
            )
    for name in ("dreamdata-json", "dreamdata-orjson"):
        row = summary["throughput"].get("small", {}).get(name) or {}
        target(f"small: mean request body, {name.split('-')[1]} (bytes)", row.get("mean_body"), ">=", 0.9 * BODY_LIMIT)
    for wl in WORKLOAD_NAMES:
        for name in DELIVERING:
            row = summary["throughput"].get(wl, {}).get(name)
            if row is None:
                continue
            lost = None if row["delivered"] is None else events - row["delivered"]
            target(f"{wl}: {name} events not delivered (drops: {row['dropped']})", lost, "<=", 0)
            target(f"{wl}: {name} bodies over 500,000 bytes", row["over_limit"], "<=", 0)
    for name in ("dreamdata-json", "dreamdata-orjson"):
        o = summary["outage"].get(name)
        if o is None:
            target(f"outage: {name} RSS bounded", None, "<=", 0)
            continue
        # Bounded = once the queue is full (drops > 0) RSS stops growing: the second half of the
        # emits adds at most 10% of the total growth (or 2 MiB, whichever is larger).
        g2 = o["rss_growth_second_half_mib"]
        slack = max(2.0, 0.1 * o["rss_growth_mib"])
        filled = bool(o["dropped"])
        target(
            f"outage: {name} RSS growth in 2nd half of emits (MiB)",
            g2 if filled else None,
            "<=",
            round(slack, 2),
            note=f"dropped {o['dropped']:,}, peak {o['peak_rss_mib']:.1f} MiB"
            + ("" if filled else "; queue never filled, so the bound was not reached (more --outage-events)"),
        )
        target(
            f"outage: {name} process exits on its own after close() (exit code)",
            0 if not o["exit_problem"] else 1,
            "<=",
            0,
            note=f"close() took {_f(o['close_seconds'], '{:.2f}')} s with shutdown_timeout={o['shutdown_timeout']}"
            + (f"; {o['exit_problem'].splitlines()[0]}" if o["exit_problem"] else ""),
        )
        if o.get("close_seconds") is not None and o.get("shutdown_timeout") is not None:
            target(
                f"outage: {name} close() time within shutdown_timeout (s)",
                round(o["close_seconds"], 2),
                "<=",
                round(o["shutdown_timeout"] * 1.1 + 0.1, 2),
            )
        if o.get("max_queue_bytes"):
            target(
                f"outage: {name} RSS growth vs max_queue_bytes (MiB)",
                o["rss_growth_mib"],
                "<=",
                round(o["max_queue_bytes"] * 1.5 / 2**20 + 16, 1),
                note="1.5x the byte bound + 16 MiB",
            )
    return summary, targets


# ------------------------------------------------------------------------------------ output
def _f(v, fmt="{:,.1f}", none="-"):
    return none if v is None else fmt.format(v)


def table(summary: dict, targets: list, events: int, outage_events: int) -> str:
    out = []
    for wl in WORKLOAD_NAMES:
        rows = summary["throughput"].get(wl)
        if not rows:
            continue
        out.append(
            f"\nWorkload '{wl}' ({events:,} track events, ~{wire_size(wl):,} B each on the wire, "
            f"{properties_size(wl):,} B of properties)"
        )
        hdr = (
            f"{'contender':<26}{'caller us/ev':>13}{'x floor':>9}{'e2e ev/s':>11}{'x segment':>10}{'backlog':>9}"
            f"{'requests':>10}{'mean body B':>13}{'peak RSS MiB':>14}{'dropped':>9}{'delivered':>11}"
        )
        out.append(hdr)
        out.append("-" * len(hdr))
        for r in rows.values():
            out.append(
                f"{r['label']:<26}{_f(r['caller_us'], '{:.2f}'):>13}{_f(r['caller_x_floor'], '{:.2f}x'):>9}"
                f"{_f(r['e2e_events_per_s'], '{:,.0f}'):>11}{_f(r['e2e_x_segment'], '{:.2f}x'):>10}"
                f"{_f(r['backlog_after_emits'], '{:,}'):>9}{_f(r['requests'], '{:,}'):>10}"
                f"{_f(r['mean_body'], '{:,.0f}'):>13}"
                f"{_f(r['peak_rss_mib'], '{:.1f}'):>14}"
                f"{_f(r['dropped'], '{:,}'):>9}{_f(r['delivered'], '{:,}'):>11}"
            )
    split = [
        (wl, r)
        for wl in WORKLOAD_NAMES
        for name, r in summary["throughput"].get(wl, {}).items()
        if name.startswith("dreamdata") and r.get("unsent_caller_cpu_us") is not None
    ]
    if split:
        out.append(
            "\nWhere the caller's time goes (us per event; cpu = the thread's own CPU; see benchmarks/README.md)"
        )
        hdr = (
            f"{'workload':<9}{'contender':<19}{'caller':>8}{'cpu':>7}{'waiting':>9}{'no-worker':>11}{'cpu':>7}"
            f"{'hand-over cpu':>15}{'worker cpu: loop':>18}{'all':>7}"
        )
        out.append(hdr)
        out.append("-" * len(hdr))
        for wl, r in split:
            out.append(
                f"{wl:<9}{r['label']:<19}{r['caller_us']:>8.2f}{_f(r['caller_cpu_us'], '{:.2f}'):>7}"
                f"{_f(r['waiting_us'], '{:.2f}'):>9}{_f(r['unsent_caller_us'], '{:.2f}'):>11}"
                f"{_f(r['unsent_caller_cpu_us'], '{:.2f}'):>7}{_f(r['handover_cpu_us'], '{:+.2f}'):>15}"
                f"{_f(r['worker_cpu_loop_us'], '{:.2f}'):>18}{_f(r['worker_cpu_us'], '{:.2f}'):>7}"
            )
    if summary["outage"]:
        out.append(f"\nOutage (receiver answers 503; {outage_events:,} emits of 'small'; default queue bounds)")
        hdr = (
            f"{'contender':<22}{'peak RSS MiB':>13}{'growth MiB':>11}{'2nd half':>10}{'dropped':>10}"
            f"{'queued':>9}{'queue bound':>22}{'emit us':>9}{'close s':>9}"
        )
        out.append(hdr)
        out.append("-" * len(hdr))
        for o in summary["outage"].values():
            bound = _f(o["max_queue_size"], "{:,} ev")
            if o.get("max_queue_bytes"):
                bound += f" / {o['max_queue_bytes'] / 2**20:,.0f} MiB"
            out.append(
                f"{o['label']:<22}{o['peak_rss_mib']:>13.1f}{o['rss_growth_mib']:>11.1f}"
                f"{_f(o['rss_growth_second_half_mib']):>10}{_f(o['dropped'], '{:,}'):>10}{_f(o['queued'], '{:,}'):>9}"
                f"{bound:>22}{o['emit_us']:>9.2f}{_f(o['close_seconds'], '{:.2f}'):>9}"
            )
    out.append("\nTargets")
    for t in targets:
        mark = {True: "MET ", False: "MISS", None: "n/a "}[t["met"]]
        v = t["value"]
        vs = "-" if v is None else (f"{v:,.2f}" if isinstance(v, float) else f"{v:,}")
        out.append(
            f"  [{mark}] {t['target']}: {vs} (need {t['op']} {t['limit']:,}){'  ' + t['note'] if t['note'] else ''}"
        )
    if any(t["met"] is False for t in targets):
        out.append(
            "  A missed target: the split above shows the caller's own path (no-worker), the hand-over and the\n"
            "  worker; python -m benchmarks.profile_caller and python -m benchmarks.handover take them apart,\n"
            "  and docs/performance.md ('What is left, and why it does not go') says what each part is."
        )
    return "\n".join(out)


def chart(summary: dict, path: Path, mach: dict, events: int) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no chart"
    colors = {
        "null": "#bbbbbb",
        "queue": "#888888",
        "dreamdata-json": "#4c72b0",
        "dreamdata-orjson": "#1f3f7a",
        "dreamdata-json-unsent": "#9fb7dc",
        "dreamdata-orjson-unsent": "#6f87b8",
        "segment": "#dd8452",
    }
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))

    def grouped(ax, key, names, title, ylabel, fmt):
        names = [n for n in names if any(n in summary["throughput"].get(wl, {}) for wl in WORKLOAD_NAMES)]
        width = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            xs, ys = [], []
            for i, wl in enumerate(WORKLOAD_NAMES):
                r = summary["throughput"].get(wl, {}).get(name)
                if r and r.get(key) is not None:
                    xs.append(i + (j - (len(names) - 1) / 2) * width)
                    ys.append(r[key])
            if not xs:
                continue
            label = next(
                r["label"] for wl in WORKLOAD_NAMES for n, r in summary["throughput"].get(wl, {}).items() if n == name
            )
            bars = ax.bar(xs, ys, width, label=label, color=colors[name])
            ax.bar_label(bars, labels=[fmt.format(y) for y in ys], fontsize=7, padding=2)
        ax.set_xticks(range(len(WORKLOAD_NAMES)), [f"{wl} (~{wire_size(wl):,} B)" for wl in WORKLOAD_NAMES])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.margins(y=0.15)

    grouped(
        axes[0][0],
        "e2e_events_per_s",
        list(DELIVERING),
        f"End-to-end throughput, {events:,} events (higher is better)",
        "events/s",
        "{:,.0f}",
    )
    axes[0][0].legend(fontsize=8)
    grouped(
        axes[0][1],
        "caller_us",
        list(CONTENDERS),
        "Caller cost while draining (lower is better)",
        "µs per event",
        "{:.1f}",
    )
    axes[0][1].legend(fontsize=8)
    grouped(axes[1][0], "peak_rss_mib", list(CONTENDERS), "Peak RSS, throughput run", "MiB", "{:.0f}")

    ax = axes[1][1]
    names = [n for n in DELIVERING if n in summary["outage"]]
    if names:
        for n in names:
            o = summary["outage"][n]
            xs = [i for i, _ in o["rss_curve_mib"]]
            ys = [m for _, m in o["rss_curve_mib"]]
            ax.plot(xs, ys, marker="o", ms=3, color=colors[n], label=f"{o['label']}: dropped {o['dropped']:,}")
        ax.set_title("Outage (503): RSS while emitting, default queue bounds", fontsize=10)
        ax.set_xlabel("events emitted")
        ax.set_ylabel("RSS, MiB")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    else:
        ax.set_axis_off()
    fig.suptitle(
        f"dreamdata-logging benchmark — {mach['cpu']}, {mach['usable_cpus']} CPUs, {mach['python']}", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def report_only(out: Path) -> int:
    results = json.loads((out / "results.json").read_text())
    cfg = results["config"]
    summary, targets = analyse(results["runs"], cfg["events"])
    text = table(summary, targets, cfg["events"], cfg["outage_events"])
    if results.get("notes"):
        text += "\n\n" + "\n".join("NOTE: " + n for n in results["notes"])
    print(text)
    results["summary"], results["targets"] = summary, targets
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "results.txt").write_text(text.lstrip("\n") + "\n")
    msg = chart(summary, out / "chart.png", results["machine"], cfg["events"])
    if msg:
        print(msg)
    return 0


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="dreamdata-logging vs floor vs segment-analytics-python")
    ap.add_argument("--events", type=int, default=100_000, help="events per workload (default 100,000)")
    ap.add_argument("--outage-events", type=int, default=None, help="emits during the outage (default 2x --events)")
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results", help="where results.json and chart.png go"
    )
    ap.add_argument(
        "--contenders", default=",".join(CONTENDERS), help="comma-separated subset of: " + ", ".join(CONTENDERS)
    )
    ap.add_argument("--workloads", default=",".join(WORKLOAD_NAMES))
    ap.add_argument("--no-outage", action="store_true", help="skip the outage scenario")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="before each run, wait up to S seconds for other processes to go quiet (default 0: don't wait)",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild the table, results.txt and chart.png from --out/results.json",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="run everything N times, interleaved, and report medians (default 1)"
    )
    args = ap.parse_args(argv)
    if args.report_only:
        return report_only(args.out)
    events = args.events
    outage_events = args.outage_events or 2 * events
    wanted = [c for c in args.contenders.split(",") if c]
    workloads = [w for w in args.workloads.split(",") if w]
    for c in wanted:
        if c not in CONTENDERS:
            ap.error(f"unknown contender {c!r}")

    notes = []
    why = dreamdata_available()
    if why is not None:
        notes.append(f"dreamdata_logging not importable ({why}): dreamdata contenders skipped")
        wanted = [c for c in wanted if not c.startswith("dreamdata")]

    args.out.mkdir(parents=True, exist_ok=True)
    mach = machine()
    print(
        f"Machine: {mach['cpu']}, {mach['usable_cpus']}/{mach['cpu_count']} CPUs, {mach['python']}, {mach['platform']}"
    )
    print("Packages: " + ", ".join(f"{k} {v}" for k, v in mach["packages"].items()))
    for n in notes:
        print("NOTE:", n)

    recv = ReceiverProc()
    runs = []
    t_start = time.perf_counter()
    try:
        once = [(c, wl, events, "throughput") for wl in workloads for c in wanted]
        if not args.no_outage:
            once += [(c, "small", outage_events, "outage") for c in wanted if c in DELIVERING]
        plan = [(rep, *step) for rep in range(1, args.repeat + 1) for step in once]
        for rep, c, wl, n, scen in plan:
            tag = f"[{rep}/{args.repeat}] " if args.repeat > 1 else ""
            print(f"  {tag}{scen:<10} {wl:<6} {c:<17} ...", end="", flush=True)
            if args.wait_idle > 0:
                waited = time.perf_counter()
                share = wait_for_idle(args.wait_idle)
                if time.perf_counter() - waited > 1.5:
                    print(f" (waited {time.perf_counter() - waited:.0f} s for quiet: {share:.2f})", end="", flush=True)
            r = run_child(recv, c, wl, n, scen, timeout=600 if scen == "throughput" else 60)
            r["repeat"] = rep
            runs.append(r)
            if r.get("foreign_cpu_share", 0) > CONTENDED:
                print(f" [other processes used {r['foreign_cpu_share']:.2f} cores]", end="")
            if "error" in r:
                print(f" FAILED ({r['process_seconds']} s)\n{r['error']}")
            elif "exit_problem" in r:
                print(f" {r['caller_us']:.2f} us/ev, but: {r['exit_problem']}")
            else:
                extra = f", {r['e2e_events_per_s']:,.0f} ev/s" if r.get("e2e_events_per_s") else ""
                print(f" {r['caller_us']:.2f} us/ev{extra} ({r['process_seconds']} s)")
    finally:
        recv.stop()
    elapsed = time.perf_counter() - t_start

    contended = [r for r in runs if r.get("foreign_cpu_share", 0) > CONTENDED]
    if contended:
        worst = max(r["foreign_cpu_share"] for r in contended)
        notes.append(
            f"{len(contended)} of {len(runs)} runs shared the machine with other busy processes "
            f"(up to {worst:.2f} of {mach['usable_cpus']} cores): numbers are noisy; rerun on an idle machine"
        )
    summary, targets = analyse(runs, events)
    text = table(summary, targets, events, outage_events)
    if notes:
        text += "\n\n" + "\n".join("NOTE: " + n for n in notes)
    print(text)

    results = {
        "machine": mach,
        "config": {
            "events": events,
            "outage_events": outage_events,
            "repeat": args.repeat,
            "body_limit": BODY_LIMIT,
            "workloads": {
                wl: {"message_bytes": wire_size(wl), "properties_bytes": properties_size(wl)} for wl in WORKLOAD_NAMES
            },
            "contenders": {k: v[2] for k, v in CONTENDERS.items()},
        },
        "notes": notes,
        "elapsed_seconds": round(elapsed, 1),
        "summary": summary,
        "targets": targets,
        "runs": runs,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "results.txt").write_text(text.lstrip("\n") + "\n")
    msg = chart(summary, args.out / "chart.png", mach, events)
    print(
        f"\nWrote {args.out / 'results.json'}, {args.out / 'results.txt'}"
        + ("" if msg else f", {args.out / 'chart.png'}")
        + f" in {elapsed:.0f} s"
    )
    if msg:
        print(msg)
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
