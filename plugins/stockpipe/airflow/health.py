"""stream_health's verdict: fail the run with one clear sentence when a check breached."""

from __future__ import annotations


class PipelineUnhealthy(RuntimeError):
    """At least one health check breached its threshold (the message lists them)."""


def raise_on_breach(report: dict) -> str:
    if not report["ok"]:
        raise PipelineUnhealthy(report["message"])
    return report["message"]
