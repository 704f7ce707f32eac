"""The collector's live event debugger: its HTTP side on loopback, and the page in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest
import requests

from dreamdata_logging import DreamdataHandler, identify, track
from dreamdata_logging.tools import collector as collector_module
from dreamdata_logging.tools.collector import Collector, Fault

KEY = "wk-debugger-secret-91d2"
TS = "2012-12-02T00:30:08.276Z"


def message(n: int = 0, **fields: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "type": "track",
        "messageId": f"m-{n}",
        "timestamp": TS,
        "userId": "019mr8mf4r",
        "event": "Song Played",
        "properties": {"n": n},
    }
    m.update(fields)
    return m


def post(c: Collector, body: Any, key: Optional[str] = KEY) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = (key, "") if key is not None else None
    return requests.post(c.url, data=data, auth=auth, headers={"Content-Type": "application/json"}, timeout=5)


class EventStream:
    """A debugger page's event stream read over a raw socket: the events it delivers, as they come."""

    def __init__(self, c: Collector, last_id: Optional[int] = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", c.port), timeout=10)
        extra = f"Last-Event-ID: {last_id}\r\n" if last_id is not None else ""
        head = f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{c.port}\r\nAccept: text/event-stream\r\n{extra}\r\n"
        self.sock.sendall(head.encode())
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"text/event-stream" in head

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the event stream ended")
            self.buffer += data
        part, self.buffer = self.buffer.split(marker, 1)
        return part

    def next_event(self) -> dict[str, Any]:
        """The next batch event (comments and the retry line are skipped)."""
        while True:
            block = self._until(b"\n\n").decode("utf-8")
            data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
            if data:
                return json.loads("\n".join(data))  # type: ignore[no-any-return]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector(write_key=KEY, keep=None) as c:
        yield c


# -- the HTTP side ----------------------------------------------------------------------------------


def test_page_is_self_contained_and_leaves_the_api_alone(collector: Collector) -> None:
    collector.script(Fault(503))
    page = requests.get(collector.page_url, timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "<script src" not in page.text and "<link rel=\"stylesheet\"" not in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere
    assert 'new EventSource("events")' in page.text
    # The page and its stream are not requests to the API: no fault consumed, nothing recorded.
    assert collector.requests() == []
    assert post(collector, {"batch": [message()]}).status_code == 503  # the scripted fault is still there
    assert post(collector, {"batch": [message()]}).status_code == 200
    assert requests.get(collector.url, timeout=5).status_code == 405  # GET /v1/batch: as before
    assert requests.get(collector.page_url + "elsewhere", timeout=5).status_code == 404


def test_events_carry_accepted_and_refused_messages_and_request_refusals(collector: Collector) -> None:
    stream = EventStream(collector)
    try:
        assert post(collector, {"batch": [message(1), message(2, type="page", name="Pricing", event=None)]}).ok
        accepted = stream.next_event()
        assert accepted["request"]["status"] == 200 and not accepted["request"]["level"]
        rows = accepted["rows"]
        assert [(r["type"], r["name"], r["messageId"], r["status"]) for r in rows] == [
            ("track", "Song Played", "m-1", "accepted"),
            ("page", "Pricing", "m-2", "accepted"),
        ]
        assert json.loads(rows[0]["json"]) == message(1)

        assert post(collector, {"batch": [message(3), message(4, userId=None)]}).status_code == 400
        refused = stream.next_event()
        assert [r["status"] for r in refused["rows"]] == ["refused", "refused"]
        assert refused["rows"][1]["reason"] == "needs a non-empty 'userId' or 'anonymousId'"
        assert "because of batch[1]" in refused["rows"][0]["reason"]
        assert not refused["request"]["level"]

        assert post(collector, {"batch": [message(5)]}, key="wrong-key").status_code == 401
        unauthorised = stream.next_event()
        assert unauthorised["request"]["level"] and unauthorised["request"]["status"] == 401
        assert unauthorised["request"]["reason"] == "invalid write key" and unauthorised["rows"] == []

        assert post(collector, b"{oops").status_code == 400
        assert "not valid JSON" in stream.next_event()["request"]["reason"]
    finally:
        stream.close()


def test_a_page_that_connects_later_gets_what_happened_and_resumes_after_the_last_id(collector: Collector) -> None:
    for n in range(3):
        post(collector, {"batch": [message(n)]})
    stream = EventStream(collector)
    try:
        ids = [stream.next_event()["id"] for _ in range(3)]
    finally:
        stream.close()
    again = EventStream(collector, last_id=ids[1])  # EventSource sends the last id when it reconnects
    try:
        assert again.next_event()["id"] == ids[2]
        post(collector, {"batch": [message(9)]})
        assert again.next_event()["rows"][0]["messageId"] == "m-9"
    finally:
        again.close()


def test_the_write_key_never_reaches_the_page(collector: Collector) -> None:
    stream = EventStream(collector)
    try:
        post(collector, {"batch": [message()]})
        post(collector, {"batch": [message()]}, key=KEY + "-wrong")
        requests.post(collector.url + "?writeKey=" + KEY, json={}, timeout=5)
        seen = json.dumps([stream.next_event() for _ in range(3)])
    finally:
        stream.close()
    for secret in (KEY, base64.b64encode(f"{KEY}:".encode()).decode(), base64.b64encode(KEY.encode()).decode()[:12]):
        assert secret not in seen
    assert "Basic d" not in seen and "writeKey" not in seen  # no header value, no query string


def _connection_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("Thread-") or "process_request" in t.name)


def test_a_page_that_goes_away_leaves_no_thread_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector_module, "_SSE_PING", 0.05)
    with Collector(write_key=KEY) as c:
        streams = [EventStream(c) for _ in range(5)]
        deadline = time.monotonic() + 10
        while c._feed.pages != 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c._feed.pages == 5
        for stream in streams:
            stream.close()
        while (c._feed.pages or c._server.connections) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c._feed.pages == 0 and not c._server.connections  # every page's thread ended
        assert post(c, {"batch": [message()]}).status_code == 200


def test_many_pages_do_not_hold_up_batches_and_each_gets_every_event(collector: Collector) -> None:
    streams = [EventStream(collector) for _ in range(20)]
    try:
        with requests.Session() as session:
            for n in range(100):
                r = session.post(
                    collector.url,
                    data=json.dumps({"batch": [message(n)]}),
                    auth=(KEY, ""),
                    headers={"Content-Type": "application/json"},
                    timeout=5,
                )
                assert r.status_code == 200
        assert collector.accepted == 100
        for stream in streams:
            assert [stream.next_event()["rows"][0]["messageId"] for _ in range(100)] == [f"m-{n}" for n in range(100)]
    finally:
        for stream in streams:
            stream.close()


def test_too_many_pages_are_turned_away_and_stop_ends_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector_module, "_MAX_PAGES", 2)
    c = Collector().start()
    streams = [EventStream(c), EventStream(c)]
    r = requests.get(c.page_url + "events", timeout=5)
    assert r.status_code == 503 and "at most 2" in r.json()["error"]
    started = time.monotonic()
    c.stop()
    assert time.monotonic() - started < 5  # open pages do not hold stop() up
    for stream in streams:
        with pytest.raises((ConnectionError, OSError)):
            while True:
                stream.next_event()
        stream.close()


# -- the page, in a real headless Chromium ------------------------------------------------------------


def _chromium() -> Optional[tuple[str, str]]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser() -> Iterator[Any]:
    found = _chromium()
    if found is None:
        if os.environ.get("DREAMDATA_LOGGING_REQUIRE_CHROMIUM"):  # set by CI, which installs it
            pytest.fail("Chromium and chromedriver are required here but not installed")
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dreamdata-debugger-")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=found[1]))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except Exception:  # the page may be mid-update: look again
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"the page never showed {what}")
        time.sleep(0.05)


def _rows(driver: Any, table: str = "messages") -> list[list[str]]:
    """The cells of the rows a person sees (hidden rows are left out), top to bottom."""
    script = f"""
        return Array.from(document.querySelectorAll('#{table} tbody tr'))
            .filter(tr => !tr.hidden && tr.offsetParent !== null)
            .map(tr => Array.from(tr.cells).map(td => td.textContent));
    """
    return driver.execute_script(script)  # type: ignore[no-any-return]


def test_the_page_in_chromium(browser: Any, collector: Collector) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(collector.page_url)
    _wait(lambda: browser.find_element(By.ID, "state").text == "live", "that it is live")

    handler = DreamdataHandler(KEY, endpoint=collector.url, flush_interval=0.05)
    log = logging.getLogger(f"debugger.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        # Events appear as they are posted by a real handler, newest first.
        log.info("Signed Up", extra=track(user_id="user-1", properties={"plan": "pro"}))
        assert handler.flush(timeout=10)
        _wait(lambda: len(_rows(browser)) == 1, "the first event")
        log.info("identify", extra=identify(user_id="user-2", traits={"email": "jake@yahoo.com"}))
        assert handler.flush(timeout=10)
        rows = _wait(lambda: len(_rows(browser)) == 2 and _rows(browser), "the second event")
        assert [(r[1], r[3], r[6]) for r in rows] == [
            ("identify", "user-2", "accepted"),
            ("track", "user-1", "accepted"),
        ]
        assert rows[1][2] == "Signed Up" and rows[0][5] == collector.received()[1]["messageId"]
    finally:
        log.removeHandler(handler)
        handler.close()

    # A refused message shows its reason; a 401 lands among the refused requests.
    assert post(collector, {"batch": [message(7, userId=None, anonymousId=None)]}).status_code == 400
    refused = _wait(lambda: len(_rows(browser)) == 3 and _rows(browser)[0], "the refused message")
    assert refused[6] == "refused: needs a non-empty 'userId' or 'anonymousId'"
    assert post(collector, {"batch": [message(8)]}, key="not-the-key").status_code == 401
    request_rows = _wait(lambda: _rows(browser, "requests"), "the 401")
    assert [(r[1], r[2], r[3], r[5]) for r in request_rows] == [("401", "POST", "/v1/batch", "invalid write key")]
    assert KEY not in browser.page_source

    # Clicking a row shows its JSON.
    browser.find_elements(By.CSS_SELECTOR, "#messages tbody tr")[2].click()  # the track, at the bottom
    shown = _wait(lambda: browser.find_element(By.ID, "detail-json").text, "the JSON")
    assert json.loads(shown) == collector.received()[0]

    # Filtering: by text, by type, refused only.
    box = browser.find_element(By.ID, "filter")
    box.send_keys("jake@yahoo")
    _wait(lambda: [r[1] for r in _rows(browser)] == ["identify"], "only the matching row")
    box.clear()
    box.send_keys(" ")  # an input event with an empty filter
    _wait(lambda: len(_rows(browser)) == 3, "every row again")
    Select(browser.find_element(By.ID, "type")).select_by_visible_text("track")
    _wait(lambda: [r[1] for r in _rows(browser)] == ["track", "track"], "only the tracks")
    Select(browser.find_element(By.ID, "type")).select_by_visible_text("all")
    browser.find_element(By.ID, "refused-only").click()
    _wait(lambda: [r[6][:7] for r in _rows(browser)] == ["refused"], "only the refused row")
    browser.find_element(By.ID, "refused-only").click()
    _wait(lambda: len(_rows(browser)) == 3, "every row again")

    # Pause: nothing new is drawn until resumed, then it all is, newest first.
    browser.find_element(By.ID, "pause").click()
    for n in (20, 21):
        assert post(collector, {"batch": [message(n)]}).status_code == 200
    _wait(lambda: browser.find_element(By.ID, "held").text == "2 batch(es) waiting", "the waiting count")
    assert len(_rows(browser)) == 3
    browser.find_element(By.ID, "pause").click()
    rows = _wait(lambda: len(_rows(browser)) == 5 and _rows(browser), "the held events")
    assert [r[5] for r in rows[:2]] == ["m-21", "m-20"]
    assert browser.find_element(By.ID, "held").text == ""


def test_the_page_beyond_loopback_asks_for_the_write_key(browser: Any) -> None:
    """Bound to 0.0.0.0 (as in a container), the page and its feed work only with the key as Basic user name."""
    from selenium.webdriver.common.by import By

    with Collector(host="0.0.0.0", write_key=KEY) as beyond:
        browser.get(f"http://127.0.0.1:{beyond.port}/")  # no credentials: a 401, which the browser prompts on
        assert not browser.find_elements(By.ID, "state")
        browser.get(f"http://{KEY}:@127.0.0.1:{beyond.port}/")  # what a person types into the browser's prompt
        _wait(lambda: browser.find_element(By.ID, "state").text == "live", "that it is live with the key")
        assert post(beyond, {"batch": [message(30)]}).status_code == 200
        rows = _wait(lambda: _rows(browser), "the event, through the feed that asked for the key")
        assert [(r[1], r[5], r[6]) for r in rows] == [("track", "m-30", "accepted")]
        assert KEY not in browser.page_source
