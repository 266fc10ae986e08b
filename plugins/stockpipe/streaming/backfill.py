"""Batch recomputation of indicators for given symbols and a time range, through the stream's sink.

The bars are already in ``market.bars_1m`` (the backfill DAG stores what it fetched first, the
stream stores what it consumed). For each symbol, a Spark task reads its stored series **from its
first bar** up to the range's end and runs it through ``indicators.compute_frame`` — the same
``SymbolIndicators`` the stream steps — then keeps the rows inside the range.

Why from the first bar: EMA, RSI and MACD are recursive, so their value at any bar depends on every
earlier bar. Seeding from "the last N bars before the range" would be an approximation; TA-Lib over
the stored series (invariant 1) is only matched by the state that saw the whole series. Replaying a
symbol's history costs about a second per 100,000 bars (a year of minute bars, extended hours
included, is ~100k), once per backfill, in parallel across symbols — cheap next to being exact.
The rows are then written by :class:`~stockpipe.storage.postgres.PostgresSink`, the stream's sink,
which is why streaming a day and backfilling it give the same rows (invariant 2).

A symbol's open ``ops.repair_queue`` entries inside the range are marked repaired afterwards;
:func:`repair_ranges` turns the open queue into the ranges to backfill (earliest queued bar → now).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import psycopg
from pyspark.sql import SparkSession

from stockpipe.config import Settings
from stockpipe.indicators import INDICATOR_COLUMNS, compute_frame
from stockpipe.storage.postgres import PostgresSink, stored_bars
from stockpipe.storage.redis_latest import LatestWriter
from stockpipe.streaming.operator import OUTPUT_COLUMNS, OUTPUT_SCHEMA
from stockpipe.streaming.state import KIND_BAR

log = logging.getLogger(__name__)
NEW_YORK = ZoneInfo("America/New_York")


@dataclass
class BackfillResult:
    symbols: list[str]
    start: datetime
    end: datetime
    rows: int
    repaired: int
    seconds: float


def session_range(first: date, last: date) -> tuple[datetime, datetime]:
    """[first 00:00, last+1 00:00) New York time, in UTC: whole sessions, extended hours included."""
    start = datetime(first.year, first.month, first.day, tzinfo=NEW_YORK)
    following = last + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=NEW_YORK)
    return start.astimezone(UTC), end.astimezone(UTC)


def symbol_indicators(bars: pd.DataFrame, start_ms: int, end_ms: int) -> pd.DataFrame:
    """Operator-shaped ``bar`` rows for the bars in [start_ms, end_ms) of one symbol's full series."""
    frame = bars.assign(ts=pd.to_datetime(bars["ts_ms"].to_numpy(dtype=np.int64), unit="ms", utc=True))
    computed, _ = compute_frame(frame)
    inside = computed[(computed["ts_ms"] >= start_ms) & (computed["ts_ms"] < end_ms)]
    out = inside[["ts_ms", "fetched_us", "open", "high", "low", "close", "volume", "vwap", *INDICATOR_COLUMNS]].copy()
    out["kind"] = KIND_BAR
    out["bar_changed"] = False  # the stored bars are the input; only indicators are written
    return out


def _compute_partition(dsn: str, start_ms: int, end_ms: int):
    def compute(key: tuple, symbols: pd.DataFrame) -> pd.DataFrame:
        symbol = str(key[0])
        end = datetime.fromtimestamp(end_ms / 1000, UTC)
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            # ts < end: stored_bars takes an inclusive bound, so ask for the last microsecond before it.
            bars = stored_bars(conn, symbol, until=end - timedelta(microseconds=1))
        out = symbol_indicators(bars, start_ms, end_ms)
        out["symbol"] = symbol
        for name in OUTPUT_COLUMNS:
            if name not in out:
                out[name] = None
        return out[OUTPUT_COLUMNS]

    return compute


def compute_indicators(
    spark: SparkSession, settings: Settings, symbols: list[str], start: datetime, end: datetime
) -> pd.DataFrame:
    """The rows a backfill of ``symbols`` over [start, end) writes (one Spark task per symbol)."""
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    keys = spark.createDataFrame([(s,) for s in symbols], "symbol string").repartition(
        min(len(symbols), settings.spark_shuffle_partitions), "symbol"
    )
    rows = keys.groupBy("symbol").applyInPandas(
        _compute_partition(settings.pg_dsn("writer"), start_ms, end_ms), schema=OUTPUT_SCHEMA
    )
    return rows.toPandas()


def backfill(
    spark: SparkSession, settings: Settings, symbols: list[str], start: datetime, end: datetime
) -> BackfillResult:
    """Recompute and upsert the indicators of ``symbols`` from ``start`` on; update Redis.

    The bars of [start, end) may be new to the stored series (a backfill fills history the stream
    never saw), and EMA, RSI and MACD depend on every earlier bar: so the indicators of every later
    stored bar are rewritten too, and the symbols' epochs move first, so the streaming job rebuilds
    its state from the stored series before it writes another row (see streaming.operator).
    """
    began = time.monotonic()
    bump_epochs(settings, symbols)
    frame = compute_indicators(spark, settings, symbols, start, FAR_FUTURE)
    sink = PostgresSink(settings)
    try:
        result = sink.write(frame)
        conn = sink.connection()
        with conn.transaction():
            repaired = conn.execute(
                "UPDATE ops.repair_queue SET repaired_at = now() "
                "WHERE symbol = ANY(%s) AND ts >= %s AND ts < %s AND repaired_at IS NULL",
                (symbols, start, end),
            ).rowcount
    finally:
        sink.close()
    latest = LatestWriter(settings)
    try:
        latest.write(result.latest if result else [])
    finally:
        latest.close()
    outcome = BackfillResult(symbols, start, end, len(frame), repaired, time.monotonic() - began)
    log.info(
        "backfill %s %s..%s: %s indicator rows, %s repairs closed, %.1f s",
        ",".join(symbols),
        start.isoformat(),
        end.isoformat(),
        outcome.rows,
        repaired,
        outcome.seconds,
    )
    return outcome


FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def bump_epochs(settings: Settings, symbols: list[str]) -> None:
    with psycopg.connect(settings.pg_dsn("writer"), connect_timeout=10, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ops.symbol_epochs (symbol, epoch) SELECT unnest(%s::text[]), 1 "
            "ON CONFLICT (symbol) DO UPDATE SET epoch = ops.symbol_epochs.epoch + 1, changed_at = now()",
            (symbols,),
        )


def repair_ranges(settings: Settings) -> dict[str, datetime]:
    """Symbol → earliest open repair; backfilling from there to now closes the queue."""
    with psycopg.connect(settings.pg_dsn("writer"), connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT symbol, min(ts) FROM ops.repair_queue WHERE repaired_at IS NULL GROUP BY symbol"
        ).fetchall()
    return dict(rows)
