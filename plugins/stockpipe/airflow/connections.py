"""Airflow connections <-> stockpipe settings.

The local stack creates the connections from the settings (:func:`connection_specs`, imported by
``infra/airflow/init.sh``); tasks read where things are back from the connections
(:func:`task_settings`), so pointing a connection elsewhere in the UI moves the pipeline, and the
tests redirect a DAG with ``AIRFLOW_CONN_*`` variables.

=====================  ===========================================================
``stockpipe_postgres``  the market database, writer role (host, port, schema = db)
``kafka_default``       extra = librdkafka config (the Kafka provider's format): ``bootstrap.servers``,
                        and with STOCKPIPE_KAFKA_SECURITY_PROTOCOL other than PLAINTEXT
                        ``security.protocol``, ``sasl.mechanism``, ``sasl.username``,
                        ``sasl.password`` (masked in task logs), ``ssl.ca.location``
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

from stockpipe.clients import kafka_security
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
            "extra": json.dumps(kafka_security(settings)),
            "description": "stockpipe Kafka (bars topic: STOCKPIPE_KAFKA_TOPIC)",
        },
        REDIS_CONN_ID: {
            "conn_type": "redis",
            "host": redis_url.hostname or "127.0.0.1",
            "port": redis_url.port or 6379,
            "schema": (redis_url.path or "/0").lstrip("/") or "0",
            "password": settings.redis_password.get_secret_value() or redis_url.password or "",
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


#: kafka_default's extra keys (librdkafka's names) -> settings (see stockpipe.clients.kafka_security)
_KAFKA_EXTRA = {
    "bootstrap.servers": "kafka_bootstrap",
    "security.protocol": "kafka_security_protocol",
    "sasl.mechanism": "kafka_sasl_mechanism",
    "sasl.mechanisms": "kafka_sasl_mechanism",  # librdkafka's canonical spelling
    "sasl.username": "kafka_sasl_username",
    "sasl.password": "kafka_sasl_password",
    "ssl.ca.location": "kafka_ssl_ca_file",
}


def _kafka_updates(extra: dict[str, Any]) -> dict[str, Any]:
    """Settings from kafka_default's extra; a connection that names no protocol means PLAINTEXT."""
    from pathlib import Path

    from pydantic import SecretStr

    updates: dict[str, Any] = {}
    for key, name in _KAFKA_EXTRA.items():
        value = extra.get(key)
        if value not in (None, ""):
            updates[name] = str(value).upper() if name in ("kafka_security_protocol", "kafka_sasl_mechanism") else value
    if "kafka_bootstrap" not in updates:
        return {}  # not ours to interpret: the settings stand
    updates.setdefault("kafka_security_protocol", "PLAINTEXT")
    if "kafka_sasl_password" in updates:
        updates["kafka_sasl_password"] = SecretStr(updates["kafka_sasl_password"])
    if "kafka_ssl_ca_file" in updates:
        updates["kafka_ssl_ca_file"] = Path(updates["kafka_ssl_ca_file"])
    return updates


def kafka_env(settings: Settings) -> dict[str, str]:
    """The Kafka settings as ``STOCKPIPE_KAFKA_*`` variables, for a process a task starts (spark-submit):
    where the broker is and how to authenticate, as the connection says; credentials only when used."""
    env = {
        "STOCKPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STOCKPIPE_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "STOCKPIPE_KAFKA_SSL_CA_FILE": str(settings.kafka_ssl_ca_file or ""),
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        env["STOCKPIPE_KAFKA_SASL_MECHANISM"] = settings.kafka_sasl_mechanism
        env["STOCKPIPE_KAFKA_SASL_USERNAME"] = settings.kafka_sasl_username
        env["STOCKPIPE_KAFKA_SASL_PASSWORD"] = settings.kafka_sasl_password.get_secret_value()
    return env


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
        updates.update(_kafka_updates(conn.extra_dejson or {}))
    if conn := _connection(REDIS_CONN_ID):
        updates["redis_url"] = f"redis://{conn.host or '127.0.0.1'}:{conn.port or 6379}/{conn.schema or 0}"
        if conn.password:
            from pydantic import SecretStr

            updates["redis_password"] = SecretStr(conn.password)
    if conn := _connection(SPARK_CONN_ID):
        if conn.host:
            updates["spark_master"] = conn.host
    if (conn := _connection(POLYGON_CONN_ID)) and conn.password:
        from pydantic import SecretStr

        updates["polygon_api_key"] = SecretStr(conn.password)
    result = settings.model_copy(update=updates) if updates else settings
    if result.kafka_security_protocol.startswith("SASL_") and not (
        result.kafka_sasl_username and result.kafka_sasl_password.get_secret_value()
    ):
        from stockpipe.config import ConfigError

        raise ConfigError(
            f"Airflow connection {KAFKA_CONN_ID} uses {result.kafka_security_protocol}: it needs sasl.username and "
            "sasl.password in its extra (or STOCKPIPE_KAFKA_SASL_USERNAME/PASSWORD)."
        )
    return result


def main() -> None:
    """``python -m stockpipe.airflow.connections`` prints the connections JSON (secrets included:
    the init script writes it to a 0600 file, imports it, and deletes it)."""
    import argparse

    argparse.ArgumentParser(
        prog="python -m stockpipe.airflow.connections", description="Print Airflow's connections as JSON."
    ).parse_args()
    print(json.dumps(connection_specs(get_settings()), indent=2))


if __name__ == "__main__":
    main()
