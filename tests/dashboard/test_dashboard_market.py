"""The Market page (issue 14) and the Pipeline page's storage section, against the real test
database: the rows are written by the stream's own sink (which keeps market.latest_1m)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from conftest import APP, free_port
from streamlit.testing.v1 import AppTest

from stockpipe.config import load_settings
from stockpipe.indicators import INDICATOR_COLUMNS
from stockpipe.storage.postgres import PostgresSink
from stockpipe.storage.redis_latest import LatestWriter

pytestmark = pytest.mark.integration


def run_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def operator_rows(symbol: str, stamps: list[int], close: float, rsi: float, hist: list[float]) -> pd.DataFrame:
    n = len(stamps)
    rows = pd.DataFrame(
        {
            "kind": "bar", "symbol": symbol, "ts_ms": stamps, "open": close, "high": close + 1, "low": close - 1,
            "close": close, "volume": 1000.0, "vwap": close, "trades": 5, "source": "simulator",
            "fetched_us": [t * 1000 + 61_000_000 for t in stamps], "bar_changed": True,
        }
    )  # fmt: skip
    for name in INDICATOR_COLUMNS:
        rows[name] = np.full(n, 1.0)
    rows["rsi_14"] = rsi
    rows["macd_hist"] = hist
    return rows


@pytest.fixture
def market(pg_conn, redis_client, app_env):
    """A previous session's close of 100 for three symbols, then 20 minutes of today ending a minute ago."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    today = [int((end - timedelta(minutes=19 - i)).timestamp() * 1000) for i in range(20)]
    yesterday = [int((end - timedelta(days=1, hours=1)).timestamp() * 1000)]
    if pd.Timestamp(today[0], unit="ms", tz="UTC").tz_convert("America/New_York").date() != (
        pd.Timestamp(today[-1], unit="ms", tz="UTC").tz_convert("America/New_York").date()
    ):  # just after midnight in New York: keep the 20 minutes in one session
        today = [t - 20 * 60_000 for t in today]
    settings = load_settings()
    sink = PostgresSink(settings)
    symbols = [("ZUPP", 110.0, 75.0, [-1.0] * 12 + [1.0] * 8), ("ZDWN", 80.0, 20.0, [1.0] * 18 + [-1.0] * 2)]
    symbols.append(("ZFLT", 100.0, 50.0, [1.0] * 20))
    sink.write(pd.concat([operator_rows(s, yesterday, 100.0, 50.0, [1.0]) for s, *_ in symbols], ignore_index=True))
    result = sink.write(pd.concat([operator_rows(*spec[:1], today, *spec[1:]) for spec in symbols], ignore_index=True))
    sink.close()
    writer = LatestWriter(settings)
    writer.write(result.latest)
    writer.close()
    return yesterday + today


def test_market_page_ranks_the_session_and_links_each_symbol_to_its_chart(market):
    at = run_page("market")
    headers = "\n".join(str(h.value) for h in at.subheader)
    assert "Top gainers" in headers and "Top losers" in headers
    assert "RSI ≤ 30 · 1" in headers and "RSI ≥ 70 · 1" in headers and "MACD crossovers, last 15 minutes" in headers
    assert "**3** symbols traded" in "\n".join(str(c.value) for c in at.caption)
    frames = [df.value for df in at.dataframe]
    gainers, losers = frames[0], frames[1]
    assert list(gainers["symbol"]) == ["symbol?symbol=ZUPP"] and list(losers["symbol"]) == ["symbol?symbol=ZDWN"]
    assert gainers["change"].iloc[0] == pytest.approx(10.0) and losers["change"].iloc[0] == pytest.approx(-20.0)
    oversold, overbought = frames[2], frames[3]
    assert list(oversold["symbol"]) == ["symbol?symbol=ZDWN"] and list(overbought["symbol"]) == ["symbol?symbol=ZUPP"]
    bullish, bearish = frames[4], frames[5]
    assert list(bullish["symbol"]) == ["symbol?symbol=ZUPP"] and list(bearish["symbol"]) == ["symbol?symbol=ZDWN"]


def test_a_market_link_opens_the_chart_of_a_symbol_beyond_the_watchlist(market):
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/symbol.py")
    at.query_params["symbol"] = "ZUPP"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="symbol").value == "ZUPP"
    assert "ZUPP" in "\n".join(str(t.value) for t in at.title)


def test_market_page_without_bars_says_so_and_names_a_down_database(pg_conn, redis_client, app_env, monkeypatch):
    assert "No streamed bar yet" in "\n".join(str(i.value) for i in run_page("market").info)
    dead = free_port()
    monkeypatch.setenv("STOCKPIPE_PG_PORT", str(dead))
    st.cache_data.clear()
    st.cache_resource.clear()
    errors = "\n".join(str(e.value) for e in run_page("market").error)
    assert "PostgreSQL is down" in errors and f"127.0.0.1:{dead}" in errors and "Traceback" not in errors


def test_pipeline_page_shows_database_size_and_days_kept(market):
    at = run_page("pipeline")
    labels = {m.label: m.value for m in at.metric}
    # calendar (UTC) days from the oldest bar to the newest: 2, or 3 when the fixture runs in the first hour
    # of a UTC day (its previous-session bar is 25 hours back, on the day before yesterday)
    first, last = (pd.Timestamp(market[i], unit="ms").date() for i in (0, -1))
    assert labels["Days kept"] == str((last - first).days + 1)
    assert labels["Database size"].endswith(" GB") and labels["Retention"] == "keep all"
