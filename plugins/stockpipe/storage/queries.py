"""Named queries of ``market.*`` and ``ops.*``, one function per question, for every reader and
writer outside the stream's sink (:mod:`stockpipe.storage.postgres`): the Airflow tasks (backfill,
maintenance, ingest), the health checks, the exporter and the dashboard.

Each function takes an open ``psycopg`` connection (the caller picks the role and owns the
transaction: :func:`stockpipe.clients.pg_connect`, or a pool's connection) and returns plain values;
the dashboard's reads return pandas frames, their columns named by the query.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from stockpipe.indicators import INDICATOR_COLUMNS

BAR_COLUMNS = ("open", "high", "low", "close", "volume", "vwap")
HOT_TABLES = ("market.bars_1m", "market.indicators_1m", "ops.stream_batches", "ops.ingest_cycles", "ops.health_checks")
ROLLUPS = ("market.bars_5m", "market.bars_1h", "market.bars_1d")
DEFAULT_PARTITIONS = ("bars_1m_default", "indicators_1m_default")


def frame(conn: psycopg.Connection, query: str, params: Any = None) -> pd.DataFrame:
    """The rows of ``query`` as a frame (columns named by the query, also when there is no row)."""
    cur = conn.execute(query, params)
    return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description or []])


# --- data quality of a session -------------------------------------------------------------------
@dataclass(frozen=True)
class SymbolDayQuality:
    symbol: str
    bars: int
    ohlc_errors: int  # high below open/close, low above them, low <= 0 or volume < 0
    missing_indicators: int  # bars without an indicator row


def day_quality(
    conn: psycopg.Connection, symbols: Sequence[str], start: datetime, end: datetime
) -> list[SymbolDayQuality]:
    """Per symbol (every one of ``symbols``, sorted), its bars in ``[start, end)``: how many, how many
    break OHLC sanity, how many have no indicator row. The backfill's check and the maintenance's
    data-quality summary both judge a session by this."""
    rows = conn.execute(
        """
        SELECT s.symbol,
               count(b.ts),
               count(*) FILTER (WHERE b.high < greatest(b.open, b.close) OR b.low > least(b.open, b.close)
                                OR b.low <= 0 OR b.volume < 0),
               count(b.ts) FILTER (WHERE i.ts IS NULL)
        FROM unnest(%s::text[]) AS s(symbol)
        LEFT JOIN market.bars_1m b ON b.symbol = s.symbol AND b.ts >= %s AND b.ts < %s
        LEFT JOIN market.indicators_1m i ON i.symbol = b.symbol AND i.ts = b.ts
        GROUP BY s.symbol ORDER BY s.symbol
        """,
        (list(symbols), start, end),
    ).fetchall()
    return [SymbolDayQuality(*row) for row in rows]


def record_data_quality(conn: psycopg.Connection, results: Iterable[dict[str, Any]]) -> None:
    """Append check results (check_name, symbol, session_date, value, ok, detail) to ``ops.data_quality``."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ops.data_quality (check_name, symbol, session_date, value, ok, detail)"
            " VALUES (%(check_name)s, %(symbol)s, %(session_date)s, %(value)s, %(ok)s, %(detail)s)",
            list(results),
        )


def default_partition_rows(conn: psycopg.Connection, table: str) -> int:
    """Rows parked in a default partition (``bars_1m_default``, ``indicators_1m_default``)."""
    if table not in DEFAULT_PARTITIONS:
        raise ValueError(f"not a default partition: {table}")
    (rows,) = conn.execute(sql.SQL("SELECT count(*) FROM market.{}").format(sql.Identifier(table))).fetchone()
    return rows


# --- pipeline state ------------------------------------------------------------------------------
def latest_stream_batch(conn: psycopg.Connection, query_name: str) -> dict[str, Any] | None:
    """The streaming query's newest micro-batch in ``ops.stream_batches`` (None: none yet)."""
    cur = conn.execute(
        "SELECT batch_id, committed_at, rows_in, input_rows_per_s, processing_ms, latency_p50_ms,"
        " latency_p95_ms, latency_max_ms FROM ops.stream_batches WHERE query_name = %s"
        " ORDER BY committed_at DESC LIMIT 1",
        (query_name,),
    )
    row = cur.fetchone()
    return None if row is None else dict(zip([d.name for d in cur.description], row, strict=True))


def newest_bar_times(
    conn: psycopg.Connection, symbols: Sequence[str], since: datetime | None = None
) -> dict[str, datetime | None]:
    """Start of each symbol's newest stored bar (at or after ``since``; None: no such bar).
    One backward index scan per symbol on (symbol, ts)."""
    rows = conn.execute(
        "SELECT s.symbol, (SELECT max(ts) FROM market.bars_1m b WHERE b.symbol = s.symbol"
        " AND b.ts >= coalesce(%s, '-infinity'::timestamptz)) FROM unnest(%s::text[]) AS s(symbol)",
        (since, list(symbols)),
    ).fetchall()
    return dict(rows)


#: how far back the ingest error rate looks (the health check and the exporter alike)
INGEST_ERROR_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class PipelineState:
    """What the exporter and the health checks judge the running pipeline by."""

    last_batch: dict[str, Any] | None  # :func:`latest_stream_batch`
    newest_bars: dict[str, datetime | None]  # :func:`newest_bar_times`
    ingest_failed: int  # :func:`ingest_error_rate` over :data:`INGEST_ERROR_WINDOW`
    ingest_attempted: int
    last_cycle: datetime | None = None  # :func:`last_ingest_cycle`: the producer's newest finished cycle


def pipeline_state(
    conn: psycopg.Connection,
    query_name: str,
    symbols: Sequence[str],
    *,
    now: datetime,
    bars_since: datetime | None = None,
) -> PipelineState:
    """The stream's newest micro-batch, each symbol's newest bar (at or after ``bars_since``), the
    producer's failed/attempted symbol fetches over the last :data:`INGEST_ERROR_WINDOW` and when its
    last cycle finished."""
    failed, attempted = ingest_error_rate(conn, now - INGEST_ERROR_WINDOW)
    return PipelineState(
        latest_stream_batch(conn, query_name),
        newest_bar_times(conn, symbols, bars_since),
        failed,
        attempted,
        last_ingest_cycle(conn),
    )


def last_ingest_cycle(conn: psycopg.Connection) -> datetime | None:
    """When the producer's newest cycle (any mode: ``ops.ingest_cycles``) finished; None: never."""
    return conn.execute("SELECT max(finished_at) FROM ops.ingest_cycles").fetchone()[0]


def recent_ingest_cycles(conn: psycopg.Connection, limit: int = 30) -> pd.DataFrame:
    """The producer's newest cycles, newest first (the dashboard's Pipeline page)."""
    return frame(
        conn,
        """SELECT finished_at, run_id, interval_start, symbols, bars_fetched, bars_sent, dead_letters,
                  failed_symbols, duration_s
           FROM ops.ingest_cycles ORDER BY finished_at DESC LIMIT %s""",
        (limit,),
    )


def ingest_error_rate(conn: psycopg.Connection, since: datetime) -> tuple[int, int]:
    """(failed, attempted) symbol fetches of market_ingest's cycles finished since ``since``."""
    failed, attempted = conn.execute(
        "SELECT coalesce(sum(cardinality(failed_symbols)), 0), coalesce(sum(symbols), 0)"
        " FROM ops.ingest_cycles WHERE finished_at >= %s",
        (since,),
    ).fetchone()
    return int(failed), int(attempted)


def record_ingest_cycle(
    conn: psycopg.Connection, run_id: str, interval_start: datetime, result: dict[str, Any]
) -> None:
    """One producer cycle in ``ops.ingest_cycles`` (``result``: :func:`stockpipe.producer.cycles.cycle_result`)
    — market_ingest's runs and the long-running loop's cycles alike."""
    conn.execute(
        "INSERT INTO ops.ingest_cycles (run_id, interval_start, symbols, failed_symbols, bars_fetched,"
        " bars_sent, dead_letters, duration_s) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            run_id,
            interval_start,
            result["symbols"],
            result["failed"],
            result["fetched"],
            result["sent"] + result.get("resent", 0),
            result["dead_letters"],
            result["duration_s"],
        ),
    )


def last_health_value(conn: psycopg.Connection, check_name: str) -> float | None:
    """The value of the newest ``ops.health_checks`` row of ``check_name``."""
    row = conn.execute(
        "SELECT value FROM ops.health_checks WHERE check_name = %s ORDER BY checked_at DESC LIMIT 1", (check_name,)
    ).fetchone()
    return None if row is None else row[0]


def record_health_checks(conn: psycopg.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """(checked_at, check_name, value, threshold, ok, detail) rows into ``ops.health_checks``."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ops.health_checks (checked_at, check_name, value, threshold, ok, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            list(rows),
        )


# --- backfill ------------------------------------------------------------------------------------
_UPSERT_STAGED_BARS = """
INSERT INTO market.bars_1m AS b (symbol, ts, open, high, low, close, volume, vwap, trades, source, fetched_at)
SELECT symbol, ts, open, high, low, close, volume, vwap, trades, source, fetched_at FROM backfill_bars
ON CONFLICT (symbol, ts) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, vwap = excluded.vwap, trades = excluded.trades, source = excluded.source,
    fetched_at = excluded.fetched_at, written_at = clock_timestamp()
WHERE (b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades)
      IS DISTINCT FROM (excluded.open, excluded.high, excluded.low, excluded.close, excluded.volume,
                        excluded.vwap, excluded.trades)
"""


def ensure_month_partitions(conn: psycopg.Connection, start: datetime, end: datetime, months_ahead: int = 0) -> int:
    """Create the monthly partitions of bars and indicators covering ``start`` to ``months_ahead``
    months after ``end``; returns how many were new."""
    (created,) = conn.execute(
        "SELECT market.ensure_month_partitions(%s, %s + make_interval(months => %s))", (start, end, months_ahead)
    ).fetchone()
    return created


def bar_count(conn: psycopg.Connection, symbol: str, start: datetime, end: datetime) -> int:
    (count,) = conn.execute(
        "SELECT count(*) FROM market.bars_1m WHERE symbol = %s AND ts >= %s AND ts < %s", (symbol, start, end)
    ).fetchone()
    return count


def upsert_bars(conn: psycopg.Connection, rows: Iterable[Sequence[Any]]) -> None:
    """COPY (symbol, ts, open, high, low, close, volume, vwap, trades, source, fetched_at) rows into a
    temp table and upsert them into ``market.bars_1m``; a bar is rewritten only when its values
    changed. Runs in one transaction."""
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS backfill_bars (LIKE market.bars_1m INCLUDING DEFAULTS)"
            " ON COMMIT DELETE ROWS"
        )
        with conn.cursor().copy(
            "COPY backfill_bars (symbol, ts, open, high, low, close, volume, vwap, trades, source, fetched_at)"
            " FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(_UPSERT_STAGED_BARS)


def record_backfill_run(conn: psycopg.Connection, run: dict[str, Any]) -> None:
    """Write (or replace) a run's ``ops.backfill_runs`` row (keys: the table's columns)."""
    conn.execute(
        """
        INSERT INTO ops.backfill_runs (run_id, session_date, symbols, bars, expected_bars, gaps, ohlc_errors,
                                       status, detail, started_at, finished_at)
        VALUES (%(run_id)s, %(session_date)s, %(symbols)s, %(bars)s, %(expected_bars)s, %(gaps)s,
                %(ohlc_errors)s, %(status)s, %(detail)s, coalesce(%(started_at)s, now()), now())
        ON CONFLICT (run_id, session_date) DO UPDATE SET
            symbols = excluded.symbols, bars = excluded.bars, expected_bars = excluded.expected_bars,
            gaps = excluded.gaps, ohlc_errors = excluded.ohlc_errors, status = excluded.status,
            detail = excluded.detail, finished_at = excluded.finished_at
        """,
        run,
    )


def session_bar_counts(
    conn: psycopg.Connection, symbols: Sequence[str], bounds: Sequence[tuple[datetime, datetime]]
) -> dict[tuple[str, int], int]:
    """(symbol, i) → stored bars of ``symbol`` in ``bounds[i]`` = [open, close), for every pair."""
    rows = conn.execute(
        """
        SELECT s.symbol, r.i::int - 1, count(b.ts)
        FROM unnest(%s::text[]) AS s(symbol)
        CROSS JOIN unnest(%s::timestamptz[], %s::timestamptz[]) WITH ORDINALITY AS r(open, close, i)
        LEFT JOIN market.bars_1m b ON b.symbol = s.symbol AND b.ts >= r.open AND b.ts < r.close
        GROUP BY 1, 2
        """,
        (list(symbols), [b[0] for b in bounds], [b[1] for b in bounds]),
    ).fetchall()
    return {(symbol, i): count for symbol, i, count in rows}


def queue_repair(conn: psycopg.Connection, symbol: str, ts: datetime, reason: str) -> None:
    """Queue (or re-open) ``(symbol, ts)`` in ``ops.repair_queue``: its indicators and every later
    one's must be recomputed (the backfill stored bars before already computed ones)."""
    conn.execute(
        "INSERT INTO ops.repair_queue AS q (symbol, ts, reason) VALUES (%s, %s, %s) "
        "ON CONFLICT (symbol, ts) DO UPDATE SET reason = excluded.reason, flagged_at = now(), repaired_at = NULL",
        (symbol, ts, reason),
    )


def first_pending_repair(
    conn: psycopg.Connection, symbols: Sequence[str], start: datetime, end: datetime
) -> datetime | None:
    """The earliest bar in ``[start, end)`` the stream queued in ``ops.repair_queue`` and nobody repaired."""
    (first,) = conn.execute(
        "SELECT min(ts) FROM ops.repair_queue WHERE repaired_at IS NULL AND symbol = ANY(%s) AND ts >= %s AND ts < %s",
        (list(symbols), start, end),
    ).fetchone()
    return first


# --- maintenance ---------------------------------------------------------------------------------
def month_partitions(conn: psycopg.Connection) -> list[tuple[str, str, date]]:
    """(partition, parent, month) of every monthly partition ``<parent>_YYYYMM`` of bars and indicators."""
    rows = conn.execute(
        """
        SELECT c.relname, p.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE n.nspname = 'market' AND p.relname IN ('bars_1m', 'indicators_1m')
        """
    ).fetchall()
    found = []
    for child, parent in rows:
        suffix = child.removeprefix(parent + "_")
        if len(suffix) == 6 and suffix.isdigit():
            found.append((child, parent, date(int(suffix[:4]), int(suffix[4:]), 1)))
    return found


def drop_partition(conn: psycopg.Connection, partition: str) -> None:
    conn.execute(sql.SQL("DROP TABLE market.{}").format(sql.Identifier(partition)))


def _existing(conn: psycopg.Connection, names: Iterable[str]) -> list[tuple[str, str]]:
    return [tuple(n.split(".")) for n in names if conn.execute("SELECT to_regclass(%s)", (n,)).fetchone()[0]]


def vacuum_analyze(conn: psycopg.Connection, tables: Iterable[str] = HOT_TABLES) -> list[str]:
    """VACUUM (ANALYZE) those of ``tables`` that exist (needs an autocommit connection)."""
    done = []
    for schema, table in _existing(conn, tables):
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
        done.append(f"{schema}.{table}")
    return done


def refresh_rollups(conn: psycopg.Connection, views: Iterable[str] = ROLLUPS) -> list[str]:
    """REFRESH MATERIALIZED VIEW CONCURRENTLY those of ``views`` that exist (readers keep reading)."""
    done = []
    for schema, view in _existing(conn, views):
        conn.execute(
            sql.SQL("REFRESH MATERIALIZED VIEW CONCURRENTLY {}.{}").format(sql.Identifier(schema), sql.Identifier(view))
        )
        done.append(f"{schema}.{view}")
    return done


# --- the dashboard's reads (read-only role) ------------------------------------------------------
_LATEST_SQL = f"""
SELECT s.symbol, b.ts, {", ".join("b." + c for c in BAR_COLUMNS)}, b.trades,
       {", ".join("i." + c for c in INDICATOR_COLUMNS)}
FROM unnest(%(symbols)s::text[]) AS s(symbol)
CROSS JOIN LATERAL (SELECT * FROM market.bars_1m b WHERE b.symbol = s.symbol ORDER BY b.ts DESC LIMIT 1) b
LEFT JOIN market.indicators_1m i ON i.symbol = b.symbol AND i.ts = b.ts
"""


def latest_bars(conn: psycopg.Connection, symbols: Sequence[str]) -> pd.DataFrame:
    """Each symbol's newest bar and its indicators (symbols without bars are left out)."""
    return frame(conn, _LATEST_SQL, {"symbols": list(symbols)})


def close_before(conn: psycopg.Connection, symbol: str, before: datetime) -> float | None:
    """The symbol's last close before ``before``."""
    row = conn.execute(
        "SELECT close FROM market.bars_1m WHERE symbol = %s AND ts < %s ORDER BY ts DESC LIMIT 1", (symbol, before)
    ).fetchone()
    return None if row is None else float(row[0])


def recent_closes(conn: psycopg.Connection, symbols: Sequence[str], points: int) -> pd.DataFrame:
    """Per symbol, (symbol, ts, close) of the ``points`` minutes up to its newest bar, oldest first."""
    return frame(
        conn,
        """SELECT s.symbol, b.ts, b.close FROM unnest(%(symbols)s::text[]) AS s(symbol)
           CROSS JOIN LATERAL (SELECT ts, close FROM market.bars_1m b WHERE b.symbol = s.symbol
                                 AND b.ts > (SELECT max(ts) FROM market.bars_1m l WHERE l.symbol = s.symbol)
                                            - make_interval(mins => %(points)s)
                               ORDER BY ts DESC LIMIT %(points)s) b
           ORDER BY 1, 2""",
        {"symbols": list(symbols), "points": points},
    )


def has_bars(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM market.bars_1m)").fetchone()[0])


def stored_symbols(conn: psycopg.Connection) -> list[str]:
    """The symbols of ``market.symbols``, sorted."""
    return [row[0] for row in conn.execute("SELECT symbol FROM market.symbols ORDER BY symbol").fetchall()]


def symbol_row(conn: psycopg.Connection, symbol: str) -> pd.DataFrame:
    """The symbol's ``market.symbols`` row (empty frame: not there)."""
    return frame(conn, "SELECT * FROM market.symbols WHERE symbol = %s", (symbol,))


def newest_bar_time(conn: psycopg.Connection, symbol: str) -> datetime | None:
    row = conn.execute("SELECT ts FROM market.bars_1m WHERE symbol = %s ORDER BY ts DESC LIMIT 1", (symbol,)).fetchone()
    return None if row is None else row[0]


def bars_with_indicators(conn: psycopg.Connection, symbol: str, start: datetime) -> pd.DataFrame:
    """The symbol's 1-minute bars from ``start`` on, with their stored indicators."""
    return frame(
        conn,
        f"""SELECT b.ts, {", ".join("b." + c for c in BAR_COLUMNS)},
                   {", ".join("i." + c for c in INDICATOR_COLUMNS)}
            FROM market.bars_1m b LEFT JOIN market.indicators_1m i USING (symbol, ts)
            WHERE b.symbol = %s AND b.ts >= %s ORDER BY b.ts""",
        (symbol, start),
    )


# Buckets read before a range so SMA 50 / MACD are warmed up at its left edge.
WARMUP_BUCKETS = 60
_ROLLUP_SELECT = "open, high, low, close, volume, vwap"
_AGG = """(array_agg(open ORDER BY ts))[1] AS open, max(high) AS high, min(low) AS low,
          (array_agg(close ORDER BY ts DESC))[1] AS close, sum(volume) AS volume,
          sum(vwap * volume) / nullif(sum(volume), 0) AS vwap"""
#: rollup view -> the SQL expression bucketing bars_1m.ts the same way
INTRADAY_ROLLUPS = {
    "market.bars_5m": "date_bin('5 minutes', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00')",
    "market.bars_1h": "date_trunc('hour', ts)",
}


def intraday_rollup(conn: psycopg.Connection, symbol: str, rollup: str, start: datetime) -> pd.DataFrame:
    """Buckets of a 5 m / 1 h rollup from ``start`` (plus :data:`WARMUP_BUCKETS` before it): the
    materialized view up to its last bucket (refreshed by postgres_maintenance), then the buckets
    after that aggregated from bars_1m on the fly, so the result is never staler than bars_1m."""
    bucket = INTRADAY_ROLLUPS[rollup]
    query = f"""
    WITH cut AS (SELECT coalesce(max(ts), '-infinity'::timestamptz) AS ts FROM {rollup} WHERE symbol = %(s)s),
    warm AS (SELECT ts, {_ROLLUP_SELECT} FROM {rollup}
             WHERE symbol = %(s)s AND ts < %(start)s ORDER BY ts DESC LIMIT {WARMUP_BUCKETS}),
    stored AS (SELECT ts, {_ROLLUP_SELECT} FROM {rollup}
               WHERE symbol = %(s)s AND ts >= %(start)s AND ts < (SELECT ts FROM cut)),
    fresh AS (SELECT {bucket} AS ts, {_AGG} FROM market.bars_1m
              WHERE symbol = %(s)s AND ts >= greatest((SELECT ts FROM cut), %(start)s) GROUP BY 1)
    SELECT * FROM warm UNION ALL SELECT * FROM stored UNION ALL SELECT * FROM fresh ORDER BY ts"""
    return frame(conn, query, {"s": symbol, "start": start})


def daily_rollup(conn: psycopg.Connection, symbol: str, start_day: date) -> pd.DataFrame:
    """Daily bars (column ``day``: the New York session date) from ``start_day``, warm-up included,
    ``market.bars_1d`` completed from bars_1m like :func:`intraday_rollup`."""
    query = f"""
    WITH cut AS (SELECT coalesce(max(session_date), '-infinity'::date) AS d FROM market.bars_1d WHERE symbol = %(s)s),
    warm AS (SELECT session_date AS day, {_ROLLUP_SELECT} FROM market.bars_1d
             WHERE symbol = %(s)s AND session_date < %(start)s ORDER BY session_date DESC LIMIT {WARMUP_BUCKETS}),
    stored AS (SELECT session_date AS day, {_ROLLUP_SELECT} FROM market.bars_1d
               WHERE symbol = %(s)s AND session_date >= %(start)s AND session_date < (SELECT d FROM cut)),
    fresh AS (SELECT (ts AT TIME ZONE 'America/New_York')::date AS day, {_AGG} FROM market.bars_1m
              WHERE symbol = %(s)s
                AND ts >= (greatest((SELECT d FROM cut), %(start)s)::timestamp AT TIME ZONE 'America/New_York')
              GROUP BY 1)
    SELECT * FROM warm UNION ALL SELECT * FROM stored UNION ALL SELECT * FROM fresh ORDER BY day"""
    return frame(conn, query, {"s": symbol, "start": start_day})


def stream_batch_buckets(conn: psycopg.Connection, query_name: str, window: timedelta, width_s: int) -> pd.DataFrame:
    """The query's micro-batches of the last ``window``, summed per ``width_s`` seconds: input rows/s,
    bars upserted, dead letters, latency p50 (mean of the batches' p50s) and p95 (max of their p95s)."""
    return frame(
        conn,
        """SELECT date_bin(make_interval(secs => %(w)s), committed_at, TIMESTAMPTZ '2000-01-01') AS ts,
                  count(*) AS batches, sum(rows_in) AS rows_in, sum(bars_upserted) AS bars_upserted,
                  sum(dead_letters) AS dead_letters, sum(rows_in)::float8 / %(w)s AS rows_per_s,
                  avg(latency_p50_ms) AS latency_p50_ms, max(latency_p95_ms) AS latency_p95_ms,
                  avg(processing_ms) AS processing_ms
           FROM ops.stream_batches
           WHERE query_name = %(q)s AND committed_at >= now() - %(window)s
           GROUP BY 1 ORDER BY 1""",
        {"w": width_s, "q": query_name, "window": window},
    )


def stream_batch_summary(conn: psycopg.Connection, query_name: str) -> pd.DataFrame:
    """The newest micro-batch (id, commit time, rows, latency, age) and the dead letters of all batches."""
    return frame(
        conn,
        """SELECT batch_id, committed_at, rows_in, bars_upserted, latency_p50_ms, latency_p95_ms,
                  now() - committed_at AS age,
                  (SELECT coalesce(sum(dead_letters), 0) FROM ops.stream_batches
                   WHERE query_name = %(q)s) AS dead_letters
           FROM ops.stream_batches WHERE query_name = %(q)s ORDER BY committed_at DESC LIMIT 1""",
        {"q": query_name},
    )


def freshness(conn: psycopg.Connection, symbols: Sequence[str]) -> pd.DataFrame:
    """Per symbol: newest stored bar, when it was written, its age now and its source."""
    return frame(
        conn,
        """SELECT s.symbol, b.ts AS last_bar, b.written_at, now() - b.ts AS bar_age, b.source
           FROM unnest(%(symbols)s::text[]) AS s(symbol)
           LEFT JOIN LATERAL (SELECT ts, written_at, source FROM market.bars_1m b WHERE b.symbol = s.symbol
                              ORDER BY ts DESC LIMIT 1) b ON true ORDER BY 1""",
        {"symbols": list(symbols)},
    )


def latest_health_checks(conn: psycopg.Connection) -> pd.DataFrame:
    """The newest result of each stream_health check."""
    return frame(
        conn,
        """SELECT DISTINCT ON (check_name) check_name, checked_at, ok, value, threshold, detail
           FROM ops.health_checks ORDER BY check_name, checked_at DESC""",
    )
