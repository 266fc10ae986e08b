"""A repair closes only the ``ops.repair_queue`` entries its recomputation included. Real PostgreSQL.

Late bars keep arriving while a repair runs. The test runs :func:`backfill` with the recomputation
of one Spark task done in-process (``write_chunks``, the very function the tasks run) and, right
after it read the stored bars, lets the stream's sink queue more: a new late bar, a newer version of
a bar already queued, and the commit of a sink transaction that had begun before the repair.
Those entries must stay open for the next repair; only the one queued before the read is closed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from stockpipe.streaming import backfill as backfill_module
from stockpipe.streaming.backfill import backfill, repair_ranges, stored_bar_counts, write_chunks

pytestmark = pytest.mark.integration

SYMBOL = "AAPL"
FIRST = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
FETCHED = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
START, END = FIRST, FIRST + timedelta(hours=2)
REASON = "arrived beyond the stream's recompute horizon"


def minute(n: int) -> datetime:
    return FIRST + timedelta(minutes=n)


def store_late_bar(conn: psycopg.Connection, ts: datetime, close: float, fetched_at: datetime) -> None:
    """What the sink does with a bar beyond the horizon: upsert it (newer fetched_at wins) and queue
    it, in one transaction (on an autocommit connection) or in the caller's open transaction."""
    values = {"s": SYMBOL, "ts": ts, "c": close, "f": fetched_at, "r": REASON}
    statements = (
        "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, vwap, trades, source, "
        "fetched_at, written_at) VALUES (%(s)s, %(ts)s, %(c)s, %(c)s, %(c)s, %(c)s, 1000, %(c)s, 10, 'simulator', "
        "%(f)s, clock_timestamp()) ON CONFLICT (symbol, ts) DO UPDATE SET open = excluded.open, "
        "high = excluded.high, low = excluded.low, close = excluded.close, vwap = excluded.vwap, "
        "fetched_at = excluded.fetched_at, written_at = excluded.written_at "
        "WHERE excluded.fetched_at > market.bars_1m.fetched_at",
        "INSERT INTO ops.repair_queue AS q (symbol, ts, reason) VALUES (%(s)s, %(ts)s, %(r)s) "
        "ON CONFLICT (symbol, ts) DO UPDATE SET reason = excluded.reason, flagged_at = now(), repaired_at = NULL",
    )
    if conn.autocommit:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement, values)
    else:  # left open: the caller commits
        for statement in statements:
            conn.execute(statement, values)


def open_entries(conn: psycopg.Connection) -> list[datetime]:
    rows = conn.execute("SELECT ts FROM ops.repair_queue WHERE repaired_at IS NULL ORDER BY ts").fetchall()
    return [ts for (ts,) in rows]


@pytest.fixture
def stored(settings, pg_conn):
    """An hour of stored bars, two of them queued for repair by earlier micro-batches."""
    pg_conn.execute("SELECT market.ensure_month_partitions(%s, %s)", (START, END))
    for n in range(60):
        store_late_bar(pg_conn, minute(n), 100 + n / 10, FETCHED)
    pg_conn.execute("DELETE FROM ops.repair_queue")
    store_late_bar(pg_conn, minute(10), 101.5, FETCHED + timedelta(minutes=1))
    store_late_bar(pg_conn, minute(5), 100.9, FETCHED + timedelta(minutes=1))
    return settings


def test_entries_queued_after_the_recomputation_read_stay_open(stored, pg_conn, monkeypatch):
    # A sink transaction that began before the repair (its flagged_at = now() is older than the
    # repair's read) and commits only after the read: its bar was not part of the recomputation.
    slow_batch = psycopg.connect(stored.pg_dsn("writer"))
    store_late_bar(slow_batch, minute(70), 107.0, FETCHED + timedelta(minutes=2))

    def recompute_then_more_late_bars(spark, settings, symbols, start, end):
        counts = stored_bar_counts(settings, symbols, start, end)
        written = write_chunks(settings, [list(counts)], int(start.timestamp() * 1000), int(end.timestamp() * 1000))
        # ...the read is done; the stream keeps storing late bars:
        store_late_bar(pg_conn, minute(20), 103.3, FETCHED + timedelta(minutes=3))  # a new entry
        store_late_bar(pg_conn, minute(5), 99.9, FETCHED + timedelta(minutes=3))  # a newer version, queued again
        slow_batch.commit()
        return written

    monkeypatch.setattr(backfill_module, "write_indicators", recompute_then_more_late_bars)
    try:
        result = backfill(None, stored, [SYMBOL], START, END)
    finally:
        slow_batch.close()

    assert result.repaired == 1  # minute 10: queued before the read, included in it
    assert open_entries(pg_conn) == [minute(5), minute(20), minute(70)]
    assert repair_ranges(stored) == {SYMBOL: minute(5)}  # the next repair starts there


def test_a_repair_closes_what_it_read(stored, pg_conn):
    with psycopg.connect(stored.pg_dsn("writer")) as conn:
        queued = backfill_module.open_repairs(stored, [SYMBOL], START, END)
        assert sorted(q.ts for q in queued) == [minute(5), minute(10)]
        assert backfill_module.close_repairs(conn, queued) == 2
        conn.commit()
        assert backfill_module.close_repairs(conn, queued) == 0  # already closed
        assert backfill_module.close_repairs(conn, []) == 0
    assert open_entries(pg_conn) == []
