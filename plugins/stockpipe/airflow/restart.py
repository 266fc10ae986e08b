"""Restart the streaming job the Airflow way: mark market_stream's running task instance failed.

Airflow then kills the task (SparkSubmitOperator.on_kill stops spark-submit and its driver JVM),
and the ``@continuous`` schedule starts a new run, which resumes from the query's checkpoint. Done
through the public REST API of the local api-server, with the admin login kept under
``.local/airflow`` (tasks may not touch the metadata database directly in Airflow 3).
"""

from __future__ import annotations

import logging

from stockpipe.clients import airflow_client
from stockpipe.config import Settings

log = logging.getLogger("stockpipe.airflow.restart")

STREAM_DAG_ID = "market_stream"
STREAM_TASK_ID = "stream_indicators"


def dag_is_paused(settings: Settings, dag_id: str) -> bool:
    with airflow_client(settings, "admin") as client:
        response = client.get(f"/api/v2/dags/{dag_id}")
        response.raise_for_status()
        return bool(response.json().get("is_paused"))


def set_dag_paused(settings: Settings, dag_id: str, paused: bool, *, base_url: str | None = None) -> None:
    """Pause or unpause ``dag_id`` (benchmarks switch the producer DAGs with it)."""
    with airflow_client(settings, "admin", base_url=base_url) as client:
        response = client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": paused})
        response.raise_for_status()
    log.info("%s %s", "paused" if paused else "unpaused", dag_id)


def queue_next_run(settings: Settings, dag_id: str, note: str) -> str | None:
    """Make sure a run of ``dag_id`` waits to start (a ``@continuous`` DAG's relaunch); the new run's id,
    or None when one is already queued.

    Airflow's scheduler creates the next continuous run only once it counts no active run; when a run
    fails it still counts it (its new state is not flushed before the count), and only the dag-processor's
    next pass over the file (every 30 s or more on a loaded machine) sets that right. A run queued behind
    the dying one starts as soon as the scheduler has marked the old one finished."""
    with airflow_client(settings, "admin") as client:
        queued = client.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"state": "queued", "limit": 1})
        queued.raise_for_status()
        if queued.json().get("total_entries", 0):
            return None
        response = client.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "note": note[:1000]})
        response.raise_for_status()
        return str(response.json().get("dag_run_id"))


def restart_stream(settings: Settings, reason: str, *, base_url: str | None = None) -> list[str]:
    """Mark every running ``market_stream.stream_indicators`` failed; returns the affected run ids."""
    with airflow_client(settings, "admin", base_url=base_url) as client:
        runs = client.get(f"/api/v2/dags/{STREAM_DAG_ID}/dagRuns", params={"state": "running"})
        runs.raise_for_status()
        restarted = []
        for run in runs.json().get("dag_runs", []):
            run_id = run["dag_run_id"]
            response = client.patch(
                f"/api/v2/dags/{STREAM_DAG_ID}/dagRuns/{run_id}/taskInstances/{STREAM_TASK_ID}",
                json={"new_state": "failed", "note": f"restarted by stream_health: {reason}"[:1000]},
            )
            if response.status_code == 200:
                restarted.append(run_id)
            else:
                log.warning(
                    "could not mark %s/%s failed: %s %s",
                    run_id,
                    STREAM_TASK_ID,
                    response.status_code,
                    response.text[:200],
                )
    log.warning("stream restart (%s): %s", reason, ", ".join(restarted) or "no running stream task")
    return restarted


def restart_if_stalled(report: dict) -> list:
    """stream_health's task: restart the stream when ``report`` (:func:`~stockpipe.airflow.health.assess_pipeline`)
    says it stalled and ``STOCKPIPE_HEALTH_RESTART_STALLED_STREAM`` allows it."""
    from stockpipe.airflow.connections import task_settings

    settings = task_settings()
    if not (report["stalled"] and settings.health_restart_stalled_stream):
        return []
    restarted = restart_stream(settings, report["message"])
    if restarted:
        record_restart(settings, restarted, report["message"])
    return restarted


def record_restart(settings: Settings, runs: list[str], reason: str) -> None:
    """Note the restart in ``ops.health_checks`` (``stream_restart``): the next checks give the new job
    its first-batch grace from now, instead of judging the dying job's heartbeat."""
    from datetime import UTC, datetime

    from stockpipe.clients import pg_connect
    from stockpipe.storage.heartbeat import RESTART_CHECK
    from stockpipe.storage.queries import record_health_checks

    detail = f"restarted {', '.join(runs)}: {reason}"[:1000]
    with pg_connect(settings, "writer", connect_timeout=10, autocommit=True) as conn:
        record_health_checks(conn, [(datetime.now(UTC), RESTART_CHECK, len(runs), None, True, detail)])
