"""``ops.stream_heartbeats``: the streaming job's liveness signal (migration 015).

Written by the job's driver (:mod:`stockpipe.streaming.heartbeat`), read by stream_health
(:mod:`stockpipe.monitoring.health`) to tell a job that is alive and working on a micro-batch from
one that is stuck or gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg


@dataclass(frozen=True)
class Heartbeat:
    """The newest beat of a streaming query's job (times from PostgreSQL's clock)."""

    query_name: str
    job_id: str
    started_at: datetime
    beat_at: datetime
    batch_id: int | None
    batch_started_at: datetime | None
    batches_done: int
    last_done_at: datetime | None
    trigger_active: bool | None
    data_available: bool | None
    status_message: str | None
    stopped_at: datetime | None


_COLUMNS = (
    "query_name, job_id, started_at, beat_at, batch_id, batch_started_at, batches_done, last_done_at,"
    " trigger_active, data_available, status_message, stopped_at"
)


def stream_heartbeat(conn: psycopg.Connection, query_name: str) -> Heartbeat | None:
    """The query's heartbeat row (None: no job of it has ever beaten)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM ops.stream_heartbeats WHERE query_name = %s", (query_name,)).fetchone()
    return None if row is None else Heartbeat(*row)


def beat(
    conn: psycopg.Connection,
    query_name: str,
    job_id: str,
    started_at: datetime,
    *,
    batch_id: int | None,
    batch_started_at: datetime | None,
    batches_done: int,
    last_done_at: datetime | None,
    trigger_active: bool | None = None,
    data_available: bool | None = None,
    status_message: str | None = None,
    beat_at: datetime | None = None,
    stopped_at: datetime | None = None,
) -> None:
    """Upsert the query's row as job ``job_id`` sees itself now (``beat_at`` default: the clock).

    A job takes the row over from any earlier job of the query (the newest job is the one alive)."""
    conn.execute(
        f"INSERT INTO ops.stream_heartbeats AS h ({_COLUMNS})"
        " VALUES (%s, %s, %s, coalesce(%s, clock_timestamp()), %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (query_name) DO UPDATE SET job_id = EXCLUDED.job_id, started_at = EXCLUDED.started_at,"
        " beat_at = EXCLUDED.beat_at, batch_id = EXCLUDED.batch_id, batch_started_at = EXCLUDED.batch_started_at,"
        " batches_done = EXCLUDED.batches_done, last_done_at = EXCLUDED.last_done_at,"
        " trigger_active = EXCLUDED.trigger_active, data_available = EXCLUDED.data_available,"
        " status_message = EXCLUDED.status_message, stopped_at = EXCLUDED.stopped_at",
        (
            query_name,
            job_id,
            started_at,
            beat_at,
            batch_id,
            batch_started_at,
            batches_done,
            last_done_at,
            trigger_active,
            data_available,
            status_message,
            stopped_at,
        ),
    )


#: the ``ops.health_checks`` row stream_health writes when it restarts the job
RESTART_CHECK = "stream_restart"


def last_stream_restart(conn: psycopg.Connection) -> datetime | None:
    """When stream_health last restarted the streaming job (None: never)."""
    return conn.execute(
        "SELECT max(checked_at) FROM ops.health_checks WHERE check_name = %s", (RESTART_CHECK,)
    ).fetchone()[0]
