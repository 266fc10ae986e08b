"""stockpipe.clients: the Kafka configuration every client is built from (no services needed)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from stockpipe import clients
from stockpipe.config import ROOT, ConfigError, load_settings

CA = Path(__file__)  # any existing file stands for a CA bundle here


def scram_settings(**overrides):
    values = {
        "kafka_bootstrap": "b-1.msk.example:9096,b-2.msk.example:9096",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_username": "pipeline",
        "kafka_sasl_password": 'pa"ss\\word',
        "kafka_ssl_ca_file": str(CA),
    }
    return load_settings(**{**values, **overrides})


def test_plaintext_is_the_default_and_adds_no_security_keys():
    settings = load_settings(kafka_security_protocol="PLAINTEXT", kafka_bootstrap="127.0.0.1:9092")
    config = clients.kafka_config(settings, "producer")
    assert config["bootstrap.servers"] == "127.0.0.1:9092"
    assert not any(key.startswith(("security.", "sasl.", "ssl.")) for key in config)
    assert config["client.id"] == "stockpipe-producer" and config["enable.idempotence"] is True
    assert clients.spark_kafka_options(settings) == {"kafka.bootstrap.servers": "127.0.0.1:9092"}


def test_sasl_ssl_scram_for_librdkafka():
    config = clients.kafka_config(scram_settings(), "dlq")
    assert config["bootstrap.servers"] == "b-1.msk.example:9096,b-2.msk.example:9096"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("pipeline", 'pa"ss\\word')
    assert config["ssl.ca.location"] == str(CA)
    assert clients.redacted(config)["sasl.password"] == "***"


def test_sasl_ssl_scram_for_sparks_java_client():
    options = clients.spark_kafka_options(scram_settings())
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert options["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert options["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="pipeline" password="pa\\"ss\\\\word";'
    )
    assert options["kafka.ssl.truststore.type"] == "PEM"
    assert options["kafka.ssl.truststore.location"] == str(CA)
    plain = clients.spark_kafka_options(scram_settings(kafka_sasl_mechanism="PLAIN", kafka_ssl_ca_file=""))
    assert plain["kafka.sasl.jaas.config"].startswith("org.apache.kafka.common.security.plain.PlainLoginModule ")
    assert "kafka.ssl.truststore.location" not in plain  # the JVM's own trust store


def test_ssl_without_sasl_and_sasl_without_ssl():
    ssl = clients.kafka_config(scram_settings(kafka_security_protocol="SSL"), "admin")
    assert ssl["security.protocol"] == "SSL" and "sasl.username" not in ssl and ssl["ssl.ca.location"] == str(CA)
    sasl = clients.kafka_config(scram_settings(kafka_security_protocol="SASL_PLAINTEXT"), "admin")
    assert sasl["sasl.mechanism"] == "SCRAM-SHA-512" and "ssl.ca.location" not in sasl


def test_role_defaults_and_overrides():
    settings = load_settings(kafka_security_protocol="PLAINTEXT")
    assert clients.kafka_config(settings, "dashboard")["log_level"] == 0
    overridden = clients.kafka_config(settings, "producer", **{"message.timeout.ms": 5000, "linger.ms": 0})
    assert overridden["message.timeout.ms"] == 5000 and overridden["linger.ms"] == 0
    with pytest.raises(ValueError, match="unknown Kafka client role"):
        clients.kafka_config(settings, "nobody")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("kafka_sasl_username", "STOCKPIPE_KAFKA_SASL_USERNAME"),
        ("kafka_sasl_password", "STOCKPIPE_KAFKA_SASL_PASSWORD"),
    ],
)
def test_sasl_without_credentials_is_one_sentence_naming_the_setting(missing, named):
    with pytest.raises(ConfigError) as raised:
        scram_settings(**{missing: ""})
    message = str(raised.value)
    assert named in message and "SASL_SSL" in message
    assert message.count("\n") == 0 and message.endswith(".")


def test_a_missing_ca_file_names_the_setting_and_the_password_is_never_shown():
    with pytest.raises(ConfigError, match="STOCKPIPE_KAFKA_SSL_CA_FILE"):
        scram_settings(kafka_ssl_ca_file="/nonexistent/ca.pem")
    settings = scram_settings()
    assert 'pa"ss' not in repr(settings) and 'pa"ss' not in str(settings.kafka_sasl_password)


def test_airflow_kafka_connection_carries_the_security_settings(monkeypatch: pytest.MonkeyPatch):
    from stockpipe.airflow.connections import connection_specs, task_settings

    settings = scram_settings()
    extra = json.loads(connection_specs(settings)["kafka_default"]["extra"])
    assert extra == clients.kafka_security(settings)  # the Kafka provider passes it to confluent_kafka as is
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DEFAULT", json.dumps(connection_specs(settings)["kafka_default"]))
    restored = task_settings(load_settings(kafka_security_protocol="PLAINTEXT", kafka_bootstrap="127.0.0.1:9092"))
    assert clients.kafka_config(restored, "producer") == clients.kafka_config(settings, "producer")
    assert clients.spark_kafka_options(restored) == clients.spark_kafka_options(settings)


def test_airflow_plaintext_connection_holds_no_credentials():
    from stockpipe.airflow.connections import connection_specs

    settings = load_settings(kafka_security_protocol="PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="p")
    assert json.loads(connection_specs(settings)["kafka_default"]["extra"]) == {
        "bootstrap.servers": settings.kafka_bootstrap
    }


@pytest.mark.parametrize(
    ("pattern", "use"),
    [
        (r"\b(Producer|Consumer|AdminClient)\(", "kafka_producer, kafka_consumer, kafka_admin"),
        (r"psycopg\.connect\(", "pg_connect, pg_pool"),
        (r"post\(\s*\"/auth/token", "airflow_client"),
        (r"(=|return|await)\s*(massive\.)?WebSocketClient\(", "market_websocket"),
    ],
    ids=["kafka", "postgres", "airflow-login", "market-websocket"],
)
def test_clients_are_only_built_in_the_clients_module(pattern: str, use: str):
    found = subprocess.run(
        ["grep", "-rnE", pattern, "plugins", "dashboard", "spark_jobs", "dags"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    elsewhere = [line for line in found if not re.match(r"plugins/stockpipe/clients\.py:", line)]
    assert not elsewhere, f"build it with stockpipe.clients ({use}):\n" + "\n".join(elsewhere)


def test_spark_jobs_started_by_airflow_get_the_connections_kafka_settings(monkeypatch: pytest.MonkeyPatch):
    from stockpipe.airflow.connections import kafka_env

    settings = scram_settings()
    env = kafka_env(settings)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert clients.spark_kafka_options(load_settings()) == clients.spark_kafka_options(settings)
    plaintext = kafka_env(load_settings(kafka_security_protocol="PLAINTEXT", kafka_sasl_password="p"))
    assert "STOCKPIPE_KAFKA_SASL_PASSWORD" not in plaintext and plaintext["STOCKPIPE_KAFKA_SECURITY_PROTOCOL"]


@pytest.mark.parametrize(
    ("overrides", "url", "key"),
    [
        ({}, "ws://127.0.0.1:8090/stocks", "stockpipe-simulator"),
        ({"websocket_cluster": "delayed"}, "ws://127.0.0.1:8090/delayed/stocks", "stockpipe-simulator"),
        ({"polygon_api_key": "k-1"}, "wss://socket.massive.com/stocks", "k-1"),
        ({"polygon_api_key": "k-1", "websocket_cluster": "delayed"}, "wss://delayed.massive.com/stocks", "k-1"),
    ],
    ids=["simulator", "simulator-delayed", "massive", "massive-delayed"],
)
def test_market_websocket_is_massives_client_on_the_configured_cluster(overrides: dict, url: str, key: str):
    from massive import WebSocketClient

    settings = load_settings(simulator_host="127.0.0.1", simulator_port=8090, simulator_api_key="stockpipe-simulator",
                             **overrides)  # fmt: skip
    client = clients.market_websocket(settings, ["AM.AAPL"])
    assert isinstance(client, WebSocketClient)
    assert (client.url, client.api_key, client.scheduled_subs) == (url, key, {"AM.AAPL"})
    assert client.raw is True and client.max_reconnects == 0  # the feed parses frames and reconnects itself
