"""``DreamdataMiddleware``: request context and identity for every event, in any ASGI app.

Pure ASGI (no framework import), so it wraps FastAPI, Starlette, Quart, Django's ASGI application or a
bare ASGI callable the same way::

    from fastapi import FastAPI
    from dreamdata_logging.asgi import DreamdataMiddleware

    app = FastAPI()
    app.add_middleware(DreamdataMiddleware, identify=lambda scope: {"user_id": scope.get("user")})

Per HTTP request it binds (as :func:`dreamdata_logging.bind` does) the request's ``context.ip``,
``context.userAgent`` and ``context.page`` (``url``, ``path``, ``search``, ``referrer``), plus what
``identify(scope)`` returns: keywords of ``bind()`` (``user_id``, ``anonymous_id``, ``context``,
``integrations``) or None. ``identify`` may be a plain or an ``async`` function. A websocket connection
gets ``context.ip``, ``context.userAgent`` and the identity (no ``page``). At lifespan shutdown it awaits
:func:`dreamdata_logging.aflush` (every ``DreamdataHandler`` of the process, each within its ``shutdown_timeout``,
without blocking the event loop) before telling the server that shutdown is complete.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Mapping, MutableMapping
from typing import Any, Callable, Optional, Union

from dreamdata_logging._aflush import aflush
from dreamdata_logging._serverless import flush
from dreamdata_logging.events.bind import bind

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Identify = Callable[[Scope], Union[Optional[Mapping[str, Any]], Awaitable[Optional[Mapping[str, Any]]]]]

_log = logging.getLogger("dreamdata_logging")
_REPORT_EVERY = 60.0


def _header(scope: Scope, name: bytes) -> Optional[str]:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def request_context(scope: Scope) -> dict[str, Any]:
    """The Segment-style ``context`` of an HTTP or websocket scope: ip, userAgent and (HTTP) page."""
    context: dict[str, Any] = {}
    client = scope.get("client")
    if client:
        context["ip"] = str(client[0])
    agent = _header(scope, b"user-agent")
    if agent is not None:
        context["userAgent"] = agent
    if scope.get("type") != "http":
        return context
    root_path = scope.get("root_path") or ""
    path = scope.get("path") or "/"
    if root_path and not path.startswith(root_path):  # servers differ on whether path includes root_path
        path = root_path + path
    query = scope.get("query_string") or b""
    search = "?" + bytes(query).decode("latin-1") if query else ""
    host = _header(scope, b"host")
    if host is None:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server and server[1] is not None else (server[0] if server else "")
    context["page"] = {
        "url": f"{scope.get('scheme') or 'http'}://{host}{path}{search}",
        "path": path,
        "search": search,
        "referrer": _header(scope, b"referer") or "",
    }
    return context


class DreamdataMiddleware:
    """Bind each request's context and identity for the events logged while it is handled; flush at shutdown.

    ``identify(scope)`` runs once per request (before the app) and returns ``bind()`` keywords or None;
    its ``context`` merges over the request's. If it raises, or returns something ``bind()`` refuses, the
    request goes on with the request context alone and the problem is logged on the ``dreamdata_logging``
    logger (at once, then at most once a minute). Other scope types pass through untouched.
    """

    def __init__(self, app: ASGIApp, identify: Optional[Identify] = None) -> None:
        self.app = app
        self.identify = identify
        self._reported_at: Optional[float] = None
        self._unreported = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "http" or kind == "websocket":
            with self._binding(scope, await self._identity(scope)):
                await self.app(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _identity(self, scope: Scope) -> Optional[Mapping[str, Any]]:
        if self.identify is None:
            return None
        try:
            found = self.identify(scope)
            if inspect.isawaitable(found):
                found = await found
            if found is not None and not isinstance(found, Mapping):
                kind = type(found).__name__
                raise TypeError(f"identify() must return a mapping of bind() keywords or None, not {kind}")
            return found
        except Exception:
            self._report("identify() raised; the request goes on with the request context alone")
            return None

    def _binding(self, scope: Scope, identity: Optional[Mapping[str, Any]]) -> bind:
        context = request_context(scope)
        if identity:
            fields = dict(identity)
            own = fields.pop("context", None)
            try:
                return bind(context={**context, **own} if isinstance(own, Mapping) else context, **fields)
            except (TypeError, ValueError):
                self._report("identify() returned keywords that bind() refuses; only the request context is bound")
        return bind(context=context)

    def _report(self, text: str) -> None:
        now = time.monotonic()
        if self._reported_at is not None and now - self._reported_at < _REPORT_EVERY:
            self._unreported += 1
            return
        more = f" ({self._unreported} more since the last report)" if self._unreported else ""
        self._reported_at, self._unreported = now, 0
        _log.warning("dreamdata-logging: DreamdataMiddleware: %s%s", text, more, exc_info=True)

    # -- lifespan ----------------------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = {"received": False, "shutting_down": False, "flushed": False}

        async def receiving() -> Message:
            message = await receive()
            state["received"] = True
            if message.get("type") == "lifespan.shutdown":
                state["shutting_down"] = True
            return message

        async def sending(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self._flush_once(state)
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        except Exception:
            if state["received"]:
                raise
            await self._own_lifespan(receive, send, state)  # the app does not speak lifespan: we do
            return
        finally:
            if state["shutting_down"]:
                await self._flush_once(state)
        if not state["received"]:  # returned at once, as apps that ignore lifespan do
            await self._own_lifespan(receive, send, state)

    async def _own_lifespan(self, receive: Receive, send: Send, state: dict[str, bool]) -> None:
        while True:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message.get("type") == "lifespan.shutdown":
                await self._flush_once(state)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _flush_once(self, state: dict[str, bool]) -> None:
        if state["flushed"]:
            return
        state["flushed"] = True
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # another event loop library: flush in this thread
            flush()
            return
        await aflush()  # the loop goes on serving meanwhile
