"""stream_health's tasks: assess the pipeline, and the verdict that fails the run with one clear
sentence when a check breached."""

from __future__ import annotations

from typing import Any


class PipelineUnhealthy(RuntimeError):
    """At least one health check breached its threshold (the message lists them)."""


def assess_pipeline() -> dict[str, Any]:
    """Run the health checks with the task's settings on the pipeline's calendar; the report as a dict."""
    from dataclasses import asdict

    from stockpipe.airflow.connections import task_settings
    from stockpipe.airflow.timetables import market_calendar_mode
    from stockpipe.monitoring.health import check_health

    report = check_health(task_settings(), calendar=market_calendar_mode())
    return {
        "ok": report.ok,
        "stalled": report.stalled,
        "message": report.message(),
        "checks": [asdict(c) for c in report.checks],
    }


def raise_on_breach(report: dict) -> str:
    if not report["ok"]:
        raise PipelineUnhealthy(report["message"])
    return report["message"]
