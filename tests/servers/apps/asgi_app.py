"""An ASGI app for uvicorn and gunicorn's UvicornWorker: GET /event logs one event; other paths do not.

The handler is made when the module is imported (in each worker process).
"""

from __future__ import annotations

import os
from typing import Any, Awaitable, Callable

import dd_common

dd_common.attach()

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/event":
        dd_common.log_event("Request Served")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


if os.environ.get("DD_ASGI_MIDDLEWARE") == "1":  # as docs/deployment.md says for uvicorn --workers
    from dreamdata_logging.asgi import DreamdataMiddleware

    app = DreamdataMiddleware(app)  # type: ignore[assignment]
