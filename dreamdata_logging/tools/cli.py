"""The command line: ``dreamdata-logging demo|collector|send|plan check`` (or ``python -m dreamdata_logging``)."""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import os
import sys
from collections.abc import Sequence
from importlib import resources
from typing import Any, Callable, Optional

from dreamdata_logging import DreamdataHandler, alias, group, identify, page, screen, track
from dreamdata_logging._version import __version__
from dreamdata_logging.tools.collector import CLI_KEEP, Collector, run_collector
from dreamdata_logging.tools.plan_check import check_files
from dreamdata_logging.tools.send import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, send_file

DEMO_WRITE_KEY = "demo-write-key"


def _example_text(name: str) -> str:
    return resources.files("dreamdata_logging").joinpath("examples").joinpath(name).read_text(encoding="utf-8")


def reference_batch() -> dict[str, Any]:
    """Dreamdata's example batch (``examples/example.json``), as bundled with the package."""
    return json.loads(_example_text("example.json"))  # type: ignore[no-any-return]


def emit_reference_events(log: logging.Logger) -> int:
    """Emit the reference example's identify and track through ``log``, then one of each other type."""
    identify_message, track_message = reference_batch()["batch"]
    log.info(
        "identify",
        extra=identify(
            user_id=identify_message["userId"],
            traits=identify_message["traits"],
            context=identify_message["context"],
        ),
    )
    log.info(
        track_message["event"],
        extra=track(
            user_id=track_message["userId"],
            properties=track_message["properties"],
            context=track_message["context"],
        ),
    )
    user = identify_message["userId"]
    log.info("page", extra=page("Pricing", category="Docs", user_id=user, properties={"path": "/pricing"}))
    log.info("screen", extra=screen("Home", user_id=user))
    log.info("group", extra=group("acme-inc", user_id=user, traits={"name": "Acme Inc", "employees": 120}))
    log.info("alias", extra=alias("anon-7f3a", user_id=user))
    log.info("an ordinary log line: no event data, so the handler skips it")
    return 6


def demo(out: Any = sys.stdout) -> int:
    """Run the whole pipeline on this machine: collector, logging config, events, flush, report."""
    with Collector(write_key=DEMO_WRITE_KEY, strict=True) as collector:  # the handler sends the exact format
        os.environ["DREAMDATA_WRITE_KEY"] = DEMO_WRITE_KEY
        os.environ["DREAMDATA_ENDPOINT"] = collector.url
        logging.config.dictConfig(json.loads(_example_text("logging.json")))
        log = logging.getLogger("analytics")
        handler = next(h for h in log.handlers if isinstance(h, DreamdataHandler))
        print(f"dreamdata-logging {__version__} demo: collector on {collector.url}", file=out)
        print("logging configured from the bundled examples/logging.json", file=out)
        sent = emit_reference_events(log)
        delivered = handler.flush(timeout=30)
        received = collector.received()
        print(f"\nthe collector received {len(received)} message(s):", file=out)
        for message in received:
            print(json.dumps(message, indent=2, sort_keys=False), file=out)
        stats = handler.stats()
        handler.close()
    print("\nhandler stats:", json.dumps(stats), file=out)
    ok = delivered and len(received) == sent
    print("all events arrived" if ok else f"only {len(received)} of {sent} events arrived", file=out)
    return 0 if ok else 1


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _number(parser: Any, flag: str, kind: Callable[[str], Any], default: Any, help: str) -> None:
    """An option that takes a number: a positive one (seconds, ``S``) or a count (``N``)."""
    parser.add_argument(flag, metavar="S" if kind is _positive else "N", type=kind, default=default, help=help)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamdata-logging", description="Dreamdata analytics events from Python logging."
    )
    parser.add_argument("--version", action="version", version=f"dreamdata-logging {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the pipeline locally against the bundled collector (no network, no key)")
    _add_collector_command(commands)
    _add_send_command(commands)
    _add_plan_command(commands)
    return parser


def _command(commands: Any, name: str, summary: str, description: str) -> Any:
    return commands.add_parser(name, help=summary, description=description)


def _add_collector_command(commands: Any) -> None:
    collector = _command(
        commands,
        "collector",
        "a local stand-in for the batch endpoint, with a live event debugger at GET /",
        "A local stand-in for Dreamdata's POST /v1/batch: checks auth, JSON, the 500,000-byte limit "
        "and each message as the API does, and prints a line per request. Open http://HOST:PORT/ in a browser "
        "for the live event debugger. Memory stays bounded: only the last --keep messages are kept (for the "
        "counts and the debugger); every accepted message is appended to --out.",
    )
    collector.add_argument("--host", default="127.0.0.1")
    collector.add_argument("--port", type=int, default=8765, help="default 8765; 0 picks a free port")
    collector.add_argument("--write-key", default=None, help="accept only this key (default: any non-empty key)")
    collector.add_argument(
        "--out", default=None, help="append every accepted message to this JSON-lines file (nothing is lost)"
    )
    collector.add_argument(
        "--strict",
        action="store_true",
        help="also enforce this package's exact format (envelope messageId and sentAt, each message's messageId, "
        "timestamps like 2012-12-02T00:30:08.276Z); by default any RFC 3339 timestamp, no envelope messageId "
        "and a batch-level context are accepted, as the API does",
    )
    collector.add_argument(
        "--plan",
        metavar="PLAN",
        default=None,
        help="a tracking plan (YAML or JSON): messages that break it are accepted, flagged on the debugger page "
        "and printed",
    )
    keep = f"messages kept in memory, the newest (default {CLI_KEEP:,}); older ones are only in --out"
    _number(collector, "--keep", _count, CLI_KEEP, keep)


def _add_send_command(commands: Any) -> None:
    send = _command(
        commands,
        "send",
        "send a batch document or JSON lines of messages to the endpoint",
        "Send FILE (a batch document {\"batch\": [...]} or JSON lines, one message per line; '-' is "
        "standard input): every message is checked, requests are kept within 500,000 bytes and sent with retries. "
        "Exit code: 0 all valid messages arrived, 1 some invalid or not delivered, 2 usage error.",
    )
    send.add_argument("file", metavar="FILE")
    send.add_argument("--write-key", metavar="KEY", default=None, help="default: env DREAMDATA_WRITE_KEY")
    send.add_argument("--endpoint", metavar="URL", help="default: env DREAMDATA_ENDPOINT, else Dreamdata's")
    send.add_argument("--dry-run", action="store_true", help="check and report on stdout; send nothing")
    send.add_argument("--gzip", action="store_true", help="compress request bodies")
    _number(send, "--timeout", _positive, DEFAULT_TIMEOUT, "seconds per request (default %(default)g)")
    _number(send, "--max-retries", _count, DEFAULT_MAX_RETRIES, "retries of one request (default %(default)d)")
    send.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _add_plan_command(commands: Any) -> None:
    plan = _command(commands, "plan", "check messages against a tracking plan", "Tracking plan tools.")
    actions = plan.add_subparsers(dest="plan_command", required=True)
    check = _command(
        actions,
        "check",
        "check files of messages against a tracking plan",
        "Check every message of each FILE (a batch document or JSON lines; '-' is standard input) against the "
        "tracking plan PLAN (YAML or JSON). Each message that breaks it is printed with its line (and batch "
        "index), event name, field, reason and value. Exit code: 0 all follow the plan, 1 some do not, "
        "2 the plan or a file cannot be read.",
    )
    check.add_argument("--plan", metavar="PLAN", required=True, help="the tracking plan file (.yaml or .json)")
    check.add_argument("files", metavar="FILE", nargs="+")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return demo()
    if args.command == "collector":
        return run_collector(
            args.host, args.port, args.write_key, args.out, strict=args.strict, keep=args.keep, plan=args.plan
        )
    if args.command == "send":
        return send_file(
            args.file,
            write_key=args.write_key,
            endpoint=args.endpoint,
            dry_run=args.dry_run,
            gzip=args.gzip,
            timeout=args.timeout,
            max_retries=args.max_retries,
            quiet=args.quiet,
        )
    if args.command == "plan":
        return check_files(args.plan, args.files)
    raise AssertionError(args.command)  # argparse rejects unknown commands first
