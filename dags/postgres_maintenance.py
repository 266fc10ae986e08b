"""
### postgres_maintenance — keep the market database fast and honest

Daily, in order:

1. `ensure_partitions` — monthly partitions of `market.bars_1m` / `market.indicators_1m` from this
   month to two months ahead (`market.ensure_month_partitions`; rows parked in the default
   partition move into a new month's partition).
2. `apply_retention` — drop monthly partitions older than `STOCKPIPE_RETENTION_DAYS` (0 = keep all,
   the default).
3. `vacuum_analyze` — `VACUUM (ANALYZE)` of the hot tables.
4. `refresh_rollups` — `REFRESH MATERIALIZED VIEW CONCURRENTLY` of the dashboard's 5 m / 1 h / 1 d
   rollups (`market.bars_5m`, `market.bars_1h`, `market.bars_1d`).
5. `data_quality` — per symbol and recent session: completeness against the session's minutes,
   OHLC sanity, indicator coverage, rows outside the monthly partitions → `ops.data_quality`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from stockpipe.airflow.alerts import AlertNotifier
from stockpipe.airflow.assets import DATA_QUALITY, ROLLUPS


@dag(
    dag_id="postgres_maintenance",
    schedule="30 6 * * *",  # 06:30 UTC: after the New York day and its backfill, before the next open
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=1),
    default_args={
        "owner": "stockpipe",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "on_failure_callback": AlertNotifier(),
    },
    tags=["stockpipe", "postgres", "maintenance"],
    doc_md=__doc__,
)
def postgres_maintenance():
    @task
    def ensure_partitions(data_interval_end=None) -> int:
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.maintenance import ensure_partitions as ensure

        return ensure(task_settings(), data_interval_end)

    @task
    def apply_retention(data_interval_end=None) -> list:
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.maintenance import apply_retention as retention

        return retention(task_settings(), data_interval_end)

    @task
    def vacuum_analyze() -> list:
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.maintenance import vacuum_analyze as vacuum

        return vacuum(task_settings())

    @task(outlets=[ROLLUPS])
    def refresh_rollups() -> list:
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.maintenance import refresh_rollups as refresh

        return refresh(task_settings())

    @task(outlets=[DATA_QUALITY])
    def data_quality(data_interval_end=None) -> dict:
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.maintenance import data_quality_summary
        from stockpipe.airflow.timetables import market_calendar_mode
        from stockpipe.calendar import trading_calendar

        sessions = trading_calendar(market_calendar_mode()).last_sessions(3, data_interval_end)
        results = data_quality_summary(task_settings(), sessions)
        return {"checks": len(results), "not_ok": sum(not r["ok"] for r in results)}

    ensure_partitions() >> apply_retention() >> vacuum_analyze() >> refresh_rollups() >> data_quality()


postgres_maintenance()
