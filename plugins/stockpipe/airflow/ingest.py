"""market_ingest's task: one producer cycle for the watchlist.

The producer is gap-free by construction (per-symbol checkpoints in Redis advance only after Kafka
confirmed delivery, every fetch re-reads an overlap), so a run catches up whatever earlier runs
missed. Rerunning an interval whose bars were already delivered re-sends them (``resend=True``):
downstream keeps one row per (symbol, ts), the latest ``fetched_at`` winning.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg

from stockpipe.clients import pg_connect
from stockpipe.config import Settings
from stockpipe.storage import queries

log = logging.getLogger("stockpipe.airflow.ingest")


class IngestFailed(RuntimeError):
    """Some symbols could not be fetched or delivered; the run fails so Airflow retries it."""


def resend_interval(producer: Any, start: datetime, end: datetime) -> int:
    """Send the bars of [start, end) again for every watchlist symbol (a rerun of an old interval).

    Every message carries a delivery callback: the task fails (:class:`IngestFailed`) unless Kafka
    confirmed each one within the producer's delivery timeout; what it did not confirm is purged,
    so nothing trickles out after the failure (a retry sends the interval again)."""
    from confluent_kafka import KafkaException

    from stockpipe import contract

    sent = refused = 0
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err.str() if hasattr(err, "str") else str(err))

    fetched_at = producer.clock()
    for symbol in producer.settings.watchlist:
        bars = producer.market.minute_bars(symbol, start, end - timedelta(minutes=1))
        for bar in bars:
            if not start <= bar.ts < end:
                continue
            message = bar.to_message(producer.settings.source_name, fetched_at)
            if contract.invalid_reason(message):
                continue  # the live cycle already dead-lettered it
            value = contract.encode(message)
            try:
                try:
                    producer.kafka.produce(
                        producer.settings.kafka_topic, key=symbol.encode(), value=value, on_delivery=on_delivery
                    )
                except BufferError:  # the local queue is full: let deliveries drain, then once more
                    producer.kafka.poll(1)
                    producer.kafka.produce(
                        producer.settings.kafka_topic, key=symbol.encode(), value=value, on_delivery=on_delivery
                    )
            except (BufferError, KafkaException) as error:  # refused before it was even queued
                errors.append(str(error))
                refused += 1
                continue
            sent += 1
            producer.kafka.poll(0)
    unconfirmed = producer.kafka.flush(producer.delivery_timeout_s)
    if unconfirmed or errors:
        producer.kafka.purge()  # undelivered bars must not trickle out after the task failed
        producer.kafka.flush(1)
        why = errors[0] if errors else f"no answer within {producer.delivery_timeout_s:g} s"
        raise IngestFailed(
            f"Kafka at {producer.settings.kafka_bootstrap} did not confirm {len(errors) + unconfirmed} of the "
            f"{sent + refused} bars of {start:%Y-%m-%d %H:%M}..{end:%H:%M} UTC re-sent to "
            f"{producer.settings.kafka_topic} ({why}); the run fails so Airflow retries it"
        )
    return sent


def run_ingest(
    settings: Settings, run_id: str, start: datetime, end: datetime, *, rerun: bool = False, producer: Any = None
) -> dict[str, Any]:
    """One producer cycle for the interval [start, end).

    A scheduled run whose bars an earlier (late) run already delivered makes no API call: under a
    tight rate limit runs can fall behind, and this lets the queue drain instead of growing. A rerun
    (manual, backfill, retry or cleared task) also re-sends the interval's bars.
    """
    from stockpipe.producer.core import CycleSummary, MarketProducer

    own_producer = producer is None
    producer = producer or MarketProducer(settings)
    try:
        checkpoints = [producer.checkpoint(s) for s in settings.watchlist]
        already_sent = all(c is not None and c >= start for c in checkpoints)
        if already_sent and not rerun:
            log.info("the bars of %s were already delivered by an earlier run; nothing to fetch", start)
            summary = CycleSummary()
        else:
            summary = producer.run_cycle()
        resent = resend_interval(producer, start, end) if already_sent and rerun else 0
    finally:
        if own_producer:
            producer.close()
    result = {
        "symbols": len(summary.results),
        "failed": summary.failed,
        "fetched": sum(r.fetched for r in summary.results),
        "sent": summary.sent,
        "resent": resent,
        "dead_letters": summary.dead_letters,
        "duration_s": round(summary.duration_s, 3),
    }
    _record_cycle(settings, run_id, start, result)
    if summary.failed:
        raise IngestFailed(f"{summary.line()}; Airflow retries the run (the next cycle also catches up)")
    return result


def _record_cycle(settings: Settings, run_id: str, start: datetime, result: dict[str, Any]) -> None:
    try:
        with pg_connect(settings, "writer", connect_timeout=5, autocommit=True) as conn:
            queries.record_ingest_cycle(conn, run_id, start, result)
    except psycopg.Error as error:  # bookkeeping must not fail the ingest itself
        log.warning("could not record the cycle in ops.ingest_cycles: %s", error)


def ingest_interval(run_id: str, start: datetime, end: datetime, *, rerun: bool) -> dict[str, Any]:
    """market_ingest's task: :func:`run_ingest` with the task's settings; skipped while the
    supervisord producer runs (``STOCKPIPE_PRODUCER_MODE=supervisor``)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from stockpipe.airflow.connections import task_settings

    settings = task_settings()
    if settings.producer_mode == "supervisor":
        raise AirflowSkipException("the supervisord producer is running (STOCKPIPE_PRODUCER_MODE=supervisor)")
    return run_ingest(settings, run_id, start, end, rerun=rerun)
