"""market_backfill's two operators (the work is in :mod:`stockpipe.airflow.backfill`).

* :class:`BackfillPrepareOperator` — the run's first task, a branch: a ready session is checked and
  recorded here and the rest of the run is skipped; a run that leads fetches the block and goes on
  to ``compute_indicators``; a run that must wait for the leader **defers** (a timer in the
  triggerer, no worker slot) and decides again when it fires.
* :class:`BackfillIndicatorsOperator` — the Spark job (``spark_jobs/backfill_indicators.py``) once
  for the leader's block, from the first date that needs it (:func:`~stockpipe.airflow.backfill.compute_range`);
  nothing to do, no job. It keeps the fetch lease while the job runs and releases it at the end.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from airflow.sdk.bases.branch import BaseBranchOperator

from stockpipe.airflow.operators import StockpipeSparkSubmitOperator

PREPARE_TASK = "prepare"


class BackfillPrepareOperator(BaseBranchOperator):
    """Check a ready session, lead the block's fetch, or defer while another run leads."""

    ui_color = "#e8f0fe"

    def __init__(self, *, compute_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.compute_task_id = compute_task_id

    def execute(self, context: Any) -> Any:
        from stockpipe.airflow import backfill
        from stockpipe.airflow.connections import task_settings

        session = backfill.run_session(context["data_interval_start"])
        dag_run = context["dag_run"]
        outcome = backfill.prepare(task_settings(), session, dag_run.run_id, getattr(dag_run, "start_date", None))
        if outcome.wait_s is not None:
            from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

            self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=outcome.wait_s)), method_name="resume")
        if outcome.ready is not None:
            context["ti"].xcom_push(key="check", value=outcome.ready)
            return self.do_branch(context, None)  # checked and recorded here: skip the rest
        context["ti"].xcom_push(key="plan", value=outcome.plan)
        return self.do_branch(context, self.compute_task_id)

    def resume(self, context: Any, event: Any = None) -> Any:
        return self.execute(context)


class BackfillIndicatorsOperator(StockpipeSparkSubmitOperator):
    """The Spark backfill job over the leader's block, only when something needs computing."""

    def execute(self, context: Any) -> None:
        from stockpipe.airflow import backfill
        from stockpipe.airflow.connections import task_settings

        settings = task_settings()
        plan = context["ti"].xcom_pull(task_ids=PREPARE_TASK, key="plan")
        lease = backfill.FetchLease(settings, context["dag_run"].run_id)
        try:
            lease.take(first=plan["first"], last=plan["last"])
            block = date.fromisoformat(plan["first"]), date.fromisoformat(plan["last"])
            first = backfill.compute_range(settings, *block)
            if first is None:
                self.log.info("indicators of %s..%s complete, nothing queued: no Spark job", *block)
                return None
            self.application_args = ["--symbols", plan["symbols"], "--start", first.isoformat(), "--end", plan["last"]]
            self.name = f"stockpipe-backfill-{first.isoformat()}-{plan['last']}"
            self.log.info("computing indicators from %s (sessions %s..%s), once", first, plan["first"], plan["last"])
            with lease.kept():
                return super().execute(context)
        finally:
            lease.release()
            lease.close()
