"""The stream's Kafka source must not inherit the consumer's 500 ms fetch.max.wait.ms: Spark keeps
each task's consumer for the next micro-batch, and a consumer that read its partition to the end
has a fetch in flight that the broker holds that long when nothing new comes — every Kafka task of
a small micro-batch waited ~0.55 s for it (a 5-bar WebSocket batch: Kafka stage 1.1 s → 0.14 s,
batch 1.7 → 0.7 s; docs/benchmarks.md, session 6)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.spark


def test_the_streams_kafka_consumers_answer_an_empty_fetch_quickly():
    from stockpipe.config import load_settings
    from stockpipe.streaming.query import kafka_records
    from stockpipe.streaming.spark import spark_session

    settings = load_settings()
    spark = spark_session(settings, app_name="stockpipe-tests")
    relation = kafka_records(spark, settings)._jdf.queryExecution().analyzed()  # StreamingRelationV2
    wait_ms = relation.extraOptions().get("kafka.fetch.max.wait.ms")
    assert wait_ms is not None, "the Kafka client's default (500 ms) applies"
    assert int(wait_ms) <= 50
