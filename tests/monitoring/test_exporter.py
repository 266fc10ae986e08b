"""stockpipe's Prometheus exporter against the real test services (PostgreSQL test database, Kafka
topics of the test, Redis test database)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import yaml
from confluent_kafka import Producer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stockpipe.config import ROOT
from stockpipe.monitoring.exporter import build_registry
from stockpipe.producer import metrics as producer_metrics


def samples(registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def produce(settings, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i in range(count):
        producer.produce(topic, key=b"AAPL", value=json.dumps({"i": i}).encode(), partition=0)
    assert producer.flush(30) == 0


def fake_checkpoint(root: Path, topic: str, offsets: dict[int, int]) -> str:
    (root / "commits").mkdir(parents=True)
    (root / "offsets").mkdir()
    (root / "commits" / "0").write_text('v1\n{"nextBatchWatermarkMs":0}\n')
    (root / "offsets" / "0").write_text(
        'v1\n{"batchWatermarkMs":0,"batchTimestampMs":0}\n'
        + json.dumps({topic: {str(p): o for p, o in offsets.items()}})
        + "\n"
    )
    return str(root)


def test_exporter_reports_stream_freshness_lag_and_dlq(settings, pg_conn, tmp_path: Path):
    now = datetime.now(UTC).replace(microsecond=0)
    minute = now.replace(second=0)
    pg_conn.execute(
        "INSERT INTO ops.stream_batches (query_name, batch_id, rows_in, bars_upserted, input_rows_per_s,"
        " processing_ms, latency_p50_ms, latency_p95_ms, latency_max_ms, committed_at)"
        " VALUES (%s, 6, 4, 4, 2.0, 900, 1200, 1500, 1700, %s), (%s, 7, 5, 5, 2.5, 800, 1100, 1400, 1600, %s),"
        " ('some_other_query', 99, 1, 1, 1, 1, 1, 1, 1, %s)",
        (
            settings.stream_query_name,
            now - timedelta(seconds=160),
            settings.stream_query_name,
            now - timedelta(seconds=100),
            now,
        ),
    )
    pg_conn.execute(
        "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, source, fetched_at)"
        " VALUES ('AAPL', %s, 1, 1, 1, 1, 10, 'simulator', %s), ('AAPL', %s, 1, 1, 1, 1, 10, 'simulator', %s)",
        (minute - timedelta(minutes=10), now, minute - timedelta(minutes=3), now),
    )
    pg_conn.execute("DELETE FROM ops.ingest_cycles")
    # stream_health's restart records (other tests') would move the judgement: this one judges the commits.
    pg_conn.execute("DELETE FROM ops.health_checks WHERE check_name = 'stream_restart'")
    pg_conn.execute(
        "INSERT INTO ops.ingest_cycles (run_id, interval_start, symbols, failed_symbols, bars_fetched, bars_sent,"
        " dead_letters, finished_at) VALUES ('r1', %s, 5, '{AAPL}', 10, 10, 0, %s),"
        " ('r2', %s, 5, '{AAPL,MSFT,TSLA}', 4, 4, 0, %s), ('old', %s, 5, '{}', 5, 5, 0, %s)",
        (now, now - timedelta(minutes=2), now, now - timedelta(minutes=1), now, now - timedelta(hours=1)),
    )
    produce(settings, settings.kafka_topic, 10)  # all on partition 0
    produce(settings, settings.kafka_dlq_topic, 3)
    checkpoint = fake_checkpoint(tmp_path / "ckpt", settings.kafka_topic, {0: 4})
    test_settings = settings.model_copy(
        update={
            "watchlist": ["AAPL", "ZZZZ"],
            "stream_checkpoint": checkpoint,
            "airflow_api_url": "http://127.0.0.1:9",  # nothing listens: reported down, the rest still works
        }
    )

    registry, collector = build_registry(test_settings, now=lambda: now)
    try:
        found = samples(registry)
    finally:
        collector.close()

    for service in ("postgres", "redis", "kafka"):
        assert value(found, "stockpipe_service_up", service=service) == 1
    assert value(found, "stockpipe_service_up", service="airflow") == 0

    query = settings.stream_query_name
    assert value(found, "stockpipe_stream_last_batch_id", query=query) == 7
    assert value(found, "stockpipe_stream_last_batch_age_seconds", query=query) == 100
    assert (
        value(found, "stockpipe_stream_last_batch_timestamp_seconds", query=query)
        == (now - timedelta(seconds=100)).timestamp()
    )
    assert value(found, "stockpipe_stream_last_batch_rows", query=query) == 5
    assert value(found, "stockpipe_stream_last_batch_input_rows_per_second", query=query) == 2.5
    assert math.isclose(value(found, "stockpipe_stream_last_batch_processing_seconds", query=query), 0.8)
    assert math.isclose(value(found, "stockpipe_stream_last_batch_latency_p95_seconds", query=query), 1.4)
    # no heartbeat in this database: stream_health's judgement is the last commit's age
    assert value(found, "stockpipe_stream_progress_age_seconds", query=query) == 100
    assert value(found, "stockpipe_stream_progress_limit_seconds", query=query) == settings.health_max_batch_age_s

    newest = minute - timedelta(minutes=3)
    assert value(found, "stockpipe_bar_newest_timestamp_seconds", symbol="AAPL") == newest.timestamp()
    assert (
        value(found, "stockpipe_bar_age_seconds", symbol="AAPL")
        == (now - newest - timedelta(minutes=1)).total_seconds()
    )
    assert value(found, "stockpipe_bar_age_seconds", symbol="ZZZZ") == math.inf
    assert ("stockpipe_bar_newest_timestamp_seconds", (("symbol", "ZZZZ"),)) not in found

    assert value(found, "stockpipe_kafka_topic_messages_total", topic=settings.kafka_topic) == 10
    assert value(found, "stockpipe_stream_lag_messages", topic=settings.kafka_topic) == 10 - 4
    assert value(found, "stockpipe_kafka_dlq_messages_total", topic=settings.kafka_dlq_topic) == 3

    assert value(found, "stockpipe_ingest_symbol_error_ratio_15m") == 4 / 10  # the last hour's cycle is out
    assert value(found, "stockpipe_health_max_batch_age_seconds") == settings.health_max_batch_age_s
    assert value(found, "stockpipe_health_max_lag_messages") == settings.health_max_lag_messages
    assert value(found, "stockpipe_health_max_bar_age_seconds") == settings.health_max_bar_age_s
    assert value(found, "stockpipe_health_max_dlq_growth") == settings.health_max_dlq_growth
    assert value(found, "stockpipe_health_max_api_error_rate") == settings.health_max_api_error_rate
    assert value(found, "stockpipe_market_session_open") in (0, 1)


def test_empty_stream_and_missing_checkpoint(settings, pg_conn, tmp_path: Path):
    """No batch yet: age +Inf; no checkpoint: every message on the topic counts as lag."""
    produce(settings, settings.kafka_topic, 2)
    test_settings = settings.model_copy(update={"stream_checkpoint": str(tmp_path / "none")})
    registry, collector = build_registry(test_settings, airflow=False)
    try:
        found = samples(registry)
    finally:
        collector.close()
    assert value(found, "stockpipe_stream_last_batch_age_seconds", query=settings.stream_query_name) == math.inf
    assert value(found, "stockpipe_stream_lag_messages", topic=settings.kafka_topic) == 2
    assert ("stockpipe_service_up", (("service", "airflow"),)) not in found


def test_services_down_are_reported_not_raised(base_settings, monkeypatch):
    # nothing listens on port 9: the Kafka client waits out its whole timeout (3 s) before it says
    # so; 1 s tells the same
    monkeypatch.setattr("stockpipe.monitoring.exporter.TIMEOUT_S", 1.0)
    down = base_settings.model_copy(
        update={"pg_port": 9, "redis_url": "redis://127.0.0.1:9/0", "kafka_bootstrap": "127.0.0.1:9"}
    )
    registry, collector = build_registry(down, airflow=False)
    try:
        found = samples(registry)
    finally:
        collector.close()
    for service in ("postgres", "redis", "kafka"):
        assert value(found, "stockpipe_service_up", service=service) == 0
    assert value(found, "stockpipe_health_max_lag_messages") == base_settings.health_max_lag_messages


def test_http_endpoint_on_loopback(settings, pg_conn):
    from prometheus_client import start_http_server

    registry, collector = build_registry(settings, airflow=False)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        response = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=30)
        assert response.status_code == 200
        assert 'stockpipe_service_up{service="postgres"} 1.0' in response.text
    finally:
        server.shutdown()
        collector.close()


def test_alert_rules_only_use_metrics_that_exist(settings, pg_conn):
    """Every stockpipe_* series an alert rule reads is exported by our exporter or the producer."""
    registry, collector = build_registry(settings, airflow=False)
    try:
        exported = {name for name, _ in samples(registry)}
    finally:
        collector.close()
    exported |= {"stockpipe_airflow_dag_runs_failed_total"}  # only when Airflow answers
    for metric in (producer_metrics.API_CALLS, producer_metrics.SYMBOL_FAILURES):  # counters: NAME_total
        exported |= {family.name + "_total" for family in metric.describe()}
    rules = yaml.safe_load((ROOT / "infra" / "prometheus" / "rules" / "stockpipe.yml").read_text())
    used = {m for g in rules["groups"] for r in g["rules"] for m in re.findall(r"\bstockpipe_\w+", r["expr"])}
    assert used and used <= exported, sorted(used - exported)


def test_a_job_in_its_first_batch_is_judged_by_its_heartbeat(settings, pg_conn):
    """The stall alert's inputs: a live job 400 s into its first micro-batch (the previous job's last
    commit an hour old) is measured against the first-batch grace, not the batch age limit."""
    from stockpipe.storage.heartbeat import beat

    now = datetime.now(UTC).replace(microsecond=0)
    query = f"test_exp_{now:%H%M%S%f}"
    test_settings = settings.model_copy(update={"stream_query_name": query})
    pg_conn.execute(
        "INSERT INTO ops.stream_batches (query_name, batch_id, rows_in, bars_upserted, committed_at)"
        " VALUES (%s, 9, 1, 1, %s)",
        (query, now - timedelta(hours=1)),
    )
    started = now - timedelta(seconds=400)
    beat(pg_conn, query, "h:1:j", started, beat_at=now - timedelta(seconds=5), batch_id=0,
         batch_started_at=started, batches_done=0, last_done_at=None)  # fmt: skip
    try:
        registry, collector = build_registry(test_settings, now=lambda: now, airflow=False)
        try:
            found = samples(registry)
        finally:
            collector.close()
    finally:
        pg_conn.execute("DELETE FROM ops.stream_heartbeats WHERE query_name = %s", (query,))
    assert value(found, "stockpipe_stream_last_batch_age_seconds", query=query) == 3600
    assert value(found, "stockpipe_stream_progress_age_seconds", query=query) == 400
    assert value(found, "stockpipe_stream_progress_limit_seconds", query=query) == settings.health_first_batch_grace_s
