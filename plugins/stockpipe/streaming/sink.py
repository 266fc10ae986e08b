"""``foreachBatch`` wiring: dead letters → Kafka, bars + indicators → PostgreSQL, latest → Redis.

Order inside one micro-batch, and why:

1. collect the operator's output once (``toPandas``: the stateful plan runs exactly once per
   attempt, and always, so the state store gets this batch's version even on a replay);
2. skip the batch when every Kafka record it consumed is below the offsets ``ops.stream_offsets``
   says were applied (a replay after a crash between the PostgreSQL commit and Spark's own commit
   log) — dead letters included — after refreshing Redis from PostgreSQL. Exactly-once is keyed
   on the consumed offsets, not on Spark's batch id: a new or moved checkpoint or a renamed query
   restarts batch ids at 0, and a batch-id key would skip batches never applied (their bars lost);
3. produce the dead letters not applied before and wait for Kafka's acknowledgement *before* the
   PostgreSQL commit, so no invalid record is lost (a crash in between re-sends them: dead letters
   are at-least-once, their origin offset identifies duplicates);
4. one PostgreSQL transaction (storage.postgres) — the exactly-once point, which also advances
   ``ops.stream_offsets`` past the batch;
5. Redis after the commit, from the rows PostgreSQL holds, so Redis never shows what PostgreSQL
   doesn't. While PostgreSQL works (step 4), a thread encodes each symbol's newest staged row for
   Redis, all but ``written_at`` (``storage.postgres.staged_latest``); the latest_1m upsert says
   which rows it stored are those staged rows (their bar written by this transaction) and their
   ``written_at``, which is spliced in after the commit — the same texts as encoding the stored
   row. Every other row latest_1m took (a re-emitted bar, a stale or late one, ...) is encoded
   after the commit from the row PostgreSQL holds, as before; nothing is sent before the commit.
   When Redis is unreachable the batch still succeeds (PostgreSQL, the history, has it): the
   symbols are remembered and their latest rows are read back from PostgreSQL and written at the
   first batch that reaches Redis again, so Redis converges without restarting the stream.
   A job that starts does not know what a previous one left behind (a restart during a Redis
   outage, a crash between the commit and Redis): its first batch that reaches Redis writes the
   latest stored row of *every* symbol (Redis' check-and-set never moves a symbol backwards).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import redis

from stockpipe import contract
from stockpipe.clients import kafka_producer
from stockpipe.config import Settings
from stockpipe.storage.postgres import OffsetRanges, PostgresSink, is_replay, latest_candidates, staged_latest
from stockpipe.storage.redis_latest import LatestWriter, Staged
from stockpipe.streaming.heartbeat import StreamHeartbeat
from stockpipe.streaming.state import KIND_BAR, KIND_DEAD, KIND_DEAD_SENT, KIND_LATE, KIND_STATS

log = logging.getLogger(__name__)


def offset_ranges(stats: pd.DataFrame) -> OffsetRanges:
    """The operator's stats rows → (topic, partition) → (first, last) offset the batch consumed."""
    stats = stats[stats["kpartition"].notna()]
    if not len(stats):
        return {}
    grouped = (
        pd.DataFrame(
            {
                "topic": stats["topic"].astype(str),
                "kpartition": stats["kpartition"].astype("int64"),
                "first": stats["koffset_first"].astype("int64"),
                "last": stats["koffset"].astype("int64"),
            }
        )
        .groupby(["topic", "kpartition"])
        .agg(first=("first", "min"), last=("last", "max"))
    )
    return {
        (str(t), int(p)): (int(f), int(la))
        for (t, p), f, la in zip(grouped.index, grouped["first"], grouped["last"], strict=True)
    }


def not_applied(dead: pd.DataFrame, applied: dict[tuple[str, int], int]) -> pd.DataFrame:
    """The dead letters whose record is not below its partition's applied offset (not sent before)."""
    if not applied or not len(dead):
        return dead
    floor = [applied.get((str(t), int(p)), 0) for t, p in zip(dead["topic"], dead["kpartition"], strict=True)]
    return dead[dead["koffset"].astype("int64").to_numpy() >= np.asarray(floor, dtype=np.int64)]


def warn_about_gaps(offsets: OffsetRanges, applied: dict[tuple[str, int], int]) -> None:
    """Say so when a batch starts past the applied offset: those records were never read by the sink
    (``startingOffsets`` = latest on a new checkpoint, or Kafka's retention deleted them)."""
    for (topic, part), (first, _) in sorted(offsets.items()):
        expected = applied.get((topic, part))
        if expected is not None and first > expected:
            log.warning(
                "%s partition %s: offsets %s..%s were never applied (skipped by startingOffsets, or deleted by "
                "Kafka's retention before the stream read them)",
                topic,
                part,
                expected,
                first - 1,
            )


class DeadLetterWriter:
    """Dead letters in the contract's format (``contract.dead_letter``), origin = Kafka coordinates."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = kafka_producer(settings, "dlq")

    def write(self, dead: pd.DataFrame) -> int:
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for row in dead.itertuples(index=False):
            raw = b"" if row.raw_value is None else bytes(row.raw_value)
            key = None if row.raw_key is None else bytes(row.raw_key)
            origin = {
                "topic": row.topic,
                "partition": int(row.kpartition),
                "offset": int(row.koffset),
                "key": None if key is None else key.decode("utf-8", "replace"),
                "stage": "stream",
            }
            self.producer.produce(
                self.settings.kafka_dlq_topic,
                key=key,
                value=contract.dead_letter(raw, row.error, origin),
                on_delivery=on_delivery,
            )
            self.producer.poll(0)
        remaining = self.producer.flush(30)
        if remaining or errors:
            raise RuntimeError(
                f"Kafka at {self.settings.kafka_bootstrap} did not acknowledge {remaining or len(errors)} dead "
                f"letter(s) on {self.settings.kafka_dlq_topic} ({errors[0] if errors else 'timeout'}); "
                "the batch will be retried"
            )
        return len(dead)


_worker_dead_letters: dict[tuple, tuple[DeadLetterWriter, PostgresSink]] = {}


class WorkerDeadLetters:
    """The operator's dead-letter sender (see operator._dead_letter_group): runs in the Python worker
    of the dead-letter group, so the raw bytes never gather on the driver. Records the sink applied
    before (below ``ops.stream_offsets``: a replay, or a query re-reading another checkpoint's
    records) are not sent again. Pickled into the plan: it carries only the settings; the Kafka
    producer and the PostgreSQL connection are made once per worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, dead: pd.DataFrame) -> None:
        key = (self.settings.kafka_bootstrap, self.settings.kafka_dlq_topic, self.settings.pg_dsn("writer"))
        if key not in _worker_dead_letters:
            _worker_dead_letters[key] = (DeadLetterWriter(self.settings), PostgresSink(self.settings))
        writer, postgres = _worker_dead_letters[key]
        partitions = sorted({(str(t), int(p)) for t, p in zip(dead["topic"], dead["kpartition"], strict=True)})
        writer.write(not_applied(dead, postgres.applied_offsets(partitions)))


class BatchWriter:
    """The ``foreachBatch`` function of the streaming query (runs in the driver)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.postgres = PostgresSink(settings)
        self.latest = LatestWriter(settings)
        self.dead_letters = DeadLetterWriter(settings)
        self._previous_start: float | None = None
        # Symbols whose latest row Redis has not got yet; None = all of them (a new job: see step 5).
        self._redis_pending: set[str] | None = None
        # The job's liveness signal for stream_health (ops.stream_heartbeats): the batch in progress.
        self.heartbeat = StreamHeartbeat(settings)
        # Encodes the batch's newest rows for Redis while PostgreSQL writes them (step 5); made at
        # the first batch (again after close(): a writer may be reused, like its connections).
        self._encoder: ThreadPoolExecutor | None = None

    def write_latest(
        self,
        rows: list[dict[str, Any]],
        staged: Callable[[], Staged] | None = None,
        written: dict[str, Any] | None = None,
    ) -> bool:
        """Mirror ``rows`` and the ``staged()`` rows of ``written`` (symbol → written_at) — and any
        symbols a Redis outage left behind — to Redis; False if it is down."""
        written = written or {}
        symbols = {str(row["symbol"]) for row in rows} | set(written)
        encoded = staged() if written else None
        if written and any(symbol not in encoded for symbol in written):  # the encoding failed: read back
            rows = rows + self.postgres.latest_rows(sorted(s for s in written if s not in encoded))
            written = {symbol: at for symbol, at in written.items() if symbol in encoded}
        try:
            if self._redis_pending is None:
                behind = sorted(set(self.postgres.stored_symbols()) - symbols)
            else:
                behind = sorted(self._redis_pending - symbols)
            for start in range(0, len(behind), 1000):
                self.latest.write(self.postgres.latest_rows(behind[start : start + 1000]))
            self.latest.write(rows, encoded, written)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            if self._redis_pending is not None:
                self._redis_pending |= symbols
            log.warning(
                "Redis at %s is unreachable (%s): the latest state of %s follows when it is back; "
                "PostgreSQL has every row",
                self.settings.redis_url.rsplit("@", 1)[-1],
                error,
                "every symbol" if self._redis_pending is None else f"{len(self._redis_pending)} symbol(s)",
            )
            return False
        if behind:
            log.info("Redis caught up with PostgreSQL: the latest state of %s other symbol(s) written", len(behind))
        self._redis_pending = set()
        return True

    def __call__(self, batch_df, batch_id: int) -> None:
        started = time.monotonic()
        since_previous = None if self._previous_start is None else started - self._previous_start
        self._previous_start = started
        self.heartbeat.batch_started(batch_id)
        # Always run the plan, even for a batch committed before: that rewrites its state-store
        # version (deterministically the same), so the next batch finds it.
        frame = batch_df.toPandas()
        plan_ms = (time.monotonic() - started) * 1000
        self.write_frame(frame, batch_id, started=started, since_previous_s=since_previous, plan_ms=plan_ms)
        self.heartbeat.batch_done(batch_id)

    def write_frame(
        self,
        frame: pd.DataFrame,
        batch_id: int,
        *,
        started: float,
        since_previous_s: float | None = None,
        plan_ms: float | None = None,
    ) -> None:
        kinds = frame["kind"]
        dead = frame[kinds == KIND_DEAD]  # to send from here (sent by the operator: KIND_DEAD_SENT)
        dead_count = int((kinds == KIND_DEAD).sum() + (kinds == KIND_DEAD_SENT).sum())
        rows = frame[kinds.isin([KIND_BAR, KIND_LATE])]
        stats = frame[kinds == KIND_STATS]
        rows_in = int(pd.to_numeric(stats["n_input"]).sum())
        offsets = offset_ranges(stats)
        query = self.settings.stream_query_name
        applied = self.postgres.applied_offsets(sorted(offsets))
        if is_replay(offsets, applied):
            # A replay: PostgreSQL has it; Redis may not have (crash before step 5).
            self.write_latest(self.postgres.latest_rows(sorted(set(rows["symbol"]))))
            log.info("batch %s of %s: every record was applied before: skipped", batch_id, query)
            return
        warn_about_gaps(offsets, applied)
        # chosen, then encoded while the dead letters and PostgreSQL are written: see step 5
        tz = self.postgres.connection().info.timezone
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-encode")
        candidates = self._encoder.submit(latest_candidates, rows)
        encoding = self._encoder.submit(lambda: staged_latest(candidates.result(), tz))
        if len(dead):
            self.dead_letters.write(not_applied(dead, applied))
        result = self.postgres.write(
            rows,
            query_name=query,
            batch_id=batch_id,
            offsets=offsets,
            rows_in=rows_in,
            dead_letters=dead_count,
            started=started,
            since_previous_s=since_previous_s,
            staged=lambda: self._candidates(candidates),
        )
        if result is None:
            return
        written = time.monotonic()
        self.write_latest(result.latest, lambda: self._staged(encoding), result.latest_staged)
        done = time.monotonic()
        log.info(
            "batch %s: %s records in, %s bars upserted, %s rows written, %s dead letters, %.0f ms "
            "(Spark plan %s ms, PostgreSQL %.0f ms, Redis %.0f ms)",
            batch_id,
            rows_in,
            result.bars_upserted,
            result.rows,
            dead_count,
            (done - started) * 1000,
            "-" if plan_ms is None else f"{plan_ms:.0f}",
            (written - started) * 1000 - (plan_ms or 0.0),
            (done - written) * 1000,
        )

    @staticmethod
    def _candidates(candidates: Future) -> set[str]:
        """The symbols whose newest row the encoder takes (none when choosing them failed)."""
        try:
            return set(candidates.result()["symbol"])
        except Exception:
            log.exception("choosing the batch's rows to encode for Redis failed: all are encoded after the commit")
            return set()

    @staticmethod
    def _staged(encoding: Future) -> Staged:
        """The batch's staged rows (none when their encoding failed)."""
        try:
            return encoding.result()
        except Exception:
            log.exception("encoding the batch's newest rows for Redis failed: they are encoded after the commit")
            return Staged.empty()

    def close(self) -> None:
        if self._encoder is not None:
            self._encoder.shutdown(wait=True)
            self._encoder = None
        self.heartbeat.close()
        self.postgres.close()
        self.latest.close()
        self.dead_letters.producer.flush(10)
