"""One backfill task without Spark, against the real PostgreSQL: several symbols per chunk and per
query, series of different lengths, NULL VWAPs and trades; the stored-bars readers it shares with
the stream's seeder."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from stockpipe.indicators import compute_frame
from stockpipe.storage.postgres import STORED_COLUMNS, stored_bars, stored_bars_frame, stored_bars_many
from stockpipe.streaming.backfill import FAR_FUTURE, plan_tasks, stored_bar_counts, write_chunks
from tests.integration import streamkit as kit

pytestmark = pytest.mark.integration

INSERT = (
    "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, vwap, trades, source, fetched_at) "
    "VALUES (%(symbol)s, %(ts)s, %(open)s, %(high)s, %(low)s, %(close)s, %(volume)s, %(vwap)s, %(trades)s, "
    "%(source)s, %(fetched_at)s)"
)


def store(conn, bars: list[dict]) -> None:
    with conn.cursor() as cur:
        cur.executemany(INSERT, bars)


def test_stored_bars_readers(pg_conn):
    aapl = kit.random_bars("AAPL", kit.SESSION_OPEN, 30, seed=1)
    msft = kit.random_bars("MSFT", kit.SESSION_OPEN - timedelta(days=1), 10, seed=2)
    for bar in msft[:4]:
        bar["vwap"] = None  # a source without VWAP or trade counts
        bar["trades"] = None
    store(pg_conn, aapl + msft)
    until = kit.SESSION_OPEN + timedelta(minutes=19)

    many = stored_bars_many(pg_conn, ["MSFT", "NONE", "AAPL"], until=until)
    assert list(many) == ["MSFT", "NONE", "AAPL"]
    assert many["NONE"].empty and list(many["NONE"].columns) == STORED_COLUMNS
    assert len(many["AAPL"]) == 20 and len(many["MSFT"]) == 10
    for symbol, bars in (("AAPL", aapl[:20]), ("MSFT", msft)):
        got = many[symbol]
        assert list(got.columns) == STORED_COLUMNS and list(got.index) == list(range(len(bars)))
        assert got["ts_ms"].tolist() == [int(kit._parse(b["ts"]).timestamp() * 1000) for b in bars]
        assert got["fetched_us"].tolist() == [round(kit._parse(b["fetched_at"]).timestamp() * 1e6) for b in bars]
        for name in ("open", "high", "low", "close", "volume", "vwap"):
            expected = np.array([np.nan if b[name] is None else b[name] for b in bars], dtype=np.float64)
            np.testing.assert_array_equal(got[name].to_numpy(dtype=np.float64), expected, err_msg=f"{symbol} {name}")
        assert got["source"].tolist() == ["simulator"] * len(bars)
        expected = np.array([np.nan if b["trades"] is None else b["trades"] for b in bars], dtype=np.float64)
        np.testing.assert_array_equal(got["trades"].to_numpy(dtype=np.float64), expected, err_msg=f"{symbol} trades")

    one = stored_bars(pg_conn, "AAPL")
    assert len(one) == 30 and list(one.columns) == STORED_COLUMNS
    frame = stored_bars_frame(pg_conn, ["AAPL", "MSFT"])
    assert frame["symbol"].tolist() == ["AAPL"] * 30 + ["MSFT"] * 10


def test_a_task_writes_several_symbols_exactly(stream_settings, pg_conn):
    # Histories of different lengths; DELL has no bar inside the range: it is not planned at all.
    start = kit.SESSION_OPEN
    series = {
        "AAPL": kit.random_bars("AAPL", start - timedelta(days=1), 300, seed=10)
        + kit.random_bars("AAPL", start, 200, seed=11),
        "MSFT": kit.random_bars("MSFT", start, 120, seed=12),
        "TSLA": kit.random_bars("TSLA", start - timedelta(minutes=45), 90, seed=13),
        "DELL": kit.random_bars("DELL", start - timedelta(days=1), 50, seed=14),
    }
    for bar in series["TSLA"][10:20]:
        bar["vwap"] = None
    store(pg_conn, [bar for bars in series.values() for bar in bars])

    counts = stored_bar_counts(stream_settings, list(series), start, FAR_FUTURE)
    assert counts == {"AAPL": 500, "MSFT": 120, "TSLA": 90}
    plan = plan_tasks(counts, tasks=1, max_bars=400)  # AAPL alone, then MSFT + TSLA in one query
    assert plan == [[["AAPL"], ["MSFT", "TSLA"]]]
    start_ms, end_ms = int(start.timestamp() * 1000), int(FAR_FUTURE.timestamp() * 1000)
    written = write_chunks(stream_settings, plan[0], start_ms, end_ms)

    assert written == {"AAPL": 200, "MSFT": 120, "TSLA": 45}
    frame = kit.stored(pg_conn)
    inside = frame[frame["ts"] >= start]
    assert inside["has_indicators"].sum() == 365 and not frame.loc[frame["ts"] < start, "has_indicators"].any()
    # A value not there yet (sma_50 on the first 49 bars, ...) is NULL, never a stored NaN.
    (nans,) = pg_conn.execute(
        f"SELECT count(*) FROM market.indicators_1m WHERE 'NaN'::float8 IN ({', '.join(kit.INDICATORS)})"
    ).fetchone()
    (nulls,) = pg_conn.execute("SELECT count(*) FROM market.indicators_1m WHERE sma_50 IS NULL").fetchone()
    assert nans == 0 and nulls == 49 + 4  # MSFT: its first 49 bars; TSLA: bars 45..48 (0..44 are before start)
    for symbol, bars in frame[frame["symbol"] != "DELL"].groupby("symbol"):
        bars = bars.reset_index(drop=True)
        keep = (bars["ts"] >= start).to_numpy()
        actual = bars.loc[keep, kit.INDICATORS].to_numpy(dtype=np.float64)
        # Bit for bit what compute_frame gives over the whole stored series (NULL = NaN)...
        computed, _ = compute_frame(bars[["ts", "close", "vwap", "volume"]])
        np.testing.assert_array_equal(actual, computed.loc[keep, kit.INDICATORS].to_numpy(), err_msg=symbol)
        if bars["vwap"].isna().any():
            continue  # the TA-Lib oracle's session VWAP has no rule for a missing VWAP
        for name, expected in kit.talib_indicators(bars).items():
            column = actual[:, kit.INDICATORS.index(name)]
            np.testing.assert_array_equal(np.isnan(column), np.isnan(expected[keep]), err_msg=f"{symbol} {name}")
            np.testing.assert_allclose(column, expected[keep], rtol=1e-9, atol=0, err_msg=f"{symbol} {name}")

    # Idempotent: the same task again changes nothing.
    before = frame
    assert write_chunks(stream_settings, plan[0], start_ms, end_ms) == written
    after = kit.stored(pg_conn)
    np.testing.assert_array_equal(
        before[kit.INDICATORS].to_numpy(dtype=np.float64), after[kit.INDICATORS].to_numpy(dtype=np.float64)
    )
