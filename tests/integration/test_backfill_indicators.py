"""The backfill job against the stream: same rows (invariant 2), and it repairs what the stream
queued (bars later than the recompute horizon). Real Kafka, Spark, PostgreSQL, Redis."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from stockpipe.streaming.backfill import backfill, repair_ranges, session_range
from tests.integration import streamkit as kit

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def indicator_rows(conn, start, end):
    return conn.execute(
        f"SELECT symbol, ts, {', '.join(kit.INDICATORS)} FROM market.indicators_1m "
        "WHERE ts >= %s AND ts < %s ORDER BY symbol, ts",
        (start, end),
    ).fetchall()


@pytest.mark.slow
def test_backfilling_a_streamed_session_gives_the_same_rows(spark, stream_settings, pg_conn, redis_client):
    stream_settings = stream_settings.model_copy(update={"stream_max_offsets_per_trigger": 1000})
    # The previous afternoon as warm-up history, then a full regular session, for 5 symbols.
    previous = kit.SESSION_OPEN - timedelta(days=1) + timedelta(minutes=270)
    script = kit.Script()
    for n, symbol in enumerate(kit.SYMBOLS):
        for bar in kit.random_bars(symbol, previous, 120, seed=100 + n) + kit.random_bars(
            symbol, kit.SESSION_OPEN, 390, seed=200 + n
        ):
            script.bar(bar)
    kit.produce(stream_settings, script.messages)
    kit.drain(spark, stream_settings)
    kit.assert_invariants(pg_conn, redis_client, script)

    start, end = session_range(date(2026, 11, 24), date(2026, 11, 24))
    streamed = indicator_rows(pg_conn, start, end)
    assert len(streamed) == 5 * 390
    pg_conn.execute("DELETE FROM market.indicators_1m WHERE ts >= %s AND ts < %s", (start, end))

    result = backfill(spark, stream_settings, kit.SYMBOLS, start, end)
    assert result.rows == 5 * 390
    batch = indicator_rows(pg_conn, start, end)
    # Bit for bit (NULL = NULL): the same SymbolIndicators over the same stored series.
    assert len(batch) == len(streamed)
    for s_row, b_row in zip(streamed, batch, strict=True):
        assert s_row[:2] == b_row[:2]
        np.testing.assert_array_equal(
            np.array(s_row[2:], dtype=float), np.array(b_row[2:], dtype=float), err_msg=str(s_row[:2])
        )
    kit.assert_invariants(pg_conn, redis_client, script)


def test_bar_beyond_the_horizon_is_queued_and_repaired(spark, stream_settings, pg_conn, redis_client):
    settings = stream_settings.model_copy(update={"stream_recompute_horizon_bars": 60})
    series = {s: kit.random_bars(s, kit.SESSION_OPEN, 200, seed=300 + n) for n, s in enumerate(kit.SYMBOLS[:2])}
    script = kit.Script()
    for bars in series.values():
        for bar in bars[:160]:
            script.bar(bar)
    kit.produce(settings, script.messages)
    kit.drain(spark, settings)

    late = kit.Script()
    late.expected = dict(script.expected)
    correction = kit.revised(series["AAPL"][20], 900, 1.03)  # 140 bars behind: beyond 60
    late.bar(correction)
    for bars in series.values():
        for bar in bars[160:]:
            late.bar(bar)
    kit.produce(settings, late.messages)
    kit.drain(spark, settings)

    queued = pg_conn.execute("SELECT symbol, ts, repaired_at FROM ops.repair_queue").fetchall()
    assert [(s, ts) for s, ts, _ in queued] == [("AAPL", kit._parse(correction["ts"]))]
    frame = kit.stored(pg_conn)
    kit.assert_latest_values(frame, late.expected)  # the late bar is stored...
    with pytest.raises(AssertionError):
        kit.assert_talib_exact(frame)  # ...but the indicators between it and the window are stale

    for symbol, first in repair_ranges(settings).items():
        backfill(spark, settings, [symbol], first, first + timedelta(days=2))
    kit.assert_invariants(pg_conn, redis_client, late)
    (open_repairs,) = pg_conn.execute("SELECT count(*) FROM ops.repair_queue WHERE repaired_at IS NULL").fetchone()
    assert open_repairs == 0

    # The stream rebuilt its own state from the stored series: what it computes next is exact too.
    more = kit.Script()
    more.expected = dict(late.expected)
    for bar in kit.random_bars("AAPL", kit.SESSION_OPEN + timedelta(minutes=200), 30, seed=9):
        more.bar(bar)
    kit.produce(settings, more.messages)
    kit.drain(spark, settings)
    kit.assert_invariants(pg_conn, redis_client, more)


def test_backfilling_history_older_than_the_stream_keeps_every_later_row_exact(
    spark, stream_settings, pg_conn, redis_client
):
    """The first-start case: the stream is live, then the backfill stores the days before its first
    bar. Every later indicator (stored and still to come) must follow the longer series."""
    symbols = kit.SYMBOLS[:2]
    live = kit.Script()
    history, later = {}, []
    for n, symbol in enumerate(symbols):
        bars = kit.random_bars(symbol, kit.SESSION_OPEN, 180, seed=500 + n)
        history[symbol] = kit.random_bars(symbol, kit.SESSION_OPEN - timedelta(days=1), 120, seed=600 + n)
        for bar in bars[:120]:
            live.bar(bar)
        later += bars[120:]
    kit.produce(stream_settings, live.messages)
    kit.drain(spark, stream_settings)

    # What the backfill DAG does: store the older day's bars, then run the batch job for that day.
    with pg_conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, vwap, trades, source, "
            "fetched_at) VALUES (%(symbol)s, %(ts)s, %(open)s, %(high)s, %(low)s, %(close)s, %(volume)s, "
            "%(vwap)s, %(trades)s, %(source)s, %(fetched_at)s)",
            [bar for bars in history.values() for bar in bars],
        )
    day = (kit.SESSION_OPEN - timedelta(days=1)).date()
    start, end = session_range(day, day)
    backfill(spark, stream_settings, symbols, start, end)

    more = kit.Script()
    more.expected = dict(live.expected)
    for bars in history.values():
        for bar in bars:
            more.expected[(bar["symbol"], kit._parse(bar["ts"]))] = bar
    for bar in later:
        more.bar(bar)
    kit.produce(stream_settings, more.messages)
    kit.drain(spark, stream_settings)

    frame = kit.assert_invariants(pg_conn, redis_client, more)
    assert len(frame) == 2 * (120 + 180)
