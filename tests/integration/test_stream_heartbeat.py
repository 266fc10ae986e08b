"""The streaming job's heartbeat (``ops.stream_heartbeats``) from a real query: Kafka, Spark,
PostgreSQL. While a micro-batch runs, the row names it and carries Spark's own query status; after
the run it counts the batches and says the job stopped cleanly."""

from __future__ import annotations

import threading
import uuid

import pytest

from stockpipe.streaming.sink import BatchWriter
from tests.integration import streamkit as kit

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def test_the_running_job_beats_with_its_batch_in_progress_and_sparks_status(spark, stream_settings, pg_conn):
    settings = stream_settings.model_copy(
        update={"stream_query_name": f"test_beat_{uuid.uuid4().hex[:6]}", "stream_heartbeat_s": 0.2}
    )
    script = kit.Script()
    for n, symbol in enumerate(kit.SYMBOLS):
        for bar in kit.random_bars(symbol, kit.SESSION_OPEN, 130, seed=90 + n):
            script.bar(bar)
    kit.produce(settings, script.messages)  # > 300 records: several micro-batches

    seen: set[tuple] = set()
    done = threading.Event()

    def watch() -> None:
        import psycopg

        with psycopg.connect(settings.pg_dsn("writer"), autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(
                    "SELECT batch_id, trigger_active, status_message IS NOT NULL, stopped_at IS NULL"
                    " FROM ops.stream_heartbeats WHERE query_name = %s",
                    (settings.stream_query_name,),
                ).fetchone()
                if row is not None:
                    seen.add(row)
                done.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        kit.drain(spark, settings, writer=BatchWriter(settings))
    finally:
        done.set()
        watcher.join(10)
    try:
        batches = pg_conn.execute(
            "SELECT count(*) FROM ops.stream_batches WHERE query_name = %s", (settings.stream_query_name,)
        ).fetchone()[0]
        final = pg_conn.execute(
            "SELECT batches_done, last_done_at IS NOT NULL, batch_id, stopped_at IS NOT NULL, started_at <= beat_at"
            " FROM ops.stream_heartbeats WHERE query_name = %s",
            (settings.stream_query_name,),
        ).fetchone()
    finally:
        pg_conn.execute("DELETE FROM ops.stream_heartbeats WHERE query_name = %s", (settings.stream_query_name,))

    assert batches >= 2
    assert final[0] >= batches and final[1:] == (True, None, True, True), final
    # a beat during a batch: the batch in progress, and Spark saying its trigger is active
    assert any(batch is not None and active and has_status and alive for batch, active, has_status, alive in seen), seen
