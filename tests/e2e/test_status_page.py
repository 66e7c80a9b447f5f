"""The status page an `http_api` listener serves at `/`
(core/src/http_api/status.html), in a real headless Chromium (Debian's
`chromium` and `chromium-driver`, driven by selenium), against both
binaries: the page loads without console errors, its figures are those of
`/api/v1/systree`, the chart of messages per second moves while a paho
publisher sends a few thousand messages, the search box finds a client
among several, and its Kick button disconnects it (its will is published).

The browser talks to 127.0.0.1 only: every host name resolves to nothing.
Skipped, saying so, only where chromium or its driver is not installed
(scripts/install-deps.sh installs both and warns when it cannot).

`CULEX_STATUS_SCREENSHOT=docs/status-page.png scripts/e2e.sh -k status_page`
refreshes the screenshot kept in docs/ (else it goes to the test's
directory)."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from support import LOOPBACK, Paho, drain, free_port, is_listening, wait_until

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium or chromium-driver is not installed (scripts/install-deps.sh could not install it)")

# The counters the chart's rates come from.
RECEIVED = "$SYS/broker/publish/messages/received"
SENT = "$SYS/broker/publish/messages/sent"
# The figures the page shows, by `$SYS` topic (the page's `data-topic`).
FIGURES = (
    "$SYS/broker/uptime",
    "$SYS/broker/clients/connected",
    "$SYS/broker/clients/total",
    "$SYS/broker/subscriptions/count",
    "$SYS/broker/retained messages/count",
    RECEIVED,
    SENT,
    "$SYS/broker/publish/messages/dropped",
)
PRESENCE = "$SYS/broker/presence/connected"

# Client ids shown in the table; one carries markup, which must show as text.
DEVICES = ("sensor-a1", "sensor-a2", "sensor-b1", "pump-7", "<b>gate</b> & 1")
# The client kicked from the page: its id needs percent-encoding in the
# DELETE path, and its will must be published.
KICKED = "valve 3/#east"
WILL = ("status/valve-3", b"gone", 1, False)

# The load: a few thousand messages over about 4 s (two polls at least), in
# uneven batches 0.7 s apart.
LOAD_BATCHES = (200, 450, 800, 650, 500, 400)
LOAD_MESSAGES = sum(LOAD_BATCHES)


def api(port: int, path: str):
    """The JSON (or text) answer of a GET on the HTTP API."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=5) as response:
        body = response.read()
        if response.headers.get_content_type() == "application/json":
            return json.loads(body)
        return body.decode()


class Browser:
    """Headless Chromium through chromedriver; every console line it logs is
    kept in `console`."""

    def __init__(self, workdir: Path):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-default-apps", "--password-store=basic", "--window-size=1280,900",
                    # Loopback only: no name resolves, so nothing leaves the machine.
                    f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {LOOPBACK}",
                    f"--user-data-dir={workdir / 'chromium-profile'}"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(20)
        self.driver.set_script_timeout(10)
        # A viewport of exactly 1280x900, whatever the headless window's frame.
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        self.console: list[dict] = []

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def read_console(self) -> list[dict]:
        self.console += self.driver.get_log("browser")
        return self.console

    def errors(self) -> list[dict]:
        """Console lines of level SEVERE, and anything a script threw."""
        return [e for e in self.read_console()
                if e.get("level") == "SEVERE" or e.get("source") == "javascript"]

    def status(self) -> dict:
        """What the page keeps (`window.culexStatus`)."""
        return self.js("return window.culexStatus")

    def figures(self) -> dict[str, tuple[str, str]]:
        """{topic: (data-value, text)} of every element with a data-topic."""
        return self.js("""
            const out = {};
            for (const el of document.querySelectorAll('[data-topic]'))
                out[el.dataset.topic] = [el.dataset.value, el.textContent];
            return out;""")

    def client_ids(self) -> list[str]:
        """The client ids the table shows (their cells' text)."""
        return self.js("""return Array.from(document.querySelectorAll('#clients tbody tr[data-client-id]'),
                                            tr => tr.cells[0].textContent)""")

    def search(self, text: str):
        """Types `text` into the search box over what it held (keys, not
        `clear()`, which fires no input event)."""
        box = self.driver.find_element(By.ID, "search")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.BACKSPACE)
        if text:
            box.send_keys(text)

    def chart(self) -> str:
        return self.js("return document.getElementById('chart').toDataURL()")

    def quit(self):
        self.driver.quit()


@pytest.fixture
def browser(tmp_path, request):
    b = Browser(tmp_path)
    yield b
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        try:
            shot = tmp_path / "status-page-failed.png"
            b.driver.save_screenshot(str(shot))
            print(f"\nscreenshot: {shot}\nconsole: {b.read_console()}")
        except WebDriverException:
            pass
    b.quit()


def mismatches(shown: dict, tree: dict) -> list[str]:
    """How the page's figures differ from a systree answer (empty: none).
    A figure the answer lacks shows as a dash."""
    wrong = []
    for topic, (value, text) in shown.items():
        api_value = tree.get(topic)
        if topic == PRESENCE:
            want = {None: ("", "not configured"), 1: ("1", "connected"), 0: ("0", "down")}.get(api_value)
            ok = (value, text) == want
        elif api_value is None:
            ok = (value, text) == ("", "–")
        elif topic == "$SYS/broker/uptime":
            # Uptime moves on every second: one poll (2 s) apart at most.
            ok = value.isdigit() and abs(int(value) - api_value) <= 3
        else:
            ok = value == str(api_value) and text.replace(",", "") == str(api_value)
        if not ok:
            wrong.append(f"{topic}: page {value!r} {text!r}, API {api_value!r}")
    return wrong


def test_status_page(make_broker, redis_server, redis_db, cleanup, browser, tmp_path):
    started = time.monotonic()
    http_port = free_port()
    broker = make_broker(redis=redis_server, extra=[
        f"listener {http_port} {LOOPBACK}", "protocol http_api", "sys_interval 1"])
    wait_until(lambda: is_listening(http_port), what=f"http_api listener on {http_port}")

    def client(client_id: str, **kw) -> Paho:
        c = Paho(broker.port, client_id, **kw).connect()
        cleanup(c.close)
        return c

    watcher = client("watcher")
    watcher.subscribe("status/#", qos=1)
    for i, device in enumerate(DEVICES):
        device_client = client(device, username="field-team" if i % 2 else None)
        device_client.subscribe(f"cmd/{i}/#", qos=1)
    kicked = client(KICKED, will=WILL, username="valves")
    sinks = [client(f"load-sink-{n}") for n in (1, 2)]
    for sink in sinks:
        sink.subscribe("load/#")
    publisher = client("load-source")
    connected = len(DEVICES) + 5

    # ------------------------------------------------------------ it loads, without console errors
    browser.driver.get(f"http://{LOOPBACK}:{http_port}/")
    assert browser.driver.title == "Culex status"
    wait_until(lambda: (browser.status() or {}).get("polls", 0) >= 1, 10,
               what=lambda: f"a first poll of the page; state: {browser.status()}")
    assert browser.status()["error"] is None, browser.status()["error"]
    version = api(http_port, "/api/v1/version").strip()
    assert browser.driver.find_element(By.ID, "version").get_attribute("title") == version
    listeners = api(http_port, "/api/v1/listeners")["listeners"]
    rows = browser.js("return Array.from(document.querySelectorAll('#listeners tbody tr'), "
                      "tr => Array.from(tr.cells, c => c.textContent))")
    assert sorted(r[0] for r in rows) == sorted(str(l.get("port", l.get("path"))) for l in listeners)
    assert {r[1] for r in rows} == {"mqtt", "HTTP API"}

    # ------------------------------------------------------------ figures = /api/v1/systree
    shown = browser.figures()
    assert set(FIGURES) | {PRESENCE} <= set(shown), f"figures on the page: {sorted(shown)}"
    # The chart needs these two.
    assert {RECEIVED, SENT} <= set(api(http_port, "/api/v1/systree"))
    assert api(http_port, "/api/v1/clients")["meta"]["count"] == connected
    seen = {}

    def figures_match():
        seen["page"], seen["api"] = browser.figures(), api(http_port, "/api/v1/systree")
        return not mismatches(seen["page"], seen["api"])

    wait_until(figures_match, 10, interval=0.5,
               what=lambda: f"the page's figures to match /api/v1/systree: {mismatches(seen['page'], seen['api'])}")

    # ------------------------------------------------------------ the chart moves under load
    before = browser.chart()
    mark = browser.js("return performance.now()")
    # Each message goes to two subscribers: sent = 2 x received.
    for batch in LOAD_BATCHES:
        for _ in range(batch):
            publisher.client.publish("load/1", b"x" * 64, 0)
        time.sleep(0.7)
    for sink in sinks:
        got = drain(sink, quiet=1.0, limit=LOAD_MESSAGES + 100)
        assert len(got) == LOAD_MESSAGES

    def peak():
        new = [s for s in browser.status()["samples"] if s["t"] > mark]
        rx = max((s["rx"] for s in new), default=0)
        tx = max((s["tx"] for s in new), default=0)
        # ... and the poll after the load, back to (nearly) nothing.
        calm = bool(new) and new[-1]["rx"] < 20
        return (rx, tx) if rx >= 100 and tx >= 200 and calm else None

    rx, tx = wait_until(peak, 8, interval=0.3,
                        what=lambda: f"a peak in the chart's series, then calm: {browser.status()['samples'][-8:]}")
    assert rx <= LOAD_MESSAGES and tx <= 2 * LOAD_MESSAGES, (rx, tx)
    assert browser.chart() != before, "the canvas did not change under load"

    # The screenshot kept in docs/: every client listed, the load's peak drawn.
    wait_until(lambda: len(browser.client_ids()) == connected, 5,
               what=lambda: f"every client in the table: {browser.client_ids()}")
    screenshot = Path(os.environ.get("CULEX_STATUS_SCREENSHOT") or tmp_path / "status-page.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.driver.save_screenshot(str(screenshot))

    # ------------------------------------------------------------ ids are text, never markup
    assert "<b>gate</b> & 1" in browser.client_ids()
    assert browser.driver.find_elements(By.CSS_SELECTOR, "#clients tbody b") == []

    # ------------------------------------------------------------ search
    browser.search("sensor-a")
    wait_until(lambda: browser.client_ids() == ["sensor-a1", "sensor-a2"], 5,
               what=lambda: f"the search for sensor-a; table: {browser.client_ids()}")
    browser.search("valve 3/")
    wait_until(lambda: browser.client_ids() == [KICKED], 5,
               what=lambda: f"the search for {KICKED!r}; table: {browser.client_ids()}")

    # ------------------------------------------------------------ kick
    def click_kick():
        try:
            browser.driver.find_element(By.CSS_SELECTOR, "#clients tbody button.kick").click()
            return True
        except StaleElementReferenceException:  # the table was redrawn under the click
            return False

    wait_until(click_kick, 5, what="a Kick button to click")
    assert kicked.disconnected.wait(5), f"{KICKED} still connected after Kick"
    will = watcher.expect(timeout=5)
    assert (will.topic, will.payload) == (WILL[0], WILL[1])
    wait_until(lambda: browser.driver.find_element(By.ID, "kick-note").text == f"Disconnected {KICKED}.", 5,
               what=lambda: f"the kick's note; it says {browser.driver.find_element(By.ID, 'kick-note').text!r}")
    wait_until(lambda: browser.client_ids() == [], 5,
               what=lambda: f"{KICKED} gone from the table: {browser.client_ids()}")
    assert KICKED not in [c["id"] for c in api(http_port, "/api/v1/clients")["data"]]
    browser.search("")
    wait_until(lambda: len(browser.client_ids()) == connected - 1, 5,
               what=lambda: f"the other clients listed again: {browser.client_ids()}")

    # ------------------------------------------------------------ no console error from start to end
    assert browser.status()["error"] is None, browser.status()["error"]
    assert browser.errors() == [], f"console errors: {browser.errors()}"
    assert time.monotonic() - started < 60, "the status page test took over a minute"
