"""market_ingest's rerun path (``resend_interval``) against the real simulator, Kafka and Redis.

A rerun of an interval whose bars were already delivered sends them again. Kafka not taking them
(a topic that does not exist — the broker does not auto-create topics —, or one whose size limit
refuses every bar) must fail the task with one sentence, not let the bars vanish silently.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka.admin import NewTopic

from stockpipe import verify
from stockpipe.admin import admin_client
from stockpipe.airflow.ingest import IngestFailed, run_ingest
from stockpipe.clients import kafka_producer
from stockpipe.producer.core import MarketProducer
from stockpipe.sources.simulator import start_in_thread

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 15, 0, 5, tzinfo=UTC)
START, END = datetime(2026, 11, 24, 14, 50, tzinfo=UTC), datetime(2026, 11, 24, 14, 55, tzinfo=UTC)
KEY = "test-key-ingest-rerun"


@pytest.fixture
def simulator():
    with start_in_thread(seed=11, clock="demo", now=NOW.timestamp) as sim:
        yield sim


@pytest.fixture
def rerun_settings(settings, simulator):
    from pydantic import SecretStr

    host, port = simulator.url.removeprefix("http://").split(":")
    return settings.model_copy(
        update={
            "simulator_host": host,
            "simulator_port": int(port),
            "polygon_api_key": None,
            "simulator_api_key": SecretStr(KEY),
            "watchlist": ["AAPL", "MSFT"],
            "rate_limit_per_minute": 1000,
            "retry_base_s": 0.1,
            "backfill_start_minutes": 30,
        }
    )


@pytest.fixture
def delivered(rerun_settings):
    """The scheduled run of [START, END) has delivered the bars (the checkpoints are past START)."""
    producer = MarketProducer(rerun_settings, clock=lambda: NOW)
    try:
        result = run_ingest(rerun_settings, "scheduled__first", START, END, producer=producer)
    finally:
        producer.close()
    assert result["sent"] == 60 and not result["failed"]  # 30 closed minutes × 2 symbols
    return rerun_settings


@pytest.fixture
def tiny_topic(rerun_settings):
    """A topic whose size limit (max.message.bytes) refuses any bar."""
    name = f"test-tiny-{uuid.uuid4().hex[:8]}"
    client = admin_client(rerun_settings)
    topic = NewTopic(name, num_partitions=1, replication_factor=1, config={"max.message.bytes": "64"})
    client.create_topics([topic])[name].result(timeout=30)
    yield name
    for future in client.delete_topics([name], operation_timeout=30).values():
        future.result(timeout=30)


def test_a_rerun_re_sends_the_interval_and_kafka_confirms_it(delivered):
    producer = MarketProducer(delivered, clock=lambda: NOW + timedelta(hours=1))
    try:
        result = run_ingest(delivered, "manual__rerun", START, END, rerun=True, producer=producer)
    finally:
        producer.close()
    assert result["resent"] == 10 and result["sent"] == 0  # 5 minutes × 2 symbols, no new bar
    messages = verify.read_topic(delivered, delivered.kafka_topic, None, timeout_s=20)
    assert len(messages) == 70


@pytest.mark.parametrize("refusal", ["topic does not exist", "bars exceed the topic's size limit"])
def test_a_rerun_whose_bars_kafka_does_not_take_fails_the_task(delivered, tiny_topic, refusal):
    topic = f"{delivered.kafka_topic}-missing" if refusal == "topic does not exist" else tiny_topic
    elsewhere = delivered.model_copy(update={"kafka_topic": topic})
    # Kafka gives up on a message after 2 s, well inside the task's 10 s flush: the failures arrive as
    # delivery reports (nothing is left in the queue), which only a delivery callback sees.
    kafka = kafka_producer(elsewhere, **{"message.timeout.ms": 2000})
    producer = MarketProducer(
        elsewhere, clock=lambda: NOW + timedelta(hours=1), kafka_producer=kafka, delivery_timeout_s=10
    )
    try:
        with pytest.raises(IngestFailed) as failed:
            run_ingest(elsewhere, "manual__rerun", START, END, rerun=True, producer=producer)
    finally:
        producer.close()
    sentence = str(failed.value)
    assert "did not confirm" in sentence and topic in sentence and "2026-11-24 14:50..14:55 UTC" in sentence
    assert "\n" not in sentence
