"""The streaming job's heartbeat: the driver says it is alive, and what it is working on.

A daemon thread of the driver upserts ``ops.stream_heartbeats`` (storage.heartbeat) every
``STOCKPIPE_STREAM_HEARTBEAT_S`` and at once when a micro-batch starts or finishes: when this job
started, the batch in progress and since when, how many batches it finished and when it last did,
and Spark's own ``StreamingQuery.status`` (``isTriggerActive``, ``isDataAvailable``, message). Asking
Spark for the status goes through the driver JVM, so a hung JVM stops the beat too; a killed driver
stops it with its process. stream_health (monitoring.health) judges the job by it: a job busy with a
long first batch (seeding every symbol's state from PostgreSQL) is not a stalled one.

The beat never fails or slows the stream: it writes from its own thread and connection, and a
PostgreSQL error is logged (once until it recovers) and retried at the next beat.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime
from typing import Any

from stockpipe.config import Settings

log = logging.getLogger(__name__)


class StreamHeartbeat:
    """Beats for ``settings.stream_query_name`` from a daemon thread until :meth:`close`."""

    def __init__(self, settings: Settings, spark: Any = None, *, start: bool = True) -> None:
        self.settings = settings
        self.query_name = settings.stream_query_name
        self.interval_s = settings.stream_heartbeat_s
        self.started_at = datetime.now(UTC)
        self.job_id = f"{socket.gethostname()}:{os.getpid()}:{self.started_at:%Y%m%dT%H%M%S.%fZ}"
        self.spark = spark if spark is not None else _active_spark()
        self._lock = threading.Lock()
        self._batch_id: int | None = None
        self._batch_started_at: datetime | None = None
        self._batches_done = 0
        self._last_done_at: datetime | None = None
        self._stopped_at: datetime | None = None
        self._write_lock = threading.Lock()  # the thread's beats and close()'s last one
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._conn: Any = None
        self._failing = False
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="stream-heartbeat", daemon=True)
            self._thread.start()

    # --- what the sink reports -------------------------------------------------------------------
    def batch_started(self, batch_id: int) -> None:
        with self._lock:
            self._batch_id, self._batch_started_at = int(batch_id), datetime.now(UTC)
            first = self._batches_done == 0
        # Only the job's first batch beats at once (stream_health's first-batch grace starts from
        # it); later ones are in the next periodic beat: a beat asks Spark for the query's status
        # (py4j calls) and writes PostgreSQL, work the 2-core box should not do twice per batch.
        if first:
            self._wake.set()

    def batch_done(self, batch_id: int) -> None:
        with self._lock:
            if self._batch_id == batch_id:
                self._batch_id = self._batch_started_at = None
            self._batches_done += 1
            self._last_done_at = datetime.now(UTC)

    # --- the beat --------------------------------------------------------------------------------
    def spark_status(self) -> dict[str, Any] | None:
        """Spark's ``StreamingQuery.status`` of this query (None: no session or no such active query)."""
        if self.spark is None:
            return None
        for query in self.spark.streams.active:
            if query.name == self.query_name:
                return query.status
        return None

    def beat(self) -> bool:
        """Write one beat now; False (logged) when PostgreSQL did not take it."""
        status = None
        if self._stopped_at is None:
            try:
                status = self.spark_status()
            except Exception as error:  # noqa: BLE001 (a stopping session; the beat still goes)
                log.debug("no Spark status for the heartbeat: %s", error)
        with self._lock:
            state = {
                "batch_id": self._batch_id,
                "batch_started_at": self._batch_started_at,
                "batches_done": self._batches_done,
                "last_done_at": self._last_done_at,
                "stopped_at": self._stopped_at,
            }
        if not self._write_lock.acquire(timeout=15):
            return False
        try:
            return self._write(status, state)
        finally:
            self._write_lock.release()

    def _write(self, status: dict[str, Any] | None, state: dict[str, Any]) -> bool:
        from stockpipe.clients import pg_connect
        from stockpipe.storage.heartbeat import beat

        try:
            if self._conn is None or self._conn.closed:
                self._conn = pg_connect(self.settings, "writer", autocommit=True, connect_timeout=10)
            beat(
                self._conn,
                self.query_name,
                self.job_id,
                self.started_at,
                trigger_active=None if status is None else bool(status.get("isTriggerActive")),
                data_available=None if status is None else bool(status.get("isDataAvailable")),
                status_message=None if status is None else str(status.get("message"))[:500],
                **state,
            )
        except Exception as error:  # noqa: BLE001 (the heartbeat must never stop the stream)
            if not self._failing:
                log.warning("stream heartbeat not written (%s); retrying every %.0f s", error, self.interval_s)
            self._failing = True
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return False
        if self._failing:
            log.info("stream heartbeat written again")
        self._failing = False
        return True

    def _run(self) -> None:
        while not self._closing.is_set():
            self.beat()
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def close(self) -> None:
        """Stop beating; the last beat says the job stopped cleanly."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 15)
        with self._lock:
            self._stopped_at = datetime.now(UTC)
            self._batch_id = self._batch_started_at = None
        self.beat()
        with self._write_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _active_spark() -> Any:
    """The driver's active SparkSession, if pyspark is there and one is running (else None)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()
