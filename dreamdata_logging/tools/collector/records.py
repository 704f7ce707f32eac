"""One request as the collector saw it, and its line in the collector's verbose output."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional
from urllib.parse import urlsplit


@dataclass
class RequestRecord:
    """One request as the collector saw it (accepted, rejected or faulted)."""

    method: str
    path: str  # as requested, query string included
    headers: Dict[str, str]  # Authorization is redacted
    body_size: int = 0  # bytes as sent (for a body refused unread: as declared, or read so far)
    decoded_size: int = 0  # after gunzip (a refused gzip bomb stops counting past the limit)
    status: int = 0  # 0: no answer was sent (dropped, or the collector stopped mid-stall)
    message_count: int = 0  # messages in the batch, when the body could be read as one
    error: Optional[str] = None  # why it was refused, or which fault answered it


def print_request(record: RequestRecord, plan_flags: Optional[List[Optional[str]]] = None) -> None:
    """One line on stdout for ``record``: time, status, method, path (never its query), messages and size;
    then a line for each message that breaks the tracking plan (``plan_flags``, from ``--plan``)."""
    size = f"{record.body_size:,} bytes"
    if record.decoded_size != record.body_size and record.decoded_size:
        size += f" ({record.decoded_size:,} decoded)"
    path = urlsplit(record.path).path  # never a query string
    line = (
        f"{time.strftime('%H:%M:%S')} {record.status or '---'} {record.method} {path}"
        f" {record.message_count} messages, {size}"
    )
    if record.error:
        line += f": {record.error}"
    for index, flag in enumerate(plan_flags or ()):
        if flag is not None:
            line += f"\n  batch[{index}] breaks the tracking plan: {flag}"
    if sys.stdout is not None:
        sys.stdout.write(line + "\n")  # one write, so lines from concurrent requests don't interleave
        sys.stdout.flush()
