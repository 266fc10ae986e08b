"""The streaming query: Kafka ``stock-prices`` → parse/validate → per-symbol indicators → sink.

``start_stream(spark, settings)`` starts it and returns the ``StreamingQuery``; ``run(settings)`` is
what ``spark_jobs/stream_indicators.py`` calls: start, then block until stopped (SIGTERM/SIGINT
stop it cleanly after the running batch).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from stockpipe.clients import spark_kafka_options
from stockpipe.config import Settings
from stockpipe.streaming.operator import apply_indicators
from stockpipe.streaming.parse import PARSED_COLUMNS, bucket_labels, parse_records
from stockpipe.streaming.sink import BatchWriter, WorkerDeadLetters
from stockpipe.streaming.spark import spark_session

log = logging.getLogger(__name__)

_seed_connections: dict[str, Any] = {}

#: the stream's Kafka consumers answer an empty partition's fetch after this long (see kafka_records)
KAFKA_FETCH_MAX_WAIT_MS = 10


def _worker_connection(dsn: str):
    """This worker process's PostgreSQL connection to ``dsn`` (made once, remade when closed)."""
    from stockpipe.clients import pg_connect_dsn

    conn = _seed_connections.get(dsn)
    if conn is None or conn.closed:
        conn = pg_connect_dsn(dsn, autocommit=True, connect_timeout=10)
        _seed_connections[dsn] = conn
    return conn


def stored_bars_of(dsn: str, symbols: list[str]) -> dict[str, pd.DataFrame]:
    """symbols → their stored bars (one query), over this worker process's connection."""
    from stockpipe.storage.postgres import stored_bars_many

    return stored_bars_many(_worker_connection(dsn), symbols)


def epoch_of(dsn: str, max_age_s: float, symbol: str) -> int:
    """``symbol``'s ops.symbol_epochs epoch, from this worker process's copy of the table (re-read
    when older than ``max_age_s``)."""
    # Called once per symbol and micro-batch (10,000 times a batch for the whole market): the
    # imports stay in the refresh branch.
    cached = _epoch_cache.get(dsn)
    if cached is None or time.monotonic() - cached[0] > max_age_s:
        epochs = dict(_worker_connection(dsn).execute("SELECT symbol, epoch FROM ops.symbol_epochs").fetchall())
        cached = _epoch_cache[dsn] = (time.monotonic(), epochs)
    return cached[1].get(symbol, 0)


# The closures below are shipped to the Python workers with cloudpickle, which copies the globals a
# shipped closure names into each task's unpickled copy: a closure that used _seed_connections or
# _epoch_cache directly got new, empty ones in every task — a new PostgreSQL connection and an
# epoch query per task and micro-batch (two per batch, never reused). They call the module-level
# functions above instead, which cloudpickle ships by reference: the worker module's state.


def make_seeder(dsn: str):
    """symbols → their stored bars (one query); runs in the Python workers, one connection per worker."""

    def seeder(symbols: list[str]) -> dict[str, pd.DataFrame]:
        return stored_bars_of(dsn, symbols)

    return seeder


_epoch_cache: dict[str, tuple[float, dict[str, int]]] = {}


def make_epoch_reader(dsn: str, max_age_s: float = 1.0):
    """symbol → its ops.symbol_epochs epoch; one query a second per worker process, not per symbol."""

    def epoch(symbol: str) -> int:
        return epoch_of(dsn, max_age_s, symbol)

    return epoch


def starting_offsets(settings: Settings) -> str:
    """Where a query on a *new* checkpoint starts reading (Spark ignores it when the checkpoint has
    offsets): where the sink left off — ``ops.stream_offsets``, written in the same transaction as
    the rows — so a checkpoint reset, a new checkpoint directory or a renamed query neither loses nor
    re-reads anything. Partitions the sink never applied start at ``stream_starting_offsets``;
    offsets Kafka no longer holds (retention) or that are past its end (topic re-created) fall back
    to the earliest offset, with a warning."""
    import json

    from stockpipe.clients import kafka_admin, partition_offsets, pg_connect
    from stockpipe.storage.postgres import stream_offsets

    topic = settings.kafka_topic
    with pg_connect(settings, "writer", autocommit=True, connect_timeout=10) as conn:
        stored = stream_offsets(conn, topic)
    if not stored:
        return settings.stream_starting_offsets
    default = -2 if settings.stream_starting_offsets == "earliest" else -1
    admin = kafka_admin(settings)
    metadata = admin.list_topics(topic, timeout=10).topics.get(topic)
    partitions = sorted(metadata.partitions) if metadata is not None and metadata.error is None else []
    known = [(topic, part) for part in partitions if part in stored]
    low = partition_offsets(admin, known, "earliest")
    high = partition_offsets(admin, known, "latest")
    offsets: dict[str, int] = {}
    for part in partitions:
        wanted = stored.get(part, default)
        if part in stored and not low[(topic, part)] <= wanted <= high[(topic, part)]:
            log.warning(
                "%s partition %s: the stream applied up to offset %s but Kafka holds %s..%s (%s); "
                "a new checkpoint starts there at the earliest offset",
                topic,
                part,
                wanted,
                low[(topic, part)],
                high[(topic, part)],
                "deleted by retention" if wanted < low[(topic, part)] else "topic re-created",
            )
            wanted = -2
        offsets[str(part)] = wanted
    if not offsets:
        return settings.stream_starting_offsets
    return json.dumps({settings.kafka_topic: offsets})


def kafka_records(spark: SparkSession, settings: Settings) -> DataFrame:
    starting = starting_offsets(settings)
    log.info("a new checkpoint starts reading %s at %s (where the sink left off)", settings.kafka_topic, starting)
    return (
        spark.readStream.format("kafka")
        .options(**spark_kafka_options(settings))
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", starting)
        .option("maxOffsetsPerTrigger", str(settings.stream_max_offsets_per_trigger))
        # Spark keeps each task's Kafka consumer for the next micro-batch; a consumer that read its
        # partition to the end has a fetch in flight, which the broker holds for fetch.max.wait.ms
        # (500 ms by default) when no new record comes, and the next task's poll on that consumer
        # waits for it: ~0.55 s per Kafka task of a small micro-batch (two waves of tasks on two
        # cores: ~1.1 s of a 5-bar batch; Spark's event log, docs/benchmarks.md session 6).
        .option("kafka.fetch.max.wait.ms", str(KAFKA_FETCH_MAX_WAIT_MS))
        .load()
    )


def indicator_rows(spark: SparkSession, settings: Settings) -> DataFrame:
    """The streaming plan up to the sink (the operator's rows, see operator.OUTPUT_SCHEMA)."""
    buckets = settings.stream_state_buckets
    labels = bucket_labels(spark, buckets)
    parsed = parse_records(kafka_records(spark, settings), labels, settings).select(*PARSED_COLUMNS)
    seeder = make_seeder(settings.pg_dsn("writer")) if settings.stream_seed_from_postgres else None
    epochs = make_epoch_reader(settings.pg_dsn("writer")) if seeder is not None else None
    return apply_indicators(
        parsed, settings.stream_recompute_horizon_bars, seeder, epochs, buckets, WorkerDeadLetters(settings)
    )


def _progress_line(progress: dict) -> str:
    state = (progress.get("stateOperators") or [None])[0]
    durations = progress.get("durationMs") or {}
    return "progress %s batch %s: %s input rows; ms: %s%s" % (  # noqa: UP031 (one log line)
        progress.get("name"),
        progress.get("batchId"),
        progress.get("numInputRows"),
        ", ".join(f"{k} {v}" for k, v in sorted(durations.items())),
        ""
        if state is None
        else f"; state: {state.get('numRowsTotal')} groups, {state.get('memoryUsedBytes', 0) / 1e6:.1f} MB, "
        f"commit {state.get('commitTimeMs')} ms",
    )


class ProgressLog(threading.Thread):
    """Logs one line per micro-batch with Spark's own timings (where a batch's time goes), read from
    the query every ``interval_s`` on a daemon thread of the driver.

    Not a ``StreamingQueryListener``: PySpark hands a Python listener each progress event through
    ``StreamingQueryProgress.fromJObject``, some 40 py4j round trips made on Spark's listener bus —
    ~95 ms of the JVM's CPU per micro-batch (the ``spark-listener`` thread: 111 → 16 ms per batch
    without it, 500 symbols at 1,000 bars/s on the 2-core box; docs/benchmarks.md, session 6), and as
    much Python. Here an idle poll is two py4j calls (the last progress, its timestamp) and a new
    progress one JSON string; progresses that came between two polls are read from
    ``recentProgress`` (JSON too). A progress is told from the previous one by its timestamp, not its
    batch id: while the query idles, Spark reports (every 10 s) a progress with the id of the *next*
    batch, which the next batch with data then reports again."""

    def __init__(self, query, interval_s: float = 0.25) -> None:
        super().__init__(name=f"progress-log-{query.name}", daemon=True)
        self.query, self.interval_s = query, interval_s
        self.stopping = threading.Event()
        self.last_timestamp: str | None = None
        self.last_batch = -1

    def poll(self) -> None:
        import json

        latest = self.query._jsq.lastProgress()  # noqa: SLF001 (the JSON, not PySpark's per-field copy)
        if latest is None:
            return
        timestamp = str(latest.timestamp())  # ISO 8601 UTC, fixed width: ordered as text
        if timestamp == self.last_timestamp:
            return
        progress = json.loads(latest.json())
        if self.last_timestamp is None or progress["batchId"] <= self.last_batch + 1:
            progresses = [progress]
        else:  # more than one progress since the last poll
            progresses = [dict(p) for p in self.query.recentProgress if p["timestamp"] > self.last_timestamp]
            # read after lastProgress, it may already hold a newer batch, logged now: the last one
            # logged is the last seen, or the next poll's lastProgress would log that batch again
            progresses = progresses or [progress]
            progress, timestamp = progresses[-1], progresses[-1]["timestamp"]
        for each in progresses:
            log.info(_progress_line(dict(each)))
        self.last_timestamp, self.last_batch = timestamp, progress["batchId"]

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 (the query or the JVM is going away: stop quietly)
                if self.stopping.is_set():
                    return
                log.debug("progress log: the query no longer answers", exc_info=True)
                return

    def stop(self) -> None:
        self.stopping.set()


def start_stream(
    spark: SparkSession, settings: Settings, *, available_now: bool = False, writer: BatchWriter | None = None
):
    """Start the query (checkpoint ``settings.stream_checkpoint``); return it and its writer."""
    writer = writer or BatchWriter(settings)
    stream = (
        indicator_rows(spark, settings)
        .writeStream.queryName(settings.stream_query_name)
        .outputMode("update")
        .option("checkpointLocation", settings.stream_checkpoint)
        .foreachBatch(writer)
    )
    if available_now:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=f"{int(settings.stream_trigger_s * 1000)} milliseconds")
    query = stream.start()
    ProgressLog(query).start()
    log.info(
        "streaming %s → PostgreSQL/Redis, checkpoint %s, trigger %.1f s",
        settings.kafka_topic,
        settings.stream_checkpoint,
        settings.stream_trigger_s,
    )
    return query, writer


def run(settings: Settings, *, available_now: bool = False) -> None:
    """Run the streaming job until it is stopped (SIGTERM/SIGINT) or fails."""
    spark = spark_session(settings, app_name=settings.stream_query_name)
    query, writer = start_stream(spark, settings, available_now=available_now)
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping the query after the running batch", signum)
        stopping.set()
        threading.Thread(target=query.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        query.awaitTermination()
    finally:
        writer.close()
        spark.stop()
    if query.exception() is not None and not stopping.is_set():
        raise SystemExit(f"streaming query failed: {query.exception()}")
