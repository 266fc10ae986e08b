"""Massive's plans as the simulator emulates them (STOCKPIPE_SIMULATOR_PLAN), read through the
official client, and what the producer, the backfill and the freshness checks make of each."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime

import httpx
import massive
import pytest

from stockpipe.airflow.backfill import fetch_and_store_session
from stockpipe.calendar import trading_calendar
from stockpipe.monitoring.health import check_health
from stockpipe.producer import plan
from stockpipe.producer.core import CHECKPOINT_KEY, MarketProducer
from stockpipe.sources.polygon import PolygonSource
from stockpipe.sources.simulator import start_in_thread
from tests.integration.simkit import on_simulator

pytestmark = pytest.mark.integration

KEY = "test-key-plans"
NOW = datetime(2026, 11, 24, 16, 0, 5, tzinfo=UTC)  # Tuesday, 11:00 in New York: the session trades
TODAY_OPEN = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
YESTERDAY = trading_calendar("nyse").session(date(2026, 11, 23))


def simulator(plan_name: str):
    return start_in_thread(seed=8, clock="nyse", plan=plan_name, now=NOW.timestamp)


def settings_for(settings, sim, **changes):
    return on_simulator(
        settings, sim, KEY, **{"retry_base_s": 0.01, "simulator_clock": "nyse", "backfill_start_minutes": 0, **changes}
    )


def newest(aggs) -> datetime:
    return datetime.fromtimestamp(max(a.timestamp for a in aggs) / 1000, UTC)


# --- the simulator's plans, through the official client -----------------------------------------
def test_basic_plan_serves_end_of_day_data_only():
    with simulator("basic") as sim:
        client = massive.RESTClient(KEY, base=sim.url, retries=0)
        with pytest.raises(massive.exceptions.BadResponse) as refused:
            list(client.list_aggs("AAPL", 1, "minute", TODAY_OPEN, NOW))
        error = json.loads(str(refused.value))
        assert error["status"] == "NOT_AUTHORIZED" and error["request_id"]
        assert error["message"].startswith("Your plan doesn't include this data timeframe")
        assert httpx.get(f"{sim.url}/v2/last/trade/AAPL", params={"apiKey": KEY}).status_code == 403
        # earlier days are served (the backfill's data)
        assert len(client.get_aggs("AAPL", 1, "minute", "2026-11-23", "2026-11-23")) == 390
        assert len(client.get_aggs("AAPL", 1, "day", "2026-11-16", "2026-11-23")) == 6
        # and 5 calls a minute: the 6th is a 429 (429 is the caller's to retry)
        assert httpx.get(f"{sim.url}/v2/aggs/ticker/AAPL/prev", params={"apiKey": KEY}).status_code == 200
        assert httpx.get(f"{sim.url}/v2/aggs/ticker/AAPL/prev", params={"apiKey": KEY}).status_code == 429


def test_starter_plan_is_15_minutes_delayed():
    with simulator("starter") as sim:
        client = massive.RESTClient(KEY, base=sim.url, retries=0)
        bars = list(client.list_aggs("AAPL", 1, "minute", TODAY_OPEN, NOW))
        assert newest(bars) == datetime(2026, 11, 24, 15, 44, tzinfo=UTC)  # closed by 15:45:05, 16:00:05 - 15 min
        source = PolygonSource(KEY, sim.url)
        source.minute_bars("AAPL", TODAY_OPEN, NOW)
        assert source.last_status == "DELAYED"
        for _ in range(8):  # no call limit
            assert httpx.get(f"{sim.url}/v2/aggs/ticker/AAPL/prev", params={"apiKey": KEY}).status_code == 200


def test_advanced_plan_is_real_time():
    with simulator("advanced") as sim:
        source = PolygonSource(KEY, sim.url)
        bars = source.minute_bars("AAPL", TODAY_OPEN, NOW)
        assert bars[-1].ts == datetime(2026, 11, 24, 15, 59, tzinfo=UTC)
        assert source.last_status == "OK"


# --- what the pipeline makes of them ------------------------------------------------------------
def test_on_the_basic_plan_live_ingest_idles_and_says_why_once(settings, redis_client, pg_conn, caplog):
    with simulator("basic") as sim:
        s = settings_for(settings, sim)
        with caplog.at_level(logging.INFO, logger="stockpipe.producer"):
            for _ in range(2):
                summary = MarketProducer(s, clock=lambda: NOW).run_cycle()
                assert summary.idle == plan.SENTENCES["end-of-day"]
                assert summary.failed == [] and summary.sent == 0
        bar_calls = [r for r in sim.state.log.requests(KEY) if "/range/" in r["path"]]
        assert [r["status"] for r in bar_calls] == [403, 403]  # one probing call per cycle
        said = [r for r in caplog.records if r.getMessage() == plan.SENTENCES["end-of-day"]]
        assert len(said) == 1
        assert plan.read(redis_client)["plan"] == "end-of-day"
        assert redis_client.hget(CHECKPOINT_KEY, "AAPL") is None
        # the backfill still loads the days before
        assert fetch_and_store_session(s, YESTERDAY, ["AAPL"]) == {"AAPL": 390}


def test_on_the_starter_plan_the_freshness_checks_allow_the_delay(settings, redis_client, pg_conn):
    with simulator("starter") as sim:
        s = settings_for(settings, sim)
        summary = MarketProducer(s, clock=lambda: NOW).run_cycle()
    assert summary.sent == 2 * 75 and not summary.failed  # 14:30 .. 15:44, delayed by 15 minutes
    assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == "2026-11-24T15:44:00Z"
    recorded = plan.read(redis_client)
    assert recorded["plan"] == "delayed" and recorded["sentence"] == plan.SENTENCES["delayed"]
    assert plan.freshness_allowance_s(s) == 900
    report = check_health(s, now=NOW, calendar="nyse", record=False)
    bar_age = [c for c in report.checks if c.name.startswith("bar_age:")]
    assert bar_age and all(c.threshold == s.health_max_bar_age_s + 900 for c in bar_age)


def test_on_the_advanced_plan_nothing_is_allowed_extra(settings, redis_client):
    with simulator("advanced") as sim:
        s = settings_for(settings, sim, watchlist=["AAPL"])
        MarketProducer(s, clock=lambda: NOW).run_cycle()
    assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == "2026-11-24T15:59:00Z"
    assert plan.read(redis_client)["plan"] == "real-time"
    assert plan.freshness_allowance_s(s) == 0
