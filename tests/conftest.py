"""Shared fixtures. Services (PostgreSQL, Redis, Kafka) are started by `make test`
(infra/run-tests.sh), never here; a test that needs one and can't reach it errors, it does not skip.

Isolation from a running dev stack: tests use the database ``stockpipe_test`` (recreated once per
session), Redis database 15 (``STOCKPIPE_TEST_DATABASE`` / ``STOCKPIPE_TEST_REDIS_DB`` override
them), and Kafka topics with a unique suffix per test.
"""

from __future__ import annotations

import logging
import os
import uuid

import psycopg
import pytest

from stockpipe.admin import admin_client, ensure_topics
from stockpipe.config import Settings, load_settings
from stockpipe.storage.migrate import migrate

# Overridable so that two checkouts' suites can share one local stack without dropping each other's data.
# py4j logs "Closing down clientserver connection" from __del__ at interpreter exit, after pytest
# closed the streams ("--- Logging error ---"): only its warnings matter here.
logging.getLogger("py4j").setLevel(logging.WARNING)

TEST_DATABASE = os.environ.get("STOCKPIPE_TEST_DATABASE", "stockpipe_test")
TEST_REDIS_DB = int(os.environ.get("STOCKPIPE_TEST_REDIS_DB", "15"))


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    base = load_settings()
    redis_url = base.redis_url.rsplit("/", 1)[0] + f"/{TEST_REDIS_DB}"
    # the rules role's password (issue 15) until `make up` has generated one in .local/secrets.env
    rules = {} if base.pg_rules_password.get_secret_value() else {"pg_rules_password": "stockpipe-test-rules"}
    return load_settings(pg_database=TEST_DATABASE, redis_url=redis_url, producer_metrics_port=0, **rules)


@pytest.fixture(scope="session")
def pg_database(base_settings: Settings) -> str:
    """A freshly migrated test database (dropped and recreated once per session)."""
    with psycopg.connect(base_settings.pg_dsn("admin", "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')
    migrate(base_settings, TEST_DATABASE, wait_s=30)
    return TEST_DATABASE


@pytest.fixture
def pg_conn(base_settings: Settings, pg_database: str):
    """Writer connection to an emptied test database."""
    with psycopg.connect(base_settings.pg_dsn("writer", pg_database), autocommit=True) as conn:
        conn.execute(
            "TRUNCATE market.bars_1m, market.indicators_1m, market.symbols, ops.stream_batches, "
            "ops.repair_queue, ops.backfill_runs, ops.data_quality, ops.symbol_epochs, ops.stream_offsets, "
            "market.alerts, market.alert_rules, ops.stream_heartbeats"
        )
        yield conn


@pytest.fixture
def redis_client(base_settings: Settings):
    client = base_settings.redis_client(decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(base_settings: Settings, redis_client, pg_database: str):
    """Settings of one test: its own Kafka topics (created), emptied Redis test database."""
    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"test-prices-{suffix}", f"test-prices-{suffix}.dlq"
    test_settings = base_settings.model_copy(update={"kafka_topic": topic, "kafka_dlq_topic": dlq})
    ensure_topics(test_settings, {topic: test_settings.kafka_partitions, dlq: 1}, wait_s=30)
    yield test_settings
    client = admin_client(test_settings)  # kept alive until the deletes are done
    for future in client.delete_topics([topic, dlq], operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except Exception:  # a topic a test already removed; nothing to clean
            pass
