"""The running app in a real headless Chromium (Playwright driving the system's browser:
Debian's chromium, or the one infra/platform.sh found, passed by `make test` as STOCKPIPE_CHROMIUM): every page
renders its tiles and charts, shows no Streamlit exception box, and leaves a screenshot in
test-artifacts/."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import APP, REDIS_CLOSE, free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("STOCKPIPE_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
# page path -> (plotly charts at least, text that must show)
PAGES = {
    "": (2, "Watchlist"),
    "symbol": (1, "ZAPL · Apple Inc."),
    "market": (0, "Top gainers"),
    "pipeline": (2, "Freshness per symbol"),
    "kafka": (0, "Consumer groups"),
}


def settle(page) -> None:
    """Until the page's script run is over (Streamlit marks its root element; an exception box would
    be on the page by then), then a moment for plotly to finish drawing before a screenshot."""
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for(timeout=30_000)
    page.wait_for_timeout(300)


@pytest.fixture
def running_app(seeded, app_env, redis_client):
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / "dashboard-streamlit.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            APP,
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--client.toolbarMode",
            "viewer",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"streamlit did not start; see {log.name}")
            time.sleep(0.3)
    yield url
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def test_every_page_renders_in_chromium(running_app, redis_client):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: `make test` finds or installs one (infra/platform.sh)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        for path, (charts, text) in PAGES.items():
            page.goto(f"{running_app}/{path}", wait_until="domcontentloaded")
            page.get_by_text(text, exact=False).first.wait_for(timeout=30_000)
            if charts:
                page.wait_for_function(
                    f"document.querySelectorAll('[data-testid=stPlotlyChart] .main-svg').length >= {charts}",
                    timeout=30_000,
                )
            else:
                page.locator("[data-testid=stDataFrame]").first.wait_for(timeout=30_000)
            settle(page)  # was a fixed second
            page.screenshot(path=str(ARTIFACTS / f"dashboard-{path or 'overview'}.png"), full_page=True)
            assert page.locator("[data-testid=stException]").count() == 0, f"exception box on /{path}"
            if path == "":
                tiles = page.locator("[data-testid=stMetric]")
                assert tiles.count() == 2
                assert f"{REDIS_CLOSE:,.2f}" in tiles.first.inner_text()
                # a new bar in Redis shows on the open page within 2 s, without reloading it
                redis_client.hset("stockpipe:latest:ZAPL", mapping={"close": "191.75"})
                started = time.monotonic()
                page.get_by_text("191.75").first.wait_for(timeout=2_000)
                print(f"new Redis bar on screen after {time.monotonic() - started:.2f} s")
            if path == "symbol":
                assert (
                    page.locator(
                        "[data-testid=stPlotlyChart] .candlestick, [data-testid=stPlotlyChart] g.trace.boxes"
                    ).count()
                    > 0
                )
        browser.close()
