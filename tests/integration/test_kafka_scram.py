"""Kafka over SASL_SSL with SCRAM-SHA-512 (AWS MSK's setup), against the local broker.

The local broker has a second listener on 127.0.0.1:STOCKPIPE_KAFKA_SCRAM_PORT: SASL_SSL, SCRAM-SHA-512,
a certificate signed by the local CA ``.local/kafka/tls/ca.pem``; its user is
STOCKPIPE_KAFKA_SASL_USERNAME/PASSWORD from ``.local/secrets.env`` (``make up`` makes all of it).
Every client of the package is built by ``stockpipe.clients`` from the same settings; here they
talk to that listener only: the producer and the stream's dead-letter writer write, the admin
client creates and measures the topics, ``verify``'s consumer reads them, and Spark's Kafka source
(the streaming query's own ``kafka_records``) reads the bars with availableNow. A wrong password is
refused by each kind of client. The topics are deleted even when a test fails.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import KafkaError, KafkaException
from pydantic import SecretStr

from stockpipe import clients
from stockpipe.admin import admin_client, ensure_topics
from stockpipe.config import Settings
from stockpipe.monitoring.exporter import StockpipeCollector
from stockpipe.monitoring.health import topic_end_offsets
from stockpipe.streaming.query import kafka_records
from stockpipe.streaming.sink import DeadLetterWriter
from stockpipe.verify import read_topic

BARS = [
    {"v": 1, "symbol": symbol, "ts": f"2026-11-24T14:{30 + i:02d}:00Z", "open": 10.0 + i, "high": 11.0 + i,
     "low": 9.0 + i, "close": 10.5 + i, "volume": 1000.0, "vwap": 10.2 + i, "trades": 7, "source": "simulator",
     "fetched_at": "2026-11-24T14:40:00.000000Z"}
    for symbol in ("AAPL", "MSFT") for i in range(5)
]  # fmt: skip


def _delete_topics(settings: Settings, topics: list[str]) -> None:
    client = admin_client(settings)
    for future in client.delete_topics(topics, operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except Exception:  # never created, or already gone
            pass


@pytest.fixture
def scram_settings(base_settings: Settings):
    """Settings of a client of the SCRAM listener, with topics of the test's own (always deleted)."""
    ca_file = Path(base_settings.local_dir) / "kafka" / "tls" / "ca.pem"
    assert ca_file.is_file(), f"{ca_file} is missing: `infra/stack.sh up kafka` makes the local CA"
    assert base_settings.kafka_sasl_username, "STOCKPIPE_KAFKA_SASL_USERNAME is unset: `infra/stack.sh up kafka`"
    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"test-scram-{suffix}", f"test-scram-{suffix}.dlq"
    scram = base_settings.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{base_settings.kafka_scram_port}",
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_ssl_ca_file": ca_file,
            "kafka_topic": topic,
            "kafka_dlq_topic": dlq,
        }
    )
    try:
        assert sorted(ensure_topics(scram, {topic: 2, dlq: 1}, wait_s=30)) == [topic, dlq]  # created over SCRAM
        yield scram
    finally:
        # on the PLAINTEXT listener: it works even when the SCRAM one is what failed
        _delete_topics(base_settings, [topic, dlq])


def test_every_client_works_over_sasl_ssl_scram(scram_settings: Settings, spark, tmp_path):
    s = scram_settings
    config = clients.kafka_config(s, "producer")
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["bootstrap.servers"] == f"127.0.0.1:{s.kafka_scram_port}"

    # the market-data producer's client (the same call MarketProducer makes)
    producer = clients.kafka_producer(s, "producer", **{"message.timeout.ms": 30_000})
    for bar in BARS:
        producer.produce(s.kafka_topic, key=bar["symbol"].encode(), value=json.dumps(bar).encode())
    assert producer.flush(30) == 0, "Kafka did not acknowledge the bars over SASL_SSL"

    # the stream's dead-letter writer
    dead = pd.DataFrame(
        [{"raw_value": b"{not json", "raw_key": b"AAPL", "topic": s.kafka_topic, "kpartition": 0, "koffset": 99,
          "error": "unparseable JSON"}]
    )  # fmt: skip
    assert DeadLetterWriter(s).write(dead) == 1

    # end offsets: the admin helper, the health check's and the exporter's readers
    ends = clients.end_offsets(s, s.kafka_topic)
    assert ends is not None and sum(ends.values()) == len(BARS)
    assert topic_end_offsets(s, s.kafka_topic) == ends
    assert StockpipeCollector(s, airflow=False).end_offsets(s.kafka_dlq_topic) == {0: 1}
    assert clients.end_offsets(s, f"{s.kafka_topic}.absent") is None

    # verify's consumer reads the bars back
    values = read_topic(s, s.kafka_topic, None, timeout_s=30)
    assert sorted(json.dumps(v, sort_keys=True) for v in values) == sorted(json.dumps(b, sort_keys=True) for b in BARS)

    # Spark's Kafka source, exactly as the streaming query builds it: an availableNow run to the end
    query = (
        kafka_records(spark, s)
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "partition", "offset")
        .writeStream.format("memory")
        .queryName(f"scram_{uuid.uuid4().hex[:8]}")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    try:
        assert query.awaitTermination(180), "the availableNow read over SCRAM did not finish in 180 s"
        assert query.exception() is None
        rows = spark.table(query.name).collect()
    finally:
        query.stop()
    assert sorted(json.loads(r.value)["ts"] + r.key for r in rows) == sorted(b["ts"] + b["symbol"] for b in BARS)


def test_a_wrong_password_is_refused(scram_settings: Settings, spark):
    wrong = scram_settings.model_copy(update={"kafka_sasl_password": SecretStr("not-the-password")})
    errors: list[KafkaError] = []

    # producer: nothing is delivered, librdkafka reports an authentication failure
    producer = clients.kafka_producer(
        wrong, "producer", **{"message.timeout.ms": 2000, "error_cb": errors.append, "log_level": 0}
    )
    producer.produce(wrong.kafka_topic, key=b"AAPL", value=json.dumps(BARS[0]).encode())
    assert producer.flush(15) == 0  # the message timed out, it was not sent
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors

    # admin client (topics, end offsets, health, exporter)
    with pytest.raises(KafkaException):
        clients.end_offsets(wrong, wrong.kafka_topic, admin=clients.kafka_admin(wrong, "admin", log_level=0),
                            timeout_s=2)  # fmt: skip

    # Spark's Kafka source (the Java client): the batch read fails on authentication
    reader = spark.read.format("kafka").options(**clients.spark_kafka_options(wrong))
    with pytest.raises(Exception, match="(?i)authentication"):
        reader.option("subscribe", wrong.kafka_topic).load().count()

    # and nothing reached the topic
    assert clients.end_offsets(scram_settings, scram_settings.kafka_topic) == {0: 0, 1: 0}
