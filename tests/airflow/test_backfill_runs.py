"""market_backfill over a range, as `airflow backfill create` makes it: its runs exist at once; the
first one fetches the whole range in as few API calls as the API allows and computes the indicators
once, the others only check their session. Real services (PostgreSQL, Redis, Spark), the simulator
through the massive client, ``dag.test()``."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime, timedelta

import pendulum
import pytest

pytestmark = [pytest.mark.usefixtures("airflow_db"), pytest.mark.spark, pytest.mark.slow]

FIRST, LAST = date(2026, 11, 16), date(2026, 11, 20)  # Monday..Friday, regular NYSE sessions


@pytest.fixture
def nyse_week(monkeypatch: pytest.MonkeyPatch, dag_env):
    """A simulator on the NYSE clock and a watchlist of this test only."""
    from stockpipe.config import get_settings
    from stockpipe.sources.simulator import start_in_thread

    letters = "".join(chr(ord("A") + int(c, 16) % 26) for c in uuid.uuid4().hex[:3])
    with start_in_thread(seed=13, clock="nyse") as sim:
        monkeypatch.setenv("STOCKPIPE_SIMULATOR_PORT", sim.url.rsplit(":", 1)[1])
        monkeypatch.setenv("STOCKPIPE_SIMULATOR_CLOCK", "nyse")
        monkeypatch.setenv("STOCKPIPE_WATCHLIST", f"RA{letters},RB{letters}")
        get_settings.cache_clear()
        yield sim, get_settings()


def sync_dag_to_db(dagbag) -> None:
    """What the dag-processor does: the DAG's serialized version in the metadata DB."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        sync_bag_to_db(
            BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name),
            bundle.name,
            bundle.version,
        )


@pytest.fixture
def backfill_created(dagbag):
    """`airflow backfill create --dag-id market_backfill --from-date FIRST --to-date LAST`: one queued
    run per session (removed afterwards)."""
    from airflow.models.backfill import Backfill, _create_backfill
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    sync_dag_to_db(dagbag)
    created = _create_backfill(
        dag_id="market_backfill",
        from_date=datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=UTC),
        to_date=datetime(LAST.year, LAST.month, LAST.day, tzinfo=UTC),
        max_active_runs=10,
        reverse=False,
        dag_run_conf=None,
        triggering_user_name="test",
    )
    yield created
    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.dag_id == "market_backfill"))
        session.execute(delete(Backfill).where(Backfill.id == created.id))


def run_session(dagbag, day: date):
    """A run of ``day``'s session (dag.test infers the session closed last before its logical date)."""
    logical = pendulum.datetime(day.year, day.month, day.day, 22, 0, tz="UTC")  # after the 21:00 UTC close
    return dagbag.get_dag("market_backfill").test(logical_date=logical)


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def test_a_backfill_range_is_fetched_once_computed_once_and_checked_per_session(
    dagbag, nyse_week, backfill_created, af_conn
):
    from stockpipe.calendar import trading_calendar
    from tests.integration import streamkit as kit

    simulator, settings = nyse_week
    symbols = settings.watchlist
    sessions = trading_calendar("nyse").sessions_between(FIRST, LAST)
    assert len(sessions) == 5

    runs = [run_session(dagbag, s.day) for s in sessions]  # the first leads, the others follow

    # one aggregates request per symbol for the whole range (1,950 bars: one page), not one per session
    pages = math.ceil(sum(s.minutes for s in sessions) / 50_000)
    calls = [r for r in simulator.state.log.requests() if r["path"].startswith("/v2/aggs/")]
    assert len(calls) <= len(symbols) * pages, [c["path"] for c in calls]  # was: symbols x sessions = 10
    assert all(run.state == "success" for run in runs), [states(r) for r in runs]
    # the leader computed the indicators once; the other runs only checked
    assert states(runs[0]) == {"prepare": "success", "compute_indicators": "success", "check_day": "success"}
    for run in runs[1:]:
        assert states(run) == {"prepare": "success", "compute_indicators": "skipped", "check_day": "skipped"}
    # every session checked and recorded, one row each
    recorded = af_conn.execute(
        "SELECT run_id, session_date, bars, expected_bars, gaps, ohlc_errors, status FROM ops.backfill_runs"
        " ORDER BY session_date"
    ).fetchall()
    assert [(r[0], r[1]) for r in recorded] == [(run.run_id, s.day) for run, s in zip(runs, sessions, strict=True)]
    assert all(r[2:] == (390 * len(symbols), 390 * len(symbols), 0, 0, "ok") for r in recorded)
    # indicators equal TA-Lib over the stored bars; nothing left queued for repair
    frame = kit.stored(af_conn)
    frame = frame[frame["symbol"].isin(symbols)]
    assert len(frame) == 5 * 390 * len(symbols)
    kit.assert_talib_exact(frame)
    assert af_conn.execute("SELECT count(*) FROM ops.repair_queue WHERE repaired_at IS NULL").fetchone()[0] == 0


def test_no_backfill_task_waits_for_the_limiter_in_a_slot_but_the_leaders_fetch(dagbag):
    """The structure that keeps Airflow's slots free: a run that must wait defers (prepare is the
    deferring branch), at most one Spark backfill runs at a time, the run timeout allows a long range."""
    from stockpipe.airflow.backfill_operators import BackfillIndicatorsOperator, BackfillPrepareOperator

    dag = dagbag.get_dag("market_backfill")
    prepare, compute = dag.get_task("prepare"), dag.get_task("compute_indicators")
    assert isinstance(prepare, BackfillPrepareOperator) and callable(prepare.resume)
    assert isinstance(compute, BackfillIndicatorsOperator)
    assert compute.max_active_tis_per_dag == 1
    assert dag.dagrun_timeout >= timedelta(hours=2)


def test_a_run_defers_while_another_leads_and_takes_over_when_the_leader_is_gone(
    dagbag, nyse_week, af_conn, monkeypatch, caplog
):
    """A leader killed mid-fetch leaves its lease; the next run defers (no worker slot) until the
    lease expires, then leads itself: fetches, computes, checks."""
    from stockpipe.airflow import backfill

    simulator, settings = nyse_week
    monkeypatch.setattr(backfill, "FOLLOWER_WAIT_S", (1.0, 2.0))
    dead = backfill.FetchLease(settings, "backfill__killed", ttl_s=6)
    assert dead.take(first=FIRST.isoformat(), last=FIRST.isoformat())
    dead.close()

    with caplog.at_level("INFO", logger="stockpipe.airflow.backfill"):
        run = run_session(dagbag, FIRST)

    assert run.state == "success", states(run)
    assert states(run) == {"prepare": "success", "compute_indicators": "success", "check_day": "success"}
    said = [r.getMessage() for r in caplog.records if r.name == "stockpipe.airflow.backfill"]
    assert any("run backfill__killed fetches/computes" in m and "no worker slot held" in m for m in said), said
    assert any(m.startswith("leading the backfill of") for m in said), said
    (status,) = af_conn.execute("SELECT status FROM ops.backfill_runs WHERE run_id = %s", (run.run_id,)).fetchone()
    assert status == "ok"
    calls = [r for r in simulator.state.log.requests() if r["path"].startswith("/v2/aggs/")]
    assert len(calls) == len(settings.watchlist)
    assert settings.redis_client().get(backfill.LEASE_KEY) is None  # released after the Spark job
