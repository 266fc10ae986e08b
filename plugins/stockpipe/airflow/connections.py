"""Airflow connections <-> stockpipe settings.

The local stack creates the connections from the settings (:func:`connection_specs`, imported by
``infra/airflow/init.sh``); tasks read where things are back from the connections
(:func:`task_settings`), so pointing a connection elsewhere in the UI moves the pipeline, and the
tests redirect a DAG with ``AIRFLOW_CONN_*`` variables.

=====================  ===========================================================
``stockpipe_postgres``  the market database, writer role (host, port, schema = db)
``kafka_default``       extra ``bootstrap.servers`` (the Kafka provider's format)
``stockpipe_redis``     host, port, schema = db number, password
``spark_default``       host = Spark master (``local[2]``, ``spark://h:7077``, ``k8s://https://…``)
``polygon``             password = the API key (a secret: masked in task logs)
=====================  ===========================================================
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from stockpipe.config import Settings, get_settings

log = logging.getLogger(__name__)

POSTGRES_CONN_ID = "stockpipe_postgres"
KAFKA_CONN_ID = "kafka_default"
REDIS_CONN_ID = "stockpipe_redis"
SPARK_CONN_ID = "spark_default"
POLYGON_CONN_ID = "polygon"


def connection_specs(settings: Settings) -> dict[str, dict[str, Any]]:
    """The connections of the local stack, in ``airflow connections import`` JSON format."""
    redis_url = urlsplit(settings.redis_url)
    specs: dict[str, dict[str, Any]] = {
        POSTGRES_CONN_ID: {
            "conn_type": "postgres",
            "host": settings.pg_host,
            "port": settings.pg_port,
            "schema": settings.pg_database,
            "login": settings.pg_writer_user,
            "password": settings.pg_writer_password.get_secret_value(),
            "description": "stockpipe market database (writer role)",
        },
        KAFKA_CONN_ID: {
            "conn_type": "kafka",
            "extra": json.dumps({"bootstrap.servers": settings.kafka_bootstrap}),
            "description": "stockpipe Kafka (bars topic: STOCKPIPE_KAFKA_TOPIC)",
        },
        REDIS_CONN_ID: {
            "conn_type": "redis",
            "host": redis_url.hostname or "127.0.0.1",
            "port": redis_url.port or 6379,
            "schema": (redis_url.path or "/0").lstrip("/") or "0",
            "password": redis_url.password or "",
            "description": "stockpipe Redis (latest state, rate limiter, producer checkpoints)",
        },
        SPARK_CONN_ID: {
            "conn_type": "spark",
            "host": settings.spark_master,
            "description": "Spark master of the streaming and backfill jobs",
        },
        POLYGON_CONN_ID: {
            "conn_type": "http",
            "host": settings.polygon_base_url,
            "password": settings.polygon_api_key.get_secret_value() if settings.polygon_api_key else "",
            "description": "Polygon.io REST API; empty password = use the market simulator",
        },
    }
    return specs


def _connection(conn_id: str) -> Any | None:
    try:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(conn_id)
    except Exception as error:  # not defined (tests, CLI runs): the settings stand
        log.debug("connection %s not available (%s): using the settings", conn_id, error)
        return None


def task_settings(base: Settings | None = None) -> Settings:
    """The settings a task runs with: ``STOCKPIPE_*`` values, where-things-are from connections."""
    settings = base or get_settings()
    updates: dict[str, Any] = {}
    if conn := _connection(POSTGRES_CONN_ID):
        updates.update(
            pg_host=conn.host or settings.pg_host,
            pg_port=conn.port or settings.pg_port,
            pg_database=conn.schema or settings.pg_database,
            pg_writer_user=conn.login or settings.pg_writer_user,
        )
        if conn.password:
            from pydantic import SecretStr

            updates["pg_writer_password"] = SecretStr(conn.password)
    if conn := _connection(KAFKA_CONN_ID):
        bootstrap = (conn.extra_dejson or {}).get("bootstrap.servers")
        if bootstrap:
            updates["kafka_bootstrap"] = bootstrap
    if conn := _connection(REDIS_CONN_ID):
        auth = f":{conn.password}@" if conn.password else ""
        updates["redis_url"] = f"redis://{auth}{conn.host or '127.0.0.1'}:{conn.port or 6379}/{conn.schema or 0}"
    if conn := _connection(SPARK_CONN_ID):
        if conn.host:
            updates["spark_master"] = conn.host
    if (conn := _connection(POLYGON_CONN_ID)) and conn.password:
        from pydantic import SecretStr

        updates["polygon_api_key"] = SecretStr(conn.password)
    return settings.model_copy(update=updates) if updates else settings


def main() -> None:
    """``python -m stockpipe.airflow.connections`` prints the connections JSON (secrets included:
    the init script writes it to a 0600 file, imports it, and deletes it)."""
    print(json.dumps(connection_specs(get_settings()), indent=2))


if __name__ == "__main__":
    main()
