"""market.latest_1m, rewritten whole every minute at market scale, keeps its size: its pages leave
room for the next version of each row (fillfactor, migration 016), so the sink's upserts are HOT
updates (no new index entry; the old version is pruned on the page's next visit) instead of a new
copy of the table every minute until autovacuum comes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockpipe.indicators import INDICATOR_COLUMNS
from stockpipe.storage.postgres import PostgresSink

pytestmark = pytest.mark.integration


def minute_rows(symbols: np.ndarray, ts_ms: int, rng: np.random.Generator) -> pd.DataFrame:
    n = len(symbols)
    return pd.DataFrame(
        {
            "kind": "bar", "symbol": symbols, "ts_ms": np.full(n, ts_ms), "open": rng.random(n) * 100,
            "high": 101.0, "low": 1.0, "close": rng.random(n) * 100, "volume": 1000.0, "vwap": 50.0,
            "trades": 5, "source": "test", "fetched_us": np.full(n, (ts_ms + 61_000) * 1000), "bar_changed": True,
            **{name: rng.random(n) for name in INDICATOR_COLUMNS},
        }
    )  # fmt: skip


def test_latest_rows_rewritten_every_minute_do_not_grow_the_table(settings, pg_conn):
    rng = np.random.default_rng(16)
    symbols = np.array([f"HOT{i:04d}" for i in range(2_000)], dtype=object)
    start = int(pd.Timestamp("2026-11-30 14:30", tz="UTC").value // 1_000_000)
    sink = PostgresSink(settings)
    try:
        sink.write(minute_rows(symbols, start, rng))
        (first,) = pg_conn.execute("SELECT pg_relation_size('market.latest_1m')").fetchone()
        for minute in range(1, 8):
            sink.write(minute_rows(symbols, start + minute * 60_000, rng))
    finally:
        sink.close()
    (after,) = pg_conn.execute("SELECT pg_relation_size('market.latest_1m')").fetchone()
    (count, newest) = pg_conn.execute("SELECT count(*), max(ts) FROM market.latest_1m").fetchone()
    assert count == len(symbols)
    assert newest == pd.Timestamp(start + 7 * 60_000, unit="ms", tz="UTC")
    # fillfactor 100 (before migration 016): a new copy of every row each minute, ~7x the first size
    assert after <= first * 1.5, f"latest_1m grew from {first} to {after} bytes in 7 rewrites"
