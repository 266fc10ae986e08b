"""crossings() (vectorised over rule × bar pairs) gives exactly what judging each rule on its own
gives: the same (rule, symbol, bar) rows in the same order, the same values bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockpipe.alerts.evaluate import CANDIDATE_COLUMNS, condition_state, crossings, ref_column
from stockpipe.alerts.rules import LINES, Rule

INDICATORS = [*LINES, "rsi_14", "macd", "macd_signal"]


def per_rule(frame: pd.DataFrame, rules: list[Rule]) -> pd.DataFrame:
    """The reference: each rule judged on its own symbol's rows (or every row for ``*``)."""
    symbols = frame["symbol"].to_numpy(dtype=object)
    has_prev = np.r_[False, symbols[1:] == symbols[:-1]]
    judged = np.flatnonzero(frame["evaluate"].to_numpy(dtype=bool) & has_prev)
    names = [c for c in frame.columns if c not in ("symbol", "ts", "evaluate")]
    now = {n: frame[n].to_numpy(dtype=np.float64)[judged] for n in names}
    before = {n: frame[n].to_numpy(dtype=np.float64)[judged - 1] for n in names}
    out = []
    for rule in rules:
        holds, _, value = condition_state(now, rule.condition)
        prev_holds, prev_defined, _ = condition_state(before, rule.condition)
        fires = holds & prev_defined & ~prev_holds
        mine = np.ones(len(judged), dtype=bool) if rule.symbol == "*" else symbols[judged] == rule.symbol
        for j in np.flatnonzero(fires & mine):
            out.append((rule.id, symbols[judged][j], frame["ts"].to_numpy()[judged][j], now["close"][j], value[j]))
    return pd.DataFrame(out, columns=CANDIDATE_COLUMNS)


def random_frame(rng: np.random.Generator, symbols: list[str], n: int, minutes: list[int]) -> pd.DataFrame:
    parts = []
    for symbol in symbols:
        close = 100 + np.cumsum(rng.normal(0, 1, n))
        data = {
            "symbol": symbol,
            "ts": pd.date_range("2026-11-24 14:30", periods=n, freq="min", tz="UTC"),
            "evaluate": np.arange(n) >= n // 3,
            "close": close,
            "volume": rng.uniform(100, 1000, n),
            "volume_avg_20": rng.uniform(100, 400, n),
        }
        for name in INDICATORS:
            data[name] = close + rng.normal(0, 1, n) if name != "rsi_14" else rng.uniform(0, 100, n)
        for m in minutes:
            data[ref_column(m)] = close * (1 + rng.normal(0, 0.02, n))
        frame = pd.DataFrame(data)
        for name in ["close", "volume_avg_20", *INDICATORS, *(ref_column(m) for m in minutes)]:
            frame.loc[rng.random(n) < 0.1, name] = np.nan  # undefined values: NULL indicators, no history
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def random_rules(rng: np.random.Generator, symbols: list[str], n: int, minutes: list[int]) -> list[Rule]:
    rules = []
    for k in range(n):
        symbol = rng.choice([*symbols, "*", "NOPE"])
        kind = rng.choice(
            [
                "rsi_cross_below",
                "rsi_cross_above",
                "macd_cross_up",
                "macd_cross_down",
                "close_cross_above",
                "close_cross_below",
                "close_move",
                "volume_spike",
            ]  # fmt: skip
        )
        line = rng.choice(LINES) if kind.startswith("close_cross") else None
        level = {"close_move": rng.uniform(0.5, 3), "volume_spike": rng.uniform(1, 3)}.get(kind, rng.uniform(20, 80))
        level = None if kind.startswith(("macd", "close_cross")) else round(float(level), 1)
        rules.append(
            Rule(
                id=1000 + k,
                symbol=str(symbol),
                kind=str(kind),
                line=None if line is None else str(line),
                level=level,
                minutes=int(rng.choice(minutes)) if kind == "close_move" else None,
            )
        )
    return rules


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vectorised_crossings_equal_judging_each_rule(seed):
    rng = np.random.default_rng(seed)
    symbols, minutes = ["AAPL", "MSFT", "TSLA", "GOOGL"], [5, 15, 30]
    frame = random_frame(rng, symbols, 80, minutes)
    rules = random_rules(rng, symbols, 300, minutes)
    want = per_rule(frame, rules)
    got = crossings(frame, rules)
    assert len(want) > 50  # the random series cross often: the comparison covers every kind
    assert set(got["rule_id"]) - {r.id for r in rules} == set()
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    np.testing.assert_array_equal(got["value"].to_numpy(), want["value"].to_numpy())  # bit for bit, NaN included


def test_rules_on_symbols_without_judged_bars_give_nothing():
    rng = np.random.default_rng(7)
    frame = random_frame(rng, ["AAPL"], 30, [5])
    rules = random_rules(rng, ["MSFT"], 40, [5])
    rules = [r for r in rules if r.symbol != "*"]
    assert crossings(frame, rules).empty and per_rule(frame, rules).empty
