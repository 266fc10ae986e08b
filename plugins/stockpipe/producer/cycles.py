"""One ``ops.ingest_cycles`` row per producer cycle, whoever runs it (market_ingest's task, the
long-running loop under Airflow's market_producer or supervisord).

Bookkeeping never stops the producer: without PostgreSQL the cycle is logged and the loop goes on.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any

from stockpipe.clients import pg_connect
from stockpipe.config import Settings
from stockpipe.storage import queries

log = logging.getLogger("stockpipe.producer.cycles")


def cycle_result(summary: Any, resent: int = 0) -> dict[str, Any]:
    """The row's figures from a :class:`~stockpipe.producer.core.CycleSummary`."""
    return {
        "symbols": len(summary.results),
        "failed": summary.failed,
        "fetched": sum(r.fetched for r in summary.results),
        "sent": summary.sent,
        "resent": resent,
        "dead_letters": summary.dead_letters,
        "duration_s": round(summary.duration_s, 3),
    }


def service_run_id() -> str:
    """Who ran the loop's cycles: ``market_producer/<Airflow run id>`` under Airflow (the operator sets
    Airflow's ``AIRFLOW_CTX_*`` variables), else ``producer@<host>:<pid>``."""
    dag_id, run_id = os.environ.get("AIRFLOW_CTX_DAG_ID"), os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
    if dag_id and run_id:
        return f"{dag_id}/{run_id}"
    return f"producer@{socket.gethostname()}:{os.getpid()}"


def record_cycle(settings: Settings, run_id: str, interval_start: datetime, result: dict[str, Any]) -> bool:
    """Insert the cycle's row; False (and a warning) when PostgreSQL can't take it."""
    import psycopg

    try:
        with pg_connect(settings, "writer", connect_timeout=5, autocommit=True) as conn:
            queries.record_ingest_cycle(conn, run_id, interval_start, result)
        return True
    except (psycopg.Error, OSError) as error:  # bookkeeping must not stop the ingest itself
        log.warning("could not record the cycle in ops.ingest_cycles: %s", error)
        return False


def record_loop_cycle(settings: Settings, summary: Any, started: datetime | None = None) -> bool:
    """The long-running loop's hook after each cycle (``python -m stockpipe.producer``)."""
    start = (started or datetime.now(UTC)).replace(second=0, microsecond=0)
    return record_cycle(settings, service_run_id(), start, cycle_result(summary))
