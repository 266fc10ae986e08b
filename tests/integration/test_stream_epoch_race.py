"""A micro-batch computed on a symbol's old epoch, committed after a backfill moved it, is queued
for repair. Real PostgreSQL; the stream's own operator function and sink, without Spark.

The race: a backfill stores older bars, moves the symbol's epoch (ops.symbol_epochs) and then
reads the stored series to recompute. The operator reads the epoch through a per-worker cache
(refreshed once a second), so a micro-batch may compute on the old state — without the backfilled
history — and its sink transaction may commit after the backfill's read: its indicator rows would
stay wrong (invariant 1) with nothing left to repair them. The sink now compares the epoch each
row was computed on with ops.symbol_epochs (locked against a concurrent bump) and queues the
symbol's earliest row of the batch in ops.repair_queue; the repair then restores TA-Lib exactness.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from stockpipe.storage.postgres import PostgresSink, stored_bars_many
from stockpipe.streaming import state as st
from stockpipe.streaming.backfill import bump_epochs, write_chunks
from stockpipe.streaming.operator import make_update_function
from tests.integration import streamkit as kit

pytestmark = pytest.mark.integration

SYMBOL = "AAPL"
OTHER = "MSFT"  # streamed alongside, never backfilled: never queued
FIRST = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
HORIZON = 60


class BucketState:
    """The slice of pyspark's GroupState the operator uses (exists / get / update)."""

    def __init__(self) -> None:
        self.row: tuple | None = None

    @property
    def exists(self) -> bool:
        return self.row is not None

    @property
    def get(self) -> tuple:
        return self.row

    def update(self, row: tuple) -> None:
        self.row = (bytes(row[0]), int(row[1]))


def minute(n: int) -> datetime:
    return FIRST + timedelta(minutes=n)


def close_at(symbol: str, n: int) -> float:
    return (100.0 if symbol == SYMBOL else 50.0) + 5 * np.sin(n / 7) + n / 20


def records(symbols: list[str], minutes: range, first_offset: int) -> pd.DataFrame:
    """Parsed records (parse.PARSED_COLUMNS) of one bucket, as Kafka partition 0 delivered them."""
    rows = []
    for symbol in symbols:
        for n in minutes:
            ts_ms = int(minute(n).timestamp() * 1000)
            close = close_at(symbol, n)
            rows.append(
                {
                    "gkey": "~b0", "symbol": symbol, "ts_ms": ts_ms, "open": close, "high": close + 1,
                    "low": close - 1, "close": close, "volume": 1000.0 + n, "vwap": close, "trades": 3,
                    "source": "simulator", "fetched_us": ts_ms * 1000 + 5, "error": None, "topic": "t",
                    "kpartition": 0, "koffset": first_offset + len(rows), "raw_key": None, "raw_value": None,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def store_older_bars(conn, minutes: range) -> None:
    """What the backfill DAG stores before it recomputes: bars older than the stream's first."""
    for n in minutes:
        close = close_at(SYMBOL, n)
        conn.execute(
            "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, vwap, trades, source, "
            "fetched_at, written_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 3, 'polygon', %s, clock_timestamp())",
            (SYMBOL, minute(n), close, close + 1, close - 1, close, 1000.0 + n, close, minute(n + 1)),
        )


def open_repairs(conn) -> list[tuple[str, datetime]]:
    return conn.execute(
        "SELECT symbol, ts FROM ops.repair_queue WHERE repaired_at IS NULL ORDER BY symbol, ts"
    ).fetchall()


def test_a_batch_on_a_moved_epoch_is_queued_and_repaired(base_settings, pg_conn):
    pg_conn.execute("SELECT market.ensure_month_partitions(%s, %s)", (minute(0), minute(200)))
    epoch_seen = {SYMBOL: 0, OTHER: 0}  # the worker's cached copy of ops.symbol_epochs

    def seeder(symbols: list[str]) -> dict[str, pd.DataFrame]:
        return stored_bars_many(pg_conn, symbols)

    update = make_update_function(HORIZON, seeder, epoch_seen.__getitem__, buckets=16)
    bucket = BucketState()
    sink = PostgresSink(base_settings)

    def micro_batch(batch_id: int, minutes: range, offset: int) -> None:
        batch = records([SYMBOL, OTHER], minutes, offset)
        (out,) = update(("~b0",), iter([batch]), bucket)
        rows = out[out["kind"].isin([st.KIND_BAR, st.KIND_LATE])]
        offsets = {("t", 0): (offset, offset + len(batch) - 1)}
        assert sink.write(rows, query_name="q", batch_id=batch_id, offsets=offsets)

    try:
        micro_batch(0, range(40, 80), 0)
        assert open_repairs(pg_conn) == []  # no epoch moved

        # The backfill: older history stored, the epoch moved — while the worker's cache still says 0.
        store_older_bars(pg_conn, range(0, 40))
        bump_epochs(base_settings, [SYMBOL])
        micro_batch(1, range(80, 85), 80)
        # Computed without minutes 0-39 and committed after the epoch moved: queued at its first bar.
        assert open_repairs(pg_conn) == [(SYMBOL, minute(80))]
        # The scenario is real: those rows are not TA-Lib's over the stored series.
        bars = kit.stored(pg_conn).query("symbol == @SYMBOL").reset_index(drop=True)
        batch_rows = (bars["ts"] >= minute(80)).to_numpy()
        expected = kit.talib_indicators(bars)["ema_12"][batch_rows]
        assert not np.allclose(bars["ema_12"].to_numpy()[batch_rows], expected, rtol=1e-9, atol=0)

        # The cache catches up: the state is rebuilt from the stored series, nothing more is queued.
        epoch_seen[SYMBOL] = 1
        micro_batch(2, range(85, 90), 90)
        assert open_repairs(pg_conn) == [(SYMBOL, minute(80))]

        # The repair (what the backfill's tasks run, from the symbol's earliest open entry... here
        # from its first bar, as the backfill of minutes 0-39 does) restores invariant 1.
        far = int(datetime(9999, 1, 1, tzinfo=UTC).timestamp() * 1000)
        write_chunks(base_settings, [[SYMBOL]], int(minute(0).timestamp() * 1000), far)
        kit.assert_talib_exact(kit.stored(pg_conn))
    finally:
        sink.close()


def test_rows_without_an_epoch_queue_nothing(base_settings, pg_conn):
    """A stream without an epoch reader (no seeding from PostgreSQL) does not track epochs: a moved
    epoch is no reason to queue its rows."""
    pg_conn.execute("SELECT market.ensure_month_partitions(%s, %s)", (minute(0), minute(200)))
    bump_epochs(base_settings, [SYMBOL])
    update = make_update_function(HORIZON, None, None, buckets=16)
    sink = PostgresSink(base_settings)
    try:
        batch = records([SYMBOL], range(0, 10), 0)
        (out,) = update(("~b0",), iter([batch]), BucketState())
        assert out["epoch"].isna().all()
        assert sink.write(out[out["kind"] == st.KIND_BAR], query_name="q", batch_id=0, offsets={("t", 0): (0, 9)})
        assert open_repairs(pg_conn) == []
    finally:
        sink.close()
