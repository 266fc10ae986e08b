"""market_backfill's tasks, for one trading session: fetch and store the day's minute bars, then
(after the Spark backfill job computed the indicators) check the day and record the result.

Idempotent: storing a day twice leaves identical rows (a bar is rewritten only when its values
changed), the Spark job upserts, the check replaces its ``ops.backfill_runs`` row.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, astuple, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from stockpipe.calendar import NEW_YORK, Session
from stockpipe.clients import pg_connect
from stockpipe.config import Settings
from stockpipe.storage import queries

log = logging.getLogger("stockpipe.airflow.backfill")


class BackfillCheckFailed(RuntimeError):
    """The stored day does not pass its checks (the message lists what is wrong)."""


def fetch_and_store_session(settings: Settings, session: Session, symbols: list[str] | None = None) -> dict[str, int]:
    """Fetch the session's minute bars per symbol (rate-limited, retried) and upsert them.

    Resumable: each symbol is stored in its own transaction, and a symbol whose day is already
    complete in PostgreSQL is not fetched again (a retry after a failure picks up where it stopped).
    Returns bars stored per symbol. Invalid bars (contract check) are skipped and logged.
    """
    from stockpipe import contract
    from stockpipe.clients import market_source

    symbols = symbols or settings.watchlist
    source = None
    stored: dict[str, int] = {}
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        queries.ensure_month_partitions(conn, session.open, session.close)
        conn.commit()
        for symbol in symbols:
            have = queries.bar_count(conn, symbol, session.open, session.close)
            if have >= session.minutes:
                log.info("%s %s: %d bars already stored, not fetched again", symbol, session.day, have)
                stored[symbol] = have
                continue
            # the shared rate limit (leaving live ingest its share) and the one retry policy
            source = source or market_source(settings, priority="backfill")
            bars = source.minute_bars(symbol, session.open, session.close - timedelta(minutes=1))
            fetched_at = datetime.now(UTC)
            rows = []
            for bar in bars:
                if not session.contains(bar.ts):
                    continue
                message = bar.to_message(settings.source_name, fetched_at)
                reason = contract.invalid_reason(message)
                if reason:
                    log.warning("skipped invalid bar %s %s: %s", symbol, message["ts"], reason)
                    continue
                rows.append(
                    (
                        symbol,
                        bar.ts,
                        bar.open,
                        bar.high,
                        bar.low,
                        bar.close,
                        bar.volume,
                        bar.vwap,
                        bar.trades,
                        settings.source_name,
                        fetched_at,
                    )
                )
            queries.upsert_bars(conn, rows)
            stored[symbol] = len(rows)
            log.info("%s %s: %d bars fetched and stored", symbol, session.day, len(rows))
    return stored


@dataclass
class DayCheck:
    session_date: date
    expected_bars: int
    bars: int = 0
    gaps: int = 0
    ohlc_errors: int = 0
    missing_indicators: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_session(settings: Settings, session: Session, symbols: list[str] | None = None) -> DayCheck:
    """Bar count per symbol vs the session's minutes (early closes count fewer), gaps, OHLC sanity,
    and one indicator row per bar."""
    symbols = symbols or settings.watchlist
    check = DayCheck(session.day, expected_bars=session.minutes * len(symbols))
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        quality = queries.day_quality(conn, symbols, session.open, session.close)
    for symbol, bars, ohlc_errors, missing_indicators in (astuple(q) for q in quality):
        check.bars += bars
        check.ohlc_errors += ohlc_errors
        check.missing_indicators += missing_indicators
        if bars != session.minutes:
            # bars are unique per minute, so fewer bars than minutes means that many missing minutes
            gaps = max(session.minutes - bars, 0)
            check.gaps += gaps
            check.problems.append(f"{symbol}: {bars} bars, the session has {session.minutes} minutes")
        if ohlc_errors:
            check.problems.append(f"{symbol}: {ohlc_errors} bars violate low <= open,close <= high")
        if missing_indicators:
            check.problems.append(f"{symbol}: {missing_indicators} bars have no indicator row")
    return check


def record_run(
    settings: Settings, run_id: str, check: DayCheck, symbols: list[str], started_at: datetime | None
) -> None:
    """Write (or replace) the run's ``ops.backfill_runs`` row."""
    run = {
        "run_id": run_id,
        "session_date": check.session_date,
        "symbols": symbols,
        "bars": check.bars,
        "expected_bars": check.expected_bars,
        "gaps": check.gaps,
        "ohlc_errors": check.ohlc_errors,
        "status": "ok" if check.ok else "failed",
        "detail": "; ".join(check.problems) or None,
        "started_at": started_at,
    }
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        queries.record_backfill_run(conn, run)


def first_pending_repair(settings: Settings, session: Session, max_days: int = 10) -> date:
    """The first New York date the backfill job must recompute for this session: the session's own
    date, or earlier when the stream queued too-late bars on recent earlier days (at most
    ``max_days`` back; older entries are left for ``backfill_indicators.py --repair`` or a backfill
    over those days). The job marks the entries it repaired."""
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        first = queries.first_pending_repair(
            conn, settings.watchlist, session.open - timedelta(days=max_days), session.close
        )
    if first is None:
        return session.day
    return min(session.day, first.astimezone(NEW_YORK).date())


def session_on(day: str | date) -> Session:
    """The session of ``day`` (ISO date) on the pipeline's calendar; the run's plan named it."""
    from stockpipe.airflow.timetables import market_calendar_mode
    from stockpipe.calendar import trading_calendar

    session = trading_calendar(market_calendar_mode()).session(date.fromisoformat(str(day)))
    if session is None:
        raise ValueError(f"{day} is not a trading session on the {market_calendar_mode()} calendar")
    return session


def plan_run(data_interval_start: datetime) -> dict[str, Any]:
    """market_backfill's plan for a run: the session's date, the first date to recompute (earlier
    with pending repairs, :func:`first_pending_repair`), the symbols and the session's minutes.
    Skips the run when the market was closed that day."""
    from airflow.sdk.exceptions import AirflowSkipException

    from stockpipe.airflow.connections import task_settings
    from stockpipe.airflow.timetables import market_calendar_mode, session_for_interval

    settings = task_settings()
    session = session_for_interval(data_interval_start, market_calendar_mode())
    if session is None:
        raise AirflowSkipException(f"no trading session on {data_interval_start.date()}")
    return {
        "day": session.day.isoformat(),
        "recompute_from": first_pending_repair(settings, session).isoformat(),
        "symbols": ",".join(settings.watchlist),
        "minutes": session.minutes,
        "spark_name": f"stockpipe-backfill-{session.day.isoformat()}",
    }


def fetch_day(day: str) -> dict[str, int]:
    """market_backfill's fetch task: :func:`fetch_and_store_session` of the session of ``day``."""
    from stockpipe.airflow.connections import task_settings

    return fetch_and_store_session(task_settings(), session_on(day))


def check_day(day: str, run_id: str, started_at: datetime | None) -> dict[str, Any]:
    """market_backfill's check task: :func:`check_and_record` of the session of ``day``."""
    from stockpipe.airflow.connections import task_settings

    return check_and_record(task_settings(), run_id, session_on(day), started_at)


def check_and_record(settings: Settings, run_id: str, session: Session, started_at: datetime | None) -> dict[str, Any]:
    check = check_session(settings, session)
    record_run(settings, run_id, check, settings.watchlist, started_at)
    if not check.ok:
        raise BackfillCheckFailed(f"session {session.day} failed its checks: " + "; ".join(check.problems))
    result = asdict(check)
    result["session_date"] = session.day.isoformat()
    return result
