"""The sink's market-scale write path (issue 14) against a real PostgreSQL: the staging COPY keeps
every double's bits, ``market.latest_1m`` follows the stored rows (with the previous session's
close), and a bar that lost to a newer stored version is still queued for repair."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockpipe.indicators import INDICATOR_COLUMNS
from stockpipe.storage.postgres import REASON_STALE, PostgresSink

pytestmark = pytest.mark.integration


def _ms(stamp: str) -> int:
    return int(pd.Timestamp(stamp, tz="UTC").value // 1_000_000)


def rows(symbols: list[str], stamps: list[int], rng: np.random.Generator, fetched_after_s: float = 61) -> pd.DataFrame:
    out = []
    for symbol in symbols:
        for ts_ms in stamps:
            row = {
                "kind": "bar", "symbol": symbol, "ts_ms": ts_ms, "open": rng.random() * 100,
                "high": rng.random() * 100, "low": rng.random(), "close": rng.random() * 100 / 3,
                "volume": float(rng.integers(1, 10_000)), "vwap": rng.random() * 100 / 7,
                "trades": int(rng.integers(1, 50)), "source": "test",
                "fetched_us": ts_ms * 1000 + int(fetched_after_s * 1e6), "bar_changed": True,
            }  # fmt: skip
            for i, name in enumerate(INDICATOR_COLUMNS):
                row[name] = np.nan if i % 4 == 0 else float(rng.normal() * 10.0 ** rng.integers(-12, 12))
            out.append(row)
    return pd.DataFrame(out)


def test_staged_doubles_keep_their_bits(settings, pg_conn):
    rng = np.random.default_rng(7)
    start = _ms("2026-11-24 15:00")
    frame = rows(["EXA", "EXB"], [start + i * 60_000 for i in range(50)], rng)
    # hard cases: subnormal-free extremes, negative zero, values with 17 significant digits
    frame.loc[0, "close"] = 0.1 + 0.2
    frame.loc[1, "close"] = 1.7976931348623157e308
    frame.loc[2, "close"] = 2.2250738585072014e-308
    frame.loc[3, "sma_20"] = -0.0
    frame.loc[4, "rsi_14"] = 1 / 3
    PostgresSink(settings).write(frame)
    stored = pg_conn.execute(
        f"SELECT b.symbol, (extract(epoch FROM b.ts) * 1000)::bigint, b.close, b.vwap, "
        f"{', '.join(f'i.{c}' for c in INDICATOR_COLUMNS)} FROM market.bars_1m b "
        "JOIN market.indicators_1m i USING (symbol, ts) ORDER BY b.symbol, b.ts"
    ).fetchall()
    expected = frame.sort_values(["symbol", "ts_ms"])
    assert len(stored) == len(expected)
    names = ["close", "vwap", *INDICATOR_COLUMNS]
    for got, (_, want) in zip(stored, expected.iterrows(), strict=True):
        for value, name in zip(got[2:], names, strict=True):
            if np.isnan(want[name]):
                assert value is None, name
            else:
                assert np.float64(value).tobytes() == np.float64(want[name]).tobytes(), (name, value, want[name])


def test_latest_table_follows_the_stored_rows_and_the_previous_close(settings, pg_conn):
    rng = np.random.default_rng(8)
    sink = PostgresSink(settings)
    day1 = [_ms("2026-11-24 20:58"), _ms("2026-11-24 20:59")]  # 15:58, 15:59 in New York
    day2 = [_ms("2026-11-25 14:30") + i * 60_000 for i in range(3)]
    first = rows(["LTA", "LTB"], day1, rng)
    result = sink.write(first)
    assert sorted(r["symbol"] for r in result.latest) == ["LTA", "LTB"]
    # LTA moves to the next session; LTB too, with a correction of its last bar of day 1 in the same batch
    moved = rows(["LTA"], day2, rng)
    corrected = rows(["LTB"], day1[-1:] + day2, rng, fetched_after_s=99)
    sink.write(pd.concat([moved, corrected], ignore_index=True))
    latest = {
        r[0]: r[1:]
        for r in pg_conn.execute(
            "SELECT symbol, ts, close, rsi_14, session_date::text, prev_close, prev_close_ts FROM market.latest_1m"
        )
    }
    stored_last = dict(
        pg_conn.execute(
            "SELECT DISTINCT ON (symbol) symbol, close FROM market.bars_1m ORDER BY symbol, ts DESC"
        ).fetchall()
    )
    for symbol in ("LTA", "LTB"):
        ts, close, rsi, session, prev_close, prev_ts = latest[symbol]
        assert ts == pd.Timestamp(day2[-1], unit="ms", tz="UTC")
        assert close == stored_last[symbol]
        assert session == "2026-11-25"
        assert prev_ts == pd.Timestamp(day1[-1], unit="ms", tz="UTC")
    assert latest["LTA"][4] == first[(first.symbol == "LTA")]["close"].iloc[-1]
    assert latest["LTB"][4] == corrected["close"].iloc[0]  # the corrected close, not the first one
    # an older bar changes neither the latest row nor what the sink hands to Redis
    result = sink.write(rows(["LTA"], [day2[0] - 60_000], rng, fetched_after_s=500))
    assert result.latest == []
    assert pg_conn.execute("SELECT ts FROM market.latest_1m WHERE symbol = 'LTA'").fetchone()[0] == latest["LTA"][0]
    # emptying the history empties the summary
    pg_conn.execute("TRUNCATE market.bars_1m")
    assert pg_conn.execute("SELECT count(*) FROM market.latest_1m").fetchone()[0] == 0


def test_a_bar_that_lost_to_a_newer_stored_version_is_queued(settings, pg_conn):
    rng = np.random.default_rng(9)
    sink = PostgresSink(settings)
    stamps = [_ms("2026-11-25 15:00") + i * 60_000 for i in range(3)]
    sink.write(rows(["STL"], stamps, rng, fetched_after_s=120))
    result = sink.write(rows(["STL"], stamps[1:2], rng, fetched_after_s=61))  # older fetched_at: loses
    assert result.bars_upserted == 0
    queued = pg_conn.execute("SELECT symbol, ts, reason FROM ops.repair_queue").fetchall()
    assert queued == [("STL", pd.Timestamp(stamps[1], unit="ms", tz="UTC"), REASON_STALE)]


def test_market_queries_rank_the_session_and_find_macd_crossovers(settings, pg_conn):
    from stockpipe.storage import market

    rng = np.random.default_rng(10)
    sink = PostgresSink(settings)
    yesterday = [_ms("2026-11-24 20:59")]
    today = [_ms("2026-11-25 14:30") + i * 60_000 for i in range(20)]
    frames = []
    for symbol, last_close, rsi, hist in [
        ("UPP", 110.0, 75.0, [-1.0] * 12 + [1.0] * 8),  # +10 %, overbought, crossed up at bar 12
        ("DWN", 80.0, 20.0, [1.0] * 18 + [-1.0] * 2),  # -20 %, oversold, crossed down at bar 18
        ("FLT", 100.0, 50.0, [1.0] * 20),  # unchanged, neutral, no crossover
    ]:
        before = rows([symbol], yesterday, rng)
        before["close"] = 100.0
        now = rows([symbol], today, rng)
        now["close"] = last_close
        now["rsi_14"] = rsi
        now["macd_hist"] = hist
        frames += [before, now]
    sink.write(pd.concat(frames[::2], ignore_index=True))
    sink.write(pd.concat(frames[1::2], ignore_index=True))

    session, as_of, symbols = market.market_session(pg_conn)
    assert (str(session), symbols) == ("2026-11-25", 3)
    assert as_of == pd.Timestamp(today[-1], unit="ms", tz="UTC")
    gainers, losers = market.movers(pg_conn, session, 2)
    assert list(gainers["symbol"]) == ["UPP"] and list(losers["symbol"]) == ["DWN"]  # FLT is unchanged
    assert gainers["change"].iloc[0] == pytest.approx(0.10) and losers["change"].iloc[0] == pytest.approx(-0.20)
    oversold, overbought, n_low, n_high = market.rsi_extremes(pg_conn, session)
    assert (list(oversold["symbol"]), list(overbought["symbol"]), n_low, n_high) == (["DWN"], ["UPP"], 1, 1)
    crossed = market.macd_crossovers(pg_conn, as_of, minutes=15)
    assert [(r.symbol, r.direction, r.ts) for r in crossed.itertuples()] == [
        ("DWN", "bearish", pd.Timestamp(today[18], unit="ms", tz="UTC")),
        ("UPP", "bullish", pd.Timestamp(today[12], unit="ms", tz="UTC")),
    ]
    # the window: 5 minutes back from the newest bar sees DWN's crossing only
    assert list(market.macd_crossovers(pg_conn, as_of, minutes=5)["symbol"]) == ["DWN"]
    summary = market.storage_summary(pg_conn)
    assert summary["oldest_bar"] == pd.Timestamp(yesterday[0], unit="ms", tz="UTC")
    assert summary["days_kept"] == 2 and summary["database_bytes"] > summary["market_bytes"] > 0


def test_retention_deletes_rows_older_than_the_cut_inside_a_month(settings, pg_conn):
    from datetime import UTC, datetime

    from stockpipe.airflow.maintenance import apply_retention

    rng = np.random.default_rng(11)
    stamps = [_ms("2026-11-20 15:00"), _ms("2026-11-23 15:00"), _ms("2026-11-25 15:00")]
    PostgresSink(settings).write(rows(["RET"], stamps, rng))
    try:
        done = apply_retention(settings, datetime(2026, 11, 26, 6, 30, tzinfo=UTC), retention_days=4)
    finally:  # the months before the cut are dropped too: give the session's database its partitions back
        pg_conn.execute(
            "SELECT market.ensure_month_partitions(now() - interval '13 months', now() + interval '2 months')"
        )
    kept = [r[0] for r in pg_conn.execute("SELECT ts FROM market.bars_1m ORDER BY ts")]
    assert kept == [pd.Timestamp(t, unit="ms", tz="UTC") for t in stamps[1:]]
    assert pg_conn.execute("SELECT count(*) FROM market.indicators_1m").fetchone()[0] == 2
    assert any("market.bars_1m: 1 rows" in line for line in done)
