"""Which rules fire on which bars (pure numpy over the stored values; no I/O).

:func:`crossings` takes the stored series around a batch (see ``storage.alerts.series_around_batch``:
per symbol the bars it recomputed plus the 20 stored before them, ts ascending) and returns every
(rule, symbol, bar) whose condition became true there (``stockpipe.alerts.rules``). Each distinct
condition is computed once over all rows; a rule then only picks its symbol's rows.
:func:`apply_cooldown` drops the firings a rule's cool-down suppresses, given its last firing before
the recomputed range — a greedy scan in bar order, the same over a replay as the first time.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from stockpipe.alerts.rules import Condition, Rule

CANDIDATE_COLUMNS = ["rule_id", "symbol", "ts", "close", "value"]


def ref_column(minutes: int) -> str:
    """The frame's column with the close of the last bar at or before ts − ``minutes``."""
    return f"ref_close_{int(minutes)}"


def condition_state(cols: dict[str, np.ndarray], condition: Condition) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(holds, defined, value) per row of ``cols`` (column name → float array) for ``condition``."""
    close = cols["close"]
    kind, level = condition.kind, condition.level
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind in ("rsi_cross_below", "rsi_cross_above"):
            value = cols["rsi_14"]
            holds = value < level if kind == "rsi_cross_below" else value > level
            defined = ~np.isnan(value)
        elif kind in ("macd_cross_up", "macd_cross_down"):
            value, signal = cols["macd"], cols["macd_signal"]
            holds = value > signal if kind == "macd_cross_up" else value < signal
            defined = ~np.isnan(value) & ~np.isnan(signal)
        elif kind in ("close_cross_above", "close_cross_below"):
            value = cols[condition.line]
            holds = close > value if kind == "close_cross_above" else close < value
            defined = ~np.isnan(value) & ~np.isnan(close)
        elif kind == "close_move":
            ref = cols[ref_column(condition.minutes)]
            value = (close / ref - 1) * 100
            holds = np.abs(value) >= level
            defined = ~np.isnan(ref) & ~np.isnan(close)
        elif kind == "volume_spike":
            volume, average = cols["volume"], cols["volume_avg_20"]
            holds = volume >= level * average
            value = volume / average
            defined = ~np.isnan(average) & ~np.isnan(volume)
        else:  # pragma: no cover - the table's CHECK and rules.parse_condition keep kinds known
            raise ValueError(f"unknown condition kind {kind!r}")
    return holds & defined, defined, value


def crossings(frame: pd.DataFrame, rules: Iterable[Rule]) -> pd.DataFrame:
    """Every (rule, symbol, ts) of a row with ``evaluate`` where the rule's condition became true.

    ``frame``: ordered by symbol, ts; columns ``symbol``, ``ts``, ``evaluate`` (the rows to judge;
    the others are there as previous bars), ``close``, ``volume``, ``volume_avg_20``, the
    indicator columns, and :func:`ref_column` for each move rule's minutes. Conditions are
    computed on the judged rows and their previous rows only, once per distinct condition; a
    symbol rule looks at its symbol's rows only.
    """
    rules = list(rules)
    if not len(frame) or not rules:
        return pd.DataFrame({c: [] for c in CANDIDATE_COLUMNS})
    symbols = frame["symbol"].to_numpy(dtype=object)
    has_prev = np.r_[False, symbols[1:] == symbols[:-1]]
    judged = np.flatnonzero(frame["evaluate"].to_numpy(dtype=bool) & has_prev)
    if not len(judged):
        return pd.DataFrame({c: [] for c in CANDIDATE_COLUMNS})
    names = [c for c in frame.columns if c not in ("symbol", "ts", "evaluate")]
    values = {name: frame[name].to_numpy(dtype=np.float64) for name in names}
    now = {name: column[judged] for name, column in values.items()}
    before = {name: column[judged - 1] for name, column in values.items()}
    judged_symbols = symbols[judged]
    rows_of: dict[str, np.ndarray] = {
        symbol: rows for symbol, rows in pd.Series(np.arange(len(judged))).groupby(judged_symbols).groups.items()
    }
    fired_by_condition: dict[Condition, tuple[np.ndarray, np.ndarray]] = {}
    parts = []
    for rule in rules:
        condition = rule.condition
        if condition not in fired_by_condition:
            holds, _, value = condition_state(now, condition)
            prev_holds, prev_defined, _ = condition_state(before, condition)
            fired_by_condition[condition] = (holds & prev_defined & ~prev_holds, value)
        fires, value = fired_by_condition[condition]
        if rule.symbol == "*":
            rows = np.flatnonzero(fires)
        else:
            mine = np.asarray(rows_of.get(rule.symbol, ()), dtype=np.int64)
            rows = mine[fires[mine]]
        if len(rows):
            parts.append((rule.id, rows, value[rows]))
    if not parts:
        return pd.DataFrame({c: [] for c in CANDIDATE_COLUMNS})
    rows = np.concatenate([p[1] for p in parts])
    return pd.DataFrame(
        {
            "rule_id": np.concatenate([np.full(len(p[1]), p[0], dtype=np.int64) for p in parts]),
            "symbol": judged_symbols[rows],
            "ts": frame["ts"].to_numpy()[judged][rows],
            "close": now["close"][rows],
            "value": np.concatenate([p[2] for p in parts]),
        }
    )


def apply_cooldown(
    candidates: pd.DataFrame, cooldowns: dict[int, int], last_before: dict[tuple[int, str], pd.Timestamp]
) -> pd.DataFrame:
    """The candidates that fire: per (rule, symbol) in ts order, each at least its rule's cool-down
    (minutes of bar time) after the previous firing — the last one before the range
    (``last_before``) or one kept here."""
    if not len(candidates):
        return candidates
    candidates = candidates.sort_values(["rule_id", "symbol", "ts"], kind="stable").reset_index(drop=True)
    keep = np.ones(len(candidates), dtype=bool)
    rule_ids = candidates["rule_id"].to_numpy()
    symbols = candidates["symbol"].to_numpy(dtype=object)
    stamps = pd.to_datetime(candidates["ts"], utc=True)
    ts_ns = stamps.dt.as_unit("ns").astype("int64").to_numpy()  # pandas may hold µs
    previous_key, last_ns = None, None
    for i in range(len(candidates)):
        key = (int(rule_ids[i]), symbols[i])
        cooldown_ns = int(cooldowns.get(key[0], 0)) * 60_000_000_000
        if key != previous_key:
            previous_key = key
            before = last_before.get(key)
            last_ns = None if before is None else pd.Timestamp(before).value
        if cooldown_ns and last_ns is not None and ts_ns[i] - last_ns < cooldown_ns:
            keep[i] = False
            continue
        last_ns = ts_ns[i]
    return candidates[keep].reset_index(drop=True)
