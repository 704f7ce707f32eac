"""A local stand-in for Dreamdata's ``POST /v1/batch``, with a live event debugger at ``GET /``.

It checks what the real endpoint checks (auth, JSON, the 500,000-byte body limit, each message) and
answers as it would: 200 ``{"success": true}``, or 400/401/404/405/408/413/431 with ``{"error": "<reason>"}``.
By default it accepts what the real API accepts from any client (any RFC 3339 timestamp, no envelope
``messageId``, a batch-level ``context`` merged into each message); ``strict=True`` (``--strict``) also
enforces this package's exact format (see :func:`dreamdata_logging.wire.rules.wire_problem`).

It is what ``dreamdata-logging collector``, the demo and the project's tests talk to, so it also records
requests and messages (the last ``keep`` of each; ``keep=None`` keeps everything), appends accepted
messages to ``out`` as JSON lines, and can inject faults (error statuses, stalls, dropped connections,
outages). Each request's memory and time are bounded whatever its framing or encoding: headers, a
declared or chunked body over the limit, a gzip body that inflates past it, and a client too slow to
finish its request within ``request_timeout`` are all refused without holding more than the limit.

Besides the standard library it uses only the package's wire checks, the same ones
``dreamdata-logging send`` applies before sending; it does not need the handler.

This module holds :class:`Collector` (it runs the server and keeps what was accepted) and the command;
the parts are beside it in this package: request framing (``framing``), the checks (``checks``), routing
(``server``), the Host and page guard (``guard``), the debugger's page and feed (``page``, ``feed``), the
tracking-plan check (``plan``), request records (``records``) and faults (``faults``).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Union

from dreamdata_logging.tools.collector.checks import Judged
from dreamdata_logging.tools.collector.faults import Fault, FaultInjection
from dreamdata_logging.tools.collector.feed import FEED_ROWS, Feed
from dreamdata_logging.tools.collector.feed import MAX_PAGES as _MAX_PAGES
from dreamdata_logging.tools.collector.feed import SSE_PING as _SSE_PING
from dreamdata_logging.tools.collector.guard import is_loopback
from dreamdata_logging.tools.collector.plan import PlanCheck, PlanSource
from dreamdata_logging.tools.collector.records import RequestRecord, print_request
from dreamdata_logging.tools.collector.server import BATCH_PATH, PAGE_PATH, CollectorServer
from dreamdata_logging.tools.collector.server import EVENTS_PATH as EVENTS_PATH
from dreamdata_logging.wire.rules import MAX_BODY_BYTES, MAX_MESSAGE_BYTES

__all__ = [
    "BATCH_PATH",
    "DEFAULT_KEEP",
    "MAX_BODY_BYTES",
    "MAX_MESSAGE_BYTES",
    "Collector",
    "Fault",
    "RequestRecord",
    "run_collector",
]

#: How many messages (and request records) a :class:`Collector` keeps by default; all are counted.
DEFAULT_KEEP = 10_000
#: How many the ``dreamdata-logging collector`` command keeps (it streams everything to ``--out``).
CLI_KEEP = 1_000
# How often the accept loop looks for a stop request; bounds how long stop() takes.
_POLL_INTERVAL = 0.05
# How long stop() waits for connection threads (woken by the stop) to finish their request.
_JOIN_TIMEOUT = 2.0
# The debugger's most pages at once (_MAX_PAGES) and keep-alive interval (_SSE_PING) are read from this
# module when a Collector is made, so they can be changed for the collectors made afterwards.

Message = Dict[str, Any]


class Collector(FaultInjection, PlanCheck):
    """A local ``POST /v1/batch`` that checks like the real one, records, and injects faults.

    The socket is bound on construction (``port=0`` picks a free port, see :attr:`url`); serve with
    :meth:`start` (background) or :meth:`serve_forever` (foreground); a stopped collector cannot start again.
    ``write_key=None`` (or "") accepts any non-empty key. ``strict=True`` also enforces this package's exact
    format; by default what Dreamdata's API accepts from any client is accepted. ``keep`` bounds how many
    accepted messages (and request records) :meth:`received` and :meth:`requests` return, the newest ones;
    ``keep=None`` keeps everything; :meth:`wait_for` and :attr:`accepted` count every accepted message.
    ``out`` gets every accepted message as a JSON line. ``request_timeout`` bounds how long one request may
    take to arrive (408 after it); ``idle_timeout`` how long any single read may wait. The live event
    debugger is at :attr:`page_url`; with ``plan``, what breaks that tracking plan is flagged.

    Bound to loopback (the default), it answers only a ``Host`` naming it (else 421), so no web page can read
    its events by rebinding a name to this address; bound beyond loopback, the debugger asks for
    ``write_key`` by HTTP Basic (401), and stays closed (403) without one. See ``guard``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        write_key: Optional[str] = None,
        out: Union[str, os.PathLike[str], None] = None,
        verbose: bool = False,
        *,
        strict: bool = False,
        keep: Optional[int] = DEFAULT_KEEP,
        request_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        plan: PlanSource = None,
    ) -> None:
        if keep is not None and keep < 0:
            raise ValueError(f"keep must be None or 0 or more, not {keep}")
        if not request_timeout > 0 or not idle_timeout > 0:
            raise ValueError("request_timeout and idle_timeout must be more than 0")
        self._write_key = write_key or None
        self._out = os.fspath(out) if out is not None else None
        if self._out is not None:
            open(self._out, "ab").close()  # fail now, not at the first batch, if it can't be written
        self._verbose = verbose
        self._strict = strict
        self._request_timeout = float(request_timeout)
        self._idle_timeout = float(idle_timeout)
        self._init_plan(plan)
        super().__init__()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._messages: Deque[Message] = collections.deque(maxlen=keep)
        self._requests: Deque[RequestRecord] = collections.deque(maxlen=keep)
        self._accepted = 0
        self._request_count = 0
        self._feed = Feed(_MAX_PAGES, _SSE_PING)
        self._stopping = threading.Event()  # also ends stalls early
        self._serving = False
        self._stopped = False
        self._thread: Optional[threading.Thread] = None
        self._watcher: Optional[threading.Thread] = None
        self._server = CollectorServer((host, port), self)

    def __repr__(self) -> str:
        return f"<Collector {self.url}>"  # never the write key

    @property
    def url(self) -> str:
        """The batch endpoint, e.g. ``http://127.0.0.1:8765/v1/batch``."""
        return self._base() + BATCH_PATH

    @property
    def page_url(self) -> str:
        """The live event debugger, e.g. ``http://127.0.0.1:8765/``."""
        return self._base() + PAGE_PATH

    def _base(self) -> str:
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    # -- lifecycle --

    def _claim(self) -> bool:
        """Mark the collector as serving; False when it already is."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("this Collector was stopped; make a new one")
            if self._serving:
                return False
            self._serving = True
        self._watcher = threading.Thread(
            target=self._server.watch_deadlines, args=(self._stopping,), name=f"collector-{self.port}-deadlines"
        )
        self._watcher.daemon = True
        self._watcher.start()
        return True

    def start(self) -> Collector:
        """Serve in a background daemon thread; returns self. Calling it again while serving is a no-op."""
        if self._claim():
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(_POLL_INTERVAL,), name=f"collector-{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until stop() or Ctrl-C (which returns cleanly)."""
        if not self._claim():
            raise RuntimeError("this Collector is already serving")
        try:
            self._server.serve_forever(_POLL_INTERVAL)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, close the socket and every open connection (debugger pages too); idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            serving = self._serving
        self._stopping.set()
        self._feed.close()
        if serving:  # shutdown() waits for the accept loop, which only exists once serving began
            self._server.shutdown()
        self._server.server_close()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in self._server.close_connections():
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        for own in (self._thread, self._watcher):
            if own is not None and own is not threading.current_thread():
                own.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what arrived --

    def received(self) -> List[Message]:
        """A copy of the accepted messages kept (every one with ``keep=None``; else the newest), oldest first.

        A batch-level ``context`` is already merged into each message.
        """
        with self._lock:
            return list(self._messages)

    def requests(self) -> List[RequestRecord]:
        """A copy of the records of the requests kept (accepted or not; the newest ``keep``), oldest first.

        The debugger's own requests (``GET /`` and ``GET /events``) are not among them.
        """
        with self._lock:
            return [dataclasses.replace(record) for record in self._requests]

    @property
    def accepted(self) -> int:
        """How many messages were accepted (since the start or the last :meth:`reset`), kept or not."""
        with self._lock:
            return self._accepted

    @property
    def request_count(self) -> int:
        """How many requests were seen (since the start or the last :meth:`reset`), kept or not."""
        with self._lock:
            return self._request_count

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` messages were accepted; False if ``timeout`` passed first."""
        with self._arrived:
            return self._arrived.wait_for(lambda: self._accepted >= count, timeout)

    def reset(self) -> None:
        """Forget the messages and requests seen so far, and their counts (faults stay scripted)."""
        with self._lock:
            self._messages.clear()
            self._requests.clear()
            self._accepted = self._request_count = self._plan_violations = 0
        self._feed.clear()

    # -- used by the request handler --

    def _record(
        self,
        record: RequestRecord,
        messages: Optional[List[Message]] = None,
        lines: Optional[List[bytes]] = None,
        judged: Optional[List[Judged]] = None,
    ) -> None:
        with self._arrived:
            self._requests.append(record)
            self._request_count += 1
            if messages:
                if self._out is not None and lines:
                    # Under the lock, so the file's order is the order of arrival; closing flushes per batch.
                    with open(self._out, "ab") as out:
                        out.write(b"\n".join(lines) + b"\n")
                self._messages.extend(messages)
                self._accepted += len(messages)
                self._arrived.notify_all()
        if messages and lines is not None and judged is None:
            judged = [(message, line, None) for message, line in zip(messages, lines)]
        flags = self._check_plan(messages)
        self._feed.publish(record, judged, flags)
        if self._verbose:
            print_request(record, flags)

    def _amend(self, record: RequestRecord, status: int, error: str) -> None:
        with self._lock:
            record.status, record.error = status, error
        if self._verbose:
            print_request(record)


def run_collector(
    host: str = "127.0.0.1",
    port: int = 8765,
    write_key: Optional[str] = None,
    out: Optional[str] = None,
    *,
    strict: bool = False,
    keep: int = CLI_KEEP,
    plan: Optional[str] = None,
) -> int:
    """``dreamdata-logging collector``: serve in the foreground, a line per request, until Ctrl-C."""
    try:
        collector = Collector(
            host, port, write_key=write_key, out=out, verbose=True, strict=strict, keep=keep, plan=plan
        )
    except OSError as exc:
        print(f"dreamdata-logging collector: cannot start on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # the tracking plan cannot be used
        print(f"dreamdata-logging collector: {exc}", file=sys.stderr)
        return 2
    auth = "checking the write key" if write_key else "accepting any non-empty write key"
    rules = "this package's exact format (--strict)" if strict else "what Dreamdata's API accepts"
    target = f"; appending accepted messages to {out}" if out else ""
    target += f"; flagging messages that break the tracking plan {plan}" if plan else ""
    shows = f" (it shows the last {FEED_ROWS:,} events; {keep:,} messages are kept in memory)"
    if is_loopback(host):
        page = f"open {collector.page_url} in a browser{shows}"
    elif write_key:
        page = f"open port {collector.port} of this machine in a browser; user name: the write key, no password{shows}"
    else:
        page = "closed: bound beyond loopback, it shows events only to holders of the write key (--write-key KEY)"
    print(
        f"dreamdata-logging collector listening on {collector.url} ({auth}; checking {rules}{target});"
        f" Ctrl-C stops it\nlive event debugger: {page}",
        flush=True,
    )
    collector.serve_forever()
    print(f"stopped: {collector.request_count} requests, {collector.accepted} messages accepted", flush=True)
    return 0
