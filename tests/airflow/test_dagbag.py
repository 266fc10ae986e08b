"""Every DAG file imports cleanly and fast, serializes (custom timetables registered through the
plugin), and has the shape the platform relies on."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.airflow.conftest import ROOT

EXPECTED = {
    "market_ingest": {"produce_bars"},
    "market_stream": {"stream_indicators"},
    "market_producer": {"run_producer"},
    "stream_health": {"assess", "restart_stalled_stream", "verdict"},
    "market_backfill": {"prepare", "compute_indicators", "check_day"},
    "postgres_maintenance": {
        "ensure_partitions",
        "apply_retention",
        "vacuum_analyze",
        "refresh_rollups",
        "data_quality",
    },
}


CONTINUOUS = ("market_stream", "market_producer")


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
    assert type(restored.timetable).__name__ == type(dag.timetable).__name__ or dag_id in CONTINUOUS


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
    for dag_id in CONTINUOUS:  # one long-running task, relaunched by the next run when it ends
        dag = dagbag.get_dag(dag_id)
        assert type(dag.timetable).__name__ == "ContinuousTimetable", dag_id
        assert dag.max_active_runs == 1, dag_id
        assert all(task.retries == 0 for task in dag.tasks), dag_id
    assert dagbag.get_dag("stream_health").timetable.delta <= timedelta(minutes=5)
    assert dagbag.get_dag("market_ingest").get_task("produce_bars").retries >= 1


def test_backfill_wiring(dagbag):
    dag = dagbag.get_dag("market_backfill")
    spark = dag.get_task("compute_indicators")
    assert spark.application.endswith("spark_jobs/backfill_indicators.py")
    assert spark._conn_id == "spark_default"
    assert dag.get_task("prepare").downstream_task_ids == {"compute_indicators"}
    assert spark.downstream_task_ids == {"check_day"}
    assert dag.max_active_runs == 1


def test_stream_wiring(dagbag):
    task = dagbag.get_dag("market_stream").get_task("stream_indicators")
    assert task.application.endswith("spark_jobs/stream_indicators.py")
    assert task._conn_id == "spark_default"


def test_producer_wiring(dagbag):
    """The producer DAG runs the long-running loop (no --once) and stops it when paused."""
    from stockpipe.airflow.operators import ProducerServiceOperator

    task = dagbag.get_dag("market_producer").get_task("run_producer")
    assert isinstance(task, ProducerServiceOperator)
    assert task.module == "stockpipe.producer" and "--once" not in task.args
    assert task.stop_when_paused and task.pause_poll_s <= 30


def test_dag_files_read_no_setting():
    """Parsing reads no stockpipe setting (the dag-processor parses every few seconds; the tasks read
    the settings): in a fresh interpreter with settings that don't even validate, every DAG parses."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "STOCKPIPE_PRODUCER_MODE": "nonsense", "STOCKPIPE_KAFKA_BOOTSTRAP": "not a host"}
    code = (
        "import json; from airflow.dag_processing.dagbag import DagBag; "
        f"bag = DagBag(dag_folder={str(ROOT / 'dags')!r}); "
        "print(json.dumps([sorted(bag.dag_ids), {k: v[-300:] for k, v in bag.import_errors.items()}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    dag_ids, errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert errors == {}
    assert set(dag_ids) == set(EXPECTED)
