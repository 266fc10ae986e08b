"""The Alerts page in a real headless Chromium: a rule created in the page fires on bars the sink
writes (PostgresSink.write, as the stream does), the delivery worker publishes it, and the page's live
feed, its history, the Symbol chart's markers and the Overview tile show it. Screenshots of each go
to test-artifacts/ (docs/alerts.md shows them)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_dashboard_browser import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, running_app, settle  # noqa: F401

from stockpipe.alerts.worker import Worker
from stockpipe.storage.postgres import PostgresSink, stored_bars
from stockpipe.streaming import state as st

pytestmark = pytest.mark.integration
CONDITION = "close crosses above sma_20"


@pytest.fixture
def rules_env(monkeypatch, base_settings):
    """The app edits rules as the rules role: give it that role's password (the test settings' one)."""
    monkeypatch.setenv("STOCKPIPE_PG_RULES_PASSWORD", base_settings.pg_rules_password.get_secret_value())


def stream_dip_and_rally(settings, conn, symbol: str, minutes: int = 40) -> int:
    """``minutes`` new bars after the stored ones, down 0.5 %/min then up 0.5 %/min (close crosses
    its SMA 20 upwards), written by the sink like a stream batch. Returns the alerts it fired."""
    history = stored_bars(conn, symbol)
    state = st.seed(history, 390)
    last_ts, close = int(history["ts_ms"].iloc[-1]), float(history["close"].iloc[-1])
    steps = np.r_[np.full(minutes // 2, 0.995), np.full(minutes - minutes // 2, 1.005)]
    closes = close * np.cumprod(steps)
    ts_ms = last_ts + 60_000 * np.arange(1, minutes + 1)
    opens = np.r_[close, closes[:-1]]
    bars = pd.DataFrame(
        {
            "ts_ms": ts_ms,
            "fetched_us": ts_ms * 1000 + 61_000_000,
            "open": opens,
            "high": np.maximum(opens, closes) * 1.0005,
            "low": np.minimum(opens, closes) * 0.9995,
            "close": closes,
            "volume": 5000.0,
            "vwap": closes,
            "trades": 50,
            "source": "simulator",
            "koffset": np.arange(minutes),
            "kpartition": 0,
        }
    )
    _state, rows = st.advance(state, bars, 390)
    rows["symbol"] = symbol
    sink = PostgresSink(settings)
    try:
        result = sink.write(rows, offsets={("browser-test", 0): (0, minutes - 1)}, query_name="browser", batch_id=0)
    finally:
        sink.close()
    return result.alerts.fired


def test_create_a_rule_in_the_page_and_see_its_alert(rules_env, running_app, base_settings, pg_conn):  # noqa: F811
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: `make test` finds or installs one (infra/platform.sh)"
    app_settings = base_settings  # the app's database and Redis (app_env)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"{running_app}/alerts", wait_until="domcontentloaded")
        page.get_by_text("New rule").first.wait_for(timeout=30_000)

        # a bad rule: one sentence, nothing stored
        page.get_by_role("textbox", name="Symbol").fill("ZAPL")
        page.get_by_role("textbox", name="Condition").fill("rsi crosses below 130")
        page.get_by_role("button", name="Add rule").click()
        page.get_by_text("Rule not stored: an RSI level must lie between 0 and 100").wait_for(timeout=15_000)
        assert pg_conn.execute("SELECT count(*) FROM market.alert_rules").fetchone() == (0,)

        page.get_by_role("textbox", name="Condition").fill(CONDITION)
        page.get_by_role("button", name="Add rule").click()
        page.get_by_text(f"added: ZAPL · {CONDITION}").wait_for(timeout=15_000)
        (rule_id,) = pg_conn.execute("SELECT id FROM market.alert_rules WHERE symbol = 'ZAPL'").fetchone()
        page.get_by_text("Listening on Redis").wait_for(timeout=15_000)  # the live feed has subscribed

        fired = stream_dip_and_rally(app_settings, pg_conn, "ZAPL")
        assert fired >= 1
        worker = Worker(app_settings)
        try:
            assert worker.run_once() == fired
        finally:
            worker.close()
        started = time.monotonic()
        page.get_by_text(f"{CONDITION} · fired").first.wait_for(timeout=10_000)
        print(f"alert in the page's live feed {time.monotonic() - started:.1f} s after it was published")
        settle(page)
        page.screenshot(path=str(ARTIFACTS / "dashboard-alerts.png"), full_page=True)
        page.reload(wait_until="domcontentloaded")
        page.get_by_text("History").first.wait_for(timeout=30_000)
        page.locator("[data-testid=stDataFrame]").nth(1).wait_for(timeout=30_000)
        settle(page)
        assert page.locator("[data-testid=stException]").count() == 0
        page.locator("[data-testid=stDataFrame]").nth(1).scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "dashboard-alerts-history.png"), full_page=True)
        status = pg_conn.execute("SELECT delivery FROM market.alerts WHERE rule_id = %s", (rule_id,)).fetchall()
        assert status and all(s == ("delivered",) for s in status)

        # the Symbol page marks the alert on the chart, the Overview tile names it
        page.goto(f"{running_app}/symbol?symbol=ZAPL", wait_until="domcontentloaded")
        page.wait_for_function(
            "[...document.querySelectorAll('[data-testid=stPlotlyChart] .legendtext')]"
            ".some(e => e.textContent === 'Alerts')",
            timeout=30_000,
        )
        settle(page)
        page.screenshot(path=str(ARTIFACTS / "dashboard-symbol-alerts.png"), full_page=True)
        page.goto(running_app, wait_until="domcontentloaded")
        page.get_by_text(CONDITION).first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-overview-alerts.png"), full_page=True)
        assert page.locator("[data-testid=stException]").count() == 0
        browser.close()
