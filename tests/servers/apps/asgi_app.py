"""An ASGI app for uvicorn and gunicorn's UvicornWorker: GET /event logs one event; other paths do not.

GET /slow logs one event, waits DD_SLOW_SECONDS (default 1.5), then logs DD_SLOW_EVENTS more (default 5)
and answers: started just before a SIGTERM, its last events are logged during the server's graceful
shutdown. The lifespan shutdown logs DD_SHUTDOWN_EVENTS events (default 0).

The handler is made when the module is imported (in each worker process), without DreamdataMiddleware
unless DD_ASGI_MIDDLEWARE=1.
"""

from __future__ import annotations

import asyncio
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
                for n in range(int(os.environ.get("DD_SHUTDOWN_EVENTS", "0"))):
                    dd_common.log_event("App Stopping", n=n)
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/event":
        dd_common.log_event("Request Served")
    elif scope["path"] == "/slow":
        dd_common.log_event("Slow Request Started")
        await asyncio.sleep(float(os.environ.get("DD_SLOW_SECONDS", "1.5")))
        for n in range(int(os.environ.get("DD_SLOW_EVENTS", "5"))):
            dd_common.log_event("Slow Request Step", n=n)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


if os.environ.get("DD_ASGI_MIDDLEWARE") == "1":  # useful (identify, a flush at lifespan shutdown), not needed
    from dreamdata_logging.asgi import DreamdataMiddleware

    app = DreamdataMiddleware(app)  # type: ignore[assignment]
