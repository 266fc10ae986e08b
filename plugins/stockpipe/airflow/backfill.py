"""market_backfill's work: a range of trading sessions fetched in as few API calls as possible,
stored, its indicators computed once, each session checked and recorded.

`airflow backfill create` (or the UI's backfill dialog) makes one DAG run per session. The runs
coordinate through a **fetch lease** in Redis (:class:`FetchLease`, one holder at a time):

* The first run that finds its session not ready takes the lease and becomes the **leader**: it
  finds the *block* of consecutive sessions around its own that have a market_backfill run too
  (:func:`backfill_block`: the backfill's range, learned from Airflow's run list), fetches each
  symbol's missing bars of the whole block with one aggregates request per symbol (up to 50,000
  bars a page, following ``next_url``: :func:`fetch_and_store_range`), stores them and queues the
  first one in ``ops.repair_queue`` (its indicators and every later one's are to be recomputed);
  then its ``compute_indicators`` task runs the Spark job once for the block and releases the lease.
* Every other run (a **follower**) finds its session *ready* — bars complete, an indicator row per
  bar, nothing queued for repair before its close (:func:`session_ready`) — and only checks and
  records it (``ops.backfill_runs``, one row per session, as before). While the leader works, a
  follower does not wait in a worker slot: its task defers (a timer in the triggerer) until about
  when the leader should be done (:func:`follower_wait_s`), then looks again.

So only the leader's fetch ever waits for the rate limiter in a worker slot (one slot, like a pool
of one), and the API calls are ``symbols × pages`` for the whole range instead of one per symbol
and session. A leader that dies leaves its lease to expire (:data:`LEASE_TTL_S`); the next run
that finds its session not ready takes over, and the sessions already stored are not fetched again.

Idempotent: storing a bar twice leaves identical rows (a bar is rewritten only when its values
changed), the Spark job upserts, the check replaces its ``ops.backfill_runs`` row.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, astuple, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from stockpipe.calendar import NEW_YORK, Session, TradingCalendar
from stockpipe.clients import pg_connect
from stockpipe.config import Settings
from stockpipe.storage import queries

log = logging.getLogger("stockpipe.airflow.backfill")

DAG_ID = "market_backfill"
#: Most bars one aggregates page carries (Massive/Polygon's ``limit`` maximum).
PAGE_BARS = 50_000
#: The Redis key of the fetch lease (JSON: holder run id, block, estimated end).
LEASE_KEY = "stockpipe:backfill:lease"
#: The lease outlives its holder by at most this long (renewed on every call and while Spark runs).
LEASE_TTL_S = 300
#: A leader's block reaches at most this many sessions either side of its own.
MAX_BLOCK_SESSIONS = 2000
#: Repair-queue reason of the first bar a backfill stored for a symbol.
REPAIR_REASON = "backfill"
#: A follower looks again after at least / at most this long.
FOLLOWER_WAIT_S = (30.0, 120.0)
#: What a leader adds to its fetch estimate for the Spark job.
COMPUTE_ESTIMATE_S = 60.0


class BackfillCheckFailed(RuntimeError):
    """The stored day does not pass its checks (the message lists what is wrong)."""


# --- the fetch lease ---------------------------------------------------------------------------
class FetchLease:
    """One backfill run at a time fetches and computes (the leader); the others defer.

    The value says who holds it (a run id), which sessions it covers and when it expects to be done
    (``eta``, unix seconds), so a follower knows how long to wait."""

    def __init__(self, settings: Settings, holder: str, ttl_s: float = LEASE_TTL_S) -> None:
        self.holder = holder
        self.ttl_s = ttl_s
        self._client = settings.redis_client(decode_responses=True)

    def current(self) -> dict[str, Any] | None:
        raw = self._client.get(LEASE_KEY)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def take(self, **info: Any) -> bool:
        """Take the lease (or renew it when already ours); False while another run holds it."""
        value = json.dumps({"holder": self.holder, **info})
        if self._client.set(LEASE_KEY, value, nx=True, px=int(self.ttl_s * 1000)):
            return True
        held = self.current()
        if held is not None and held.get("holder") == self.holder:
            self._client.set(LEASE_KEY, value, px=int(self.ttl_s * 1000))
            return True
        return False

    def renew(self, **info: Any) -> None:
        """Extend the lease (and update its info) if it is still ours."""
        held = self.current()
        if held is not None and held.get("holder") == self.holder:
            held.update(info)
            self._client.set(LEASE_KEY, json.dumps(held), px=int(self.ttl_s * 1000))

    def release(self) -> None:
        held = self.current()
        if held is not None and held.get("holder") == self.holder:
            self._client.delete(LEASE_KEY)

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def kept(self, every_s: float = 30.0) -> Iterator[None]:
        """Renew the lease every ``every_s`` while the block runs (a long wait for the rate limit
        must not let it expire under its holder)."""
        stop = threading.Event()

        def keep() -> None:
            while not stop.wait(every_s):
                try:
                    self.renew()
                except Exception as error:  # a Redis hiccup: the next renewal may work
                    log.warning("could not renew the fetch lease: %s", error)

        keeper = threading.Thread(target=keep, name="backfill-lease", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join(timeout=5)


# --- sessions and the block --------------------------------------------------------------------
def run_logical_date(session: Session) -> datetime:
    """The logical date of ``session``'s market_backfill run (TradingSessionTimetable: the
    session's date at 00:00 UTC)."""
    return datetime(session.day.year, session.day.month, session.day.day, tzinfo=UTC)


def backfill_block(
    session: Session,
    calendar: TradingCalendar,
    runs_exist: Callable[[list[Session]], list[bool]],
    now: datetime,
    limit: int = MAX_BLOCK_SESSIONS,
) -> list[Session]:
    """The consecutive sessions around ``session`` (itself included, closed before ``now``) that
    have a market_backfill run each (``runs_exist``: one bool per session), oldest first.

    `airflow backfill create` makes all its runs at once, so the block is the backfill's range (or
    more, when runs of the sessions next to it exist too: their sessions are stored then, once)."""
    block = [session]
    for step in (1, -1):
        cursor = session
        for _ in range(0, limit, 16):
            batch = _neighbours(calendar, cursor, step, 16, now)
            if not batch:
                break
            exists = runs_exist(batch)
            taken = next((i for i, found in enumerate(exists) if not found), len(batch))
            block.extend(batch[:taken])
            if taken < len(batch):
                break
            cursor = batch[-1]
    return sorted(block, key=lambda s: s.day)


def _neighbours(calendar: TradingCalendar, session: Session, step: int, count: int, now: datetime) -> list[Session]:
    """Up to ``count`` sessions after (``step`` 1) or before (-1) ``session``, nearest first, closed by ``now``."""
    if step > 0:
        found = calendar.sessions_between(session.day + timedelta(days=1), session.day + timedelta(days=3 * count))
        return [s for s in found if s.close <= now][:count]
    found = calendar.sessions_between(session.day - timedelta(days=3 * count), session.day - timedelta(days=1))
    return found[::-1][:count]


def airflow_runs_exist(sessions: list[Session]) -> list[bool]:
    """Whether each session has a market_backfill DAG run (any state), from a running task."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    dates = [run_logical_date(s) for s in sessions]
    if RuntimeTaskInstance.get_dr_count(dag_id=DAG_ID, logical_dates=dates) == len(dates):
        return [True] * len(dates)
    return [RuntimeTaskInstance.get_dr_count(dag_id=DAG_ID, logical_dates=[d]) > 0 for d in dates]


# --- fetch and store ---------------------------------------------------------------------------
@dataclass
class FetchReport:
    """What a range fetch did: per symbol the sessions fetched, bars stored, API calls."""

    sessions: int = 0
    calls: int = 0
    bars: dict[str, int] = field(default_factory=dict)
    first_stored: dict[str, str] = field(default_factory=dict)  # symbol -> ISO ts of its first stored bar
    seconds: float = 0.0

    @property
    def total_bars(self) -> int:
        return sum(self.bars.values())


class _CountingLimiter:
    """The market source's limiter, counting and logging each granted call (pages and retries
    included) and renewing the lease with the new estimate."""

    def __init__(self, limiter: Any, planned: int, on_call: Callable[[int, float], None]) -> None:
        self._limiter = limiter
        self.planned = planned
        self.calls = 0
        self._on_call = on_call

    def acquire(self) -> float:
        waited = self._limiter.acquire()
        self.calls += 1
        self._on_call(self.calls, waited)
        return waited

    def __getattr__(self, name: str) -> Any:
        return getattr(self._limiter, name)


def missing_sessions(
    settings: Settings, sessions: Sequence[Session], symbols: Sequence[str]
) -> dict[str, list[Session]]:
    """symbol → the sessions of ``sessions`` whose bars it does not have all of, oldest first."""
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        counts = queries.session_bar_counts(conn, symbols, [(s.open, s.close) for s in sessions])
    return {symbol: [s for i, s in enumerate(sessions) if counts.get((symbol, i), 0) < s.minutes] for symbol in symbols}


def planned_calls(
    missing: dict[str, list[Session]], sessions: Sequence[Session] | None = None, page_bars: int = PAGE_BARS
) -> int:
    """The fewest calls that fetch ``missing``: per symbol, the minutes of the ``sessions`` (default:
    its missing ones) from its first to its last missing session — the span one request covers —
    over the page size (a source with extended-hours bars may need more pages)."""
    calls = 0
    for wanted in missing.values():
        if wanted:
            span = [s for s in (sessions or wanted) if wanted[0].open <= s.open <= wanted[-1].open]
            calls += max(1, math.ceil(sum(s.minutes for s in span) / page_bars))
    return calls


def fetch_and_store_range(
    settings: Settings,
    sessions: Sequence[Session],
    symbols: Sequence[str] | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> FetchReport:
    """Fetch every symbol's missing bars of ``sessions`` with one aggregates request per symbol
    over the span from its first to its last incomplete session (the client follows ``next_url``,
    one rate-limited call per page of up to 50,000 bars), and store those inside the incomplete
    sessions. Per symbol, one transaction stores the bars and queues the first of them in
    ``ops.repair_queue`` (its indicators and all later ones are to be recomputed).

    Resumable: a symbol whose sessions are all complete is not fetched again. Invalid bars
    (contract check) are skipped and logged. ``on_progress(calls_done, calls_planned)`` after each
    granted call. Progress goes to the log (calls done / planned, bars)."""
    from stockpipe.clients import market_source

    began = time.monotonic()
    symbols = list(symbols or settings.watchlist)
    sessions = sorted(sessions, key=lambda s: s.day)
    report = FetchReport(sessions=len(sessions))
    missing = missing_sessions(settings, sessions, symbols)
    planned = planned_calls(missing, sessions)
    todo = [s for s in symbols if missing[s]]
    log.info(
        "range %s..%s (%d sessions), %d symbols: %d need bars, ~%d API calls planned (%d bars a page)",
        sessions[0].day,
        sessions[-1].day,
        len(sessions),
        len(symbols),
        len(todo),
        planned,
        PAGE_BARS,
    )
    if not todo:
        report.seconds = time.monotonic() - began
        return report

    def granted(calls: int, waited: float) -> None:
        log.info(
            "API call %d of ~%d granted (waited %.1f s for the rate limit); %d bars stored so far",
            calls,
            planned,
            waited,
            report.total_bars,
        )
        if on_progress:
            on_progress(calls, planned)

    # the shared rate limit (live ingest first: the backfill uses what it leaves) and the retry policy
    source = market_source(settings, priority="backfill")
    counter = _CountingLimiter(source.limiter, planned, granted)
    source.limiter = counter
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        queries.ensure_month_partitions(conn, sessions[0].open, sessions[-1].close)
        conn.commit()
        for n, symbol in enumerate(todo, 1):
            # again now: another process (a previous leader, the stream) may have stored some meanwhile
            wanted = missing_sessions(settings, missing[symbol], [symbol])[symbol]
            if not wanted:
                log.info("%s: stored meanwhile, not fetched", symbol)
                continue
            start, end = wanted[0].open, wanted[-1].close - timedelta(minutes=1)
            calls_before = counter.calls
            bars = source.minute_bars(symbol, start, end)
            rows = _rows(settings, symbol, bars, wanted)
            with conn.transaction():
                if rows:
                    queries.queue_repair(conn, symbol, rows[0][1], REPAIR_REASON)
                queries.upsert_bars(conn, rows)
            report.bars[symbol] = len(rows)
            if rows:
                report.first_stored[symbol] = rows[0][1].isoformat()
            log.info(
                "%s: %d bars of %d sessions (%s..%s) in %d calls, stored; symbols %d/%d, calls %d/~%d",
                symbol,
                len(rows),
                len(wanted),
                wanted[0].day,
                wanted[-1].day,
                counter.calls - calls_before,
                n,
                len(todo),
                counter.calls,
                planned,
            )
    report.calls = counter.calls
    report.seconds = time.monotonic() - began
    return report


def _rows(settings: Settings, symbol: str, bars: list, wanted: list[Session]) -> list[tuple]:
    """The contract-valid bars inside ``wanted`` sessions as upsert rows, oldest first."""
    from stockpipe import contract

    fetched_at = datetime.now(UTC)
    rows = []
    index = 0
    for bar in bars:  # oldest first, like the sessions
        while index < len(wanted) and bar.ts >= wanted[index].close:
            index += 1
        if index == len(wanted) or bar.ts < wanted[index].open:
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
    return rows


def fetch_and_store_session(settings: Settings, session: Session, symbols: list[str] | None = None) -> dict[str, int]:
    """One session's bars (:func:`fetch_and_store_range` of one session); bars stored per symbol
    (a symbol already complete counts its stored bars)."""
    symbols = symbols or settings.watchlist
    report = fetch_and_store_range(settings, [session], symbols)
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        return {
            symbol: report.bars.get(symbol, queries.bar_count(conn, symbol, session.open, session.close))
            for symbol in symbols
        }


# --- readiness ---------------------------------------------------------------------------------
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def session_ready(settings: Settings, session: Session, symbols: Sequence[str] | None = None) -> bool:
    """Whether nothing is left to do for ``session`` but the check: every symbol has all its bars,
    every bar an indicator row, and no bar up to its close waits in ``ops.repair_queue`` (whose
    recomputation would change the session's indicators)."""
    symbols = list(symbols or settings.watchlist)
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        quality = queries.day_quality(conn, symbols, session.open, session.close)
        pending = queries.first_pending_repair(conn, symbols, EPOCH, session.close)
    complete = all(q.bars >= session.minutes and q.missing_indicators == 0 for q in quality)
    return complete and pending is None


def compute_range(settings: Settings, first: date, last: date, symbols: Sequence[str] | None = None) -> date | None:
    """The first New York date the Spark job must recompute from for the sessions ``first..last``,
    or None when their indicators are complete and nothing before ``last``'s end waits for repair.

    From the earliest open ``ops.repair_queue`` entry before the range's end (what a fetch stored
    before existing bars, or a bar the stream got too late), else from ``first`` when a bar in the
    range has no indicator row."""
    from stockpipe.streaming.backfill import session_range

    symbols = list(symbols or settings.watchlist)
    start, end = session_range(first, last)
    with pg_connect(settings, "writer", connect_timeout=10) as conn:
        pending = queries.first_pending_repair(conn, symbols, EPOCH, end)
        quality = queries.day_quality(conn, symbols, start, end)
    candidates = []
    if pending is not None:
        candidates.append(pending.astimezone(NEW_YORK).date())
    if any(q.missing_indicators for q in quality):
        candidates.append(first)
    return min(candidates) if candidates else None


# --- check and record --------------------------------------------------------------------------
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


def check_and_record(settings: Settings, run_id: str, session: Session, started_at: datetime | None) -> dict[str, Any]:
    check = check_session(settings, session)
    record_run(settings, run_id, check, settings.watchlist, started_at)
    if not check.ok:
        raise BackfillCheckFailed(f"session {session.day} failed its checks: " + "; ".join(check.problems))
    result = asdict(check)
    result["session_date"] = session.day.isoformat()
    return result


# --- the tasks ---------------------------------------------------------------------------------
def session_on(day: str | date) -> Session:
    """The session of ``day`` (ISO date) on the pipeline's calendar."""
    from stockpipe.airflow.timetables import market_calendar_mode
    from stockpipe.calendar import trading_calendar

    session = trading_calendar(market_calendar_mode()).session(date.fromisoformat(str(day)))
    if session is None:
        raise ValueError(f"{day} is not a trading session on the {market_calendar_mode()} calendar")
    return session


def run_session(data_interval_start: datetime) -> Session:
    """The session of a run (skips the run when the market was closed that day)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from stockpipe.airflow.timetables import market_calendar_mode, session_for_interval

    session = session_for_interval(data_interval_start, market_calendar_mode())
    if session is None:
        raise AirflowSkipException(f"no trading session on {data_interval_start.date()}")
    return session


@dataclass
class Preparation:
    """What ``prepare`` decided: ``ready`` (checked and recorded: nothing else to do), ``wait_s``
    (another run holds the lease: look again then), or ``plan`` (this run leads: compute it)."""

    ready: dict[str, Any] | None = None
    wait_s: float | None = None
    plan: dict[str, Any] | None = None


def follower_wait_s(lease: dict[str, Any] | None, now: float) -> float:
    """How long a follower defers: until the leader's estimated end, within :data:`FOLLOWER_WAIT_S`."""
    low, high = FOLLOWER_WAIT_S
    eta = (lease or {}).get("eta")
    if not isinstance(eta, int | float):
        return low
    return min(max(eta - now, low), high)


def prepare(
    settings: Settings,
    session: Session,
    run_id: str,
    started_at: datetime | None,
    runs_exist: Callable[[list[Session]], list[bool]] = airflow_runs_exist,
    now: datetime | None = None,
) -> Preparation:
    """market_backfill's first task for ``session``: check and record a ready session; defer while
    another run leads; else lead: fetch the block's missing bars and plan the Spark job."""
    from stockpipe.airflow.timetables import market_calendar_mode
    from stockpipe.calendar import trading_calendar

    if session_ready(settings, session):
        log.info("session %s: bars and indicators complete, nothing queued for repair: checking it", session.day)
        return Preparation(ready=check_and_record(settings, run_id, session, started_at))
    lease = FetchLease(settings, run_id)
    try:
        if not lease.take(session=session.day.isoformat(), eta=time.time() + COMPUTE_ESTIMATE_S):
            held = lease.current()
            wait = follower_wait_s(held, time.time())
            log.info(
                "session %s not ready; run %s fetches/computes %s..%s: looking again in %.0f s (no worker slot held)",
                session.day,
                (held or {}).get("holder"),
                (held or {}).get("first"),
                (held or {}).get("last"),
                wait,
            )
            return Preparation(wait_s=wait)
        calendar = trading_calendar(market_calendar_mode())
        block = backfill_block(session, calendar, runs_exist, now or datetime.now(UTC))
        lease.renew(first=block[0].day.isoformat(), last=block[-1].day.isoformat())
        log.info("leading the backfill of %s..%s (%d sessions with runs)", block[0].day, block[-1].day, len(block))

        def progress(calls: int, planned: int) -> None:
            left = max(planned - calls, 0)
            lease.renew(eta=time.time() + left * settings.rate_limit_window_s + COMPUTE_ESTIMATE_S)

        with lease.kept():
            report = fetch_and_store_range(settings, block, on_progress=progress)
        log.info(
            "fetched %s..%s: %d bars in %d API calls, %.1f s",
            block[0].day,
            block[-1].day,
            report.total_bars,
            report.calls,
            report.seconds,
        )
        lease.renew(eta=time.time() + COMPUTE_ESTIMATE_S)
        return Preparation(
            plan={
                "day": session.day.isoformat(),
                "first": block[0].day.isoformat(),
                "last": block[-1].day.isoformat(),
                "sessions": len(block),
                "calls": report.calls,
                "bars": report.total_bars,
                "symbols": ",".join(settings.watchlist),
            }
        )
    except BaseException:
        lease.release()
        raise
    finally:
        lease.close()
