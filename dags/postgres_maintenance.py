"""
### postgres_maintenance — keep the market database fast and honest

Daily, in order:

1. `ensure_partitions` — monthly partitions of `market.bars_1m` / `market.indicators_1m` from this
   month to two months ahead (`market.ensure_month_partitions`; rows parked in the default
   partition move into a new month's partition).
2. `apply_retention` — drop monthly partitions older than `STOCKPIPE_RETENTION_DAYS` (0 = keep all,
   the default; the market-wide mode keeps `STOCKPIPE_MARKET_RETENTION_DAYS`, 2), then delete the
   older rows of the month the cut falls in (BRIN on `ts`): the whole market keeps days, not months.
3. `vacuum_analyze` — `VACUUM (ANALYZE)` of the hot tables.
4. `refresh_rollups` — `REFRESH MATERIALIZED VIEW CONCURRENTLY` of the dashboard's 5 m / 1 h / 1 d
   rollups (`market.bars_5m`, `market.bars_1h`, `market.bars_1d`).
5. `data_quality` — per symbol and recent session: completeness against the session's minutes,
   OHLC sanity, indicator coverage, rows outside the monthly partitions → `ops.data_quality`.

Every task works "as of" the run's `run_after` — 06:30 UTC for a scheduled run, the moment of the
click for a manual one — not the end of its data interval: a manual run between the New York
midnight and 06:30 UTC would otherwise check the sessions before the one that just closed (a manual
run's data interval is the last *complete* daily interval, which ends at yesterday's 06:30).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from stockpipe.airflow.assets import DATA_QUALITY, ROLLUPS
from stockpipe.airflow.defaults import dag_defaults


@dag(
    dag_id="postgres_maintenance",
    schedule="30 6 * * *",  # 06:30 UTC: after the New York day and its backfill, before the next open
    dagrun_timeout=timedelta(hours=1),
    **dag_defaults(tags=["postgres", "maintenance"], retry_delay=timedelta(minutes=2)),
    doc_md=__doc__,
)
def postgres_maintenance():
    @task
    def ensure_partitions(dag_run=None) -> int:
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.maintenance import ensure_partitions as ensure

        return ensure(task_settings(), dag_run.run_after)

    @task
    def apply_retention(dag_run=None) -> list:
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.maintenance import apply_retention as retention

        return retention(task_settings(), dag_run.run_after)

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
    def data_quality(dag_run=None) -> dict:
        from stockpipe.airflow.connections import task_settings
        from stockpipe.airflow.maintenance import check_recent_sessions

        return check_recent_sessions(task_settings(), dag_run.run_after)

    ensure_partitions() >> apply_retention() >> vacuum_analyze() >> refresh_rollups() >> data_quality()


postgres_maintenance()
