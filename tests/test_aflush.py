"""``await aflush()``: an asyncio app waits for delivery while its event loop keeps running, and no thread is
borrowed for the wait."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import dreamdata_logging
from dreamdata_logging import DreamdataHandler
from dreamdata_logging.tools.collector import Collector

from .conftest import WRITE_KEY, log_events, logger_with
from .fault_servers import FaultServer, Request, refuse_messages


def gated(gate: threading.Event, accepted: list[str]):  # type: ignore[no-untyped-def]
    """An endpoint that answers nothing until ``gate`` is set, then accepts as refuse_messages does."""
    accept = refuse_messages(set(), accepted)

    def answer(request: Request, sock: socket.socket, stopping: threading.Event) -> bool:
        while not gate.wait(0.05):
            if stopping.is_set():
                return False
        return accept(request, sock, stopping)

    return answer




async def flush_while_ticking(flush: object, gate: threading.Event) -> tuple[bool, int]:
    """Await ``flush`` while another task ticks; only that task opens the endpoint, after a few ticks. Were the
    loop blocked by the flush, the endpoint would stay shut and the flush would time out."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            if ticks == 5:
                gate.set()
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        delivered = await flush  # type: ignore[misc]
        borrowed = [t.name for t in threading.enumerate() if t.name.startswith("asyncio")]
        assert not borrowed, borrowed  # no executor thread was used for the wait
    finally:
        stop.set()
        await task
    return delivered, ticks


def test_handler_aflush_leaves_the_loop_running_and_everything_arrives() -> None:
    gate = threading.Event()
    accepted: list[str] = []
    with FaultServer(gated(gate, accepted)) as server:
        handler = DreamdataHandler(WRITE_KEY, endpoint=server.url, flush_interval=60)
        try:
            ids = log_events(logger_with(handler), 50)
            delivered, ticks = asyncio.run(flush_while_ticking(handler.aflush(timeout=30), gate))
        finally:
            handler.close()
    assert delivered is True and ticks >= 5
    assert sorted(accepted) == sorted(ids)


def test_module_aflush_flushes_every_handler() -> None:
    gate = threading.Event()
    first: list[str] = []
    second: list[str] = []
    with FaultServer(gated(gate, first)) as one, FaultServer(gated(gate, second)) as two:
        handlers = [DreamdataHandler(WRITE_KEY, endpoint=s.url, flush_interval=60) for s in (one, two)]
        try:
            ids = [log_events(logger_with(h), 20) for h in handlers]
            delivered, _ = asyncio.run(flush_while_ticking(dreamdata_logging.aflush(timeout=30), gate))
        finally:
            for handler in handlers:
                handler.close()
    assert delivered is True
    assert sorted(first) == sorted(ids[0]) and sorted(second) == sorted(ids[1])


def test_aflush_times_out_without_blocking_and_says_false() -> None:
    gate = threading.Event()  # never opened by the flush itself
    accepted: list[str] = []
    with FaultServer(gated(gate, accepted)) as server:
        handler = DreamdataHandler(WRITE_KEY, endpoint=server.url, flush_interval=60, timeout=30)
        try:
            log_events(logger_with(handler), 3)

            async def main() -> tuple[bool, int]:
                ticks = 0

                async def ticker() -> None:
                    nonlocal ticks
                    while True:
                        ticks += 1
                        await asyncio.sleep(0.005)

                task = asyncio.create_task(ticker())
                delivered = await handler.aflush(timeout=0.3)
                task.cancel()
                return delivered, ticks

            delivered, ticks = asyncio.run(main())
            assert delivered is False and ticks > 1  # the loop ran during the wait
        finally:
            gate.set()
            handler.close()
    assert len(accepted) == 3  # still delivered afterwards


def test_aflush_with_nothing_queued_is_true(collector: Collector) -> None:
    handler = DreamdataHandler(WRITE_KEY, endpoint=collector.url)
    try:
        assert asyncio.run(handler.aflush()) is True
        assert asyncio.run(dreamdata_logging.aflush(timeout=1)) is True
    finally:
        handler.close()


def test_the_asgi_middleware_awaits_delivery_at_lifespan_shutdown_without_blocking_the_loop() -> None:
    """Another task of the server's loop opens the endpoint while the lifespan shutdown waits for delivery."""
    from dreamdata_logging.asgi import DreamdataMiddleware

    gate = threading.Event()
    accepted: list[str] = []
    with FaultServer(gated(gate, accepted)) as server:
        handler = DreamdataHandler(WRITE_KEY, endpoint=server.url, flush_interval=60, shutdown_timeout=20)
        try:
            ids = log_events(logger_with(handler), 10)
            incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
            sent: list[str] = []
            arrived: list[int] = []  # events at the endpoint when each message was sent

            async def receive() -> dict[str, str]:
                return incoming.pop(0)

            async def send(message: Any) -> None:
                sent.append(message["type"])
                arrived.append(len(accepted))

            async def bare(scope: Any, receive: Any, send: Any) -> None:  # an app that ignores lifespan
                return None

            lifespan = DreamdataMiddleware(bare)({"type": "lifespan"}, receive, send)
            asyncio.run(flush_while_ticking(lifespan, gate))
        finally:
            handler.close()
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert arrived[-1] == 10  # all delivered before shutdown completed (the gate opened by the ticker)
    assert sorted(accepted) == sorted(ids)
