"""Fixtures of the dashboard tests: seeded test database, Redis latest state, env for the app."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
import streamlit as st

from stockpipe.indicators import INDICATOR_COLUMNS, compute_frame

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
# Symbols no other test uses: Redis db 15 and the test database are shared with the other suites.
WATCHLIST = ["ZAPL", "ZMSF"]
SEED_DAYS = 3
REDIS_CLOSE = 190.25  # ZAPL's latest close in Redis, one bar ahead of PostgreSQL
BAR_COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume", "vwap", "trades", "source", "fetched_at"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_bars(symbol: str, end: datetime, minutes: int, base: float, seed: int) -> pd.DataFrame:
    """``minutes`` consecutive 1-minute bars ending at ``end`` (a deterministic random walk)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(end=end, periods=minutes, freq="1min", tz="UTC")
    close = base * np.exp(np.cumsum(rng.normal(0, 0.0008, minutes)))
    open_ = np.concatenate([[base], close[:-1]])
    spread = np.abs(rng.normal(0, 0.0005, minutes)) * close
    high, low = np.maximum(open_, close) + spread, np.minimum(open_, close) - spread
    volume = rng.integers(1_000, 20_000, minutes).astype("float64")
    return pd.DataFrame(
        {
            "symbol": symbol,
            "ts": ts,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "vwap": (high + low + close) / 3,
            "trades": rng.integers(10, 200, minutes),
            "source": "simulator",
            "fetched_at": ts + pd.Timedelta(seconds=61),
        }
    )


def with_indicators(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars plus their indicators, computed by the pipeline's own indicator code per symbol."""
    frames = [compute_frame(one.reset_index(drop=True))[0] for _, one in bars.groupby("symbol", sort=False)]
    return pd.concat(frames, ignore_index=True)


def store(conn: psycopg.Connection, full: pd.DataFrame) -> None:
    """COPY bars and indicators into market.bars_1m / market.indicators_1m."""
    with conn.cursor() as cur:
        with cur.copy(f"COPY market.bars_1m ({', '.join(BAR_COLUMNS)}) FROM STDIN") as copy:
            for row in full[BAR_COLUMNS].itertuples(index=False):
                copy.write_row(row)
        columns = ["symbol", "ts", *INDICATOR_COLUMNS]
        with cur.copy(f"COPY market.indicators_1m ({', '.join(columns)}) FROM STDIN") as copy:
            for row in full[columns].itertuples(index=False):
                copy.write_row([None if isinstance(v, float) and np.isnan(v) else v for v in row])


def refresh_rollups(conn: psycopg.Connection) -> None:
    for view in ("market.bars_5m", "market.bars_1h", "market.bars_1d"):
        conn.execute(f"REFRESH MATERIALIZED VIEW {view}")


@pytest.fixture
def app_env(monkeypatch, base_settings, pg_database):
    """Environment the app reads its settings from (the test database, Redis db 15), caches cleared."""
    env = {
        "STOCKPIPE_PG_DATABASE": pg_database,
        "STOCKPIPE_REDIS_URL": base_settings.redis_url,
        "STOCKPIPE_WATCHLIST": ",".join(WATCHLIST),
        "STOCKPIPE_AIRFLOW_API_URL": f"http://127.0.0.1:{free_port()}",
        "STOCKPIPE_STREAM_CHECKPOINT": "/nonexistent/checkpoint",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield env
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def seeded(pg_conn, redis_client, app_env):
    """Three days of 1-minute bars for the watchlist ending a minute ago; rollups refreshed one hour
    before the end (so the newest buckets come from bars_1m); ZAPL's latest state in Redis, ZMSF's not."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    minutes = SEED_DAYS * 1440
    bars = pd.concat([make_bars("ZAPL", end, minutes, 190.0, 1), make_bars("ZMSF", end, minutes, 410.0, 2)])
    full = with_indicators(bars).sort_values(["symbol", "ts"]).reset_index(drop=True)
    cutoff = pd.Timestamp(end) - pd.Timedelta(hours=1)
    store(pg_conn, full[full["ts"] <= cutoff])
    refresh_rollups(pg_conn)
    store(pg_conn, full[full["ts"] > cutoff])
    pg_conn.execute("SELECT market.refresh_latest()")  # what the sink keeps (stored here without it)
    pg_conn.execute(
        "INSERT INTO market.symbols (symbol, name, exchange, currency, type, market_cap, source) "
        "VALUES ('ZAPL', 'Apple Inc.', 'XNAS', 'usd', 'CS', 3.1e12, 'simulator')"
    )
    # Redis is ahead of PostgreSQL by one bar for ZAPL: the tile must show Redis' price.
    last = full[full["symbol"] == "ZAPL"].iloc[-1]
    assert abs(last["close"] - REDIS_CLOSE) < 20, "seed drifted: keep the Redis bar near the stored ones"
    redis_ts = last["ts"] + pd.Timedelta(minutes=1)
    redis_client.hset(
        "stockpipe:latest:ZAPL",
        mapping={
            "symbol": "ZAPL",
            "ts": redis_ts.isoformat().replace("+00:00", "Z"),
            "ts_ms": str(int(redis_ts.timestamp() * 1000)),
            "open": str(last["close"]),
            "high": str(REDIS_CLOSE + 0.5),
            "low": str(last["close"] - 0.5),
            "close": str(REDIS_CLOSE),
            "volume": "12345.0",
            "vwap": "201.1",
            "trades": "42",
            "rsi_14": "75.5",
            "sma_20": "200.0",
        },
    )
    now = datetime.now(UTC)
    for batch_id in range(30):
        pg_conn.execute(
            "INSERT INTO ops.stream_batches (query_name, batch_id, rows_in, bars_upserted, dead_letters, "
            "input_rows_per_s, processing_ms, max_event_ts, latency_p50_ms, latency_p95_ms, latency_max_ms, "
            "committed_at) "
            "VALUES ('stream_indicators', %s, 10, 10, %s, 5.0, 120.0, %s, 800, 1500, 1800, %s)",
            (batch_id, 1 if batch_id == 29 else 0, end, now - timedelta(minutes=30 - batch_id)),
        )
    return full
