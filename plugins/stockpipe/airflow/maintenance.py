"""postgres_maintenance's tasks: partitions ahead, retention, VACUUM (ANALYZE), rollup refresh and a
data-quality summary in ``ops.data_quality``. Each is idempotent and safe to rerun."""

from __future__ import annotations

import logging
from dataclasses import astuple
from datetime import UTC, date, datetime, timedelta
from typing import Any

from stockpipe.calendar import Session
from stockpipe.clients import pg_connect
from stockpipe.config import Settings
from stockpipe.storage import market, queries

log = logging.getLogger("stockpipe.airflow.maintenance")


def ensure_partitions(settings: Settings, now: datetime, months_ahead: int = 2) -> int:
    """Create the monthly partitions from this month to ``months_ahead`` ahead; returns how many were new."""
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        created = queries.ensure_month_partitions(conn, now, now, months_ahead)
    log.info("partitions: %d created", created)
    return created


def apply_retention(settings: Settings, now: datetime, retention_days: int | None = None) -> list[str]:
    """Drop monthly partitions that end before ``now - retention_days`` (0 = keep everything), then
    delete the older rows of the month the cut falls in (its BRIN index on ``ts`` finds them), so a
    market-wide stream keeps about ``retention_days`` days, not up to two months; the VACUUM that
    follows makes their space reusable. Returns what was dropped and deleted."""
    days = settings.retention_days if retention_days is None else retention_days
    if days <= 0:
        log.info("retention: keep all (STOCKPIPE_RETENTION_DAYS=0)")
        return []
    cut = (now - timedelta(days=days)).astimezone(UTC)
    cutoff = cut.date()
    dropped = []
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        for child, _parent, month in queries.month_partitions(conn):
            month_end = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
            if month_end <= cutoff:
                queries.drop_partition(conn, child)
                dropped.append(child)
        conn.commit()
        for table, rows in market.delete_rows_before(conn, cut).items():
            conn.commit()
            if rows:
                dropped.append(f"{table}: {rows} rows before {cut:%Y-%m-%d %H:%M} UTC")
    log.info("retention: dropped %s", ", ".join(dropped) or "nothing")
    return dropped


def vacuum_analyze(settings: Settings, tables: tuple[str, ...] = queries.HOT_TABLES) -> list[str]:
    """VACUUM (ANALYZE) the hot tables (partitioned parents recurse into their partitions)."""
    with pg_connect(settings, "writer", connect_timeout=10, autocommit=True) as conn:
        done = queries.vacuum_analyze(conn, tables)
    log.info("vacuum analyze: %s", ", ".join(done))
    return done


def refresh_rollups(settings: Settings) -> list[str]:
    """REFRESH MATERIALIZED VIEW CONCURRENTLY (readers keep reading) every rollup that exists."""
    with pg_connect(settings, "writer", connect_timeout=10, autocommit=True) as conn:
        done = queries.refresh_rollups(conn)
    log.info("rollups refreshed: %s", ", ".join(done) or "none exist")
    return done


def data_quality_summary(settings: Settings, sessions: list[Session]) -> list[dict[str, Any]]:
    """Per symbol and session: completeness, OHLC violations, indicator coverage; plus rows parked in
    the default partitions. Written to ``ops.data_quality`` (one row per check) and returned."""
    results: list[dict[str, Any]] = []
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        for session in sessions:
            quality = queries.day_quality(conn, settings.watchlist, session.open, session.close)
            for symbol, bars, ohlc, no_indicators in (astuple(q) for q in quality):
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
                        "detail": f"{ohlc} bars with high/low outside open/close, low <= 0 or volume < 0",
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
        for table in queries.DEFAULT_PARTITIONS:
            parked = queries.default_partition_rows(conn, table)
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
        queries.record_data_quality(conn, results)
    bad = [r for r in results if not r["ok"]]
    log.info("data quality: %d checks, %d not ok", len(results), len(bad))
    return results


def check_recent_sessions(settings: Settings, now: datetime, sessions: int = 3) -> dict[str, int]:
    """postgres_maintenance's data-quality task: :func:`data_quality_summary` of the pipeline
    calendar's last ``sessions`` sessions up to ``now``; how many checks ran and failed."""
    from stockpipe.airflow.timetables import market_calendar_mode
    from stockpipe.calendar import trading_calendar

    results = data_quality_summary(settings, trading_calendar(market_calendar_mode()).last_sessions(sessions, now))
    return {"checks": len(results), "not_ok": sum(not r["ok"] for r in results)}
