"""The per-symbol stream state machine (stockpipe.streaming.state), against TA-Lib, without Spark.

Every scenario ends with the same oracle: the rows emitted so far, last write per ts winning, equal
TA-Lib over the bars the state holds as stored — exactly what the sink would leave in PostgreSQL.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from stockpipe.streaming.state import INDICATOR_COLUMNS, KIND_BAR, KIND_LATE, SymbolState, advance, seed

T0 = 1_795_962_600_000  # 2026-11-29 ... UTC, ms
MINUTE = 60_000


def bars(n: int, seed_: int = 0, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed_)
    close = 100 + np.cumsum(rng.normal(0, 0.4, n))
    close[rng.random(n) < 0.05] = close[0]  # some repeats
    ts = T0 + MINUTE * (start + np.arange(n))
    return pd.DataFrame(
        {
            "ts_ms": ts,
            "fetched_us": ts * 1000 + 61_000_000,
            "open": close,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": rng.integers(100, 1000, n).astype(float),
            "vwap": close + 0.1,
            "trades": 7,
            "source": "simulator",
            "kpartition": 0,
            "koffset": np.arange(n),
        }
    )


class Sink:
    """What PostgreSQL would hold: bars by latest fetched_at, indicators by last write."""

    def __init__(self) -> None:
        self.bars: dict[int, dict] = {}
        self.indicators: dict[int, np.ndarray] = {}

    def apply(self, out: pd.DataFrame) -> None:
        for row in out.to_dict("records"):
            ts = int(row["ts_ms"])
            if row["bar_changed"] and (ts not in self.bars or row["fetched_us"] > self.bars[ts]["fetched_us"]):
                self.bars[ts] = row
            if row["kind"] == KIND_BAR:
                self.indicators[ts] = np.array([row[c] for c in INDICATOR_COLUMNS], dtype=np.float64)

    def check_talib(self) -> None:
        order = sorted(self.bars)
        assert order == sorted(self.indicators), "a stored bar lacks indicators"
        close = np.array([self.bars[t]["close"] for t in order])
        got = np.array([self.indicators[t] for t in order])
        expected = {
            "sma_5": talib.SMA(close, 5), "sma_50": talib.SMA(close, 50), "ema_12": talib.EMA(close, 12),
            "ema_26": talib.EMA(close, 26), "rsi_14": talib.RSI(close, 14),
            "macd": talib.MACD(close, 12, 26, 9)[0], "macd_signal": talib.MACD(close, 12, 26, 9)[1],
            "bb_upper": talib.BBANDS(close, 20, 2.0, 2.0, 0)[0],
        }  # fmt: skip
        for name, want in expected.items():
            col = got[:, INDICATOR_COLUMNS.index(name)]
            np.testing.assert_array_equal(np.isnan(col), np.isnan(want), err_msg=name)
            np.testing.assert_allclose(col, want, rtol=1e-9, atol=0, err_msg=name)


def run(frames: list[pd.DataFrame], horizon: int = 390, state: SymbolState | None = None):
    state, sink = state or SymbolState(), Sink()
    for frame in frames:
        state, out = advance(state, frame, horizon)
        # Every state survives the Spark state row round trip bit for bit.
        state = SymbolState.from_row(state.to_row())
        sink.apply(out)
    return state, sink


def test_in_order_batches_equal_talib():
    data = bars(700)
    state, sink = run([data.iloc[i : i + 13] for i in range(0, 700, 13)], horizon=120)
    sink.check_talib()
    assert 120 <= len(state.window) <= 132 and state.trimmed


def test_duplicates_out_of_order_and_corrections_recompute_later_bars():
    data = bars(400, seed_=3)
    shuffled = data.sample(frac=1.0, random_state=5)  # arbitrary order inside the horizon
    state, sink = run([shuffled.iloc[i : i + 50] for i in range(0, 400, 50)])
    sink.check_talib()

    corrected = data.iloc[[200]].assign(close=data["close"][200] * 1.05, fetched_us=data["fetched_us"][200] + 1)
    corrected["high"] = corrected["close"] + 1
    state, out = advance(state, corrected, 390)
    sink.apply(out)
    assert out["ts_ms"].min() == data["ts_ms"][200] and len(out) == 200  # that bar and every later one
    assert out["bar_changed"].sum() == 1
    sink.check_talib()

    stale = data.iloc[[300]].assign(close=1.0, fetched_us=data["fetched_us"][300] - 1)
    same = data.iloc[[300]].assign(close=2.0)  # equal fetched_at: no change
    for frame in (stale, same, data.iloc[390:400]):
        state, out = advance(state, frame, 390)
        assert out.empty
    sink.check_talib()


def test_latest_fetched_at_wins_inside_one_batch():
    data = bars(60)
    newer = data.iloc[[30]].assign(close=data["close"][30] + 3, high=data["high"][30] + 3, fetched_us=10**16)
    equal = data.iloc[[31]].assign(close=1.0, koffset=10_000)  # same fetched_at, received later: loses
    _, sink = run([pd.concat([newer, data, equal])])
    assert sink.bars[int(data["ts_ms"][30])]["close"] == data["close"][30] + 3
    assert sink.bars[int(data["ts_ms"][31])]["close"] == data["close"][31]
    sink.check_talib()


def test_bar_beyond_horizon_is_late_and_leaves_state_alone():
    data = bars(200)
    state, _ = run([data.iloc[:150], data.iloc[150:]], horizon=60)
    before = state.to_row()
    old = data.iloc[[10]].assign(fetched_us=data["fetched_us"][10] + 5)
    state, out = advance(state, old, 60)
    assert out["kind"].tolist() == [KIND_LATE] and bool(out["bar_changed"].iloc[0])
    assert state.to_row() == before


def test_bar_before_an_untrimmed_window_is_inserted_not_late():
    data = bars(80)
    state, sink = run([data.iloc[40:], data.iloc[:40]], horizon=390)
    sink.check_talib()
    assert len(state.window) == 80 and not state.trimmed


@pytest.mark.parametrize("horizon", [60, 390])
def test_seed_from_history_continues_exactly(horizon):
    data = bars(500, seed_=9)
    seeded = seed(data.iloc[:300], horizon)
    state, out = advance(seeded, data.iloc[300:], horizon)
    reference, sink = run([data])
    full = sink.indicators
    for row in out.to_dict("records"):
        np.testing.assert_array_equal(np.array([row[c] for c in INDICATOR_COLUMNS]), full[int(row["ts_ms"])])
    assert state.last == reference.last


def test_bar_beyond_horizon_with_history_rebuilds_the_state_exactly():
    data = bars(300, seed_=4)
    state, sink = run([data.iloc[:150], data.iloc[150:]], horizon=60)
    corrected = data.iloc[[10]].assign(close=data["close"][10] + 2, high=data["high"][10] + 2,
                                       fetched_us=data["fetched_us"][10] + 5)  # fmt: skip
    stored = data.copy()
    state, out = advance(state, corrected, 60, history=lambda: stored)
    assert out.loc[out["kind"] == KIND_LATE, "ts_ms"].tolist() == [data["ts_ms"][10]]
    window_rows = out[out["kind"] == KIND_BAR]
    assert window_rows["ts_ms"].tolist() == data["ts_ms"][240:].tolist() and not window_rows["bar_changed"].any()
    sink.apply(out)
    # What the backfill does for the bars in between: recompute from the stored series.
    repaired = data.copy()
    repaired.loc[10, ["close", "high", "fetched_us"]] = corrected.iloc[0][["close", "high", "fetched_us"]].to_numpy()
    _, full = run([repaired])
    for ts in data["ts_ms"][10:240]:
        sink.indicators[int(ts)] = full.indicators[int(ts)]
    sink.check_talib()
    # and the stream continues exactly from the rebuilt state
    more = bars(340, seed_=4).iloc[300:].assign(close=lambda f: f["close"] + 0.25)
    state, out = advance(state, more, 60, history=lambda: stored)
    sink.apply(out)
    sink.check_talib()

    # a resend older than what is stored changes nothing
    state2, out = advance(state, data.iloc[[10]], 60, history=lambda: repaired)
    assert out["kind"].tolist() == [KIND_LATE] and state2 is state
