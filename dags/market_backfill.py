"""
### market_backfill — history at the speed the rate limit allows

One run per trading session (`TradingSessionTimetable`: NYSE holidays skipped, early closes
honoured; every New York day on the simulator's demo clock). The run's logical date is the session's
date, so the UI's backfill dialog and `airflow backfill create --dag-id market_backfill --from-date
2026-11-20 --to-date 2026-11-24` take session dates, both ends included.

The runs of a backfill share the work (`stockpipe.airflow.backfill`): one of them *leads* — it
fetches every symbol's bars of the whole range with as few API calls as the API allows (one
aggregates request per symbol, up to 50,000 bars a page) and computes the indicators once; the
others find their session ready and only check it.

1. `prepare` — the session's bounds; a session already fetched and computed is checked and recorded
   right here (the rest of the run is skipped). Otherwise the run takes the fetch lease and leads:
   the range is the consecutive sessions around its own that have a run too; their missing bars are
   fetched through the shared rate limiter (live ingest first; the task log shows calls done /
   planned and bars) and upserted into `market.bars_1m`. While another run leads, this task
   *defers* (a timer in the triggerer): waiting runs hold no worker slot.
2. `compute_indicators` (leader only, one at a time) — `spark_jobs/backfill_indicators.py` on
   `spark_default` once for the range, from the first bar queued for repair (each symbol recomputed
   from its first stored bar, so the result is exact); it also closes those `ops.repair_queue`
   entries.
3. `check_day` — bars per symbol = the session's minutes, no gaps, OHLC sanity, one indicator row
   per bar; the result is written to `ops.backfill_runs` (one row per session) and a failed check
   fails the run.

Running a day twice leaves identical rows. Scheduled runs start from the latest session (no
catchup); `make up` backfills the last `STOCKPIPE_BACKFILL_INITIAL_SESSIONS` sessions on first start.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from stockpipe.airflow.assets import BARS_TABLE, INDICATORS_TABLE
from stockpipe.airflow.backfill_operators import PREPARE_TASK, BackfillIndicatorsOperator, BackfillPrepareOperator
from stockpipe.airflow.defaults import dag_defaults
from stockpipe.airflow.operators import spark_application
from stockpipe.airflow.timetables import TradingSessionTimetable
from stockpipe.streaming.spark import BATCH_JAVA_OPTIONS


@dag(
    dag_id="market_backfill",
    schedule=TradingSessionTimetable(),  # the pipeline's calendar, read when it schedules
    dagrun_timeout=timedelta(hours=4),
    **dag_defaults(tags=["backfill", "spark"]),
    doc_md=__doc__,
)
def market_backfill():
    @task
    def check_day(data_interval_start=None, run_id=None, dag_run=None) -> dict:
        from stockpipe.airflow.backfill import check_and_record, run_session
        from stockpipe.airflow.connections import task_settings

        session = run_session(data_interval_start)
        return check_and_record(task_settings(), run_id, session, getattr(dag_run, "start_date", None))

    prepare = BackfillPrepareOperator(
        task_id=PREPARE_TASK,
        compute_task_id="compute_indicators",
        outlets=[BARS_TABLE],
        execution_timeout=timedelta(hours=2),
    )
    compute_indicators = BackfillIndicatorsOperator(
        task_id="compute_indicators",
        application=spark_application("backfill_indicators.py"),
        # Under spark-submit the driver JVM starts before the job's code runs: its options go here.
        conf={"spark.driver.extraJavaOptions": " ".join(BATCH_JAVA_OPTIONS)},
        outlets=[INDICATORS_TABLE],
        execution_timeout=timedelta(hours=1),
        max_active_tis_per_dag=1,  # one Spark backfill at a time
    )
    prepare >> compute_indicators >> check_day()


market_backfill()
