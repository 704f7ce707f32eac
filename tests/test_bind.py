"""``dreamdata_logging.bind()``: request-scoped defaults, across threads and asyncio tasks; the Flask example."""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import logging
import threading
from pathlib import Path

import pytest

import dreamdata_logging
from dreamdata_logging import bind, identify, track
from dreamdata_logging.events.bind import bound

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def delivered(handler, collector, count):
    assert handler.flush(timeout=20)
    assert collector.wait_for(count, timeout=20)
    return collector.received()


def test_bound_identity_and_context_fill_events(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    with bind(user_id="u-1", context={"ip": "10.0.0.1", "locale": "da-DK"}):
        log.info("Signed Up", extra=track(properties={"plan": "pro"}))
        log.info("identify", extra=identify(traits={"email": "a@example.com"}))
        # the event's own values win; its context merges with the bound one
        log.info("Other", extra=track(user_id="u-2", context={"locale": "en-GB", "page": {"path": "/x"}}))
        log.info("Plain", extra={"dreamdata": {}})
    signed_up, identified, other, plain = delivered(handler, collector, 4)
    assert signed_up["userId"] == "u-1" and signed_up["properties"] == {"plan": "pro"}
    assert signed_up["context"]["ip"] == "10.0.0.1" and signed_up["context"]["library"]["name"] == "dreamdata-logging"
    assert identified["type"] == "identify" and identified["userId"] == "u-1"
    assert other["userId"] == "u-2"
    assert other["context"]["locale"] == "en-GB" and other["context"]["ip"] == "10.0.0.1"
    assert other["context"]["page"] == {"path": "/x"}
    assert plain["event"] == "Plain" and plain["userId"] == "u-1"


def test_nothing_leaks_after_the_block(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    with bind(user_id="inside"):
        pass
    assert bound() == {}
    log.info("No Id", extra=track())
    assert handler.stats()["invalid"] == 1  # no userId/anonymousId: nothing was left bound
    with pytest.raises(ZeroDivisionError):
        with bind(user_id="raising"):
            raise ZeroDivisionError
    assert bound() == {}


def test_binds_nest(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    with bind(anonymous_id="anon-1", context={"ip": "1.1.1.1", "app": {"name": "web"}}):
        with bind(user_id=42, context={"locale": "da"}) as inner:
            assert bound() == {
                "anonymousId": "anon-1",
                "userId": "42",
                "context": {"ip": "1.1.1.1", "app": {"name": "web"}, "locale": "da"},
            }
            assert "42" in repr(inner)
            log.info("Inner", extra=track())
            with bind(user_id="override"):
                log.info("Innermost", extra=track())
        log.info("Outer", extra=track())
    inner_event, innermost, outer = delivered(handler, collector, 3)
    assert inner_event["userId"] == "42" and inner_event["anonymousId"] == "anon-1"
    assert inner_event["context"]["locale"] == "da" and inner_event["context"]["ip"] == "1.1.1.1"
    assert innermost["userId"] == "override" and innermost["context"]["locale"] == "da"
    assert "userId" not in outer and outer["anonymousId"] == "anon-1" and "locale" not in outer["context"]


def test_bind_snapshots_and_validates():
    context = {"ip": "1.2.3.4"}
    with bind(user_id="u", context=context):
        context["ip"] = "changed"
        assert bound()["context"] == {"ip": "1.2.3.4"}
    with pytest.raises(TypeError):
        bind(user_id=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        bind(anonymous_id="")
    with pytest.raises(TypeError):
        bind(context=["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        bind(userId="u")  # type: ignore[call-arg]


def test_decorator_sync_and_async(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)

    @bind(user_id="job-user")
    def nightly(n: int) -> int:
        """Docs kept."""
        log.info("Job Ran", extra=track(properties={"n": n}))
        return n * 2

    @dreamdata_logging.bind(anonymous_id="async-anon")
    async def handle() -> str:
        await asyncio.sleep(0)
        log.info("Async Ran", extra=track())
        return "done"

    assert nightly(3) == 6 and nightly.__doc__ == "Docs kept."
    assert asyncio.run(handle()) == "done"
    assert bound() == {}
    job, ran = delivered(handler, collector, 2)
    assert job["userId"] == "job-user" and job["properties"] == {"n": 3}
    assert ran["anonymousId"] == "async-anon"


def test_threads_each_see_their_own_binding(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def request(user: str) -> None:
        try:
            with bind(user_id=user, context={"thread": user}):
                barrier.wait(timeout=20)  # all four are inside their binds at once
                log.info("Request", extra=track(properties={"for": user}))
                barrier.wait(timeout=20)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(f"user-{n}",)) for n in range(4)]
    with bind(user_id="main-thread"):  # threads do not inherit the starting thread's bindings
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert not errors
    messages = delivered(handler, collector, 4)
    assert sorted(m["userId"] for m in messages) == [f"user-{n}" for n in range(4)]
    assert all(m["userId"] == m["properties"]["for"] == m["context"]["thread"] for m in messages)


def test_asyncio_tasks_each_see_their_own_binding(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)

    async def request(user: str, go: asyncio.Event, entered: list[str]) -> None:
        async with bind(user_id=user):
            entered.append(user)
            await go.wait()  # every task is inside its bind before any logs
            log.info("Task", extra=track(properties={"for": user}))

    async def main() -> None:
        go = asyncio.Event()
        entered: list[str] = []
        with bind(anonymous_id="parent"):  # tasks inherit what was bound when they were created
            tasks = [asyncio.create_task(request(f"task-{n}", go, entered)) for n in range(5)]
        while len(entered) < 5:
            await asyncio.sleep(0)
        go.set()
        await asyncio.gather(*tasks)
        assert bound() == {}

    asyncio.run(main())
    messages = delivered(handler, collector, 5)
    assert all(m["userId"] == m["properties"]["for"] and m["anonymousId"] == "parent" for m in messages)


def test_copied_context_carries_bindings_into_a_thread(collector, make_handler, make_logger):
    handler = make_handler()
    log = make_logger(handler)
    with bind(user_id="copied"):
        context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(log.info, "From Thread"), kwargs={"extra": track()})
    thread.start()
    thread.join(20)
    [message] = delivered(handler, collector, 1)
    assert message["userId"] == "copied"


def load_flask_example():
    pytest.importorskip("flask")
    spec = importlib.util.spec_from_file_location("flask_app_example", EXAMPLES / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flask_example_binds_the_user_per_request(collector, make_handler):
    example = load_flask_example()
    handler = make_handler()
    app = example.create_app(handler=handler, secret_key="test")
    try:
        client = app.test_client()
        assert client.get("/pricing", headers={"User-Agent": "pytest-browser"}).status_code == 200
        anonymous_id = client.get_cookie(example.ANONYMOUS_COOKIE).value
        assert client.post("/signup", data={"email": "jake@yahoo.com", "plan": "pro"}).status_code == 201
        assert client.post("/upgrade").status_code == 200
        other = app.test_client()  # another visitor, not signed up
        assert other.get("/pricing").status_code == 200
        pricing, identified, signed_up, upgraded, other_pricing = delivered(handler, collector, 5)
    finally:
        logging.getLogger("analytics").removeHandler(handler)

    assert pricing["type"] == "page" and pricing["name"] == "Pricing"
    assert pricing["anonymousId"] == anonymous_id and "userId" not in pricing
    assert pricing["context"]["userAgent"] == "pytest-browser"
    assert pricing["context"]["page"]["path"] == "/pricing" and pricing["context"]["ip"] == "127.0.0.1"
    user_id = identified["userId"]
    assert identified["traits"] == {"email": "jake@yahoo.com", "plan": "pro"}
    assert identified["anonymousId"] == anonymous_id  # links the earlier page view to the user
    assert signed_up["event"] == "Signed Up" and signed_up["userId"] == user_id
    assert upgraded["event"] == "Plan Upgraded" and upgraded["userId"] == user_id  # from bind, not the view
    assert upgraded["context"]["page"]["path"] == "/upgrade"
    assert "userId" not in other_pricing and other_pricing["anonymousId"] != anonymous_id
    assert bound() == {}
