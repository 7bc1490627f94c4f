"""The dashboard in a real browser (headless Chromium through Selenium) while a camera sends images."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from dashboard.server import Dashboard
from handlers.resnet import CLASSES
from iotpipe.config import Config
from model_archives import model_version
from producer import Producer, ProducerReport
from tests.integration.helpers import unique_producer_id

ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOT = ROOT / "test-artifacts" / "dashboard.png"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
COUNT, RATE = 40, 10.0  # four seconds of images
DEADLINE_S = 45.0

# What the page shows, read in one round trip: the numbers as text, and each tile of the latest images.
READ_PAGE = """
const text = (id) => document.getElementById(id).textContent.trim();
return {
  throughput: text("throughput"), stored: text("stored"), p50: text("p50"), p95: text("p95"),
  lag: text("lag"), deadLetters: text("dead-letters"), status: text("status"),
  accuracy: [...document.querySelectorAll("#accuracy tbody tr")].map((row) => row.textContent),
  tiles: [...document.querySelectorAll("#latest .tile")].map((tile) => ({
    loaded: tile.querySelector("img").complete && tile.querySelector("img").naturalWidth > 0,
    label: tile.querySelector(".label").textContent,
    truth: tile.querySelector(".truth").textContent,
    producer: tile.querySelector(".producer").textContent,
  })),
};
"""


def number(text: str) -> float | None:
    """A number as the page writes it ("1,234", "12.5"); None for "n/a"."""
    head = text.split()[0].replace(",", "") if text else "n/a"
    return None if head == "n/a" else float(head)


def seconds(text: str) -> float | None:
    """A duration as the page writes it ("38 ms", "1.20 s"); None for "n/a"."""
    value = number(text)
    return value / 1000 if value is not None and text.endswith(" ms") else value


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    for program in (CHROMIUM, CHROMEDRIVER):
        if not Path(program).exists():
            pytest.fail(f"{program} is missing: install Debian's chromium and chromium-driver packages")
    profile = tempfile.mkdtemp(prefix="iotpipe-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",  # Chromium's sandbox does not run as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1100",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_dashboard_shows_images_being_stored_live(stack: Config, images, browser: webdriver.Chrome) -> None:
    dashboard = Dashboard(stack)
    server = threading.Thread(target=dashboard.serve, name="dashboard", daemon=True)
    server.start()
    try:
        check_live_page(stack, images, browser, dashboard.url)
    finally:
        dashboard.close()
        server.join(timeout=5)


def check_live_page(config: Config, images, browser: webdriver.Chrome, url: str) -> None:
    browser.get(url)
    deadline = time.monotonic() + DEADLINE_S
    page = browser.execute_script(READ_PAGE)
    while number(page["stored"]) is None and time.monotonic() < deadline:
        time.sleep(0.25)
        page = browser.execute_script(READ_PAGE)
    stored_before = number(page["stored"])
    assert stored_before is not None, f"the page never showed the stored count; status line: {page['status']}"

    producer_id = unique_producer_id("dashboard")
    camera = Producer(config, images, producer_id=producer_id, count=COUNT, rate=RATE, timeout_s=30)
    reports: list[ProducerReport] = []
    sending = threading.Thread(target=lambda: reports.append(camera.run()), name=producer_id, daemon=True)
    sending.start()

    version = model_version(config.model_arch)
    throughputs: list[float] = []
    while time.monotonic() < deadline:
        time.sleep(0.25)
        page = browser.execute_script(READ_PAGE)
        throughputs.append(number(page["throughput"]) or 0.0)
        ours_shown = any(tile["producer"] == producer_id for tile in page["tiles"])
        ours_shown = ours_shown and all(tile["loaded"] for tile in page["tiles"])
        done = number(page["stored"]) >= stored_before + COUNT and max(throughputs) > 0
        if done and ours_shown and len(page["tiles"]) == 12 and any(version in row for row in page["accuracy"]):
            break
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    sending.join(timeout=max(deadline - time.monotonic(), 1))

    assert reports and reports[0].lost == 0, f"the camera's images were not all answered: {reports}"
    assert max(throughputs) > 0, f"throughput never rose above 0 while {COUNT} images were stored"
    assert number(page["stored"]) >= stored_before + COUNT, f"stored count went {stored_before} -> {page['stored']}"
    assert len(page["tiles"]) == 12, f"the page shows {len(page['tiles'])} of the 12 latest images"
    assert any(tile["producer"] == producer_id for tile in page["tiles"]), f"none of ours is shown: {page['tiles']}"
    for tile in page["tiles"]:
        assert tile["loaded"], f"an image did not load from the dashboard's proxy: {tile}"
        assert tile["label"].split()[0] in CLASSES, f"no predicted label: {tile}"
        assert tile["truth"].removeprefix("true: ") in CLASSES, f"no true label: {tile}"
    p50, p95 = seconds(page["p50"]), seconds(page["p95"])
    assert p50 is not None and p95 is not None and 0 < p50 <= p95, (page["p50"], page["p95"])
    assert any(version in row for row in page["accuracy"]), f"no accuracy for version {version}: {page['accuracy']}"
    assert number(page["lag"]) is not None, "the services' metrics did not show (lag n/a)"
    assert number(page["deadLetters"]) is not None, "the services' metrics did not show (dead letters n/a)"
