"""Batch recomputation of indicators for given symbols and a time range, through the stream's sink.

The bars are already in ``market.bars_1m`` (the backfill DAG stores what it fetched first, the
stream stores what it consumed). Each symbol's stored series is read **from its first bar** up to
the range's end and run through ``indicators.compute_values`` — the loop of ``compute_frame``, the
same ``SymbolIndicators`` the stream steps — then the rows inside the range are kept.

Why from the first bar: EMA, RSI and MACD are recursive, so their value at any bar depends on every
earlier bar. Seeding from "the last N bars before the range" would be an approximation; TA-Lib over
the stored series (invariant 1) is only matched by the state that saw the whole series. Replaying a
symbol's history costs about half a second per 100,000 bars (a year of minute bars, extended hours
included, is ~100k), once per backfill, in parallel across symbols — cheap next to being exact.

The work is split by *groups of symbols*, not by symbol: the driver counts each symbol's stored
bars (one query), packs the symbols into chunks of at most :data:`MAX_CHUNK_BARS` bars and deals
the chunks to one Spark task per core, balanced by bars. A task opens one
:class:`~stockpipe.storage.postgres.PostgresSink` connection and, per chunk, reads all its
symbols' series with one query, computes them, and writes the rows through the sink (the stream's
sink, which is why streaming a day and backfilling it give the same rows: invariant 2) in one
transaction. Nothing but per-symbol row counts goes back to the driver. A failed task leaves the
chunks it committed (exact rows, the upserts are idempotent) and fails the job before the repair
queue or Redis is touched; running the backfill again completes it.

A symbol's open ``ops.repair_queue`` entries inside the range are marked repaired afterwards, but
only those the recomputation is sure to have included: :func:`open_repairs` reads the open entries
(each with its row version, ``xmin``) in a snapshot taken *before* any task reads a bar, and
:func:`close_repairs` closes exactly those row versions. The sink stores a bar and queues it in one
transaction, so every entry in that snapshot has its bar visible to every later read. An entry
queued (or re-queued: a newer version of the bar, a new row version) after the snapshot stays open
for the next repair, even when its transaction began earlier — which is why the check is the row
version and not ``flagged_at`` (a transaction's start time, not its commit time).
:func:`repair_ranges` turns the open queue into the ranges to backfill (earliest queued bar → now).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import psycopg

from stockpipe.calendar import NEW_YORK
from stockpipe.clients import pg_connect
from stockpipe.config import Settings
from stockpipe.indicators import INDICATOR_COLUMNS, SymbolIndicators, compute_values
from stockpipe.storage.postgres import PostgresSink, stored_bars_frame, symbol_bounds
from stockpipe.storage.redis_latest import LatestWriter
from stockpipe.streaming.state import BAR_VALUE_COLUMNS, KIND_BAR

if TYPE_CHECKING:  # the tasks import this module too; they need no pyspark.sql
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Stored bars a task reads, computes and writes at once (a chunk): ~1.7 KB of memory per bar at the
#: peak (the rows as Python values for the COPY), ~170 MB. A symbol with more bars is a chunk of its own.
MAX_CHUNK_BARS = 100_000


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


def indicator_rows(bars: pd.DataFrame, start_ms: int, end_ms: int) -> pd.DataFrame:
    """Operator-shaped ``bar`` rows for the bars in [start_ms, end_ms) of several symbols' full stored
    series (``bars`` as :func:`~stockpipe.storage.postgres.stored_bars_frame` returns them: ordered
    by symbol, ts). Each symbol starts from a fresh ``SymbolIndicators`` at its first bar."""
    ts_ms = bars["ts_ms"].to_numpy(dtype=np.int64)
    close, vwap, volume = (
        bars[name].to_numpy(dtype=np.float64, na_value=np.nan) for name in ("close", "vwap", "volume")
    )
    values = np.empty((len(bars), len(INDICATOR_COLUMNS)))
    for first, stop in symbol_bounds(bars["symbol"]).values():
        values[first:stop] = compute_values(
            ts_ms[first:stop] * 1000, close[first:stop], vwap[first:stop], volume[first:stop], SymbolIndicators()
        )
    inside = (ts_ms >= start_ms) & (ts_ms < end_ms)
    carried = ("symbol", "ts_ms", "fetched_us", *BAR_VALUE_COLUMNS, "trades", "source")
    out = {name: bars[name].to_numpy()[inside] for name in carried}
    out.update({name: values[inside, j] for j, name in enumerate(INDICATOR_COLUMNS)})
    out["kind"] = np.full(int(inside.sum()), KIND_BAR, dtype=object)
    out["bar_changed"] = np.zeros(len(out["kind"]), dtype=bool)  # the stored bars are the input
    return pd.DataFrame(out)


def plan_tasks(bars_per_symbol: dict[str, int], tasks: int, max_bars: int = MAX_CHUNK_BARS) -> list[list[list[str]]]:
    """Symbols → at most ``tasks`` lists of chunks (symbol lists), balanced by stored bars.

    Chunks hold about ``total / tasks`` bars and never more than ``max_bars`` (unless one symbol
    has more), so a task's memory does not grow with the backfill; the heaviest chunk goes first to
    the least loaded task."""
    if not bars_per_symbol:
        return []
    target = max(1, min(max_bars, math.ceil(sum(bars_per_symbol.values()) / tasks)))
    chunks: list[list[str]] = [[]]
    size = 0
    for symbol, bars in bars_per_symbol.items():
        if chunks[-1] and size + bars > target:
            chunks.append([])
            size = 0
        chunks[-1].append(symbol)
        size += bars
    weights = [sum(bars_per_symbol[s] for s in chunk) for chunk in chunks]
    plan: list[list[list[str]]] = [[] for _ in range(min(tasks, len(chunks)))]
    load = [0] * len(plan)
    for i in sorted(range(len(chunks)), key=weights.__getitem__, reverse=True):
        lightest = load.index(min(load))
        plan[lightest].append(chunks[i])
        load[lightest] += weights[i]
    return plan


def write_chunks(settings: Settings, chunks: list[list[str]], start_ms: int, end_ms: int) -> dict[str, int]:
    """One task's work: per chunk, one query for its symbols' series, their rows, one sink write.

    Returns symbol → rows written."""
    # ts < end: the stored-bars query takes an inclusive bound, so ask for the last microsecond before it.
    until = datetime.fromtimestamp(end_ms / 1000, UTC) - timedelta(microseconds=1)
    written: dict[str, int] = {}
    sink = PostgresSink(settings)
    try:
        conn = sink.connection()
        for chunk in chunks:
            with conn.transaction():
                bars = stored_bars_frame(conn, chunk, until=until)
            rows = indicator_rows(bars, start_ms, end_ms)
            sink.write(rows)
            written.update((symbol, int(n)) for symbol, n in rows["symbol"].value_counts().items())
    finally:
        sink.close()
    return written


def _run_tasks(
    settings: Settings, start_ms: int, end_ms: int, tasks: Iterable[list[list[str]]]
) -> Iterator[tuple[str, int]]:
    for chunks in tasks:
        yield from write_chunks(settings, chunks, start_ms, end_ms).items()


def stored_bar_counts(settings: Settings, symbols: list[str], start: datetime, end: datetime) -> dict[str, int]:
    """symbol → its stored bars before ``end``, for the symbols with bars in [start, end).

    Also creates the monthly partitions those bars' indicators go to, once, before the tasks write
    in parallel (two tasks creating the same partition would collide)."""
    with pg_connect(settings, "writer", connect_timeout=10, autocommit=True) as conn:
        records = conn.execute(
            "SELECT symbol, count(*), min(ts) FILTER (WHERE ts >= %(start)s), max(ts) FROM market.bars_1m "
            "WHERE symbol = ANY(%(symbols)s) AND ts < %(end)s GROUP BY symbol HAVING max(ts) >= %(start)s "
            "ORDER BY symbol",
            {"symbols": symbols, "start": start, "end": end},
        ).fetchall()
        if records:
            first, last = min(r[2] for r in records), max(r[3] for r in records)
            conn.execute("SELECT market.ensure_month_partitions(%s, %s)", (first, last))
    return {symbol: bars for symbol, bars, _, _ in records}


def write_indicators(
    spark: SparkSession, settings: Settings, symbols: list[str], start: datetime, end: datetime
) -> dict[str, int]:
    """Recompute and upsert the indicator rows of ``symbols`` in [start, end) in Spark tasks (one
    per core, each a group of symbols); symbol → rows written."""
    plan = plan_tasks(stored_bar_counts(settings, symbols, start, end), spark.sparkContext.defaultParallelism)
    if not plan:
        return {}
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    # Plain Python partitions, one task each: only symbol counts come back, so no DataFrame and no
    # Arrow (mapInPandas costs ~2 s more on a cold session for the same work: Arrow, pandas workers).
    tasks = spark.sparkContext.parallelize(plan, len(plan))
    return dict(tasks.mapPartitions(partial(_run_tasks, settings, start_ms, end_ms)).collect())


def backfill(
    spark: SparkSession, settings: Settings, symbols: list[str], start: datetime, end: datetime
) -> BackfillResult:
    """Recompute and upsert the indicators of ``symbols`` from ``start`` on; update Redis.

    The bars of [start, end) may be new to the stored series (a backfill fills history the stream
    never saw), and EMA, RSI and MACD depend on every earlier bar: so the indicators of every later
    stored bar are rewritten too, and the symbols' epochs move first, so the streaming job rebuilds
    its state from the stored series (see streaming.operator); a micro-batch computed on the old
    epoch that commits after the bump is queued for repair by the stream's sink (storage.postgres).
    """
    began = time.monotonic()
    bump_epochs(settings, symbols)
    queued = open_repairs(settings, symbols, start, end)  # before the recomputation reads any bar
    written = write_indicators(spark, settings, symbols, start, FAR_FUTURE)
    sink = PostgresSink(settings)
    try:
        latest = sink.latest_rows(sorted(written))
        conn = sink.connection()
        with conn.transaction():
            repaired = close_repairs(conn, queued)
    finally:
        sink.close()
    writer = LatestWriter(settings)
    try:
        writer.write(latest)
    finally:
        writer.close()
    outcome = BackfillResult(symbols, start, end, sum(written.values()), repaired, time.monotonic() - began)
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
    with pg_connect(settings, "writer", connect_timeout=10, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ops.symbol_epochs (symbol, epoch) SELECT unnest(%s::text[]), 1 "
            "ON CONFLICT (symbol) DO UPDATE SET epoch = ops.symbol_epochs.epoch + 1, changed_at = now()",
            (symbols,),
        )


@dataclass(frozen=True)
class QueuedRepair:
    """One open ``ops.repair_queue`` entry as a snapshot saw it; ``version`` is its row's ``xmin``."""

    symbol: str
    ts: datetime
    version: str


def open_repairs(settings: Settings, symbols: list[str], start: datetime, end: datetime) -> list[QueuedRepair]:
    """The open repair entries of ``symbols`` in [start, end), read in one committed snapshot.

    Call it before the recomputation reads the stored bars: each entry's bar (stored in the same
    transaction as the entry) is then visible to that read, so :func:`close_repairs` may close it."""
    with pg_connect(settings, "writer", connect_timeout=10, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT symbol, ts, xmin::text FROM ops.repair_queue "
            "WHERE symbol = ANY(%s) AND ts >= %s AND ts < %s AND repaired_at IS NULL",
            (symbols, start, end),
        ).fetchall()
    return [QueuedRepair(*row) for row in rows]


def close_repairs(conn: psycopg.Connection, queued: list[QueuedRepair]) -> int:
    """Mark repaired the entries of ``queued`` that are still the row version :func:`open_repairs`
    read; an entry queued again since (a newer bar) is a new row version and stays open."""
    if not queued:
        return 0
    return conn.execute(
        "UPDATE ops.repair_queue AS q SET repaired_at = now() "
        "FROM unnest(%s::text[], %s::timestamptz[], %s::text[]) AS r(symbol, ts, version) "
        "WHERE q.symbol = r.symbol AND q.ts = r.ts AND q.xmin = r.version::xid AND q.repaired_at IS NULL",
        ([q.symbol for q in queued], [q.ts for q in queued], [q.version for q in queued]),
    ).rowcount


def repair_ranges(settings: Settings) -> dict[str, datetime]:
    """Symbol → earliest open repair; backfilling from there to now closes the queue."""
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT symbol, min(ts) FROM ops.repair_queue WHERE repaired_at IS NULL GROUP BY symbol"
        ).fetchall()
    return dict(rows)
