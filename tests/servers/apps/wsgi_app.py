"""A WSGI app for uWSGI and gunicorn: GET /event logs one event; any other path answers without one.

The handler is made when the module is imported: in the master before fork for uWSGI without
--lazy-apps and gunicorn --preload, in each worker otherwise. DD_EVENT_AT_IMPORT=1 also logs an event
at import (so, in the master, before the workers exist). DD_POSTFORK=1 first registers a function of the
app's own with uwsgidecorators' @postfork, which prints "app postfork" in each worker.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import dd_common

if os.environ.get("DD_POSTFORK") == "1":
    from uwsgidecorators import postfork

    @postfork
    def app_postfork() -> None:
        print("app postfork", flush=True)


dd_common.attach()
if os.environ.get("DD_EVENT_AT_IMPORT") == "1":
    dd_common.log_event("App Loaded")


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/event":
        dd_common.log_event("Request Served")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
