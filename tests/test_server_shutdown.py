"""Recognising a server that holds SIGTERM/SIGINT in Python and re-raises after its graceful shutdown
(uvicorn's ``Server``, the real one), and delivering at the end of that shutdown. The servers themselves
run in tests/servers/test_asgi_wsgi_servers.py."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from dreamdata_logging import track
from dreamdata_logging.delivery import lifecycle, server_shutdown

uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is installed by the servers extra")


async def app(scope: Any, receive: Any, send: Any) -> None:
    pass


@pytest.fixture
def uvicorn_server() -> Iterator[Any]:
    """A real uvicorn Server whose handle_exit holds SIGTERM and SIGINT, as while it serves."""
    config = uvicorn.Config(app, lifespan="off", log_level="critical")
    config.load()
    server = uvicorn.Server(config)
    server.servers = []  # as after startup() with nothing listening
    server.lifespan = config.lifespan_class(config)
    before = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield server
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_handler_made_while_uvicorn_holds_the_signals_delivers_at_the_end_of_its_shutdown(
    uvicorn_server, make_handler, make_logger, collector
):
    handler = make_handler(flush_interval=60)
    assert "shutdown" in vars(uvicorn_server)  # wrapped on this server object only
    assert vars(uvicorn.Server)["shutdown"].__qualname__ == "Server.shutdown"  # the class is untouched
    wrapped = uvicorn_server.shutdown
    lifecycle.watch_servers()
    assert uvicorn_server.shutdown is wrapped  # once, however often it is checked
    make_logger(handler).info("x", extra=track(user_id="u", event="Logged During Shutdown"))
    assert collector.received() == []  # flush_interval 60: nothing goes on the timer
    asyncio.run(uvicorn_server.shutdown())
    assert [m["event"] for m in collector.received()] == ["Logged During Shutdown"]


def test_the_first_event_hooks_a_server_that_took_the_signals_after_the_handler_was_made(
    make_handler, make_logger, collector
):
    handler = make_handler(flush_interval=60)
    config = uvicorn.Config(app, lifespan="off")
    server = uvicorn.Server(config)
    before = signal.signal(signal.SIGTERM, server.handle_exit)
    try:
        assert "shutdown" not in vars(server)
        make_logger(handler).info("x", extra=track(user_id="u", event="First"))  # starts the worker
        assert "shutdown" in vars(server)
    finally:
        signal.signal(signal.SIGTERM, before)
        handler.close()


def test_handle_sigterm_false_leaves_the_server_alone(uvicorn_server, make_handler, make_logger, monkeypatch):
    monkeypatch.setattr(lifecycle, "_handlers", ())  # the only handler of the process: other tests' are gone
    handler = make_handler(handle_sigterm=False, flush_interval=60)
    make_logger(handler).info("x", extra=track(user_id="u", event="First"))  # its first event, too
    assert "shutdown" not in vars(uvicorn_server)


class Slotted:
    __slots__ = ("should_exit",)

    def __init__(self) -> None:
        self.should_exit = False

    def capture_signals(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def handle_exit(self, sig: int, frame: object) -> None:
        pass


class NotAServer:
    def handle_exit(self, sig: int, frame: object) -> None:
        pass

    def shutdown(self) -> None:  # not a coroutine: not uvicorn's shape
        pass


@pytest.mark.parametrize(
    "handler",
    [signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, lambda s, f: None, NotAServer().handle_exit,
     Slotted().handle_exit, logging.Handler().handle],
    ids=["default", "ignore", "int", "lambda", "not-a-server", "slots", "other-method"],
)  # fmt: skip
def test_other_signal_handlers_are_left_as_they_are_and_nothing_raises(handler):
    before = signal.signal(signal.SIGTERM, handler)
    try:
        calls: list[None] = []
        server_shutdown.hook_server_shutdown(lambda: calls.append(None))
        owner = getattr(handler, "__self__", None)
        if owner is not None and hasattr(owner, "__dict__"):
            assert "shutdown" not in vars(owner)
        assert signal.getsignal(signal.SIGTERM) is handler or signal.getsignal(signal.SIGTERM) == handler
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_failing_delivery_never_gets_in_the_way_of_the_server(uvicorn_server):
    def fails() -> None:
        raise RuntimeError("boom")

    assert server_shutdown.hook_server_shutdown(fails)
    asyncio.run(uvicorn_server.shutdown())  # the server's shutdown ends as it would have
