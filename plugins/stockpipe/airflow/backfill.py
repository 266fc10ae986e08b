"""market_backfill's tasks, for one trading session: fetch and store the day's minute bars, then
(after the Spark backfill job computed the indicators) check the day and record the result.

Idempotent: storing a day twice leaves identical rows (a bar is rewritten only when its values
changed), the Spark job upserts, the check replaces its ``ops.backfill_runs`` row.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from stockpipe.calendar import NEW_YORK, Session
from stockpipe.config import Settings

log = logging.getLogger("stockpipe.airflow.backfill")

UPSERT_BARS = """
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


class BackfillCheckFailed(RuntimeError):
    """The stored day does not pass its checks (the message lists what is wrong)."""


def _source(settings: Settings):
    from stockpipe.producer.limiter import SharedRateLimiter
    from stockpipe.sources.polygon import PolygonSource

    limiter = SharedRateLimiter(settings.redis_url, settings.rate_limit_per_minute, settings.market_data_key)
    return PolygonSource(
        settings.market_data_key,
        base_url=settings.market_data_url,
        timeout=settings.http_timeout_s,
        before_call=limiter.acquire,
    )


def _with_retries(settings: Settings, call, what: str):
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

    from stockpipe.sources.polygon import RetryableSourceError

    retrying = Retrying(
        retry=retry_if_exception_type(RetryableSourceError),
        stop=stop_after_attempt(settings.retry_attempts + 1),
        wait=wait_exponential(multiplier=settings.retry_base_s, max=60),
        reraise=True,
        before_sleep=lambda state: log.warning("%s failed (%s); retrying", what, state.outcome.exception()),
    )
    return retrying(call)


def fetch_and_store_session(settings: Settings, session: Session, symbols: list[str] | None = None) -> dict[str, int]:
    """Fetch the session's minute bars per symbol (rate-limited, retried) and upsert them.

    Resumable: each symbol is stored in its own transaction, and a symbol whose day is already
    complete in PostgreSQL is not fetched again (a retry after a failure picks up where it stopped).
    Returns bars stored per symbol. Invalid bars (contract check) are skipped and logged.
    """
    from stockpipe import contract

    symbols = symbols or settings.watchlist
    source = None
    stored: dict[str, int] = {}
    with psycopg.connect(settings.pg_dsn("writer"), connect_timeout=10) as conn:
        conn.execute("SELECT market.ensure_month_partitions(%s, %s)", (session.open, session.close))
        conn.commit()
        for symbol in symbols:
            (have,) = conn.execute(
                "SELECT count(*) FROM market.bars_1m WHERE symbol = %s AND ts >= %s AND ts < %s",
                (symbol, session.open, session.close),
            ).fetchone()
            if have >= session.minutes:
                log.info("%s %s: %d bars already stored, not fetched again", symbol, session.day, have)
                stored[symbol] = have
                continue
            source = source or _source(settings)
            bars = _with_retries(
                settings,
                lambda s=symbol, src=source: src.minute_bars(s, session.open, session.close - timedelta(minutes=1)),
                f"bars of {symbol} on {session.day}",
            )
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
                conn.execute(UPSERT_BARS)
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
    with psycopg.connect(settings.pg_dsn("writer"), connect_timeout=10) as conn:
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
            (symbols, session.open, session.close),
        ).fetchall()
    for symbol, bars, ohlc_errors, missing_indicators in rows:
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
    status = "ok" if check.ok else "failed"
    with psycopg.connect(settings.pg_dsn("writer"), connect_timeout=10) as conn:
        conn.execute(
            """
            INSERT INTO ops.backfill_runs (run_id, session_date, symbols, bars, expected_bars, gaps, ohlc_errors,
                                           status, detail, started_at, finished_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, coalesce(%s, now()), now())
            ON CONFLICT (run_id, session_date) DO UPDATE SET
                symbols = excluded.symbols, bars = excluded.bars, expected_bars = excluded.expected_bars,
                gaps = excluded.gaps, ohlc_errors = excluded.ohlc_errors, status = excluded.status,
                detail = excluded.detail, finished_at = excluded.finished_at
            """,
            (
                run_id,
                check.session_date,
                symbols,
                check.bars,
                check.expected_bars,
                check.gaps,
                check.ohlc_errors,
                status,
                "; ".join(check.problems) or None,
                started_at,
            ),
        )


def first_pending_repair(settings: Settings, session: Session, max_days: int = 10) -> date:
    """The first New York date the backfill job must recompute for this session: the session's own
    date, or earlier when the stream queued too-late bars on recent earlier days (at most
    ``max_days`` back; older entries are left for ``backfill_indicators.py --repair`` or a backfill
    over those days). The job marks the entries it repaired."""
    with psycopg.connect(settings.pg_dsn("writer"), connect_timeout=10) as conn:
        (first,) = conn.execute(
            "SELECT min(ts) FROM ops.repair_queue WHERE repaired_at IS NULL AND symbol = ANY(%s)"
            " AND ts >= %s AND ts < %s",
            (settings.watchlist, session.open - timedelta(days=max_days), session.close),
        ).fetchone()
    if first is None:
        return session.day
    return min(session.day, first.astimezone(NEW_YORK).date())


def check_and_record(settings: Settings, run_id: str, session: Session, started_at: datetime | None) -> dict[str, Any]:
    check = check_session(settings, session)
    record_run(settings, run_id, check, settings.watchlist, started_at)
    if not check.ok:
        raise BackfillCheckFailed(f"session {session.day} failed its checks: " + "; ".join(check.problems))
    result = asdict(check)
    result["session_date"] = session.day.isoformat()
    return result
