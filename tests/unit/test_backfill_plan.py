"""The backfill's pure parts: how symbols are dealt to tasks, and the rows of a group of symbols."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from stockpipe.indicators import INDICATOR_COLUMNS, compute_frame
from stockpipe.storage.postgres import STORED_COLUMNS, symbol_bounds
from stockpipe.streaming.backfill import indicator_rows, plan_tasks

MINUTE_MS = 60_000
START_MS = int(datetime(2026, 11, 24, 14, 30, tzinfo=UTC).timestamp() * 1000)


def test_plan_deals_every_symbol_once_in_bounded_balanced_chunks():
    rng = np.random.default_rng(7)
    counts = {f"S{i:03d}": int(n) for i, n in enumerate(rng.integers(1, 5_000, size=300))}
    counts["HUGE"] = 50_000  # longer than a chunk may be: a chunk of its own
    plan = plan_tasks(counts, tasks=3, max_bars=20_000)

    assert len(plan) == 3
    dealt = [symbol for task in plan for chunk in task for symbol in chunk]
    assert sorted(dealt) == sorted(counts)
    for chunk in (chunk for task in plan for chunk in task):
        assert sum(counts[s] for s in chunk) <= 20_000 or chunk == ["HUGE"]
    loads = sorted(sum(counts[s] for chunk in task for s in chunk) for task in plan)
    assert loads[-1] - loads[0] <= 20_000  # never more apart than one chunk


def test_plan_of_few_symbols():
    assert plan_tasks({}, tasks=2) == []
    assert plan_tasks({"AAPL": 390}, tasks=2) == [[["AAPL"]]]
    plan = plan_tasks({"AAPL": 390, "MSFT": 390, "TSLA": 390}, tasks=2)
    assert sorted(symbol for task in plan for chunk in task for symbol in chunk) == ["AAPL", "MSFT", "TSLA"]
    assert sorted(sum(len(chunk) for chunk in task) for task in plan) == [1, 2]


def stored_series(symbol: str, first_ms: int, n: int, seed: int) -> pd.DataFrame:
    """One symbol's stored bars as ``stored_bars_frame`` returns them (one VWAP missing)."""
    rng = np.random.default_rng(seed)
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.002, n))), 4)
    vwap = np.round(close * (1 + rng.normal(0, 0.0005, n)), 4)
    vwap[n // 3] = np.nan
    ts_ms = first_ms + MINUTE_MS * np.arange(n, dtype=np.int64)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "ts_ms": ts_ms,
            "fetched_us": ts_ms * 1000 + 61_000_000,
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": rng.integers(100, 50_000, n).astype(np.float64),
            "vwap": vwap,
            "trades": rng.integers(1, 500, n),
            "source": "simulator",
        }
    )[["symbol", *STORED_COLUMNS]]


def test_rows_of_a_group_equal_each_symbol_computed_alone_from_its_first_bar():
    # Different lengths and first bars: a symbol's state must never leak into the next one's.
    series = [
        stored_series("AAPL", START_MS - 500 * MINUTE_MS, 900, seed=1),
        stored_series("MSFT", START_MS, 60, seed=2),
        stored_series("TSLA", START_MS - 30 * MINUTE_MS, 240, seed=3),
    ]
    bars = pd.concat(series, ignore_index=True)
    end_ms = START_MS + 120 * MINUTE_MS
    rows = indicator_rows(bars, START_MS, end_ms)

    assert set(rows["kind"]) == {"bar"} and not rows["bar_changed"].any()
    assert list(symbol_bounds(rows["symbol"])) == ["AAPL", "MSFT", "TSLA"]
    for one in series:
        symbol = one["symbol"].iloc[0]
        alone, _ = compute_frame(one.assign(ts=pd.to_datetime(one["ts_ms"], unit="ms", utc=True)))
        expected = alone[(alone["ts_ms"] >= START_MS) & (alone["ts_ms"] < end_ms)]
        got = rows[rows["symbol"] == symbol]
        assert got["ts_ms"].tolist() == expected["ts_ms"].tolist()
        for name in ("fetched_us", "close", "vwap", "trades"):
            np.testing.assert_array_equal(got[name].to_numpy(), expected[name].to_numpy(), err_msg=name)
        # Bit for bit, NULL (NaN) where compute_frame has none.
        np.testing.assert_array_equal(
            got[list(INDICATOR_COLUMNS)].to_numpy(), expected[list(INDICATOR_COLUMNS)].to_numpy(), err_msg=symbol
        )


def test_no_rows_inside_the_range():
    bars = stored_series("AAPL", START_MS, 30, seed=4)
    rows = indicator_rows(bars, START_MS + 60 * MINUTE_MS, START_MS + 90 * MINUTE_MS)
    assert rows.empty
    assert {"symbol", "ts_ms", "kind", "bar_changed", *INDICATOR_COLUMNS} <= set(rows.columns)


@pytest.mark.parametrize("values", [[], ["A"], ["A", "A", "B", "C", "C", "C"]])
def test_symbol_bounds(values):
    bounds = symbol_bounds(pd.Series(values, dtype=object))
    assert [s for s, (a, b) in bounds.items() for _ in range(a, b)] == values
