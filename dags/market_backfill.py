"""
### market_backfill — one trading session, end to end

One run per trading session (`TradingSessionTimetable`: NYSE holidays skipped, early closes
honoured; every New York day on the simulator's demo clock). The run's logical date is the session's
date, so the UI's backfill dialog and `airflow backfill create --dag-id market_backfill --from-date
2026-11-20 --to-date 2026-11-24` take session dates, both ends included.

1. `plan` — the session's bounds, and how far back to recompute: earlier days with bars the stream
   queued as too late (`ops.repair_queue`) are included.
2. `fetch_bars` — the day's minute bars for the watchlist from Polygon/the simulator, through the
   shared rate limiter, upserted into `market.bars_1m` (resumable: complete symbols are skipped).
3. `compute_indicators` — `spark_jobs/backfill_indicators.py` on `spark_default` for those days, the
   same indicator code as the stream, each symbol recomputed from its first stored bar (so the
   result is exact); it also closes the repaired `ops.repair_queue` entries.
4. `check_day` — bars per symbol = the session's minutes, no gaps, OHLC sanity, one indicator row
   per bar; the result is written to `ops.backfill_runs` and a failed check fails the run.

Running a day twice leaves identical rows. Scheduled runs start from the latest session (no
catchup); `make up` backfills the last `STOCKPIPE_BACKFILL_INITIAL_SESSIONS` sessions on first start.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from stockpipe.airflow.assets import BARS_TABLE, INDICATORS_TABLE
from stockpipe.airflow.defaults import dag_defaults
from stockpipe.airflow.operators import StockpipeSparkSubmitOperator, spark_application
from stockpipe.airflow.timetables import TradingSessionTimetable
from stockpipe.streaming.spark import BATCH_JAVA_OPTIONS


@dag(
    dag_id="market_backfill",
    schedule=TradingSessionTimetable(),  # the pipeline's calendar, read when it schedules
    dagrun_timeout=timedelta(hours=2),
    **dag_defaults(tags=["backfill", "spark"]),
    doc_md=__doc__,
)
def market_backfill():
    @task(multiple_outputs=True)
    def plan(data_interval_start=None) -> dict:
        from stockpipe.airflow.backfill import plan_run

        return plan_run(data_interval_start)

    @task(outlets=[BARS_TABLE], execution_timeout=timedelta(hours=1))
    def fetch_bars(day: str) -> dict:
        from stockpipe.airflow.backfill import fetch_day

        return fetch_day(day)

    @task
    def check_day(day: str, run_id=None, dag_run=None) -> dict:
        from stockpipe.airflow.backfill import check_day

        return check_day(day, run_id, getattr(dag_run, "start_date", None))

    day_plan = plan()
    compute_indicators = StockpipeSparkSubmitOperator(
        task_id="compute_indicators",
        application=spark_application("backfill_indicators.py"),
        name=day_plan["spark_name"],
        application_args=[
            "--symbols",
            day_plan["symbols"],
            "--start",
            day_plan["recompute_from"],
            "--end",
            day_plan["day"],
        ],
        # Under spark-submit the driver JVM starts before the job's code runs: its options go here.
        conf={"spark.driver.extraJavaOptions": " ".join(BATCH_JAVA_OPTIONS)},
        outlets=[INDICATORS_TABLE],
        execution_timeout=timedelta(hours=1),
    )
    fetch_bars(day_plan["day"]) >> compute_indicators >> check_day(day_plan["day"])


market_backfill()
