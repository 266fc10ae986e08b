"""stream_health tells a streaming job that is alive and working on a micro-batch from one that is
stuck or gone (the job's heartbeat, ``ops.stream_heartbeats``), on the real test PostgreSQL and Kafka.

The bug: a new job's first micro-batch (seeding every symbol's state from PostgreSQL: 7,720 rows in
the market-wide dry run) commits nothing for minutes; stream_health saw only the previous commit's
age and restarted the job ~40 s after it started, over and over at 10,000 symbols."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pendulum
import pytest
from confluent_kafka import Producer

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def job_settings(monkeypatch: pytest.MonkeyPatch, dag_env, af_conn):
    """A watchlist and stream query of this test only; its heartbeat row is removed afterwards."""
    from stockpipe.config import get_settings

    tag = uuid.uuid4().hex[:5].upper()
    monkeypatch.setenv("STOCKPIPE_WATCHLIST", f"L{tag}A,L{tag}B")
    monkeypatch.setenv("STOCKPIPE_STREAM_QUERY_NAME", f"test_live_{tag}")
    get_settings.cache_clear()
    settings = get_settings()
    try:
        yield settings
    finally:
        af_conn.execute("DELETE FROM ops.stream_heartbeats WHERE query_name = %s", (settings.stream_query_name,))


def _previous_job_and_fresh_bars(settings, af_conn, batch_minutes_ago: float) -> None:
    """Bars and a producer cycle of a minute ago; the query's last commit (a previous job's) long ago."""
    newest = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    af_conn.execute("SELECT market.ensure_month_partitions(%s, %s)", (newest, newest))
    for symbol in settings.watchlist:
        af_conn.execute(
            "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, vwap, trades, source, fetched_at)"
            " VALUES (%s, %s, 10, 11, 9, 10.5, 100, 10.2, 5, 'simulator', now())",
            (symbol, newest),
        )
    af_conn.execute(
        "INSERT INTO ops.stream_batches (query_name, batch_id, rows_in, bars_upserted, committed_at)"
        " VALUES (%s, 41, 5, 5, now() - make_interval(secs => %s))",
        (settings.stream_query_name, batch_minutes_ago * 60),
    )
    af_conn.execute(
        "INSERT INTO ops.ingest_cycles (run_id, interval_start, symbols, bars_fetched, bars_sent, dead_letters,"
        " finished_at) VALUES ('market_producer/test', %s, %s, 1, 1, 0, now() - interval '1 minute')",
        (newest, len(settings.watchlist)),
    )


def _input_waits(settings, messages: int = 3) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for _ in range(messages):
        producer.produce(settings.kafka_topic, key=b"AAPL", value=b"{}")
    assert producer.flush(10) == 0


def _wait_for_beat(af_conn, query_name: str, batch_id: int | None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = af_conn.execute(
            "SELECT batch_id FROM ops.stream_heartbeats WHERE query_name = %s", (query_name,)
        ).fetchone()
        if row is not None and row[0] == batch_id:
            return
        time.sleep(0.1)
    raise AssertionError(f"no heartbeat of {query_name} with batch {batch_id}")


def test_a_job_busy_with_its_first_batch_is_not_restarted(dagbag, job_settings, af_conn, webhook):
    """The dry run's case, through stream_health's DAG: the previous job last committed 30 minutes
    ago, input waits, and the new job (started just now) is working on its first micro-batch."""
    from stockpipe.streaming.heartbeat import StreamHeartbeat

    settings = job_settings
    _previous_job_and_fresh_bars(settings, af_conn, batch_minutes_ago=30)
    _input_waits(settings)
    heartbeat = StreamHeartbeat(settings)  # what BatchWriter runs in the job's driver
    try:
        heartbeat.batch_started(0)
        _wait_for_beat(af_conn, settings.stream_query_name, 0)

        dag_run = dagbag.get_dag("stream_health").test(logical_date=pendulum.now("UTC"))
    finally:
        heartbeat.close()

    ok, detail = af_conn.execute(
        "SELECT ok, detail FROM ops.health_checks WHERE check_name = 'stream_batch_age'"
    ).fetchone()
    assert ok, detail
    assert "has finished no micro-batch yet; batch 0 in progress" in detail
    assert dag_run.state == "success", {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert webhook == []
    # a clean stop says so (stream_health then waits for the relaunch instead of judging a dead beat)
    stopped = af_conn.execute(
        "SELECT stopped_at IS NOT NULL, batch_id FROM ops.stream_heartbeats WHERE query_name = %s",
        (settings.stream_query_name,),
    ).fetchone()
    assert stopped == (True, None)


def _stream_check(settings, now: datetime):
    from stockpipe.monitoring.health import check_health

    (check,) = [c for c in check_health(settings, now=now, calendar="demo", record=False).checks
                if c.name == "stream_batch_age"]  # fmt: skip
    return check


def _beat(af_conn, settings, now: datetime, **ago_s) -> None:
    """The job's row as the heartbeat writes it, with its times ``ago_s`` seconds before ``now``."""
    from stockpipe.storage.heartbeat import beat

    def at(key: str) -> datetime | None:
        return None if ago_s.get(key) is None else now - timedelta(seconds=ago_s[key])

    beat(
        af_conn,
        settings.stream_query_name,
        "test-host:1:job",
        at("started"),
        beat_at=at("beat"),
        batch_id=ago_s.get("batch_id"),
        batch_started_at=at("batch_started"),
        batches_done=ago_s.get("done", 0),
        last_done_at=at("last_done"),
        stopped_at=at("stopped"),
    )


def test_stuck_or_gone_jobs_are_still_stalled_and_live_ones_are_not(job_settings, af_conn):
    """Each way a job can look, written with the heartbeat's own storage function, judged by the
    health check on the real database and topic (limits: batch age 300 s, first-batch grace 900 s,
    heartbeat 180 s)."""
    from stockpipe.airflow.restart import record_restart

    settings = job_settings
    assert (settings.health_max_batch_age_s, settings.health_first_batch_grace_s) == (300, 900)
    assert settings.health_heartbeat_timeout_s == 180
    _previous_job_and_fresh_bars(settings, af_conn, batch_minutes_ago=30)
    _input_waits(settings)
    now = datetime.now(UTC)

    def judged(**ago_s) -> tuple[bool, str]:
        _beat(af_conn, settings, now, **ago_s)
        check = _stream_check(settings, now)
        return check.ok, check.detail

    # alive, first batch in progress for 10 min: within the first-batch grace
    ok, detail = judged(started=700, beat=5, batch_id=0, batch_started=600)
    assert ok, detail
    # ... but not forever: no batch finished 16 min after the start
    ok, detail = judged(started=960, beat=5, batch_id=0, batch_started=930)
    assert not ok and "first-batch grace 900s" in detail and "stream stalled" in detail
    # the driver stopped beating (killed, or its JVM hung) in the middle of its first batch
    ok, detail = judged(started=300, beat=200, batch_id=0, batch_started=290)
    assert not ok and "gone or hung" in detail
    # a job that has finished batches: the steady-state limit from its last one
    ok, detail = judged(started=3600, beat=5, done=100, last_done=200, batch_id=101, batch_started=190)
    assert ok, detail
    ok, detail = judged(started=3600, beat=5, done=100, last_done=400)
    assert not ok and "last micro-batch 400s ago (limit 300s)" in detail
    # a clean stop: the relaunch gets the grace, a stream that never comes back does not
    ok, detail = judged(started=3600, beat=60, done=100, last_done=70, stopped=60)
    assert ok, detail
    ok, detail = judged(started=3600, beat=1000, done=100, last_done=1010, stopped=1000)
    assert not ok and "no new one has started" in detail

    # stream_health restarted it just now: the dying job's stale beat does not get it restarted again
    _beat(af_conn, settings, now, started=3600, beat=400, done=100, last_done=1000)
    assert not _stream_check(settings, now).ok
    record_restart(settings, ["scheduled__1"], "test")
    check = _stream_check(settings, now + timedelta(seconds=60))
    assert check.ok and "restarted the job" in check.detail, check.detail
    # ... but when no new job beats within the grace, it is stalled again
    check = _stream_check(settings, now + timedelta(seconds=1000))
    assert not check.ok and "gone or hung" in check.detail, check.detail


def test_an_idle_stream_is_healthy_whatever_its_heartbeat(job_settings, af_conn):
    """Nothing waits on the topic: no stall, even with the job's beat long gone."""
    settings = job_settings
    _previous_job_and_fresh_bars(settings, af_conn, batch_minutes_ago=30)
    now = datetime.now(UTC)
    _beat(af_conn, settings, now, started=3600, beat=1000, done=3, last_done=1000)
    check = _stream_check(settings, now)
    assert check.ok, check.detail
