"""``dreamdata_logging.asgi.DreamdataMiddleware`` with FastAPI, Starlette, a bare ASGI app and a real uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from dreamdata_logging import track
from dreamdata_logging.asgi import DreamdataMiddleware, request_context

from .conftest import WRITE_KEY

ROOT = Path(__file__).resolve().parent.parent

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


def delivered(handler, collector, count):
    assert handler.flush(timeout=30)
    assert collector.wait_for(count, timeout=30)
    return collector.received()


def fastapi_app(log: logging.Logger, identify=None):
    app = fastapi.FastAPI()
    app.add_middleware(DreamdataMiddleware, identify=identify)

    @app.get("/pricing")
    async def pricing(plan: str = "free"):
        await asyncio.sleep(0.001)  # other requests run in between
        log.info("Pricing Viewed", extra=track(properties={"plan": plan}))
        return {"ok": True}

    @app.get("/sync")
    def in_thread_pool():  # a sync endpoint runs in a worker thread: the binding follows it there
        log.info("Sync Viewed", extra=track())
        return {"ok": True}

    return app


async def get_all(app, requests):
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 51000))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.example") as client:
        return await asyncio.gather(*(client.get(url, headers=headers) for url, headers in requests))


def test_request_context_and_identity_per_request(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)

    def identify(scope):
        for key, value in scope["headers"]:
            if key == b"x-user":
                return {"user_id": value.decode(), "context": {"locale": "da-DK"}}
        return {"anonymous_id": "anon-1"}

    app = fastapi_app(log, identify)
    responses = asyncio.run(
        get_all(
            app,
            [
                ("/pricing?plan=pro&x=1", {"x-user": "u-1", "user-agent": "Agent/1.0", "referer": "https://a.example/"}),
                ("/sync", {}),
            ],
        )
    )
    assert [r.status_code for r in responses] == [200, 200]
    by_event = {m["event"]: m for m in delivered(handler, collector, 2)}
    pricing, sync = by_event["Pricing Viewed"], by_event["Sync Viewed"]
    assert pricing["userId"] == "u-1" and pricing["properties"] == {"plan": "pro"}
    context = pricing["context"]
    assert context["ip"] == "203.0.113.7" and context["userAgent"] == "Agent/1.0" and context["locale"] == "da-DK"
    assert context["page"] == {
        "url": "http://shop.example/pricing?plan=pro&x=1",
        "path": "/pricing",
        "search": "?plan=pro&x=1",
        "referrer": "https://a.example/",
    }
    assert context["library"]["name"] == "dreamdata-logging"
    assert sync["anonymousId"] == "anon-1" and "userId" not in sync
    assert sync["context"]["page"]["search"] == "" and sync["context"]["page"]["referrer"] == ""


def test_two_hundred_concurrent_users_each_get_their_own_identity(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)

    async def identify(scope):  # async identify, as one that looks a session up would be
        await asyncio.sleep(0)
        return {"user_id": dict(scope["headers"])[b"x-user"].decode()}

    app = fastapi_app(log, identify)
    users = [f"user-{i}" for i in range(200)]
    requests = [(f"/pricing?plan={user}", {"x-user": user}) for user in users]
    responses = asyncio.run(get_all(app, requests))
    assert all(r.status_code == 200 for r in responses)
    events = delivered(handler, collector, 200)
    assert len(events) == 200
    for event in events:  # the plan query parameter names the user who made the request
        assert event["userId"] == event["properties"]["plan"]
        assert event["context"]["page"]["search"] == f"?plan={event['userId']}"
    assert sorted(e["userId"] for e in events) == sorted(users)


def test_starlette_and_a_failing_identify(collector, make_handler, make_logger, caplog):
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    handler = make_handler()
    log = make_logger(handler)

    async def home(request):
        log.info("Home Viewed", extra=track(anonymous_id="a-1"))
        return PlainTextResponse("ok")

    def identify(scope):
        raise RuntimeError("session store down")

    app = Starlette(routes=[Route("/", home)], middleware=[Middleware(DreamdataMiddleware, identify=identify)])
    with caplog.at_level(logging.WARNING, logger="dreamdata_logging"):
        responses = asyncio.run(get_all(app, [("/", {}), ("/", {})]))
    assert [r.status_code for r in responses] == [200, 200]  # the app never sees identify's failure
    events = delivered(handler, collector, 2)
    assert all(e["context"]["ip"] == "203.0.113.7" and "userId" not in e for e in events)
    warnings = [r for r in caplog.records if "identify() raised" in r.getMessage()]
    assert len(warnings) == 1  # once, then rate limited


def test_websocket_and_other_scopes():
    ws_scope = {"type": "websocket", "client": ("10.0.0.2", 1), "headers": [(b"user-agent", b"UA")], "path": "/ws"}
    assert request_context(ws_scope) == {"ip": "10.0.0.2", "userAgent": "UA"}
    http_scope = {
        "type": "http",
        "scheme": "https",
        "server": ("api.internal", 8443),
        "root_path": "/shop",
        "path": "/cart",
        "query_string": b"",
        "headers": [],
    }
    assert request_context(http_scope)["page"]["url"] == "https://api.internal:8443/shop/cart"
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(DreamdataMiddleware(inner)({"type": "custom"}, None, None))  # type: ignore[arg-type]
    assert seen == ["custom"]


def lifespan_messages():
    sent = []
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message["type"])

    return receive, send, sent


@pytest.mark.parametrize("kind", ["fastapi", "no-lifespan"])
def test_lifespan_shutdown_flushes_every_handler(collector, make_handler, make_logger, kind):
    handler = make_handler(flush_interval=60)  # nothing would be sent for a minute without a flush
    log = make_logger(handler)
    if kind == "fastapi":
        app = DreamdataMiddleware(fastapi.FastAPI())
    else:

        async def bare(scope, receive, send):  # an app that refuses lifespan, as many bare apps do
            assert scope["type"] == "http"

        app = DreamdataMiddleware(bare)
    receive, send, sent = lifespan_messages()
    log.info("Before Shutdown", extra=track(user_id="u1"))
    log.info("Second", extra=track(user_id="u1"))
    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert len(collector.received()) == 2  # already there when shutdown completed: no flush() in this test
    assert handler.stats()["queued"] == 0


UVICORN_APP = textwrap.dedent(
    """
    import logging, os
    import uvicorn.server
    from fastapi import FastAPI
    from dreamdata_logging import DreamdataHandler, track
    from dreamdata_logging.asgi import DreamdataMiddleware

    handler = DreamdataHandler(flush_interval=60, shutdown_timeout=10)
    log = logging.getLogger("analytics")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    graceful_shutdown = uvicorn.server.Server.shutdown

    async def shutdown_then_die(self, *args, **kwargs):
        await graceful_shutdown(self, *args, **kwargs)  # ends with the app's lifespan shutdown
        os._exit(0)  # as if killed right after it: no exit hook and no signal handler of ours runs

    uvicorn.server.Server.shutdown = shutdown_then_die

    app = FastAPI()
    app.add_middleware(DreamdataMiddleware, identify=lambda scope: {"user_id": "u-" + scope["path"].strip("/")})

    @app.get("/{n}")
    async def hit(n: int):
        log.info("Hit", extra=track(properties={"n": n}))
        return {"n": n}
    """
)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uvicorn_sigterm_loses_nothing(collector, tmp_path):
    (tmp_path / "shop.py").write_text(UVICORN_APP)
    port = free_port()
    env = {
        **os.environ,
        "DREAMDATA_WRITE_KEY": WRITE_KEY,
        "DREAMDATA_ENDPOINT": collector.url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "uvicorn", "shop:app", "--app-dir", str(tmp_path), "--port", str(port)]
    server = subprocess.Popen([*command, "--log-level", "warning"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while True:
                try:
                    client.get("/0")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and server.poll() is None, "uvicorn did not start"
                    time.sleep(0.1)
            for n in range(1, 50):
                assert client.get(f"/{n}").json() == {"n": n}
        assert collector.received() == []  # flush_interval=60: all still queued
        server.send_signal(signal.SIGTERM)
        # uvicorn's own ending: 0.39 re-raises the signal it caught after its graceful shutdown, newer ones exit 0.
        assert server.wait(timeout=60) in (0, -signal.SIGTERM), server.stderr.read().decode() if server.stderr else ""
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    events = collector.received()
    assert sorted(e["properties"]["n"] for e in events) == list(range(50))
    assert all(e["userId"] == f"u-{e['properties']['n']}" for e in events)
    assert uuid.UUID(events[0]["messageId"]).version == 4
