"""Every DAG file imports cleanly and fast, serializes (custom timetables registered through the
plugin), and has the shape the platform relies on."""

from __future__ import annotations

from datetime import timedelta

import pytest

EXPECTED = {
    "market_ingest": {"produce_bars"},
    "market_stream": {"stream_indicators"},
    "stream_health": {"assess", "restart_stalled_stream", "verdict"},
    "market_backfill": {"plan", "fetch_bars", "compute_indicators", "check_day"},
    "postgres_maintenance": {
        "ensure_partitions",
        "apply_retention",
        "vacuum_analyze",
        "refresh_rollups",
        "data_quality",
    },
}


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(EXPECTED)


def test_each_file_parses_fast(dagbag):
    # The dag-processor parses every file every few seconds: no top-level I/O or heavy work.
    slow = {s.file: s.duration for s in dagbag.dagbag_stats if s.duration > timedelta(seconds=3)}
    assert not slow, f"DAG files too slow to parse: {slow}"


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_serializes(dagbag, airflow_db, dag_id):
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dagbag.get_dag(dag_id)
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert restored.dag_id == dag_id
    assert type(restored.timetable).__name__ == type(dag.timetable).__name__ or dag_id == "market_stream"


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_structure(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert {t.task_id for t in dag.tasks} == EXPECTED[dag_id]
    assert "stockpipe" in dag.tags
    assert dag.doc_md and dag_id in dag.doc_md
    assert dag.catchup is False
    for task in dag.tasks:
        assert task.owner == "stockpipe", task.task_id
        assert task.retries is not None
    assert dag.default_args.get("owner") == "stockpipe"
    assert "retries" in dag.default_args


def test_schedules(dagbag):
    from stockpipe.airflow.timetables import TradingMinuteTimetable, TradingSessionTimetable

    assert isinstance(dagbag.get_dag("market_ingest").timetable, TradingMinuteTimetable)
    assert isinstance(dagbag.get_dag("market_backfill").timetable, TradingSessionTimetable)
    stream = dagbag.get_dag("market_stream")
    assert type(stream.timetable).__name__ == "ContinuousTimetable"
    assert stream.max_active_runs == 1
    assert dagbag.get_dag("stream_health").timetable.delta <= timedelta(minutes=5)
    assert dagbag.get_dag("market_ingest").get_task("produce_bars").retries >= 1


def test_backfill_wiring(dagbag):
    dag = dagbag.get_dag("market_backfill")
    spark = dag.get_task("compute_indicators")
    assert spark.application.endswith("spark_jobs/backfill_indicators.py")
    assert spark._conn_id == "spark_default"
    assert dag.get_task("fetch_bars").downstream_task_ids == {"compute_indicators"}
    assert spark.downstream_task_ids == {"check_day"}
    assert dag.max_active_runs == 1


def test_stream_wiring(dagbag):
    task = dagbag.get_dag("market_stream").get_task("stream_indicators")
    assert task.application.endswith("spark_jobs/stream_indicators.py")
    assert task._conn_id == "spark_default"
