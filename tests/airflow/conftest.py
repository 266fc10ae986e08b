"""Airflow test environment: a throwaway AIRFLOW_HOME with a SQLite metadata DB (migrated once per
session), this checkout's dags/ and plugins/, no examples. Set before Airflow is first imported.

DAG runs (``dag.test()``) are pointed at the test services through ``AIRFLOW_CONN_*`` variables
(the same connections the local stack defines), never at the dev stack's database.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from tests.conftest import TEST_DATABASE, TEST_REDIS_DB

ROOT = Path(__file__).resolve().parents[2]
_HOME = Path(tempfile.mkdtemp(prefix="stockpipe-airflow-test-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_HOME / "logs"),
    }
)


@pytest.fixture(scope="session")
def airflow_db():
    """The migrated metadata DB (only the tests that run DAGs need it)."""
    from airflow.utils import db

    db.initdb()
    return _HOME / "airflow.db"


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture
def simulator():
    from stockpipe.sources.simulator import start_in_thread

    with start_in_thread(seed=7, clock="demo") as sim:
        yield sim


# Of this checkout's suite only when STOCKPIPE_TEST_DATABASE / _REDIS_DB name its own (tests/conftest.py).
AIRFLOW_TEST_DATABASE = "stockpipe_airflow_test" if TEST_DATABASE == "stockpipe_test" else f"{TEST_DATABASE}_airflow"
AIRFLOW_TEST_REDIS_DB = 14 if TEST_REDIS_DB == 15 else TEST_REDIS_DB


@pytest.fixture(scope="session")
def af_database(base_settings) -> str:
    """A migrated database of the Airflow tests only (DAG runs read and write whole tables)."""
    import psycopg

    from stockpipe.storage.migrate import migrate

    with psycopg.connect(base_settings.pg_dsn("admin", "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{AIRFLOW_TEST_DATABASE}" WITH (FORCE)')
    migrate(base_settings, AIRFLOW_TEST_DATABASE, wait_s=30)
    return AIRFLOW_TEST_DATABASE


@pytest.fixture
def af_settings(settings, af_database):
    """The test's settings (own Kafka topics) on the Airflow tests' database and Redis db."""
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{AIRFLOW_TEST_REDIS_DB}"
    af = settings.model_copy(update={"pg_database": af_database, "redis_url": redis_url})
    client = af.redis_client()
    client.flushdb()
    client.close()
    return af


@pytest.fixture
def af_conn(af_settings):
    """Writer connection to the emptied Airflow test database."""
    import psycopg

    with psycopg.connect(af_settings.pg_dsn("writer"), autocommit=True) as conn:
        conn.execute(
            "TRUNCATE market.bars_1m, market.indicators_1m, market.symbols, ops.stream_batches, ops.repair_queue,"
            " ops.backfill_runs, ops.data_quality, ops.ingest_cycles, ops.health_checks"
        )
        yield conn


@pytest.fixture
def dag_env(monkeypatch: pytest.MonkeyPatch, af_settings, af_conn, simulator, tmp_path):
    """Everything a ``dag.test()`` run reads, pointed at the test services: AIRFLOW_CONN_* from the
    test's settings (the Airflow tests' database and Redis db), its own Kafka topics, the in-thread
    simulator, a fresh stream checkpoint path; the dev stack's Airflow is never contacted."""
    from stockpipe.airflow.connections import connection_specs
    from stockpipe.config import get_settings

    settings = af_settings
    for conn_id, spec in connection_specs(settings).items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(spec))
    port = simulator.url.rsplit(":", 1)[1]
    for name, value in {
        "STOCKPIPE_KAFKA_TOPIC": settings.kafka_topic,
        "STOCKPIPE_KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
        "STOCKPIPE_PRODUCER_MODE": "airflow",
        "STOCKPIPE_SIMULATOR_PORT": port,
        "STOCKPIPE_RATE_LIMIT_PER_MINUTE": "1000",
        "STOCKPIPE_STREAM_CHECKPOINT": str(tmp_path / "checkpoint"),
        "STOCKPIPE_HEALTH_RESTART_STALLED_STREAM": "false",
        "STOCKPIPE_ALERT_WEBHOOK_URL": "",
        "STOCKPIPE_PG_DATABASE": settings.pg_database,
        "STOCKPIPE_REDIS_URL": settings.redis_url,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    monkeypatch.delenv("STOCKPIPE_POLYGON_API_KEY", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch):
    """A local webhook receiver; STOCKPIPE_ALERT_WEBHOOK_URL points at it. Yields the received JSON bodies."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from stockpipe.config import get_settings

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("STOCKPIPE_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/alert")
    get_settings.cache_clear()
    yield received
    server.shutdown()
    get_settings.cache_clear()
