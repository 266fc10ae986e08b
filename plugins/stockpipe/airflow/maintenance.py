"""postgres_maintenance's tasks: partitions ahead, retention, VACUUM (ANALYZE), rollup refresh and a
data-quality summary in ``ops.data_quality``. Each is idempotent and safe to rerun."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from stockpipe.calendar import Session
from stockpipe.config import Settings

log = logging.getLogger("stockpipe.airflow.maintenance")

HOT_TABLES = ("market.bars_1m", "market.indicators_1m", "ops.stream_batches", "ops.ingest_cycles", "ops.health_checks")
ROLLUPS = ("market.bars_5m", "market.bars_1h", "market.bars_1d")


def _connect(settings: Settings, **kwargs: Any) -> psycopg.Connection:
    return psycopg.connect(settings.pg_dsn("writer"), connect_timeout=10, **kwargs)


def ensure_partitions(settings: Settings, now: datetime, months_ahead: int = 2) -> int:
    """Create the monthly partitions from this month to ``months_ahead`` ahead; returns how many were new."""
    with _connect(settings) as conn:
        (created,) = conn.execute(
            "SELECT market.ensure_month_partitions(%s, %s + make_interval(months => %s))", (now, now, months_ahead)
        ).fetchone()
    log.info("partitions: %d created", created)
    return created


def _month_partitions(conn: psycopg.Connection) -> list[tuple[str, str, date]]:
    """(schema.table, parent, month) of every monthly partition named ``<parent>_YYYYMM``."""
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


def apply_retention(settings: Settings, now: datetime, retention_days: int | None = None) -> list[str]:
    """Drop monthly partitions that end before ``now - retention_days`` (0 = keep everything)."""
    days = settings.retention_days if retention_days is None else retention_days
    if days <= 0:
        log.info("retention: keep all (STOCKPIPE_RETENTION_DAYS=0)")
        return []
    cutoff = (now - timedelta(days=days)).astimezone(UTC).date()
    dropped = []
    with _connect(settings) as conn:
        for child, _parent, month in _month_partitions(conn):
            month_end = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
            if month_end <= cutoff:
                conn.execute(sql.SQL("DROP TABLE market.{}").format(sql.Identifier(child)))
                dropped.append(child)
    log.info("retention: dropped %s", ", ".join(dropped) or "nothing")
    return dropped


def vacuum_analyze(settings: Settings, tables: tuple[str, ...] = HOT_TABLES) -> list[str]:
    """VACUUM (ANALYZE) the hot tables (partitioned parents recurse into their partitions)."""
    done = []
    with _connect(settings, autocommit=True) as conn:
        for name in tables:
            if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
                continue
            schema, table = name.split(".")
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
            done.append(name)
    log.info("vacuum analyze: %s", ", ".join(done))
    return done


def refresh_rollups(settings: Settings) -> list[str]:
    """REFRESH MATERIALIZED VIEW CONCURRENTLY (readers keep reading) every rollup that exists."""
    done = []
    with _connect(settings, autocommit=True) as conn:
        for name in ROLLUPS:
            if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
                continue
            schema, view = name.split(".")
            conn.execute(
                sql.SQL("REFRESH MATERIALIZED VIEW CONCURRENTLY {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(view)
                )
            )
            done.append(name)
    log.info("rollups refreshed: %s", ", ".join(done) or "none exist")
    return done


def data_quality_summary(settings: Settings, sessions: list[Session]) -> list[dict[str, Any]]:
    """Per symbol and session: completeness, OHLC violations, indicator coverage; plus rows parked in
    the default partitions. Written to ``ops.data_quality`` (one row per check) and returned."""
    results: list[dict[str, Any]] = []
    with _connect(settings) as conn:
        for session in sessions:
            rows = conn.execute(
                """
                SELECT s.symbol, count(b.ts),
                       count(*) FILTER (WHERE b.high < greatest(b.open, b.close) OR b.low > least(b.open, b.close)),
                       count(b.ts) FILTER (WHERE i.ts IS NULL)
                FROM unnest(%s::text[]) AS s(symbol)
                LEFT JOIN market.bars_1m b ON b.symbol = s.symbol AND b.ts >= %s AND b.ts < %s
                LEFT JOIN market.indicators_1m i ON i.symbol = b.symbol AND i.ts = b.ts
                GROUP BY s.symbol ORDER BY s.symbol
                """,
                (settings.watchlist, session.open, session.close),
            ).fetchall()
            for symbol, bars, ohlc, no_indicators in rows:
                completeness = bars / session.minutes if session.minutes else 1.0
                results += [
                    {
                        "check_name": "completeness",
                        "symbol": symbol,
                        "session_date": session.day,
                        "value": completeness,
                        "ok": bars == session.minutes,
                        "detail": f"{bars} of {session.minutes} minute bars",
                    },
                    {
                        "check_name": "ohlc_sanity",
                        "symbol": symbol,
                        "session_date": session.day,
                        "value": ohlc,
                        "ok": ohlc == 0,
                        "detail": f"{ohlc} bars with high/low outside open/close",
                    },
                    {
                        "check_name": "indicator_coverage",
                        "symbol": symbol,
                        "session_date": session.day,
                        "value": no_indicators,
                        "ok": no_indicators == 0,
                        "detail": f"{no_indicators} bars without an indicator row",
                    },
                ]
        for table in ("bars_1m_default", "indicators_1m_default"):
            (parked,) = conn.execute(sql.SQL("SELECT count(*) FROM market.{}").format(sql.Identifier(table))).fetchone()
            results.append(
                {
                    "check_name": f"{table}_rows",
                    "symbol": None,
                    "session_date": None,
                    "value": parked,
                    "ok": parked == 0,
                    "detail": f"{parked} rows outside the monthly partitions",
                }
            )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO ops.data_quality (check_name, symbol, session_date, value, ok, detail)"
                " VALUES (%(check_name)s, %(symbol)s, %(session_date)s, %(value)s, %(ok)s, %(detail)s)",
                results,
            )
    bad = [r for r in results if not r["ok"]]
    log.info("data quality: %d checks, %d not ok", len(results), len(bad))
    return results
