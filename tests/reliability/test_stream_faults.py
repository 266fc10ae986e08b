"""Infrastructure faults while bars stream at a steady rate through Kafka → Spark → PostgreSQL/Redis.

A scripted producer feeds the test topic at 10 bars/s (5 symbols); the streaming job runs as a
subprocess restarted whenever it exits (as Airflow's market_stream DAG does). Each scenario injects
one fault once micro-batches are flowing, keeps the feed going during and after it, and then
checks: 0 bars lost, 0 duplicated rows, every row holds the latest values, indicators equal TA-Lib
over the stored series, Redis latest equals the last stored row — and prints the time to recover
(fault over → everything sent before that moment is in PostgreSQL and Redis).

Only the kill -9 runs in `make test`; the others stop shared services (``slow``: `make
test-reliability`).
"""

from __future__ import annotations

import pytest

from tests.reliability import harness

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.spark]


# In `make test` the integration suite covers these two faults (test_stream_indicators:
# test_stream_survives_sigkill_of_the_driver, test_checkpoint_reset_mid_stream_loses_nothing); here
# they run under the fault harness in `make test-reliability` only (~100 s of the 15-minute suite).
@pytest.mark.slow
def test_kill_9_of_the_spark_driver(settings, pg_conn, redis_client, tmp_path):
    harness.run_stream_scenario(
        "kill -9 of the Spark driver (whole job)",
        settings,
        tmp_path,
        harness.SupervisedJob.kill9,
        seed=100,
        after_fault_s=3,
    )


@pytest.mark.slow
def test_checkpoint_reset_mid_stream(settings, pg_conn, redis_client, tmp_path):
    """README's recovery step while bars keep coming: stop the job, move its checkpoint aside,
    restart. Batch ids restart at 0; the sink's exactly-once record is the consumed offsets."""
    harness.run_stream_scenario(
        "checkpoint moved aside mid-stream (job stopped, restarted on an empty checkpoint)",
        settings,
        tmp_path,
        harness.SupervisedJob.reset_checkpoint,
        seed=150,
        after_fault_s=5,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kafka_broker_restart(settings, pg_conn, redis_client, tmp_path, service_down_s):
    harness.run_stream_scenario(
        f"Kafka broker restart ({service_down_s:.0f} s down)", settings, tmp_path,
        harness.outage("kafka", settings, service_down_s), seed=200,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_postgresql_restart(settings, pg_conn, redis_client, tmp_path, service_down_s):
    harness.run_stream_scenario(
        f"PostgreSQL restart ({service_down_s:.0f} s down)", settings, tmp_path,
        harness.outage("postgres", settings, service_down_s), seed=300,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_redis_stopped(settings, pg_conn, redis_client, tmp_path, redis_outage_s):
    harness.run_stream_scenario(
        f"Redis stopped for {redis_outage_s:.0f} s", settings, tmp_path,
        harness.outage("redis", settings, redis_outage_s), seed=400,
    )  # fmt: skip
