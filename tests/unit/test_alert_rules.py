"""The alert rules' vocabulary (stockpipe.alerts.rules) and the pure evaluation (stockpipe.alerts.evaluate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockpipe.alerts.evaluate import apply_cooldown, crossings
from stockpipe.alerts.rules import EXAMPLES, Condition, Rule, RuleError, check_symbol, check_webhook, parse_condition


@pytest.mark.parametrize("text", EXAMPLES)
def test_every_example_reads_back_as_itself(text):
    assert parse_condition(text).text == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RSI crosses below 30", Condition("rsi_cross_below", level=30.0)),
        ("  rsi_14   crosses above 70.5 ", Condition("rsi_cross_above", level=70.5)),
        ("MACD crosses up", Condition("macd_cross_up")),
        ("macd crosses below its signal", Condition("macd_cross_down")),
        ("close crosses below BB_LOWER", Condition("close_cross_below", line="bb_lower")),
        ("close moves 1.5 % in 30 min", Condition("close_move", level=1.5, minutes=30)),
        ("volume >= 3 x average", Condition("volume_spike", level=3.0)),
    ],
)
def test_spellings(text, expected):
    assert parse_condition(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("rsi crosses below 130", "between 0 and 100"),
        ("close crosses above sma_7", "sma_5, sma_20"),
        ("close moves 2% within 0 minutes", "1 to 1440 minutes"),
        ("volume >= 0x avg_20", "more than 0"),
        ("price goes up", "write one like"),
    ],
)
def test_bad_conditions_get_one_sentence(text, says):
    with pytest.raises(RuleError, match=says) as caught:
        parse_condition(text)
    message = str(caught.value)
    assert message.endswith(".") and "\n" not in message


def test_symbols_and_webhooks():
    assert check_symbol("aapl") == "AAPL" and check_symbol("*") == "*"
    with pytest.raises(RuleError, match="not a ticker"):
        check_symbol("bad symbol!")
    assert check_webhook("") is None and check_webhook("https://hooks.example/x") == "https://hooks.example/x"
    with pytest.raises(RuleError, match="http"):
        check_webhook("ftp://x")


def frame(closes, lines=None, symbol="AAPL"):
    ts = pd.date_range("2026-11-24 14:30", periods=len(closes), freq="min", tz="UTC")
    data = {"symbol": symbol, "ts": ts, "evaluate": True, "close": closes, "volume": 1.0, "volume_avg_20": np.nan}
    for name in ("sma_5", "sma_50", "ema_12", "ema_26", "bb_upper", "bb_middle", "bb_lower", "rsi_14", "macd",
                 "macd_signal"):  # fmt: skip
        data[name] = np.nan
    data["sma_20"] = lines if lines is not None else np.nan
    return pd.DataFrame(data)


def test_a_crossing_needs_the_previous_bar_defined_and_on_the_other_side():
    f = frame([10, 12, 9, 12, 12, 9, 12], lines=[np.nan, 11, 11, 11, 11, 11, 11])
    rule = Rule(id=1, symbol="*", kind="close_cross_above", line="sma_20")
    got = crossings(f, [rule])
    # bar 1 is above but its previous bar has no SMA: no crossing; bars 3 and 6 cross; bar 4 stays above
    assert list(got["ts"]) == [f["ts"][3], f["ts"][6]]
    assert list(got["value"]) == [11, 11]
    other = Rule(id=2, symbol="MSFT", kind="close_cross_above", line="sma_20")
    assert crossings(f, [other]).empty


def test_cooldown_is_greedy_in_bar_time_and_continues_from_the_last_firing_before():
    ts = pd.date_range("2026-11-24 14:30", periods=6, freq="4min", tz="UTC")
    candidates = pd.DataFrame({"rule_id": 1, "symbol": "AAPL", "ts": ts, "close": 1.0, "value": 1.0})
    kept = apply_cooldown(candidates, {1: 10}, {})
    assert list(kept["ts"]) == [ts[0], ts[3]]  # 0, 12 min (4 and 8 are within 10 of 0; 16, 20 of 12)
    kept = apply_cooldown(candidates, {1: 10}, {(1, "AAPL"): ts[0] - pd.Timedelta(minutes=5)})
    assert list(kept["ts"]) == [ts[2], ts[5]]
    assert len(apply_cooldown(candidates, {1: 0}, {})) == 6
