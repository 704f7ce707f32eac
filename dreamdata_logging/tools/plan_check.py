"""``dreamdata-logging plan check --plan PLAN FILE...``: which messages of files break a tracking plan.

Each FILE is a batch document (``{"batch": [...]}``) or JSON lines, read as ``dreamdata-logging send``
reads them (``-`` is standard input). Every message that breaks the plan is printed with its file and
line (and its index in a batch document), the event name, the field, why and the value. Exit code: 0
when every message follows the plan, 1 when any does not, 2 when the plan or a file cannot be read.
"""

from __future__ import annotations

import sys
from typing import IO, BinaryIO, Optional, Sequence

from dreamdata_logging.tools.send.files import FileFormatError, read_messages
from dreamdata_logging.wire.plan import PlanError, TrackingPlan, load_plan

__all__ = ["check_files"]

_PROGRAM = "dreamdata-logging plan check"


class _Tally:
    def __init__(self) -> None:
        self.checked = self.violations = self.unreadable = 0


def check_files(
    plan_path: str, files: Sequence[str], out: Optional[IO[str]] = None, err: Optional[IO[str]] = None
) -> int:
    """Check every message of ``files`` against the plan at ``plan_path``; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        plan = load_plan(plan_path)
    except PlanError as error:
        print(f"{_PROGRAM}: {error}", file=err)
        return 2
    tally = _Tally()
    for name in files:
        try:
            stream: BinaryIO = sys.stdin.buffer if name == "-" else open(name, "rb")
        except OSError as error:
            print(f"{_PROGRAM}: cannot read {name}: {error.strerror or error}", file=err)
            tally.unreadable += 1
            continue
        try:
            _check_stream(plan, name, stream, tally, out, err)
        except FileFormatError as error:
            print(f"{name}:{error.line}: {error.reason}", file=err)
            tally.unreadable += 1
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
    broken = f"{tally.violations} break the tracking plan" if tally.violations else "all follow the tracking plan"
    unread = f"; {tally.unreadable} could not be read" if tally.unreadable else ""
    print(f"{tally.checked} message(s) checked in {len(files)} file(s): {broken}{unread}", file=out)
    return 2 if tally.unreadable else 1 if tally.violations else 0


def _check_stream(plan: TrackingPlan, name: str, stream: BinaryIO, tally: _Tally, out: IO[str], err: IO[str]) -> None:
    kind, items = read_messages(stream)
    for index, item in enumerate(items):
        where = f"{name}:{item.line}" + (f": batch[{index}]" if kind == "batch document" else "")
        if item.problem is not None:
            print(f"{where}: {item.problem}", file=err)
            tally.unreadable += 1
            continue
        if not isinstance(item.value, dict):
            print(f"{where}: not a message (a JSON object), but {type(item.value).__name__}", file=err)
            tally.unreadable += 1
            continue
        tally.checked += 1
        violation = plan.check(item.value)
        if violation is not None:
            tally.violations += 1
            print(f"{where}: {violation.with_value()}", file=out)
