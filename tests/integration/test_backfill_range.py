"""The range backfill's fetch (stockpipe.airflow.backfill) against the simulator through the
massive client, PostgreSQL and Redis: as few API calls as the API allows, and a run that must wait
for another one returns at once (to defer) instead of waiting in its worker slot."""

from __future__ import annotations

import math
import time
from datetime import UTC, date, datetime

import pytest

from stockpipe.airflow import backfill
from stockpipe.calendar import trading_calendar
from stockpipe.sources.simulator import start_in_thread
from tests.integration.simkit import on_simulator

pytestmark = pytest.mark.integration

KEY = "test-key-backfill-range"


@pytest.fixture
def demo_simulator():
    with start_in_thread(seed=3, clock="demo") as sim:
        yield sim


def aggregate_calls(simulator) -> list[dict]:
    return [r for r in simulator.state.log.requests(KEY) if r["path"].startswith("/v2/aggs/")]


def test_a_range_is_fetched_in_pages_of_50000_bars_not_per_session(settings, demo_simulator, pg_conn, redis_client):
    # 40 demo sessions = 57,600 minute bars a symbol: 2 pages of at most 50,000 (next_url), not 40 calls
    s = on_simulator(settings, demo_simulator, KEY, simulator_clock="demo")
    sessions = trading_calendar("demo").sessions_between(date(2026, 9, 1), date(2026, 10, 10))
    assert len(sessions) == 40
    pages = math.ceil(40 * 1440 / backfill.PAGE_BARS)

    report = backfill.fetch_and_store_range(s, sessions)

    calls = aggregate_calls(demo_simulator)
    assert len(calls) == len(s.watchlist) * pages == report.calls == 4
    assert all(c["status"] == 200 for c in calls)
    assert report.bars == {"AAPL": 57_600, "MSFT": 57_600}
    counts = dict(pg_conn.execute("SELECT symbol, count(*) FROM market.bars_1m GROUP BY symbol").fetchall())
    assert counts == {"AAPL": 57_600, "MSFT": 57_600}
    # the first stored bar of each symbol is queued: its indicators and every later one's get computed
    queued = pg_conn.execute("SELECT symbol, ts, reason FROM ops.repair_queue WHERE repaired_at IS NULL").fetchall()
    assert sorted(queued) == [(symbol, sessions[0].open, "backfill") for symbol in ("AAPL", "MSFT")]

    # again: every session is complete, no call
    again = backfill.fetch_and_store_range(s, sessions)
    assert again.calls == 0 and len(aggregate_calls(demo_simulator)) == 4


def test_only_the_missing_sessions_of_each_symbol_are_fetched(settings, demo_simulator, pg_conn, redis_client):
    s = on_simulator(settings, demo_simulator, KEY, simulator_clock="demo")
    sessions = trading_calendar("demo").sessions_between(date(2026, 9, 1), date(2026, 9, 5))
    backfill.fetch_and_store_range(s, sessions[1:3], ["AAPL"])  # AAPL already has the 2nd and 3rd
    before = len(aggregate_calls(demo_simulator))

    report = backfill.fetch_and_store_range(s, sessions)

    assert len(aggregate_calls(demo_simulator)) - before == 2  # one call per symbol for the 5 sessions
    # AAPL's span (1st..5th) is one call; only its missing sessions (1st, 4th, 5th) are stored
    assert report.bars == {"AAPL": 3 * 1440, "MSFT": 5 * 1440}
    (aapl,) = pg_conn.execute("SELECT count(*) FROM market.bars_1m WHERE symbol = 'AAPL'").fetchone()
    assert aapl == 5 * 1440


def test_the_block_is_the_consecutive_sessions_with_runs():
    calendar = trading_calendar("nyse")
    with_runs = {date(2026, 11, d) for d in (16, 17, 18, 19, 20, 23)} | {date(2026, 11, 25)}
    asked: list[int] = []

    def runs_exist(sessions):
        asked.append(len(sessions))
        return [s.day in with_runs for s in sessions]

    now = datetime(2026, 12, 1, tzinfo=UTC)
    block = backfill.backfill_block(calendar.session(date(2026, 11, 18)), calendar, runs_exist, now)
    # 11-24 has no run: the block stops there (11-25 is another backfill's); 11-13 has none either
    assert [s.day.day for s in block] == [16, 17, 18, 19, 20, 23]
    # a session that has not closed yet is never part of it
    late = backfill.backfill_block(calendar.session(date(2026, 11, 23)), calendar, lambda s: [True] * len(s), now)
    assert late[-1].day == date(2026, 11, 30)


def test_a_run_that_must_wait_for_the_leader_returns_at_once_to_defer(settings, demo_simulator, pg_conn, redis_client):
    s = on_simulator(settings, demo_simulator, KEY, simulator_clock="demo")
    session = trading_calendar("demo").session(date(2026, 9, 1))
    leader = backfill.FetchLease(s, "backfill__leader")
    eta = datetime.now(UTC).timestamp() + 90
    assert leader.take(first="2026-09-01", last="2026-09-30", eta=eta)
    try:
        before = time.time()
        outcome = backfill.prepare(s, session, "backfill__follower", None, runs_exist=lambda x: [True] * len(x))
        after = time.time()
    finally:
        leader.release()
        leader.close()
    # no fetch, no wait for the rate limit: the task defers (a timer in the triggerer, no worker slot)
    assert outcome.ready is None and outcome.plan is None
    assert backfill.FOLLOWER_WAIT_S[0] <= outcome.wait_s <= backfill.FOLLOWER_WAIT_S[1]
    # the leader's ETA less the time prepare() took to read it (seconds on a loaded box), rounded
    assert eta - after - 1 <= outcome.wait_s <= eta - before + 1
    assert aggregate_calls(demo_simulator) == []
    assert redis_client.get(backfill.LEASE_KEY) is None
