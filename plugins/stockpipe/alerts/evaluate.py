"""Which rules fire on which bars (pure numpy over the stored values; no I/O).

:func:`crossings` takes the stored series around a batch (see ``storage.alerts.series_around_batch``:
per symbol the bars it recomputed and the stored one before them, ts ascending, with the 20-bar volume
average and the move rules' reference closes computed by the query) and returns every
(rule, symbol, bar) whose condition became true there (``stockpipe.alerts.rules``). Each distinct
condition is computed once over all rows; a rule then only picks its symbol's rows.
:func:`apply_cooldown` drops the firings a rule's cool-down suppresses, given its last firing before
the recomputed range — a greedy scan in bar order, the same over a replay as the first time.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from stockpipe.alerts.rules import LINES, Condition, Rule

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


def _pair_state(
    now: dict[str, np.ndarray],
    before: dict[str, np.ndarray],
    kind: str,
    rows: np.ndarray,
    params: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """(fires, value) of one condition kind over (rule, judged row) pairs: ``rows`` are the judged
    rows, ``params`` the pairs' rule parameters (``level``; ``line`` / ``ref`` = column of the
    stacked lines / reference closes). The same arithmetic as :func:`condition_state`, elementwise."""

    def state(cols: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        close = cols["close"][rows]
        level = params["level"]
        with np.errstate(invalid="ignore", divide="ignore"):
            if kind in ("rsi_cross_below", "rsi_cross_above"):
                value = cols["rsi_14"][rows]
                holds = value < level if kind == "rsi_cross_below" else value > level
                defined = ~np.isnan(value)
            elif kind in ("macd_cross_up", "macd_cross_down"):
                value, signal = cols["macd"][rows], cols["macd_signal"][rows]
                holds = value > signal if kind == "macd_cross_up" else value < signal
                defined = ~np.isnan(value) & ~np.isnan(signal)
            elif kind in ("close_cross_above", "close_cross_below"):
                value = cols["lines"][rows, params["line"]]
                holds = close > value if kind == "close_cross_above" else close < value
                defined = ~np.isnan(value) & ~np.isnan(close)
            elif kind == "close_move":
                ref = cols["refs"][rows, params["ref"]]
                value = (close / ref - 1) * 100
                holds = np.abs(value) >= level
                defined = ~np.isnan(ref) & ~np.isnan(close)
            elif kind == "volume_spike":
                volume, average = cols["volume"][rows], cols["volume_avg_20"][rows]
                holds = volume >= level * average
                value = volume / average
                defined = ~np.isnan(average) & ~np.isnan(volume)
            else:  # pragma: no cover - the table's CHECK and rules.parse_condition keep kinds known
                raise ValueError(f"unknown condition kind {kind!r}")
        return holds & defined, defined, value

    holds, _, value = state(now)
    prev_holds, prev_defined, _ = state(before)
    return holds & prev_defined & ~prev_holds, value


def crossings(frame: pd.DataFrame, rules: Iterable[Rule]) -> pd.DataFrame:
    """Every (rule, symbol, ts) of a row with ``evaluate`` where the rule's condition became true.

    ``frame``: ordered by symbol, ts; columns ``symbol``, ``ts``, ``evaluate`` (the rows to judge;
    the others are there as previous bars), ``close``, ``volume``, ``volume_avg_20``, the
    indicator columns, and :func:`ref_column` for each move rule's minutes. Conditions are
    computed on the judged rows and their previous rows only; a symbol rule looks at its
    symbol's rows only. Vectorised over (rule, judged row) pairs, one pass per condition kind (not
    per rule: with 1,000 rules the per-rule numpy calls were most of the time). Rows come out by
    rule (in ``rules``' order), then bar.
    """
    rules = list(rules)
    if not len(frame) or not rules:
        return pd.DataFrame({c: [] for c in CANDIDATE_COLUMNS})
    symbols = frame["symbol"].to_numpy(dtype=object)
    has_prev = np.r_[False, symbols[1:] == symbols[:-1]]
    judged = np.flatnonzero(frame["evaluate"].to_numpy(dtype=bool) & has_prev)
    if not len(judged):
        return pd.DataFrame({c: [] for c in CANDIDATE_COLUMNS})
    judged_symbols = symbols[judged]
    # judged rows are grouped by symbol (the frame is ordered by symbol): one [start, stop) per symbol
    starts = np.flatnonzero(np.r_[True, judged_symbols[1:] != judged_symbols[:-1]])
    stops = np.r_[starts[1:], len(judged)]
    span = {judged_symbols[a]: (int(a), int(b)) for a, b in zip(starts, stops, strict=True)}
    everything = (0, len(judged))
    first = np.empty(len(rules), dtype=np.int64)
    count = np.empty(len(rules), dtype=np.int64)
    for k, rule in enumerate(rules):
        a, b = everything if rule.symbol == "*" else span.get(rule.symbol, (0, 0))
        first[k], count[k] = a, b - a
    total = int(count.sum())
    if not total:
        return pd.DataFrame({c: [] for c in CANDIDATE_COLUMNS})
    pair_rule = np.repeat(np.arange(len(rules)), count)  # by rule, then judged row ascending
    offsets = np.cumsum(count) - count
    pair_row = np.arange(total, dtype=np.int64) - np.repeat(offsets, count) + np.repeat(first, count)

    names = [c for c in frame.columns if c not in ("symbol", "ts", "evaluate")]
    values = {name: frame[name].to_numpy(dtype=np.float64) for name in names}
    minutes = sorted({int(r.minutes) for r in rules if r.kind == "close_move"})
    line_at = {line: j for j, line in enumerate(LINES)}
    missing = np.full(len(frame), np.nan)
    lines = np.column_stack([values.get(line, missing) for line in LINES])
    refs = np.column_stack([values[ref_column(n)] for n in minutes]) if minutes else None
    now = {name: column[judged] for name, column in values.items()}
    before = {name: column[judged - 1] for name, column in values.items()}
    now["lines"], before["lines"] = lines[judged], lines[judged - 1]
    if refs is not None:
        now["refs"], before["refs"] = refs[judged], refs[judged - 1]

    kinds = np.array([r.kind for r in rules], dtype=object)
    level = np.array([np.nan if r.level is None else float(r.level) for r in rules], dtype=np.float64)
    line = np.array([line_at.get(r.line, 0) if r.line else 0 for r in rules], dtype=np.int64)
    ref_at = {n: j for j, n in enumerate(minutes)}
    ref = np.array([ref_at.get(int(r.minutes), 0) if r.minutes else 0 for r in rules], dtype=np.int64)
    fires = np.zeros(total, dtype=bool)
    value = np.full(total, np.nan, dtype=np.float64)
    pair_kind = kinds[pair_rule]
    for kind in dict.fromkeys(kinds.tolist()):
        pick = np.flatnonzero(pair_kind == kind)
        rule_of = pair_rule[pick]
        params = {"level": level[rule_of], "line": line[rule_of], "ref": ref[rule_of]}
        fires[pick], value[pick] = _pair_state(now, before, kind, pair_row[pick], params)
    hit = np.flatnonzero(fires)
    if not len(hit):
        return pd.DataFrame({c: [] for c in CANDIDATE_COLUMNS})
    rows = pair_row[hit]
    ids = np.array([r.id for r in rules], dtype=np.int64)
    return pd.DataFrame(
        {
            "rule_id": ids[pair_rule[hit]],
            "symbol": judged_symbols[rows],
            "ts": frame["ts"].iloc[judged[rows]].to_numpy(),  # converts only the hits' timestamps
            "close": now["close"][rows],
            "value": value[hit],
        }
    )


def apply_cooldown(
    candidates: pd.DataFrame, cooldowns: dict[int, int], last_before: dict[tuple[int, str], pd.Timestamp | int]
) -> pd.DataFrame:
    """The candidates that fire: per (rule, symbol) in ts order, each at least its rule's cool-down
    (minutes of bar time) after the previous firing — the last one before the range
    (``last_before``: a timestamp, or an int of ns since the epoch) or one kept here."""
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
            last_ns = None if before is None else before if isinstance(before, int) else pd.Timestamp(before).value
        if cooldown_ns and last_ns is not None and ts_ns[i] - last_ns < cooldown_ns:
            keep[i] = False
            continue
        last_ns = ts_ns[i]
    return candidates[keep].reset_index(drop=True)
