"""AppTest of the Alerts page against the real test database and Redis: the rules editor (as the
rules role), the history, and the down banners."""

from __future__ import annotations

import pytest
from conftest import APP, free_port
from streamlit.testing.v1 import AppTest

from stockpipe.storage import alerts as store

pytestmark = pytest.mark.integration


@pytest.fixture
def rules_env(monkeypatch, base_settings, app_env):
    monkeypatch.setenv("STOCKPIPE_PG_RULES_PASSWORD", base_settings.pg_rules_password.get_secret_value())


def alerts_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/alerts.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def test_add_disable_and_delete_rules_in_the_page(pg_conn, redis_client, rules_env):
    at = alerts_page()
    assert "No rules yet" in texts(at, "info")
    at.text_input(key="rule-symbol").set_value("zapl")
    at.text_input(key="rule-condition").set_value("close crosses above sma_7")
    at.button[0].click().run()  # the form's submit button comes first
    assert "Rule not stored: close can cross one of sma_5" in texts(at, "error")
    assert pg_conn.execute("SELECT count(*) FROM market.alert_rules").fetchone() == (0,)

    at.text_input(key="rule-condition").set_value("macd crosses above signal")
    at.number_input(key="rule-cooldown").set_value(10)
    at.button[0].click().run()
    assert "added: ZAPL · macd crosses above signal" in texts(at, "success")
    assert pg_conn.execute("SELECT symbol, kind, cooldown_minutes, enabled FROM market.alert_rules").fetchall() == [
        ("ZAPL", "macd_cross_up", 10, True)
    ]
    at.run()
    at.button(key="rule-toggle").click().run()
    assert pg_conn.execute("SELECT enabled FROM market.alert_rules").fetchone() == (False,)
    at.button(key="rule-delete").click().run()
    assert pg_conn.execute("SELECT count(*) FROM market.alert_rules").fetchone() == (0,)
    assert not at.exception


def test_history_filters(pg_conn, redis_client, rules_env):
    rule = store.add_rule(pg_conn, "*", "rsi_14 crosses below 30")
    pg_conn.execute(
        "INSERT INTO market.alerts (rule_id, symbol, ts, status, description, close, value) VALUES "
        "(%s, 'ZAPL', '2026-11-24 15:00Z', 'fired', 'rsi_14 crosses below 30', 190, 29.5), "
        "(%s, 'ZMSF', '2026-11-24 15:01Z', 'retracted', 'rsi_14 crosses below 30', 410, 29.9)",
        (rule.id, rule.id),
    )
    at = alerts_page()
    history = at.dataframe[-1].value
    assert sorted(history["symbol"]) == ["ZAPL", "ZMSF"]
    at.selectbox(key="history-status").set_value("retracted").run()
    assert list(at.dataframe[-1].value["symbol"]) == ["ZMSF"]


def test_the_page_names_what_is_down_and_where(app_env, monkeypatch):
    dead = free_port()
    monkeypatch.setenv("STOCKPIPE_PG_PORT", str(dead))
    monkeypatch.setenv("STOCKPIPE_REDIS_URL", f"redis://127.0.0.1:{dead}/15")
    at = alerts_page()
    errors = texts(at, "error")
    assert "PostgreSQL is down" in errors and "Redis is down" in errors
    assert f"127.0.0.1:{dead}" in errors and "make up" in errors
    assert "Traceback" not in errors and "section failed" not in errors
