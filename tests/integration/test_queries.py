"""stockpipe.storage.queries against the real test database: the one day-quality rule the backfill's
check and the maintenance's summary share, and the ingest error rate of the exporter and the health check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stockpipe.airflow.backfill import check_session
from stockpipe.airflow.maintenance import data_quality_summary
from stockpipe.calendar import trading_calendar
from stockpipe.storage import queries

INSERT_BAR = (
    "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, vwap, trades, source, fetched_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, 10.2, 5, 'simulator', now())"
)


def _session():
    return trading_calendar("demo").last_sessions(1, datetime(2026, 11, 20, 22, tzinfo=UTC))[0]


def test_day_quality_counts_every_broken_bar(pg_conn, settings):
    session = _session()
    pg_conn.execute("SELECT market.ensure_month_partitions(%s, %s)", (session.open, session.close))
    bars = [  # open, high, low, close, volume
        (10, 11, 9, 10.5, 100),  # sane
        (10, 10.1, 9, 10.5, 100),  # high below close
        (10, 11, 10.2, 10.5, 100),  # low above open
        (0.5, 1, 0, 0.5, 100),  # low <= 0: the stricter rule (maintenance did not count it)
        (10, 11, 9, 10.5, -1),  # negative volume: the stricter rule too
    ]
    for minute, (o, h, low, c, v) in enumerate(bars):
        pg_conn.execute(INSERT_BAR, ("AAPL", session.open + timedelta(minutes=minute), o, h, low, c, v))

    quality = {q.symbol: q for q in queries.day_quality(pg_conn, ["MSFT", "AAPL"], session.open, session.close)}
    assert list(quality) == ["AAPL", "MSFT"]
    assert quality["AAPL"] == queries.SymbolDayQuality("AAPL", bars=5, ohlc_errors=4, missing_indicators=5)
    assert quality["MSFT"] == queries.SymbolDayQuality("MSFT", bars=0, ohlc_errors=0, missing_indicators=0)

    # both readers of the rule agree
    own = settings.model_copy(update={"watchlist": ["AAPL"]})
    assert check_session(own, session).ohlc_errors == 4
    summary = {r["check_name"]: r for r in data_quality_summary(own, [session]) if r["symbol"] == "AAPL"}
    assert summary["ohlc_sanity"]["value"] == 4 and not summary["ohlc_sanity"]["ok"]


def test_ingest_error_rate_over_recent_cycles(pg_conn):
    pg_conn.execute("TRUNCATE ops.ingest_cycles")
    now = datetime.now(UTC)
    result = {
        "symbols": 5,
        "failed": ["TSLA", "AMZN"],
        "fetched": 10,
        "sent": 8,
        "resent": 0,
        "dead_letters": 0,
        "duration_s": 1.0,
    }
    queries.record_ingest_cycle(pg_conn, "run-1", now, result)
    queries.record_ingest_cycle(pg_conn, "run-2", now, {**result, "failed": []})
    assert queries.ingest_error_rate(pg_conn, now - timedelta(minutes=15)) == (2, 10)
    assert queries.ingest_error_rate(pg_conn, now + timedelta(minutes=1)) == (0, 0)


def test_pipeline_state_of_exporter_and_health(pg_conn):
    pg_conn.execute("TRUNCATE ops.ingest_cycles")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old, recent = now - timedelta(days=2), now - timedelta(minutes=3)
    pg_conn.execute("SELECT market.ensure_month_partitions(%s, %s)", (old, now))
    for symbol, ts in (("AAPL", old), ("MSFT", recent)):
        pg_conn.execute(INSERT_BAR, (symbol, ts, 10, 11, 9, 10.5, 100))
    pg_conn.execute(
        "INSERT INTO ops.stream_batches (query_name, batch_id, rows_in, bars_upserted, committed_at)"
        " VALUES ('q', 7, 5, 5, now() - interval '1 minute'), ('q', 6, 5, 5, now() - interval '2 minutes')"
    )
    result = {
        "symbols": 4,
        "failed": ["AAPL"],
        "fetched": 1,
        "sent": 1,
        "resent": 0,
        "dead_letters": 0,
        "duration_s": 1,
    }
    queries.record_ingest_cycle(pg_conn, "run-1", now, result)

    state = queries.pipeline_state(pg_conn, "q", ["AAPL", "MSFT", "TSLA"], now=now)
    assert state.last_batch["batch_id"] == 7
    assert state.newest_bars == {"AAPL": old, "MSFT": recent, "TSLA": None}
    assert (state.ingest_failed, state.ingest_attempted) == (1, 4)

    within_a_day = queries.pipeline_state(pg_conn, "q", ["AAPL", "MSFT"], now=now, bars_since=now - timedelta(days=1))
    assert within_a_day.newest_bars == {"AAPL": None, "MSFT": recent}
    assert queries.pipeline_state(pg_conn, "other", [], now=now).last_batch is None
