"""
### market_ingest — minute bars from Polygon (or the simulator) into Kafka

One producer cycle per trading minute for the watchlist (`STOCKPIPE_WATCHLIST`): fetch the closed
bars since each symbol's checkpoint through the shared Redis rate limiter, validate them, send them
to the `stock-prices` topic (invalid ones to `stock-prices.dlq`). Checkpoints move only after Kafka
confirmed delivery, so a failed or skipped run is caught up by the next one; a scheduled run whose
bars a late earlier run already delivered makes no API call (the queue drains); rerunning an old
interval (manual, backfill, clear) re-sends its bars (the stream keeps one row per symbol and
minute). Each cycle is recorded in `ops.ingest_cycles`.

Schedule: `TradingMinuteTimetable` — every minute with the simulator's demo clock, NYSE session
minutes otherwise. No catchup: a live feed has nothing to gain from replaying missed minutes.
Producer modes (`STOCKPIPE_PRODUCER_MODE`): with `airflow` these runs are the producer. With
`service` (the default: `market_producer` keeps the long-running loop alive) or `supervisor`, that
process owns the live cycles: scheduled runs skip, and a manual run or an `airflow backfill create`
of an interval re-sends that interval's bars.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from stockpipe.airflow.alerts import AlertNotifier
from stockpipe.airflow.assets import BARS_TOPIC
from stockpipe.airflow.defaults import dag_defaults
from stockpipe.airflow.timetables import TradingMinuteTimetable


@dag(
    dag_id="market_ingest",
    schedule=TradingMinuteTimetable(),  # the pipeline's calendar, read when it schedules
    dagrun_timeout=timedelta(minutes=10),
    **dag_defaults(tags=["ingest", "kafka"], retry_delay=timedelta(seconds=15), alert=False),
    doc_md=__doc__,
)
def market_ingest():
    @task(outlets=[BARS_TOPIC], execution_timeout=timedelta(minutes=5), on_failure_callback=AlertNotifier())
    def produce_bars(data_interval_start=None, data_interval_end=None, run_id=None, dag_run=None, ti=None) -> dict:
        from stockpipe.airflow.ingest import ingest_interval

        scheduled = dag_run.run_type == "scheduled"
        rerun = not scheduled or ti.try_number > 1
        return ingest_interval(run_id, data_interval_start, data_interval_end, rerun=rerun, scheduled=scheduled)

    produce_bars()


market_ingest()
