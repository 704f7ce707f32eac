"""Shared by the server apps: the handler from the environment, and one event per call whose messageId is
appended to the file named by DD_IDS_FILE (one write per line, so processes sharing it never interleave).

Environment: DREAMDATA_ENDPOINT and DREAMDATA_WRITE_KEY (read by the handler itself), DD_IDS_FILE,
DD_FLUSH_INTERVAL (default 1.0), DD_SHUTDOWN_TIMEOUT (default 5.0), DD_HANDLE_SIGTERM ("true"/"false"; unset:
the handler's default), DD_SPOOL (a spool file; unset: none).
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from dreamdata_logging import DreamdataHandler, track

LOGGER = "analytics"


def handler_options() -> dict[str, Any]:
    options: dict[str, Any] = {
        "flush_interval": float(os.environ.get("DD_FLUSH_INTERVAL", "1.0")),
        "shutdown_timeout": float(os.environ.get("DD_SHUTDOWN_TIMEOUT", "5.0")),
    }
    if os.environ.get("DD_SPOOL"):
        options["spool"] = os.environ["DD_SPOOL"]
    if "DD_HANDLE_SIGTERM" in os.environ:
        options["handle_sigterm"] = os.environ["DD_HANDLE_SIGTERM"]
    return options


def handler_config() -> dict[str, Any]:
    """The handler as a dictConfig entry (strings, as a config file would give them)."""
    return {"class": "dreamdata_logging.DreamdataHandler", **{k: str(v) for k, v in handler_options().items()}}


def attach(logger_name: str = LOGGER, **options: Any) -> DreamdataHandler:
    handler = DreamdataHandler(**{**handler_options(), **options})
    log = logging.getLogger(logger_name)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    if logger_name:
        log.propagate = False
    return handler


def record(message_id: str) -> None:
    fd = os.open(os.environ["DD_IDS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{message_id}\n".encode())
    finally:
        os.close(fd)


def log_event(name: str, logger_name: str = LOGGER, **properties: Any) -> str:
    """Log one track event and note its messageId once logging returned."""
    message_id = str(uuid.uuid4())
    properties["pid"] = os.getpid()
    logging.getLogger(logger_name).info(
        name, extra=track(user_id=f"user-{os.getpid()}", message_id=message_id, properties=properties)
    )
    record(message_id)
    return message_id
