"""What a tracking plan and ``before_send`` cost the caller, per event.

    python -m benchmarks.plan_cost [--events 50000] [--workload small|large] [--no-orjson]

The handler's ``emit(record)`` with ``send=False`` (message building, checks and counting in the
caller's thread; no worker, no network), best of 5 loops, for: no plan and no hook; a plan the event
follows; a plan the event breaks (reports are rate-limited, so most are counted only); an identity
``before_send``; both. The plan's cost is the difference to the plain handler; the target is at most
3 us per event. Also the compiled validator alone. Needs the ``plan`` extra (fastjsonschema, PyYAML).
"""

from __future__ import annotations

import os
import sys

if "--no-orjson" in sys.argv:
    os.environ["DREAMDATA_LOGGING_NO_ORJSON"] = "1"
    sys.modules["orjson"] = None  # type: ignore[assignment]

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402

from benchmarks.profile_caller import best_us  # noqa: E402
from benchmarks.workload import CONTEXT, USER_ID, WORKLOADS  # noqa: E402

#: The plan's cost per event may be at most this (us), on top of the plain handler.
TARGET_US = 3.0


def _schema(properties: dict) -> dict:
    """A typical small schema for the workload's properties: their types, a few of them required."""
    kinds = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
    fields = {
        key: {"type": [kinds.get(type(value), "string"), "null"]} if value is None else {"type": kinds[type(value)]}
        for key, value in properties.items()
        if type(value) in kinds or value is None
    }
    return {"type": "object", "required": sorted(fields)[:2], "properties": fields}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--workload", default="small", choices=sorted(WORKLOADS))
    ap.add_argument("--no-orjson", action="store_true")
    args = ap.parse_args(argv)

    import dreamdata_logging as dd
    from dreamdata_logging.events import encoding
    from dreamdata_logging.wire.plan import load_plan

    logging.getLogger("dreamdata_logging").disabled = True  # the broken plan's reports: counted, not printed
    w = WORKLOADS[args.workload]
    event, props = w["event"], w["properties"]
    schema = _schema(props)
    folder = tempfile.mkdtemp(prefix="plan-cost-")
    plan_path = os.path.join(folder, "plan.json")
    with open(plan_path, "w") as f:
        json.dump({"track": {event: {"properties": schema}}}, f)
    broken_path = os.path.join(folder, "broken.json")
    with open(broken_path, "w") as f:
        broken = {**schema, "required": [*schema["required"], "missing_property"]}
        json.dump({"track": {event: {"properties": broken}}}, f)

    log = logging.getLogger("plan-cost")
    extra = dd.track(user_id=USER_ID, properties=props, context=CONTEXT)
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, event, None, None, extra=extra)

    def handler(**options) -> dd.DreamdataHandler:
        return dd.DreamdataHandler("bench", endpoint="http://127.0.0.1:9/v1/batch", send=False, **options)

    configurations = {
        "no plan, no before_send": handler(),
        "plan, event follows it": handler(tracking_plan=plan_path),
        "plan, event breaks it (report)": handler(tracking_plan=broken_path),
        "plan, event breaks it (drop)": handler(tracking_plan=broken_path, plan_policy="drop"),
        "before_send (returns the message)": handler(before_send=lambda message: message),
        "plan and before_send": handler(tracking_plan=plan_path, before_send=lambda message: message),
    }
    n = args.events // 5
    print(f"workload {args.workload} ({event!r}), serialiser {encoding.BACKEND}, {n:,} calls x best of 5")
    results = {name: best_us(lambda h=h: h.emit(record), n) for name, h in configurations.items()}
    validator = load_plan(plan_path).track[event]
    assert validator is not None
    results["the compiled validator alone"] = best_us(lambda: validator(props), n)
    plain = results["no plan, no before_send"]
    baselines = ("no plan, no before_send", "the compiled validator alone")
    for name, us in results.items():
        extra_cost = "" if name in baselines else f"{us - plain:+8.2f}"
        print(f"   {name:<40}{us:8.2f} us per event {extra_cost}")
    cost = results["plan, event follows it"] - plain
    verdict = "within" if cost <= TARGET_US else "OVER"
    print(f"the plan's cost per event: {cost:.2f} us ({verdict} the {TARGET_US:g} us target)")
    stats = configurations["plan, event breaks it (drop)"].stats()
    print(f"(the dropping handler counted {stats['plan_violations']:,} violations, {stats['filtered']:,} filtered)")


if __name__ == "__main__":
    main()
