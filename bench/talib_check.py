"""Shared by the benchmarks (not a benchmark): stored indicators against TA-Lib (invariant 1).

:func:`compare` runs TA-Lib (``tests.integration.streamkit.talib_indicators``, the tests' reference)
over each symbol's whole stored series up to ``end`` (EMA, RSI and MACD depend on every earlier
bar) and compares it with ``market.indicators_1m`` on the bars from ``start``: NULL exactly where
TA-Lib gives NaN, values within 1e-9 relative. Symbols are read a batch at a time (one query per
batch), so 10,000 symbols take ~50 queries, not 10,000.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from stockpipe.clients import pg_connect
from stockpipe.indicators import INDICATOR_COLUMNS

INDICATORS = list(INDICATOR_COLUMNS)
RTOL = 1e-9


def compare(settings: Any, symbols: list[str], start: datetime, end: datetime, batch: int = 200) -> dict[str, Any]:
    """TA-Lib over each symbol's stored bars before ``end`` vs its stored indicators from ``start``."""
    from tests.integration.streamkit import talib_indicators

    started = time.monotonic()
    worst, compared, mismatches, seen = 0.0, 0, [], 0
    columns = ["symbol", "ts", "close", "vwap", "volume", "has", *INDICATORS]
    with pg_connect(settings, "writer") as conn:
        for first in range(0, len(symbols), batch):
            rows = conn.execute(
                "SELECT b.symbol, b.ts, b.close, b.vwap, b.volume, (i.symbol IS NOT NULL), "
                + ", ".join("i." + c for c in INDICATORS)
                + " FROM market.bars_1m b LEFT JOIN market.indicators_1m i ON i.symbol = b.symbol AND i.ts = b.ts"
                " WHERE b.symbol = ANY(%s) AND b.ts < %s ORDER BY b.symbol, b.ts",
                (list(symbols[first : first + batch]), end),
            ).fetchall()
            frames = pd.DataFrame(rows, columns=columns)
            for name in ["close", "vwap", "volume", *INDICATORS]:
                frames[name] = pd.to_numeric(frames[name]).astype("float64")
            for symbol, frame in frames.groupby("symbol", sort=False):
                frame = frame.reset_index(drop=True)
                inside = (frame["ts"] >= start).to_numpy()
                if not inside.any():
                    continue
                seen += 1
                if not frame.loc[inside, "has"].all():
                    mismatches.append(f"{symbol}: {int((~frame.loc[inside, 'has']).sum())} bars without indicators")
                for name, expected in talib_indicators(frame).items():
                    actual = frame[name].to_numpy()[inside]
                    want = expected[inside]
                    if not np.array_equal(np.isnan(actual), np.isnan(want)):
                        mismatches.append(f"{symbol} {name}: NULL where TA-Lib has a value or v.v.")
                    both = ~np.isnan(actual) & ~np.isnan(want)
                    if both.any():
                        rel = np.abs(actual[both] - want[both]) / np.maximum(np.abs(want[both]), 1e-300)
                        worst = max(worst, float(rel.max()))
                        if rel.max() > RTOL:
                            mismatches.append(f"{symbol} {name}: relative difference {rel.max():.2e}")
                compared += int(inside.sum())
    return {
        "symbols_compared": seen,
        "bars_compared": compared,
        "max_rel_diff": worst,
        "equal": not mismatches,
        "problems": mismatches[:10],
        "problem_count": len(mismatches),
        "seconds": round(time.monotonic() - started, 1),
    }
