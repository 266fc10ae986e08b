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
def airflow_connections(monkeypatch: pytest.MonkeyPatch, settings):
    """AIRFLOW_CONN_* for the test's settings (test database, Redis db 15, the test's topics)."""
    from stockpipe.airflow.connections import connection_specs
    from stockpipe.config import get_settings

    for conn_id, spec in connection_specs(settings).items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(spec))
    # Values with no connection (topics, thresholds) come from the settings of the test.
    monkeypatch.setenv("STOCKPIPE_KAFKA_TOPIC", settings.kafka_topic)
    monkeypatch.setenv("STOCKPIPE_KAFKA_DLQ_TOPIC", settings.kafka_dlq_topic)
    monkeypatch.setenv("STOCKPIPE_PRODUCER_MODE", "airflow")
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()
