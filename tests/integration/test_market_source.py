"""The one market-data source (stockpipe.clients.market_source) of the producer, Airflow's ingest
and the backfill: shared rate limit with priorities, one retry policy, against the simulator."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

import pytest

from stockpipe.airflow.backfill import fetch_and_store_session
from stockpipe.calendar import trading_calendar
from stockpipe.clients import backfill_reserve, market_source
from stockpipe.producer.limiter import SharedRateLimiter
from stockpipe.sources.simulator import FaultRequest, start_in_thread
from tests.integration.simkit import on_simulator

pytestmark = pytest.mark.integration

KEY = "test-key-market-source"
AFTER_THE_CLOSE = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)  # Tuesday
SESSION = trading_calendar("nyse").session(date(2026, 11, 24))


@pytest.fixture
def simulator():
    with start_in_thread(seed=5, clock="nyse", now=AFTER_THE_CLOSE.timestamp) as sim:
        yield sim


def settings_for(settings, simulator):
    return on_simulator(settings, simulator, KEY, watchlist=["AAPL"], retry_base_s=0.01, simulator_clock="nyse")


def test_the_backfill_honours_retry_after(settings, simulator, pg_conn):
    s = settings_for(settings, simulator)
    # Retry-After 100 (× retry_base_s 0.01) = 1 s, far longer than the first backoff (0.01 s)
    simulator.state.apply_faults(FaultRequest(status_429=1, retry_after=100))
    started = time.monotonic()
    stored = fetch_and_store_session(s, SESSION)
    elapsed = time.monotonic() - started
    assert stored == {"AAPL": 390}
    assert elapsed >= 1.0  # was: the backfill's own policy waited 0.01 s and ignored Retry-After
    statuses = [r["status"] for r in simulator.state.log.requests(KEY)]
    assert statuses == [429, 200]


def test_producer_and_backfill_share_one_retry_policy(settings, simulator):
    s = settings_for(settings, simulator)
    waits: dict[str, list[float]] = {"live": [], "backfill": []}
    for priority in ("live", "backfill"):
        simulator.state.apply_faults(FaultRequest(status_5xx=2, status_429=1, retry_after=50))
        source = market_source(s, priority=priority, sleep=waits[priority].append)
        assert len(source.minute_bars("AAPL", SESSION.open, SESSION.open)) == 1
    assert waits["live"] == waits["backfill"]
    # the 429 first: its Retry-After (50 s) beats the 1 s backoff; then the 503s: 2 s, 4 s (× 0.01)
    assert waits["live"] == pytest.approx([0.5, 0.02, 0.04])


class Stop(Exception):
    pass


def test_the_backfill_leaves_live_ingest_its_share_of_the_window(settings, redis_client):
    # 5 calls per (2 + 1) s: the backfill takes 4 and waits; live ingest still gets the 5th at once
    assert backfill_reserve(5) == 1 and backfill_reserve(1) == 0

    def refuse_to_wait(seconds: float) -> None:
        raise Stop(seconds)

    def limiter(reserve: int) -> SharedRateLimiter:
        return SharedRateLimiter(settings.redis_dsn, 5, KEY, window_s=2, reserve=reserve, sleep=refuse_to_wait)

    backfill, live = limiter(backfill_reserve(5)), limiter(0)
    for _ in range(4):
        assert backfill.acquire() == 0
    with pytest.raises(Stop):
        backfill.acquire()
    assert live.acquire() == 0
    with pytest.raises(Stop):
        live.acquire()
