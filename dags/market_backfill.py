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

import pendulum
from airflow.sdk import dag, task

from stockpipe.airflow.alerts import AlertNotifier
from stockpipe.airflow.assets import BARS_TABLE, INDICATORS_TABLE
from stockpipe.airflow.operators import StockpipeSparkSubmitOperator, spark_application
from stockpipe.airflow.timetables import TradingSessionTimetable, market_calendar_mode
from stockpipe.streaming.spark import BATCH_JAVA_OPTIONS


@dag(
    dag_id="market_backfill",
    schedule=TradingSessionTimetable(calendar=market_calendar_mode()),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args={
        "owner": "stockpipe",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "on_failure_callback": AlertNotifier(),
    },
    tags=["stockpipe", "backfill", "spark"],
    doc_md=__doc__,
)
def market_backfill():
    @task
    def plan(data_interval_start=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from stockpipe.airflow.backfill import first_pending_repair
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.timetables import market_calendar_mode, session_for_interval

        settings = task_settings()
        session = session_for_interval(data_interval_start, market_calendar_mode())
        if session is None:
            raise AirflowSkipException(f"no trading session on {data_interval_start.date()}")
        return {
            "day": session.day.isoformat(),
            "recompute_from": first_pending_repair(settings, session).isoformat(),
            "symbols": ",".join(settings.watchlist),
            "minutes": session.minutes,
        }

    @task(outlets=[BARS_TABLE], execution_timeout=timedelta(hours=1))
    def fetch_bars(day_plan: dict) -> dict:
        from datetime import date

        from stockpipe.airflow.backfill import fetch_and_store_session
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.timetables import market_calendar_mode
        from stockpipe.calendar import trading_calendar

        session = trading_calendar(market_calendar_mode()).session(date.fromisoformat(day_plan["day"]))
        return fetch_and_store_session(task_settings(), session)

    compute_indicators = StockpipeSparkSubmitOperator(
        task_id="compute_indicators",
        application=spark_application("backfill_indicators.py"),
        name="stockpipe-backfill-{{ ti.xcom_pull(task_ids='plan')['day'] }}",
        application_args=[
            "--symbols",
            "{{ ti.xcom_pull(task_ids='plan')['symbols'] }}",
            "--start",
            "{{ ti.xcom_pull(task_ids='plan')['recompute_from'] }}",
            "--end",
            "{{ ti.xcom_pull(task_ids='plan')['day'] }}",
        ],
        # Under spark-submit the driver JVM starts before the job's code runs: its options go here.
        conf={"spark.driver.extraJavaOptions": " ".join(BATCH_JAVA_OPTIONS)},
        outlets=[INDICATORS_TABLE],
        execution_timeout=timedelta(hours=1),
    )

    @task
    def check_day(day_plan: dict, run_id=None, dag_run=None) -> dict:
        from datetime import date

        from stockpipe.airflow.backfill import check_and_record
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.timetables import market_calendar_mode
        from stockpipe.calendar import trading_calendar

        session = trading_calendar(market_calendar_mode()).session(date.fromisoformat(day_plan["day"]))
        started = getattr(dag_run, "start_date", None)
        return check_and_record(task_settings(), run_id, session, started)

    day_plan = plan()
    fetch_bars(day_plan) >> compute_indicators >> check_day(day_plan)


market_backfill()
