"""market_ingest's task: one producer cycle for the watchlist.

The producer is gap-free by construction (per-symbol checkpoints in Redis advance only after Kafka
confirmed delivery, every fetch re-reads an overlap), so a run catches up whatever earlier runs
missed. Rerunning an interval whose bars were already delivered re-sends them (``resend=True``):
downstream keeps one row per (symbol, ts), the latest ``fetched_at`` winning. When another process
runs the live loop (``STOCKPIPE_PRODUCER_MODE`` service — the default — or supervisor), scheduled runs
skip and manual/backfill runs only re-send their interval.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from stockpipe.config import Settings
from stockpipe.producer.cycles import cycle_result, record_cycle

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
    settings: Settings,
    run_id: str,
    start: datetime,
    end: datetime,
    *,
    rerun: bool = False,
    resend_only: bool = False,
    producer: Any = None,
) -> dict[str, Any]:
    """One producer cycle for the interval [start, end).

    A scheduled run whose bars an earlier (late) run already delivered makes no API call: under a
    tight rate limit runs can fall behind, and this lets the queue drain instead of growing. A rerun
    (manual, backfill, retry or cleared task) also re-sends the interval's bars. ``resend_only``
    (another process runs the live loop: ``STOCKPIPE_PRODUCER_MODE`` service or supervisor) re-sends
    the interval and leaves the live cycle, the checkpoints and the newest bars to that process.
    """
    from stockpipe.producer.core import CycleSummary, MarketProducer

    own_producer = producer is None
    producer = producer or MarketProducer(settings)
    try:
        if resend_only:
            summary, resent = CycleSummary(results=[]), resend_interval(producer, start, end)
        else:
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
    result = cycle_result(summary, resent)
    if resend_only:
        result["symbols"] = len(settings.watchlist)
    record_cycle(settings, run_id, start, result)
    if summary.failed:
        raise IngestFailed(f"{summary.line()}; Airflow retries the run (the next cycle also catches up)")
    return result


def ingest_interval(run_id: str, start: datetime, end: datetime, *, rerun: bool, scheduled: bool = True) -> dict:
    """market_ingest's task: :func:`run_ingest` with the task's settings.

    With ``STOCKPIPE_PRODUCER_MODE`` ``service`` (market_producer's long-running loop) or ``supervisor``,
    the live cycles are that process's: a scheduled run skips, a manual run or a backfill
    (``airflow backfill create``) re-sends its interval's bars."""
    from airflow.sdk.exceptions import AirflowSkipException

    from stockpipe.airflow.connections import task_settings

    settings = task_settings()
    if settings.producer_mode == "airflow":
        return run_ingest(settings, run_id, start, end, rerun=rerun)
    who = "Airflow's market_producer DAG" if settings.producer_mode == "service" else "supervisord's producer program"
    if scheduled:
        raise AirflowSkipException(
            f"The live producer runs as {who} (STOCKPIPE_PRODUCER_MODE={settings.producer_mode}): scheduled "
            "market_ingest runs skip; trigger a run or a backfill of an interval to re-send its bars."
        )
    return run_ingest(settings, run_id, start, end, rerun=True, resend_only=True)
