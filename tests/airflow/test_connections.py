"""Connections made from the settings, and read back by tasks (no services needed)."""

from __future__ import annotations

import json

import pytest

from stockpipe.airflow.bootstrap import backfill_range, login_line
from stockpipe.airflow.connections import connection_specs, task_settings
from stockpipe.config import load_settings


def test_connections_round_trip(monkeypatch: pytest.MonkeyPatch):
    settings = load_settings(
        pg_port=6543, pg_database="market", pg_writer_password="s3cret", redis_url="redis://127.0.0.1:7000/3",
        redis_password="r3dis",
        kafka_bootstrap="127.0.0.1:19092", spark_master="spark://127.0.0.1:7077", polygon_api_key="pk-123",
    )  # fmt: skip
    specs = connection_specs(settings)
    assert set(specs) == {"stockpipe_postgres", "kafka_default", "stockpipe_redis", "spark_default", "polygon"}
    for conn_id, spec in specs.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(spec))

    restored = task_settings(load_settings(polygon_api_key=""))
    assert restored.pg_dsn("writer") == settings.pg_dsn("writer")
    assert restored.redis_url == "redis://127.0.0.1:7000/3"  # no password in the URL (it gets logged)
    assert restored.redis_dsn == "redis://:r3dis@127.0.0.1:7000/3"
    assert restored.kafka_bootstrap == "127.0.0.1:19092"
    assert restored.spark_master == "spark://127.0.0.1:7077"
    assert restored.market_data_key == "pk-123" and not restored.uses_simulator


def test_without_connections_the_settings_stand(monkeypatch: pytest.MonkeyPatch):
    for name in ("STOCKPIPE_POSTGRES", "KAFKA_DEFAULT", "STOCKPIPE_REDIS", "SPARK_DEFAULT", "POLYGON"):
        monkeypatch.delenv(f"AIRFLOW_CONN_{name}", raising=False)
    settings = load_settings()
    assert task_settings(settings) == settings


def test_initial_backfill_range_and_login(tmp_path, monkeypatch: pytest.MonkeyPatch):
    from datetime import UTC, datetime

    from stockpipe.airflow import bootstrap

    settings = load_settings(backfill_initial_sessions=3, simulator_clock="nyse", polygon_api_key="")
    monkeypatch.setattr("stockpipe.airflow.timetables.market_calendar_mode", lambda: "nyse")
    # Monday after Thanksgiving week: the 3 sessions before are Wed 25, Fri 27 (early close), Mon 30
    assert backfill_range(settings, datetime(2026, 12, 1, 12, tzinfo=UTC)) == "2026-11-25 2026-11-30"
    monkeypatch.setattr(bootstrap, "airflow_dir", lambda _settings: tmp_path)
    (tmp_path / "passwords.json").write_text('{"admin": "pw-42"}')
    assert "login: admin / pw-42" in login_line(settings) and "127.0.0.1:8080" in login_line(settings)
