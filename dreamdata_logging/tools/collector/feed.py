"""The collector's live event debugger: the feed of what arrived, sent to pages as server-sent events.

Publishing costs the same however many pages are connected (one encoding, one notify); each page's
thread writes at its own pace, and a page that falls behind the feed's bound skips what was dropped.
The page itself is in ``_debugger_page``.
"""

from __future__ import annotations

import collections
import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Deque, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from dreamdata_logging.tools.collector.checks import Judged, first_problem
from dreamdata_logging.tools.collector.page import PAGE
from dreamdata_logging.tools.collector.records import RequestRecord

#: Seconds between keep-alive comments to an idle page (how soon a closed page is noticed).
SSE_PING = 5.0
#: After writing to a page, gather events this long before writing again.
SSE_GATHER = 0.1
#: Most pages connected at once.
MAX_PAGES = 32
#: What the feed keeps for pages that connect later: rows (messages) and bytes.
FEED_ROWS = 2_000
FEED_BYTES = 8 * 1024 * 1024
_FIELD_CHARS = 200  # a field shown in a debugger column
_JSON_CHARS = 64 * 1024  # a message's JSON shown in the debugger (refused ones may be larger)

PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    # Nothing is fetched from anywhere but this collector; the page's own script and style are inline.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

__all__ = ["FEED_ROWS", "MAX_PAGES", "PAGE", "PAGE_HEADERS", "SSE_PING", "Feed", "stream_events"]


def _text(value: Any) -> str:
    """A field for a debugger column: text as is, anything else as JSON; never very long."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (ValueError, TypeError, RecursionError):
            text = type(value).__name__
    return text if len(text) <= _FIELD_CHARS else text[: _FIELD_CHARS - 1] + "\u2026"


def _json_text(message: Any, line: Optional[bytes]) -> str:
    if line is not None:
        return line.decode("utf-8")
    try:
        text = json.dumps(message, ensure_ascii=True, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):
        text = json.dumps(repr(message)[:_JSON_CHARS])
    if len(text) > _JSON_CHARS:
        text = json.dumps(f"(not shown whole: {len(text):,} characters) " + text[: _JSON_CHARS - 100])
    return text


def _row(message: Any, line: Optional[bytes], reason: Optional[str], plan: Optional[str] = None) -> Dict[str, str]:
    fields = message if isinstance(message, dict) else {}
    name = next((fields[k] for k in ("event", "name", "groupId", "previousId") if fields.get(k) is not None), None)
    return {
        "type": _text(fields.get("type")),
        "name": _text(name),
        "userId": _text(fields.get("userId")),
        "anonymousId": _text(fields.get("anonymousId")),
        "messageId": _text(fields.get("messageId")),
        "status": "accepted" if reason is None else "refused",
        "reason": reason or "",
        "plan": plan or "",  # how an accepted message breaks the tracking plan
        "json": _json_text(message, line),
    }


def _entry(
    record: RequestRecord, judged: Optional[List[Judged]], flags: Optional[List[Optional[str]]] = None
) -> Dict[str, Any]:
    """One request and its messages as the page shows them (the ``id`` is added when published)."""
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    refused_at = first_problem(judged) if judged else None
    rows = []
    for index, (message, line, problem) in enumerate(judged or ()):
        if problem is None and refused_at is not None:
            problem = f"not accepted: its batch was refused because of batch[{refused_at[0]}]"
        rows.append(_row(message, line, problem, flags[index] if flags else None))
    request = {
        "method": _text(record.method),
        "path": _text(urlsplit(record.path).path),  # never a query string
        "status": record.status,
        "reason": record.error or "",
        "size": record.body_size,
        "messages": record.message_count,
        "level": record.status != 200 and not rows,  # refused before any message was read
    }
    return {"time": stamp, "request": request, "rows": rows}


class Feed:
    """What happened lately, as ready-made server-sent events; pages wait on it, nothing waits for pages."""

    def __init__(self, max_pages: int = MAX_PAGES, ping: float = SSE_PING) -> None:
        self.max_pages = max_pages
        self.ping = ping
        self._changed = threading.Condition(threading.Lock())
        self._events: Deque[Tuple[int, bytes, int]] = collections.deque()  # (id, event bytes, rows)
        self._rows = 0
        self._bytes = 0
        self._seq = 0
        self._pages = 0
        self._closed = False

    def publish(
        self, record: RequestRecord, judged: Optional[List[Judged]], flags: Optional[List[Optional[str]]] = None
    ) -> None:
        entry = _entry(record, judged, flags)
        rows = len(entry["rows"])
        with self._changed:
            self._seq += 1
            entry = {"id": self._seq, **entry}
            data = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            event = b"id: %d\nevent: batch\ndata: %s\n\n" % (self._seq, data)
            self._events.append((self._seq, event, rows))
            self._rows += rows
            self._bytes += len(event)
            while len(self._events) > 1 and (self._rows > FEED_ROWS or self._bytes > FEED_BYTES):
                _, old, count = self._events.popleft()
                self._rows -= count
                self._bytes -= len(old)
            self._changed.notify_all()

    def wait_after(self, last: int, timeout: float) -> Tuple[List[bytes], int]:
        """The events after id ``last`` (waiting up to ``timeout`` for one), and the newest id."""
        with self._changed:
            if last > self._seq:
                last = 0  # an id from an earlier collector: send everything kept
            self._changed.wait_for(lambda: self._seq > last or self._closed, timeout)
            chunks = [event for seq, event, _ in self._events if seq > last]
            return chunks, self._seq

    def enter(self) -> bool:
        with self._changed:
            if self._pages >= self.max_pages or self._closed:
                return False
            self._pages += 1
            return True

    def leave(self) -> None:
        with self._changed:
            self._pages -= 1

    @property
    def pages(self) -> int:
        with self._changed:
            return self._pages

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def clear(self) -> None:
        with self._changed:
            self._events.clear()
            self._rows = self._bytes = 0


def stream_events(handler: BaseHTTPRequestHandler, feed: Feed, stopping: threading.Event) -> None:
    """Write the feed to a page that ``feed.enter()`` admitted, until the page or the collector goes away."""
    try:
        try:
            last = int(handler.headers.get("Last-Event-ID", "0").strip() or "0")
        except ValueError:
            last = 0
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
        handler.send_header("Cache-Control", "no-store")
        handler.send_header("X-Accel-Buffering", "no")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(b"retry: 1000\n\n")
        while not stopping.is_set():
            chunks, last = feed.wait_after(last, feed.ping)
            if stopping.is_set():
                break
            if chunks:
                handler.wfile.write(b"".join(chunks))
                # Then gather for a moment: however fast batches come, a page's thread wakes and
                # writes at most about ten times a second, so many pages cost the batches little.
                stopping.wait(SSE_GATHER)
            elif _page_gone(handler.connection):
                break
            else:
                handler.wfile.write(b": ping\n\n")
    except OSError:
        pass  # the page went away mid-write
    finally:
        feed.leave()


def _page_gone(connection: socket.socket) -> bool:
    """A page never sends anything on its event stream: readable means it closed the connection."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
