"""What every stockpipe DAG shares: owner, start date, retries, the alert on failure.

A DAG file passes ``**dag_defaults(...)`` to ``@dag`` and says only what is its own (schedule, run
timeout, tags, the retry policy when it differs).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum

from stockpipe.airflow.alerts import AlertNotifier

OWNER = "stockpipe"
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def default_args(
    *, retries: int = 2, retry_delay: timedelta = timedelta(minutes=1), alert: bool = True
) -> dict[str, Any]:
    """Task defaults: the owner, ``retries`` after ``retry_delay``, and (``alert``) a failed task
    alerts through :class:`AlertNotifier`."""
    args: dict[str, Any] = {"owner": OWNER, "retries": retries}
    if retries:
        args["retry_delay"] = retry_delay
    if alert:
        args["on_failure_callback"] = AlertNotifier()
    return args


def dag_defaults(*, tags: list[str], **task_defaults: Any) -> dict[str, Any]:
    """``@dag`` keywords of every stockpipe DAG: start date, no catchup, one run at a time, the
    ``stockpipe`` tag plus ``tags``, and :func:`default_args` (``task_defaults``: its keywords)."""
    return {
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "tags": [OWNER, *tags],
        "default_args": default_args(**task_defaults),
    }
