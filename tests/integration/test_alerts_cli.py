"""``python -m stockpipe.alerts`` against the real database, as the rules role."""

from __future__ import annotations

import psycopg
import pytest

from stockpipe.alerts.__main__ import run
from stockpipe.clients import pg_connect

pytestmark = [pytest.mark.integration]


def test_add_list_disable_delete(settings, pg_conn, capsys):
    assert run(["add", "aapl", "RSI crosses below 30", "--cooldown", "15"], settings) == 0
    assert "AAPL   rsi_14 crosses below 30" in capsys.readouterr().out
    assert run(["add", "*", "macd crosses above signal", "--webhook", "https://hooks.example/T1"], settings) == 0
    capsys.readouterr()
    stored = pg_conn.execute(
        "SELECT id, symbol, kind, level, cooldown_minutes, enabled FROM market.alert_rules ORDER BY id"
    ).fetchall()
    assert [r[1:] for r in stored] == [
        ("AAPL", "rsi_cross_below", 30.0, 15, True),
        ("*", "macd_cross_up", None, 0, True),
    ]
    first = stored[0][0]

    assert run(["list"], settings) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "cool-down 15 min" in out[0] and "own webhook" in out[1]

    assert run(["disable", str(first)], settings) == 0
    assert pg_conn.execute("SELECT enabled FROM market.alert_rules WHERE id = %s", (first,)).fetchone() == (False,)
    assert run(["delete", str(first)], settings) == 0
    assert run(["delete", str(first)], settings) == 1
    assert "there is no rule" in capsys.readouterr().err
    assert pg_conn.execute("SELECT count(*) FROM market.alert_rules").fetchone() == (1,)


@pytest.mark.parametrize(
    "argv",
    [
        ["add", "AAPL", "rsi crosses below 130"],
        ["add", "AAPL", "close crosses above sma_7"],
        ["add", "bad symbol!", "macd crosses up"],
        ["add", "AAPL", "macd crosses up", "--cooldown", "soon"],
        ["add", "AAPL", "macd crosses up", "--webhook", "not a url"],
    ],
)
def test_a_bad_rule_gets_one_sentence_and_is_not_stored(settings, pg_conn, capsys, argv):
    assert run(argv, settings) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rule not stored: ") and err.endswith(".") and "\n" not in err
    assert pg_conn.execute("SELECT count(*) FROM market.alert_rules").fetchone() == (0,)


def test_the_rules_role_changes_rules_only(settings, pg_conn):
    with pg_connect(settings, "rules", autocommit=True) as conn:
        conn.execute("INSERT INTO market.alert_rules (symbol, kind) VALUES ('AAPL', 'macd_cross_up')")
        for statement in (
            "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, source, fetched_at) "
            "VALUES ('AAPL', now(), 1, 1, 1, 1, 1, 'x', now())",
            "UPDATE market.alerts SET status = 'retracted'",
            "DELETE FROM market.indicators_1m",
            "SELECT count(*) FROM market.bars_1m",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
