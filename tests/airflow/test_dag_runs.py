"""``dag.test()`` runs against the real services (PostgreSQL, Redis, Kafka from `make test`) and an
in-thread simulator: the DAGs' tasks do what the platform needs, end to end."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, time, timedelta

import pendulum
import pytest
from confluent_kafka import Consumer, Producer

pytestmark = pytest.mark.usefixtures("airflow_db")


def run_dag(dagbag, dag_id: str, logical_date: datetime, run_after: datetime | None = None):
    dag = dagbag.get_dag(dag_id)
    return dag.test(
        logical_date=pendulum.instance(logical_date),
        run_after=pendulum.instance(run_after) if run_after else None,
    )


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def consume(settings, topic: str, want: int, timeout_s: float = 30) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages, deadline = [], datetime.now(UTC) + timedelta(seconds=timeout_s)
    while len(messages) < want and datetime.now(UTC) < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            messages.append(message)
    consumer.close()
    return messages


def test_market_ingest_one_interval_sends_bars_to_kafka(dagbag, dag_env, af_conn, monkeypatch):
    from stockpipe.config import get_settings

    # 30 minutes back instead of the (demo) session's open: a count that doesn't depend on the hour
    monkeypatch.setenv("STOCKPIPE_BACKFILL_START_MINUTES", "30")
    get_settings.cache_clear()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    dag_run = run_dag(dagbag, "market_ingest", now)
    assert dag_run.state == "success", task_states(dag_run)
    finished = datetime.now(UTC).replace(second=0, microsecond=0)

    # a symbol with no checkpoint starts STOCKPIPE_BACKFILL_START_MINUTES back: 30 closed bars each
    expected = len(dag_env.watchlist) * 30
    messages = consume(dag_env, dag_env.kafka_topic, expected)
    assert len(messages) == expected
    bars = [json.loads(m.value()) for m in messages]
    assert {m.key().decode() for m in messages} == set(dag_env.watchlist)
    assert all(b["source"] == "simulator" and b["v"] == 1 for b in bars)
    assert max(b["ts"] for b in bars) < finished.strftime("%Y-%m-%dT%H:%M:%SZ")  # only closed minutes
    row = af_conn.execute("SELECT symbols, bars_sent, failed_symbols FROM ops.ingest_cycles").fetchone()
    assert row == (len(dag_env.watchlist), expected, [])


@pytest.fixture
def own_symbols(monkeypatch: pytest.MonkeyPatch, dag_env):
    """A watchlist and stream query name of this test only (rollups and checks see the whole table)."""
    from stockpipe.config import get_settings

    tag = uuid.uuid4().hex[:5].upper()
    monkeypatch.setenv("STOCKPIPE_WATCHLIST", f"Q{tag}A,Q{tag}B")
    monkeypatch.setenv("STOCKPIPE_STREAM_QUERY_NAME", f"test_{tag}")
    get_settings.cache_clear()
    return get_settings()


def _between_new_york_midnight_and_the_schedule() -> datetime:
    """The latest past instant after New York's midnight and before the daily 06:30 UTC run: a
    manual run there has a data interval ending at the previous day's 06:30 (CI failed there)."""
    from stockpipe.calendar import NEW_YORK

    now = datetime.now(UTC)
    day = now.date() if now.time() >= time(6, 20) else now.date() - timedelta(days=1)
    instant = datetime.combine(day, time(6, 20), UTC)
    assert instant.astimezone(NEW_YORK).hour < 6  # after midnight in New York (EST and EDT)
    return instant


def test_postgres_maintenance(dagbag, own_symbols, af_conn):
    from stockpipe.calendar import trading_calendar

    symbol = own_symbols.watchlist[0]
    # a manual run at an instant when the newest session (the New York day that just ended) closed
    # before the schedule's 06:30 UTC: the checks must cover that session
    run_at = _between_new_york_midnight_and_the_schedule()
    session = trading_calendar("demo").last_sessions(1, run_at)[0]
    # three complete bars and one broken (high below close) for AAPL in the last session
    af_conn.execute(
        "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, vwap, trades, source, fetched_at)"
        " SELECT %s, %s + make_interval(mins => n), 10, 11, 9, 10.5, 100, 10.2, 5, 'simulator', now()"
        " FROM generate_series(0, 2) n",
        (symbol, session.open),
    )
    af_conn.execute(
        "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, vwap, trades, source, fetched_at)"
        " VALUES (%s, %s, 10, 10.1, 9, 10.5, 100, 10.2, 5, 'simulator', now())",
        (symbol, session.open + timedelta(minutes=3)),
    )
    dag_run = run_dag(dagbag, "postgres_maintenance", run_at, run_after=run_at)
    assert dag_run.state == "success", task_states(dag_run)

    in_two_months = (run_at.replace(day=1) + timedelta(days=62)).strftime("%Y%m")
    assert af_conn.execute("SELECT to_regclass(%s)", (f"market.bars_1m_{in_two_months}",)).fetchone()[0]
    assert af_conn.execute("SELECT bars, volume FROM market.bars_1d WHERE symbol = %s", (symbol,)).fetchone() == (
        4,
        400,
    )
    assert af_conn.execute("SELECT count(*) FROM market.bars_5m WHERE symbol = %s", (symbol,)).fetchone()[0] == 1
    quality = {
        (name, symbol): (ok, value)
        for name, symbol, ok, value in af_conn.execute(
            "SELECT check_name, symbol, ok, value FROM ops.data_quality WHERE session_date = %s", (session.day,)
        )
    }
    assert quality[("ohlc_sanity", symbol)] == (False, 1)
    assert quality[("completeness", symbol)][0] is False
    assert quality[("indicator_coverage", symbol)] == (False, 4)
    assert quality[("completeness", own_symbols.watchlist[1])] == (False, 0)


def _fresh_pipeline(settings, af_conn, minutes_ago: int, batch_minutes_ago: int) -> None:
    newest = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
    af_conn.execute("SELECT market.ensure_month_partitions(%s, %s)", (newest, newest))
    for symbol in settings.watchlist:
        af_conn.execute(
            "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, vwap, trades, source, fetched_at)"
            " VALUES (%s, %s, 10, 11, 9, 10.5, 100, 10.2, 5, 'simulator', now())",
            (symbol, newest),
        )
    af_conn.execute(
        "INSERT INTO ops.stream_batches (query_name, batch_id, rows_in, bars_upserted, committed_at)"
        " VALUES (%s, 1, 5, 5, now() - make_interval(mins => %s))",
        (settings.stream_query_name, batch_minutes_ago),
    )
    af_conn.execute(  # the producer's last cycle, as old as the newest bar
        "INSERT INTO ops.ingest_cycles (run_id, interval_start, symbols, bars_fetched, bars_sent, dead_letters,"
        " finished_at) VALUES ('market_producer/test', %s, %s, 1, 1, 0, now() - make_interval(mins => %s))",
        (newest, len(settings.watchlist), minutes_ago),
    )


def _session_checks(settings, af_conn) -> set[str]:
    """The checks that depend on the session at the time the run assessed the pipeline: a bar's and
    the producer's age are judged only once the (demo: New York midnight) session has been open
    longer than their limits, so in the first ~10 minutes of a New York day they are absent."""
    from stockpipe.calendar import trading_calendar
    from stockpipe.producer.plan import freshness_allowance_s

    (checked_at,) = af_conn.execute("SELECT max(checked_at) FROM ops.health_checks").fetchone()
    session = trading_calendar(settings.calendar_mode).session_at(checked_at)
    open_s = (checked_at - session.open).total_seconds() if session else -1.0
    expected = set()
    if open_s > settings.health_max_bar_age_s + freshness_allowance_s(settings):
        expected |= {f"bar_age:{symbol}" for symbol in settings.watchlist}
    if open_s > settings.health_max_cycle_age_s:
        expected.add("producer_cycle_age")
    return expected


def test_stream_health_passes_when_fresh(dagbag, own_symbols, af_conn, webhook):
    dag_env = own_symbols
    _fresh_pipeline(dag_env, af_conn, minutes_ago=1, batch_minutes_ago=0)
    dag_run = run_dag(dagbag, "stream_health", datetime.now(UTC))
    assert dag_run.state == "success", task_states(dag_run)
    assert webhook == []
    checks = dict(af_conn.execute("SELECT check_name, ok FROM ops.health_checks").fetchall())
    assert checks["stream_batch_age"] and checks["kafka_lag"]
    session_checks = {name for name in checks if name.startswith("bar_age:") or name == "producer_cycle_age"}
    assert session_checks == _session_checks(dag_env, af_conn) and all(checks[name] for name in session_checks)


def test_stream_health_fails_and_alerts_when_stale(dagbag, own_symbols, af_conn, webhook):
    dag_env = own_symbols
    _fresh_pipeline(dag_env, af_conn, minutes_ago=60, batch_minutes_ago=30)
    producer = Producer({"bootstrap.servers": dag_env.kafka_bootstrap})
    for _ in range(3):  # input waits while the stream does nothing: stalled
        producer.produce(dag_env.kafka_topic, key=b"AAPL", value=b"{}")
    assert producer.flush(10) == 0

    dag_run = run_dag(dagbag, "stream_health", datetime.now(UTC))
    assert dag_run.state == "failed"
    assert task_states(dag_run)["verdict"] == "failed"
    assert task_states(dag_run)["restart_stalled_stream"] == "success"  # restart disabled in tests
    assert len(webhook) == 1
    alert = webhook[0]
    assert alert["dag_id"] == "stream_health" and alert["task_id"] == "verdict"
    assert "stream stalled" in alert["detail"] and "3 messages wait" in alert["detail"]
    breached = {name for name, ok in af_conn.execute("SELECT check_name, ok FROM ops.health_checks") if not ok}
    session_checks = _session_checks(dag_env, af_conn)  # all of them but in a New York day's first minutes
    assert {"stream_batch_age", *session_checks} <= breached
    bar_age = f"bar_age:{dag_env.watchlist[0]}"
    assert (bar_age in alert["detail"]) == (bar_age in session_checks)
    if "producer_cycle_age" in session_checks:
        assert re.search(r"last producer cycle finished 36\d\ds ago", alert["detail"])


def test_stream_health_judges_bar_and_producer_age_once_the_session_has_run_that_long(own_symbols, af_conn):
    """Why the two tests above read the session checks off the run: in the demo calendar a session
    starts at New York midnight, and a run then (05:00-05:10 UTC in winter) has no bar age to judge."""
    from stockpipe.calendar import trading_calendar
    from stockpipe.monitoring.health import check_health

    settings = own_symbols
    _fresh_pipeline(settings, af_conn, minutes_ago=60, batch_minutes_ago=30)
    midnight = trading_calendar("demo").session_at(datetime.now(UTC)).open  # today's New York midnight
    checked = {
        minutes: {c.name for c in check_health(settings, now=midnight + timedelta(minutes=minutes), calendar="demo",
                                               record=False).checks}
        for minutes in (2, 8, 20)
    }  # fmt: skip
    bar_age = {f"bar_age:{symbol}" for symbol in settings.watchlist}
    assert not (bar_age | {"producer_cycle_age"}) & checked[2]
    assert "producer_cycle_age" in checked[8] and not bar_age & checked[8]  # limits: 300 s and 600 s
    assert bar_age | {"producer_cycle_age"} <= checked[20]


@pytest.fixture
def nyse_day(monkeypatch: pytest.MonkeyPatch, dag_env):
    """A simulator on the NYSE clock and a watchlist of this test only; the session is 2026-11-24
    (a regular 390-minute Tuesday) — already closed for the simulator's real-time clock."""
    from stockpipe.config import get_settings
    from stockpipe.sources.simulator import start_in_thread

    letters = "".join(chr(ord("A") + int(c, 16) % 26) for c in uuid.uuid4().hex[:3])
    with start_in_thread(seed=11, clock="nyse") as sim:
        monkeypatch.setenv("STOCKPIPE_SIMULATOR_PORT", sim.url.rsplit(":", 1)[1])
        monkeypatch.setenv("STOCKPIPE_SIMULATOR_CLOCK", "nyse")
        monkeypatch.setenv("STOCKPIPE_WATCHLIST", f"QA{letters},QB{letters}")
        get_settings.cache_clear()
        yield get_settings()


def _day_rows(conn, symbols: list[str]) -> list[tuple]:
    return conn.execute(
        "SELECT b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades, i.sma_20, i.ema_26,"
        " i.rsi_14, i.macd_signal, i.bb_lower, i.vwap_session"
        " FROM market.bars_1m b JOIN market.indicators_1m i USING (symbol, ts)"
        " WHERE b.symbol = ANY(%s) ORDER BY 1, 2",
        (symbols,),
    ).fetchall()


@pytest.mark.spark
@pytest.mark.slow
def test_market_backfill_one_simulated_day(dagbag, nyse_day, af_conn):
    from tests.integration import streamkit as kit

    symbols = nyse_day.watchlist
    logical = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # infers the last closed session: 2026-11-24
    dag_run = run_dag(dagbag, "market_backfill", logical)
    assert dag_run.state == "success", task_states(dag_run)

    runs = af_conn.execute(
        "SELECT session_date::text, bars, expected_bars, gaps, ohlc_errors, status FROM ops.backfill_runs"
        " WHERE run_id = %s",
        (dag_run.run_id,),
    ).fetchall()
    assert runs == [("2026-11-24", 390 * len(symbols), 390 * len(symbols), 0, 0, "ok")]
    first = _day_rows(af_conn, symbols)
    assert len(first) == 390 * len(symbols)
    frame = kit.stored(af_conn)
    kit.assert_talib_exact(frame[frame["symbol"].isin(symbols)])

    # the same day again (a rerun from the UI or `airflow backfill create`) changes nothing
    again = run_dag(dagbag, "market_backfill", logical)
    assert again.state == "success", task_states(again)
    assert _day_rows(af_conn, symbols) == first
