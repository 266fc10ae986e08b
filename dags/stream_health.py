"""
### stream_health — is the pipeline keeping up?

Every 3 minutes: the streaming query's last micro-batch age and Kafka lag, per-symbol freshness of
`market.bars_1m` and the age of the producer's last cycle (`ops.ingest_cycles`, written by
`market_producer`'s loop) during trading sessions, dead-letter growth, and the producer's API error
rate (thresholds: `STOCKPIPE_HEALTH_*`). Results go to `ops.health_checks`.

A breach fails the run with one message naming every breached check, and alerts through
`AlertNotifier` (task log + `STOCKPIPE_ALERT_WEBHOOK_URL` if set). A stalled stream is restarted: its
`market_stream` task is marked failed and the continuous schedule relaunches it from its checkpoint.
Stalled means, while input waits: the job's heartbeat (`ops.stream_heartbeats`, written by its driver)
is older than `STOCKPIPE_HEALTH_HEARTBEAT_TIMEOUT_S` (driver gone or hung); or a live job has finished
no micro-batch for `STOCKPIPE_HEALTH_MAX_BATCH_AGE_S` — or, before its first since it started (or was
restarted), for `STOCKPIPE_HEALTH_FIRST_BATCH_GRACE_S`: a first batch seeds every symbol's state from
PostgreSQL and can take minutes at 10,000 symbols.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from stockpipe.airflow.alerts import AlertNotifier
from stockpipe.airflow.defaults import dag_defaults


@dag(
    dag_id="stream_health",
    schedule=timedelta(minutes=3),
    dagrun_timeout=timedelta(minutes=5),
    **dag_defaults(tags=["monitoring"], retries=0, alert=False),
    doc_md=__doc__,
)
def stream_health():
    @task(execution_timeout=timedelta(minutes=2))
    def assess() -> dict:
        from stockpipe.airflow.health import assess_pipeline

        return assess_pipeline()

    @task(execution_timeout=timedelta(minutes=2))
    def restart_stalled_stream(report: dict) -> list:
        from stockpipe.airflow.restart import restart_if_stalled

        return restart_if_stalled(report)

    @task(on_failure_callback=AlertNotifier(title="stream_health breach"))
    def verdict(report: dict) -> str:
        from stockpipe.airflow.health import raise_on_breach

        return raise_on_breach(report)

    report = assess()
    restart_stalled_stream(report)
    verdict(report)


stream_health()
