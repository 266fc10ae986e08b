"""Alert evaluation in the sink's transaction (PostgresSink.write, as the stream and the backfill call it),
without Spark: corrections retract and fire again, cool-downs across batches, backfills by setting,
deleted rules, replays."""

from __future__ import annotations

import numpy as np
import pytest

from stockpipe.storage import alerts as store
from stockpipe.storage.postgres import PostgresSink
from stockpipe.streaming import state as st
from tests.integration import alert_oracle as oracle
from tests.integration import alertkit
from tests.integration import streamkit as kit

pytestmark = [pytest.mark.integration]


@pytest.fixture
def sink(settings):
    sink = PostgresSink(settings)
    yield sink
    sink.close()


def test_corrections_retract_and_refire_and_cooldowns_chain_across_batches(sink, pg_conn):
    rules = [
        store.add_rule(pg_conn, "AAPL", "close crosses above sma_20", 7),
        store.add_rule(pg_conn, "*", "close crosses below ema_12"),
        store.add_rule(pg_conn, "*", "close moves 0.4% within 3 minutes", 4),
    ]
    bars = kit.random_bars("AAPL", kit.SESSION_OPEN, 300, seed=21)
    state, offset = st.SymbolState(), 0
    rng = np.random.default_rng(21)
    for lo in range(0, 300, 30):
        batch = list(bars[lo : lo + 30])
        if lo >= 60:  # corrections of earlier bars (within the horizon), some across batches
            for _ in range(4):
                j = int(rng.integers(max(0, lo - 50), lo + 29))
                bars[j] = kit.revised(bars[j], 600 + lo, 0.985 if rng.random() < 0.5 else 1.015)
                batch.append(bars[j])
        state, rows = alertkit.operator_rows(batch, state)
        sink.write(rows, offsets={("t", 0): (offset, offset + len(batch) - 1)}, query_name="t", batch_id=lo)
        offset += len(batch)
        # after every batch: the fired alerts are the oracle's over what is stored now
        fired = oracle.stored_alerts(pg_conn)
        assert len(fired) == len(set(fired))
        expected = oracle.expected_alerts(kit.stored(pg_conn), alertkit.oracle_rules(rules))
        assert set(fired) == expected, f"after batch {lo}"
    statuses = dict(pg_conn.execute("SELECT status, count(*) FROM market.alerts GROUP BY 1").fetchall())
    assert statuses.get("retracted", 0) > 0, "no correction undid a crossing"
    # a replayed batch (offsets applied before) changes nothing
    before = pg_conn.execute("SELECT id, status, delivery FROM market.alerts ORDER BY id").fetchall()
    assert sink.write(rows, offsets={("t", 0): (offset - 1, offset - 1)}, query_name="t", batch_id=99) is None
    assert pg_conn.execute("SELECT id, status, delivery FROM market.alerts ORDER BY id").fetchall() == before


@pytest.mark.parametrize("mode", ["skip", "historical"])
def test_backfilled_history_fires_nothing_or_historical_never_delivered(settings, pg_conn, mode):
    store.add_rule(pg_conn, "*", "close crosses above sma_20")
    sink = PostgresSink(settings.model_copy(update={"user_alerts_backfill": mode}))
    try:
        _state, rows = alertkit.operator_rows(kit.random_bars("MSFT", kit.SESSION_OPEN, 200, seed=4), st.SymbolState())
        sink.write(rows)  # no Kafka offsets: the backfill's call
    finally:
        sink.close()
    alerts = pg_conn.execute("SELECT status, delivery FROM market.alerts").fetchall()
    if mode == "skip":
        assert alerts == []
    else:
        assert alerts and set(alerts) == {("historical", "none")}
        assert store.claim_pending(pg_conn) == []


def test_a_deleted_rule_keeps_its_alerts_and_fires_no_more(sink, pg_conn):
    rule = store.add_rule(pg_conn, "AAPL", "close crosses above sma_20")
    bars = kit.random_bars("AAPL", kit.SESSION_OPEN, 300, seed=8)
    state, rows = alertkit.operator_rows(bars[:150], st.SymbolState())
    sink.write(rows, offsets={("t", 0): (0, 149)}, query_name="t", batch_id=0)
    (kept,) = pg_conn.execute("SELECT count(*) FROM market.alerts").fetchone()
    assert kept > 0
    assert store.delete_rule(pg_conn, rule.id)
    state, rows = alertkit.operator_rows(bars[150:], state)
    sink.write(rows, offsets={("t", 0): (150, 299)}, query_name="t", batch_id=1)
    rows = pg_conn.execute("SELECT rule_id, description FROM market.alerts").fetchall()
    assert len(rows) == kept and {r for r in rows} == {(None, "close crosses above sma_20")}


def test_the_cached_rules_follow_every_change(pg_conn):
    """The sink reads the rules again only when their fingerprint changes: every kind of change
    (new, disabled, enabled again, edited in SQL without updated_at, deleted and added in one
    transaction, all deleted) gives the rules as read without the cache."""
    cur = pg_conn.cursor()

    def check(expected_ids: list[int]) -> list:
        cached = store.enabled_rules_cached(cur)
        assert [r.id for r in cached] == expected_ids
        assert cached == store.enabled_rules(cur)
        return cached

    check([])
    a = store.add_rule(pg_conn, "AAPL", "rsi_14 crosses below 30")
    check([a.id])
    b = store.add_rule(pg_conn, "*", "macd crosses above signal", 5)
    check([a.id, b.id])
    assert store.set_rule_enabled(pg_conn, a.id, False)
    check([b.id])
    assert store.set_rule_enabled(pg_conn, a.id, True)
    check([a.id, b.id])
    pg_conn.execute("UPDATE market.alert_rules SET level = 25 WHERE id = %s", (a.id,))
    assert check([a.id, b.id])[0].level == 25
    with pg_conn.transaction():
        pg_conn.execute("DELETE FROM market.alert_rules WHERE id = %s", (b.id,))
        c = store.add_rule(pg_conn, "*", "macd crosses above signal", 5)
    check([a.id, c.id])
    pg_conn.execute("DELETE FROM market.alert_rules")
    check([])
