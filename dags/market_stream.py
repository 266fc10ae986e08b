"""
### market_stream — the Spark Structured Streaming job, kept alive

Runs `spark_jobs/stream_indicators.py` with `SparkSubmitOperator` on the `spark_default`
connection: Kafka `stock-prices` → parse, validate, dedupe → TA-Lib-exact indicators →
PostgreSQL (`market.bars_1m`, `market.indicators_1m`) and Redis (latest state).

The task runs as long as the job does. The `@continuous` schedule with `max_active_runs=1` starts a
new run as soon as one ends, so a crashed or killed driver is relaunched within seconds and resumes
from its checkpoint (`STOCKPIPE_STREAM_CHECKPOINT`). `stream_health` marks the task failed when the
stream stalls, which restarts it the same way.

Stopping: mark the task failed, or pause the DAG (the task notices within 30 s). The job's driver
gets SIGTERM and stops after its running micro-batch; spark-submit is killed only if it hangs.

Scaling out: point `spark_default` at `spark://HOST:7077` (standalone) or `k8s://https://API:443`
(Kubernetes, with `deploy-mode`/`namespace` extras) — per-symbol state is keyed by symbol and shards
over `STOCKPIPE_SPARK_SHUFFLE_PARTITIONS`.
"""

from __future__ import annotations

from airflow.sdk import dag

from stockpipe.airflow.alerts import AlertNotifier
from stockpipe.airflow.assets import BARS_TABLE, INDICATORS_TABLE
from stockpipe.airflow.defaults import dag_defaults
from stockpipe.airflow.operators import StockpipeSparkSubmitOperator, spark_application


@dag(
    dag_id="market_stream",
    schedule="@continuous",
    **dag_defaults(tags=["spark", "streaming"], retries=0, alert=False),
    doc_md=__doc__,
)
def market_stream():
    StockpipeSparkSubmitOperator(
        task_id="stream_indicators",
        application=spark_application("stream_indicators.py"),
        name="stockpipe-stream-indicators",
        # The task log of a days-long job has no rotation: Spark's per-trigger INFO lines stay out of it.
        conf={"spark.log.level": "WARN"},
        stop_when_paused=True,
        outlets=[BARS_TABLE, INDICATORS_TABLE],
        on_failure_callback=AlertNotifier(title="streaming job stopped (relaunching)"),
    )


market_stream()
