"""The alerts oracle: which rules must have fired, from TA-Lib over the final stored bars.

Not a test module, and deliberately independent of ``stockpipe.alerts`` and ``stockpipe.storage``:
the rules are plain dicts, the indicators come from TA-Lib over each symbol's stored closes and
volumes (ts order), and the semantics are re-implemented from the user guide
(docs/alerts.md): a rule fires on a bar when its condition holds there and did not hold on the
previous stored bar, both defined; a cool-down of C minutes drops a firing less than C minutes
(bar time) after the rule's previous firing for that symbol.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib


def _series(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    close = bars["close"].to_numpy(dtype=np.float64)
    volume = bars["volume"].to_numpy(dtype=np.float64)
    macd, signal, _ = talib.MACD(close, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0, 0)
    return {
        "close": close,
        "volume": volume,
        "volume_sma_20": talib.SMA(volume, 20),
        "rsi_14": talib.RSI(close, 14),
        "macd": macd,
        "macd_signal": signal,
        "sma_5": talib.SMA(close, 5),
        "sma_20": talib.SMA(close, 20),
        "sma_50": talib.SMA(close, 50),
        "ema_12": talib.EMA(close, 12),
        "ema_26": talib.EMA(close, 26),
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
    }


def _holds(rule: dict, s: dict[str, np.ndarray], minute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kind, level = rule["kind"], rule.get("level")
    close = s["close"]
    if kind == "rsi_cross_below":
        x = s["rsi_14"]
        return x < level, ~np.isnan(x)
    if kind == "rsi_cross_above":
        x = s["rsi_14"]
        return x > level, ~np.isnan(x)
    if kind == "macd_cross_up":
        return s["macd"] > s["macd_signal"], ~np.isnan(s["macd"]) & ~np.isnan(s["macd_signal"])
    if kind == "macd_cross_down":
        return s["macd"] < s["macd_signal"], ~np.isnan(s["macd"]) & ~np.isnan(s["macd_signal"])
    if kind == "close_cross_above":
        line = s[rule["line"]]
        return close > line, ~np.isnan(line)
    if kind == "close_cross_below":
        line = s[rule["line"]]
        return close < line, ~np.isnan(line)
    if kind == "close_move":
        # reference: the last bar at or before ts - N minutes
        at = np.searchsorted(minute, minute - rule["minutes"], side="right") - 1
        ref = np.where(at >= 0, close[np.maximum(at, 0)], np.nan)
        with np.errstate(invalid="ignore"):
            return np.abs(close / ref - 1) * 100 >= level, ~np.isnan(ref)
    if kind == "volume_spike":
        avg = s["volume_sma_20"]
        with np.errstate(invalid="ignore"):
            return s["volume"] >= level * avg, ~np.isnan(avg)
    raise AssertionError(f"oracle: unknown kind {kind}")


def expected_alerts(stored: pd.DataFrame, rules: list[dict]) -> set[tuple[int, str, pd.Timestamp]]:
    """{(rule id, symbol, bar ts)} the rules must have fired over ``stored`` (symbol, ts, close, volume)."""
    out: set[tuple[int, str, pd.Timestamp]] = set()
    for symbol, bars in stored.sort_values(["symbol", "ts"]).groupby("symbol"):
        bars = bars.reset_index(drop=True)
        stamps = pd.to_datetime(bars["ts"], utc=True)
        # whole minutes since the epoch (bars start on minute boundaries)
        minute = ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(minutes=1)).to_numpy(dtype=np.int64)
        series = _series(bars)
        for rule in rules:
            if rule["symbol"] not in ("*", symbol):
                continue
            with np.errstate(invalid="ignore"):
                holds, defined = _holds(rule, series, minute)
                holds = holds & defined
            fires = np.zeros(len(bars), dtype=bool)
            fires[1:] = holds[1:] & defined[:-1] & ~holds[:-1]
            last = None
            cooldown = rule.get("cooldown_minutes", 0)
            for i in np.flatnonzero(fires):
                if last is not None and minute[i] - last < cooldown:
                    continue
                last = minute[i]
                out.add((rule["id"], symbol, stamps.iloc[i]))
    return out


def stored_alerts(conn, statuses: tuple[str, ...] = ("fired",)) -> list[tuple[int, str, pd.Timestamp]]:
    """The alerts in market.alerts with one of ``statuses`` (a list: duplicates would show)."""
    rows = conn.execute(
        "SELECT rule_id, symbol, ts FROM market.alerts WHERE status = ANY(%s)", (list(statuses),)
    ).fetchall()
    return [(int(r), s, pd.Timestamp(t).tz_convert("UTC")) for r, s, t in rows]
