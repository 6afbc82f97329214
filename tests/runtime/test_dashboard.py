"""The dashboard end to end in headless Chromium (Debian's chromium and chromium-driver):
a real SQLite file, a worker, the app served by uvicorn, and a browser that reads the
pages, clicks the actions through their confirmations, and takes a screenshot."""

from __future__ import annotations

import io
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import Select, WebDriverWait

import durable
from durable import task
from durable.cli import main
from durable.dashboard import create_app

S = durable.OrchestrationStatus
BROKEN = threading.Event()
HOSTILE = '<b id="injected">bold</b><script>window.pwned = 1</script>'


def echo(ctx: task.ActivityContext, value: Any) -> Any:
    if BROKEN.is_set() and value == "break":
        raise RuntimeError("the tool is down")
    return value


def child(ctx: task.OrchestrationContext, value: Any) -> Any:
    out = yield ctx.call_activity(echo, input=value)
    return out


def story(ctx: task.OrchestrationContext, value: Any) -> Any:
    a = yield ctx.call_activity(echo, input=value)
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(milliseconds=20))
    b = yield ctx.call_sub_orchestrator(child, input="kid")
    ctx.set_custom_status({"step": "waiting for approval"})
    ok = yield ctx.wait_for_external_event("approve")
    return {"a": a, "b": b, "ok": ok, "long": "x" * 5000}


def breaks(ctx: task.OrchestrationContext, value: Any) -> Any:
    out = yield ctx.call_activity(echo, input="break")
    return [value, out]


def quick(ctx: task.OrchestrationContext, value: Any) -> Any:
    return value
    yield  # a generator


class Site:
    def __init__(self, url: str, client: durable.SyncClient) -> None:
        self.url = url
        self.client = client

    def until(self, check: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def status(self, iid: str) -> S | None:
        state = self.client.get_orchestration_state(iid)
        return None if state is None else state.runtime_status


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    BROKEN.clear()
    yield
    BROKEN.clear()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    store = durable.SqliteStore(tmp_path / "dash.db")
    worker = durable.Worker(
        store,
        orchestrators=[story, child, breaks, quick],
        activities=[echo],
        poll_interval=0.05,
    )
    worker.start_in_thread()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(store), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    client = durable.SyncClient(store)
    port = sock.getsockname()[1]
    try:
        site = Site(f"http://127.0.0.1:{port}/", client)
        site.until(lambda: server.started, "the server")
        yield site
    finally:
        server.should_exit = True
        thread.join(10)
        worker.stop()
        client.close()
        sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.fail(
            "the dashboard tests need Debian's chromium and chromium-driver"
            " (apt-get install chromium chromium-driver; .ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1800")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def css(browser: WebDriver, selector: str) -> Any:
    return browser.find_element(By.CSS_SELECTOR, selector)


def click(browser: WebDriver, selector: str) -> None:
    """Click what loads a new page, and wait until it has."""
    old = browser.find_element(By.TAG_NAME, "html")
    css(browser, selector).click()
    WebDriverWait(browser, 15).until(staleness_of(old))


def count_of(browser: WebDriver, status: str) -> str:
    return str(css(browser, f'#counts [data-status="{status}"] b').text)


def test_the_list_counts_live_filters_and_links(site: Site, browser: WebDriver) -> None:
    for i in range(3):
        site.client.wait_for_orchestration_completion(
            site.client.schedule_new_orchestration(quick, input=i, instance_id=f"q-{i}"), timeout=20
        )
    BROKEN.set()
    site.client.wait_for_orchestration_completion(
        site.client.schedule_new_orchestration(breaks, input=1, instance_id="broken"), timeout=20
    )
    site.client.schedule_new_orchestration(story, input="hi", instance_id="waiting")
    site.until(lambda: site.status("waiting") is S.RUNNING, "the story to run")

    site.until(lambda: len(list(site.client.list_orchestrations(name="child"))) == 1, "a child")
    kid = next(iter(site.client.list_orchestrations(name="child")))
    site.client.wait_for_orchestration_completion(kid.instance_id, timeout=20)

    browser.get(site.url)
    assert count_of(browser, "COMPLETED") == "4"  # 3 quick ones and the story's child
    assert count_of(browser, "FAILED") == "1"
    assert count_of(browser, "RUNNING") == "1"
    rows = browser.find_elements(By.CSS_SELECTOR, "#instances tbody tr")
    ids = ["q-0", "q-1", "q-2", "broken", "waiting", kid.instance_id]
    assert [r.get_attribute("data-id") for r in rows] == ids

    # the counts follow the store without a reload
    site.client.schedule_new_orchestration(quick, input=9, instance_id="q-9")
    site.until(lambda: count_of(browser, "COMPLETED") == "5", "the live count", timeout=15)

    Select(css(browser, "#filters select[name=status]")).select_by_value("FAILED")
    click(browser, "#filters button")
    site.until(lambda: "status=FAILED" in browser.current_url, "the filter")
    rows = browser.find_elements(By.CSS_SELECTOR, "#instances tbody tr")
    assert [r.get_attribute("data-id") for r in rows] == ["broken"]
    click(browser, '#instances a[href$="/instances/broken"]')
    site.until(lambda: browser.current_url.endswith("/instances/broken"), "the instance page")
    assert "broken" in css(browser, "h1").text
    assert "FAILED" in css(browser, "#status").text


def test_an_instance_page_shows_the_timeline_payloads_as_text_and_the_failure(
    site: Site, browser: WebDriver, tmp_path: Path
) -> None:
    iid = site.client.schedule_new_orchestration(story, input=HOSTILE, instance_id="story-1")
    site.until(
        lambda: (
            "approval" in str(site.client.get_orchestration_state(iid).serialized_custom_status)
        ),
        "the wait",
    )
    site.client.raise_orchestration_event(iid, "approve", data=True)
    site.client.wait_for_orchestration_completion(iid, timeout=20)

    browser.get(f"{site.url}instances/story-1")
    assert browser.find_elements(By.ID, "injected") == []  # rendered as text, not markup
    assert browser.execute_script("return window.pwned === undefined") is True
    assert css(browser, "#input").text == json.dumps(HOSTILE)  # the JSON text, as text
    assert css(browser, "#output").text.startswith('{"a":')
    assert "5,0" in css(browser, ".cut").text  # the long output is cut, and says so
    assert len(css(browser, "#output").text) <= 2000
    bars = browser.find_elements(By.CSS_SELECTOR, "#timeline .bar")
    assert {b.get_attribute("data-category") for b in bars} == {
        "activity",
        "timer",
        "child",
        "event",
    }
    assert not browser.find_elements(By.CSS_SELECTOR, "#timeline .bar.failed")
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#children a")] == [
        next(iter(s.instance_id for s in site.client.list_orchestrations(name="child")))
    ]
    history_rows = browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    assert len(history_rows) == len(site.client.get_orchestration_history(iid))

    BROKEN.set()
    site.client.wait_for_orchestration_completion(
        site.client.schedule_new_orchestration(breaks, input=1, instance_id="broken"), timeout=20
    )
    browser.get(f"{site.url}instances/broken")
    assert "the tool is down" in css(browser, "#failure").text
    failed_bar = css(browser, "#timeline .bar.failed")
    assert failed_bar.get_attribute("fill") == "#d0312d"
    assert browser.find_elements(By.CSS_SELECTOR, "#history tr.failed")

    # A screenshot, checked for what a person should see: the failure box and the red bar.
    shot = tmp_path / "broken.png"
    assert browser.save_screenshot(str(shot))
    image = Image.open(shot).convert("RGB")
    assert image.size[0] >= 1000
    colors = {c for _, c in image.getcolors(maxcolors=1 << 20) or []}
    assert (208, 49, 45) in colors  # the failure's red
    timeline = Image.open(io.BytesIO(failed_bar.screenshot_as_png)).convert("RGB")
    reds = sum(n for n, c in timeline.getcolors(maxcolors=1 << 20) or [] if c == (208, 49, 45))
    assert reds > 0.5 * timeline.size[0] * timeline.size[1]
    assert css(browser, "#failure").is_displayed()
    assert css(browser, "#action-rewind").is_displayed()


def test_actions_ask_for_confirmation_then_act(site: Site, browser: WebDriver) -> None:
    iid = site.client.schedule_new_orchestration(story, input="x", instance_id="act-1")
    site.until(lambda: site.status(iid) is S.RUNNING, "the story to run")
    browser.get(f"{site.url}instances/act-1")

    # Cancel leaves it alone
    click(browser, "#action-terminate button")
    assert "Terminate act-1?" in css(browser, "h1").text
    click(browser, "#cancel")
    site.until(lambda: browser.current_url.endswith("/instances/act-1"), "the way back")
    time.sleep(0.2)
    assert site.status(iid) is S.RUNNING

    css(browser, "#action-suspend input[name=reason]").send_keys("lunch")
    click(browser, "#action-suspend button")
    assert "Suspend act-1?" in css(browser, "h1").text
    assert site.status(iid) is S.RUNNING  # nothing until confirmed
    click(browser, "#confirm-button")
    assert css(browser, "#notice").text == "suspend sent"
    site.until(lambda: site.status(iid) is S.SUSPENDED, "the suspension")

    browser.get(f"{site.url}instances/act-1")
    assert not browser.find_elements(By.ID, "action-suspend")
    css(browser, "#action-raise-event input[name=event]").send_keys("approve")
    css(browser, "#action-raise-event input[name=data]").send_keys("{not json")
    click(browser, "#action-raise-event button")
    assert "not JSON" in css(browser, "#error").text
    browser.get(f"{site.url}instances/act-1")
    css(browser, "#action-raise-event input[name=event]").send_keys("approve")
    css(browser, "#action-raise-event input[name=data]").send_keys('{"by": "ann"}')
    click(browser, "#action-raise-event button")
    assert "Send event 'approve' to act-1?" in css(browser, "h1").text
    click(browser, "#confirm-button")
    click(browser, "#action-resume button")
    click(browser, "#confirm-button")
    state = site.client.wait_for_orchestration_completion(iid, timeout=20)
    assert state.get_output()["ok"] == {"by": "ann"}
    history = [type(e).__name__ for e in site.client.get_orchestration_history(iid)]
    assert history.count("EventRaised") == 1  # the bad data sent nothing

    BROKEN.set()
    site.client.wait_for_orchestration_completion(
        site.client.schedule_new_orchestration(breaks, input=2, instance_id="fix-me"), timeout=20
    )
    BROKEN.clear()
    browser.get(f"{site.url}instances/fix-me")
    click(browser, "#action-rewind button")
    click(browser, "#confirm-button")
    assert site.client.wait_for_orchestration_completion("fix-me", timeout=20).get_output() == [
        2,
        "break",
    ]


def post(url: str, body: bytes | None) -> int:
    """The HTTP status of a POST (None: a GET)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body)) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def get(url: str) -> int:
    return post(url, None)


def test_posts_without_the_token_and_unknown_instances_are_refused(site: Site) -> None:
    iid = site.client.schedule_new_orchestration(story, input="x", instance_id="safe")
    site.until(lambda: site.status(iid) is S.RUNNING, "the story to run")
    assert post(f"{site.url}instances/safe/terminate", b"confirmed=yes") == 403
    assert post(f"{site.url}instances/safe/terminate", b"confirmed=yes&token=guess") == 403
    time.sleep(0.2)
    assert site.status(iid) is S.RUNNING
    assert get(f"{site.url}instances/nobody") == 404
    assert get(f"{site.url}?since=yesterday") == 400


def test_the_dashboard_command_needs_an_existing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboard", "--store", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no database at" in capsys.readouterr().err


def test_mounted_in_another_app_its_links_stay_under_the_mount(tmp_path: Path) -> None:
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.routing import Mount  # noqa: PLC0415
    from starlette.testclient import TestClient  # noqa: PLC0415

    store = durable.SqliteStore(tmp_path / "mounted.db")
    with durable.SyncClient(store) as client:
        client.schedule_new_orchestration(quick, input=1, instance_id="m-1")
        app = Starlette(routes=[Mount("/ops/durable", app=create_app(store))])
        with TestClient(app) as http:
            page = http.get("/ops/durable/")
            assert page.status_code == 200
            assert 'href="/ops/durable/instances/m-1"' in page.text
            assert '"/ops/durable/api/counts"' in page.text
            one = http.get("/ops/durable/instances/m-1")
            assert one.status_code == 200
            assert 'action="/ops/durable/instances/m-1/terminate"' in one.text
            assert http.get("/ops/durable/api/counts").json()["PENDING"] == 1
