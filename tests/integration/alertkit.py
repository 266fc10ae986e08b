"""Helpers of the alert tests: operator rows without Spark, and rules as the oracle reads them. Not a test module."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stockpipe.streaming import state as st


def operator_rows(bars: list[dict], state: st.SymbolState) -> tuple[st.SymbolState, pd.DataFrame]:
    """What the stream's operator emits for ``bars`` (contract messages of one symbol) after ``state``:
    the rows ``PostgresSink.write`` takes, without Spark."""
    frame = pd.DataFrame(bars)
    frame["ts_ms"] = pd.to_datetime(frame["ts"]).dt.as_unit("ms").astype("int64")
    frame["fetched_us"] = pd.to_datetime(frame["fetched_at"]).dt.as_unit("us").astype("int64")
    frame["koffset"], frame["kpartition"] = np.arange(len(frame)), 0
    state, rows = st.advance(state, frame, 390)
    rows["symbol"] = bars[0]["symbol"]
    return state, rows


def oracle_rules(rules) -> list[dict]:
    """Stored rules (``stockpipe.alerts.rules.Rule``) as the plain dicts ``alert_oracle`` reads."""
    return [
        {"id": r.id, "symbol": r.symbol, "kind": r.kind, "line": r.line, "level": r.level, "minutes": r.minutes,
         "cooldown_minutes": r.cooldown_minutes}
        for r in rules
    ]  # fmt: skip
