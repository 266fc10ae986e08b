"""Alerts: an Airflow notifier that logs the alert and, when ``STOCKPIPE_ALERT_WEBHOOK_URL`` is set,
POSTs it as JSON (Slack-compatible ``text`` field plus structured fields).

Use as a callback: ``on_failure_callback=AlertNotifier()``; the message names the DAG, the task,
the run and the error (for stream_health: the breached checks).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from airflow.sdk import BaseNotifier

from stockpipe.config import Settings, get_settings

log = logging.getLogger("stockpipe.alerts")


def send_alert(title: str, detail: str, fields: dict[str, Any] | None = None, settings: Settings | None = None) -> bool:
    """Log the alert; POST it to the webhook if one is configured. True when the webhook took it."""
    settings = settings or get_settings()
    log.error("ALERT %s: %s", title, detail)
    if settings.alert_webhook_url is None:
        return False
    payload = {"text": f"[stockpipe] {title}: {detail}", "title": title, "detail": detail, **(fields or {})}
    try:
        response = httpx.post(settings.alert_webhook_url.get_secret_value(), json=payload, timeout=10)
        response.raise_for_status()
        return True
    except httpx.HTTPError as error:  # an alert must never fail the callback chain
        log.warning("alert webhook failed (%s); the alert is in this log only", type(error).__name__)
        return False


class AlertNotifier(BaseNotifier):
    """Failure/SLA notifier: one alert per failed task instance (or DAG run)."""

    template_fields = ("title",)

    def __init__(self, title: str = "{{ dag.dag_id }} failed") -> None:
        super().__init__()
        self.title = title

    def notify(self, context: Any) -> None:
        ti = context.get("ti") or context.get("task_instance")
        error = context.get("exception") or context.get("reason") or "see the task log"
        run = context.get("dag_run")
        fields = {
            "dag_id": getattr(ti, "dag_id", None) or getattr(run, "dag_id", None),
            "task_id": getattr(ti, "task_id", None),
            "run_id": getattr(ti, "run_id", None) or getattr(run, "run_id", None),
            "try_number": getattr(ti, "try_number", None),
        }
        where = ".".join(str(v) for v in (fields["dag_id"], fields["task_id"]) if v)
        send_alert(self.title, f"{where} [{fields['run_id']}]: {error}", fields)
