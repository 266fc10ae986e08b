"""
### market_producer — the producer as a long-running service, kept alive by Airflow

Runs `python -m stockpipe.producer` (the loop: fetch the watchlist's closed minute bars through the
shared Redis rate limiter, validate, send to `stock-prices`) as a child process of its one task,
with the project venv's interpreter (`ProducerServiceOperator`). Its log lines stream into the task
log; each cycle is one row of `ops.ingest_cycles` (the dashboard's Pipeline page; `stream_health`
fails when none finished for `STOCKPIPE_HEALTH_MAX_CYCLE_AGE_S` during a session). The process holds
only the producer's secrets.

The `@continuous` schedule with `max_active_runs=1` keeps exactly one running: when the producer
dies (crash, kill -9) the task fails and the next run starts a new one within seconds; it resumes
from its per-symbol checkpoints, so no bar is lost.

Stopping: pause the DAG (the task notices within 10 s) or mark the task failed; the producer gets
SIGTERM and ends after its running fetch. Reruns of an interval go through `market_ingest`
(trigger it, or `airflow backfill create --dag-id market_ingest ...`): they re-send that interval.

Active with `STOCKPIPE_PRODUCER_MODE=service` (the default); in the other modes `make up` pauses it.
Unpaused anyway, with `supervisor` (supervisord's or compose's producer program) a run pauses the DAG
and skips; with `airflow` it runs and says in its log that market_ingest produces too.
"""

from __future__ import annotations

from airflow.sdk import dag

from stockpipe.airflow.alerts import AlertNotifier
from stockpipe.airflow.assets import BARS_TOPIC
from stockpipe.airflow.defaults import dag_defaults
from stockpipe.airflow.operators import ProducerServiceOperator


@dag(
    dag_id="market_producer",
    schedule="@continuous",
    **dag_defaults(tags=["ingest", "kafka"], retries=0, alert=False),
    doc_md=__doc__,
)
def market_producer():
    ProducerServiceOperator(
        task_id="run_producer",
        outlets=[BARS_TOPIC],
        on_failure_callback=AlertNotifier(title="producer stopped (relaunching)"),
    )


market_producer()
