"""stockpipe.indicators against the pinned ta-lib wheel, plus hand-checked and state tests.

Golden tests compare with ``np.testing.assert_allclose(rtol=1e-9)`` (the contract) and with exact
NaN/None positions; ``test_bit_identical_to_talib`` additionally pins bit-for-bit equality, which is
what keeps ``macd_hist`` exact near a crossing where a relative tolerance is meaningless.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

talib = pytest.importorskip("talib")

from stockpipe.indicators import (  # noqa: E402  (after the talib skip)
    EMA,
    INDICATOR_COLUMNS,
    MACD,
    RSI,
    SMA,
    BollingerBands,
    SessionVWAP,
    SymbolIndicators,
    compute_frame,
    epoch_seconds,
)

NEW_YORK = ZoneInfo("America/New_York")
N_BARS = 12_000

# First bar index with a value (TA-Lib's lookback) per column.
FIRST_VALUE = {
    "sma_5": 4,
    "sma_20": 19,
    "sma_50": 49,
    "ema_12": 11,
    "ema_26": 25,
    "rsi_14": 14,
    "macd": 33,
    "macd_signal": 33,
    "macd_hist": 33,
    "bb_upper": 19,
    "bb_middle": 19,
    "bb_lower": 19,
}


# --- helpers -------------------------------------------------------------------------------------


def talib_columns(close: np.ndarray) -> dict[str, np.ndarray]:
    macd, signal, hist = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    upper, middle, lower = talib.BBANDS(close, timeperiod=20, nbdevup=2, nbdevdn=2, matype=talib.MA_Type.SMA)
    return {
        "sma_5": talib.SMA(close, 5),
        "sma_20": talib.SMA(close, 20),
        "sma_50": talib.SMA(close, 50),
        "ema_12": talib.EMA(close, 12),
        "ema_26": talib.EMA(close, 26),
        "rsi_14": talib.RSI(close, 14),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
    }


def make_bars(
    n: int,
    *,
    seed: int,
    level: float = 100.0,
    step: float = 0.5,
    decimals: int | None = None,
    start: str = "2026-03-05 14:30",
    freq: str = "min",
) -> pd.DataFrame:
    """A random-walk bar series (one symbol) with plausible vwap/volume."""
    rng = np.random.default_rng(seed)
    close = level + np.cumsum(rng.normal(0.0, step, n))
    if decimals is not None:
        close = np.round(close, decimals)
    return pd.DataFrame(
        {
            "ts": pd.date_range(start, periods=n, freq=freq, tz="UTC"),
            "close": close,
            "vwap": close + rng.normal(0.0, step / 4, n),
            "volume": rng.integers(0, 10_000, n).astype("float64"),
        }
    )


def assert_matches_talib(actual: np.ndarray, expected: np.ndarray, label: str) -> None:
    actual = np.asarray(actual, dtype="float64")
    assert actual.shape == expected.shape, label
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{label}: NaN positions")
    present = ~np.isnan(expected)
    np.testing.assert_allclose(actual[present], expected[present], rtol=1e-9, atol=0, err_msg=label)


def run(indicator, closes) -> np.ndarray:
    """Feed closes one by one; None -> NaN; MACD / Bollinger triples -> three rows."""
    width = 3 if isinstance(indicator, MACD | BollingerBands) else 1
    out = np.full((len(closes), width), np.nan)
    for i, close in enumerate(np.asarray(closes, dtype="float64").tolist()):
        value = indicator.update(close)
        if value is not None:
            out[i] = value
    return out[:, 0] if width == 1 else out.T


def feed(indicators: SymbolIndicators, frame: pd.DataFrame) -> list[dict]:
    return [indicators.update(bar) for bar in frame.to_dict("records")]


def rows_as_array(rows: list[dict]) -> np.ndarray:
    return np.array([[np.nan if r[c] is None else r[c] for c in INDICATOR_COLUMNS] for r in rows])


# Series that stress different parts of TA-Lib's arithmetic.
SCENARIOS = {
    "walk_100": dict(level=100.0, step=0.5),
    "high_5000_small_moves": dict(level=5000.0, step=0.01),
    "cents": dict(level=50.0, step=0.05, decimals=2),
    "fine_ticks": dict(level=1.0, step=1e-6, decimals=8),
}


@pytest.fixture(scope="module", params=[(name, seed) for name in SCENARIOS for seed in (7, 2026)], ids=str)
def golden(request):
    name, seed = request.param
    bars = make_bars(N_BARS, seed=seed, **SCENARIOS[name])
    out, _ = compute_frame(bars)
    return bars, out, talib_columns(bars["close"].to_numpy())


# --- TA-Lib exactness ----------------------------------------------------------------------------


@pytest.mark.parametrize("column", list(FIRST_VALUE))
def test_matches_talib_over_long_series(golden, column):
    _, out, expected = golden
    assert_matches_talib(out[column].to_numpy(), expected[column], column)


def test_bit_identical_to_talib(golden):
    _, out, expected = golden
    for column, values in expected.items():
        assert np.array_equal(out[column].to_numpy(), values, equal_nan=True), column


def test_first_values_sit_at_talib_lookback(golden):
    _, out, expected = golden
    for column, first in FIRST_VALUE.items():
        assert out[column].iloc[:first].isna().all(), column
        assert not math.isnan(out[column].iloc[first]), column
        assert first == int(np.flatnonzero(~np.isnan(expected[column]))[0]), column


@pytest.mark.parametrize(
    ("factory", "reference"),
    [
        (lambda: SMA(1), lambda c: talib.SMA(c, 1)),
        (lambda: SMA(7), lambda c: talib.SMA(c, 7)),
        (lambda: EMA(2), lambda c: talib.EMA(c, 2)),
        (lambda: EMA(30), lambda c: talib.EMA(c, 30)),
        (lambda: RSI(2), lambda c: talib.RSI(c, 2)),
        (lambda: RSI(30), lambda c: talib.RSI(c, 30)),
        (lambda: MACD(5, 35, 5), lambda c: np.array(talib.MACD(c, 5, 35, 5))),
        (lambda: MACD(3, 3, 1), lambda c: np.array(talib.MACD(c, 3, 3, 1))),
        (lambda: BollingerBands(5, 1.5), lambda c: np.array(talib.BBANDS(c, 5, 1.5, 1.5, 0))),
        (lambda: BollingerBands(30, 3.0), lambda c: np.array(talib.BBANDS(c, 30, 3, 3, 0))),
    ],
    ids=["sma1", "sma7", "ema2", "ema30", "rsi2", "rsi30", "macd5_35_5", "macd3_3_1", "bb5", "bb30"],
)
def test_other_periods_match_talib(factory, reference):
    closes = make_bars(3_000, seed=11)["close"].to_numpy()
    actual, expected = run(factory(), closes), reference(closes)
    assert_matches_talib(actual, expected, "indicator")
    assert np.array_equal(actual, expected, equal_nan=True)


def test_ema_and_macd_round_like_talibs_fused_multiply_add():
    """TA-Lib's build fuses (x - prev) * k + prev; with large relative moves plain Python rounding
    visibly differs from it, ours does not."""
    closes = np.random.default_rng(17).uniform(1.0, 100.0, 5_000)
    expected = talib.EMA(closes, 12)
    plain, prev = [], float(np.mean(closes[:12]))
    for close in closes[12:].tolist():
        prev = (close - prev) * (2 / 13) + prev
        plain.append(prev)
    assert not np.array_equal(np.array(plain), expected[12:])  # the series does tell them apart
    assert np.array_equal(run(EMA(12), closes), expected, equal_nan=True)
    assert np.array_equal(run(MACD(12, 26, 9), closes), np.array(talib.MACD(closes, 12, 26, 9)), equal_nan=True)


def test_fma_backends_are_all_correctly_rounded():
    from stockpipe.indicators import _fma

    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 2_000) * 10.0 ** rng.integers(-8, 8, 2_000)
    c = rng.normal(0, 1, 2_000) * 10.0 ** rng.integers(-8, 8, 2_000)
    for x, k, y in zip(a.tolist(), [2 / 13, 2 / 27, 0.2, 1 / 3] * 500, c.tolist(), strict=True):
        assert _fma.fma(x, k, y) == _fma._exact_fma(x, k, y)
    assert _fma.fma(0.1, 10.0, -1.0) == 2.0**-54  # fused: plain 0.1 * 10.0 - 1.0 gives 0.0


def test_talib_value_at_bar_depends_only_on_earlier_bars():
    """The premise of incremental indicators: appending bars never changes TA-Lib's past output."""
    closes = make_bars(400, seed=5)["close"].to_numpy()
    full = talib_columns(closes)
    for end in (1, 14, 15, 25, 33, 34, 50, 51, 120, 399):
        prefix = talib_columns(closes[: end + 1])
        for column, values in full.items():
            assert np.array_equal(prefix[column], values[: end + 1], equal_nan=True), (column, end)


def test_bollinger_reseed_cases_match_talib():
    """Outliers, flat windows after noise and a price jump exercise BBANDS' variance re-anchoring."""
    rng = np.random.default_rng(42)
    closes = np.concatenate(
        [
            100 + rng.normal(0, 1e-3, 40),
            [1e6],  # an outlier entering and leaving the window
            100 + rng.normal(0, 1e-3, 60),
            np.full(45, 100.37),  # a constant window after noise
            31498.938283 + np.round(rng.normal(0, 1e-9, 300), 12),  # huge level, tiny spread
            np.full(30, 7.0),
        ]
    )
    actual = run(BollingerBands(20, 2.0), closes)
    expected = np.array(talib.BBANDS(closes, 20, 2, 2, 0))
    assert np.array_equal(actual, expected, equal_nan=True)


# --- hand-checked short series -------------------------------------------------------------------


def test_fewer_bars_than_lookback_are_all_none():
    bars = make_bars(33, seed=3)
    rows = feed(SymbolIndicators(), bars)
    for i, row in enumerate(rows):
        for column, first in FIRST_VALUE.items():
            assert (row[column] is None) == (i < first), (column, i)
    assert all(row["macd"] is None and row["macd_hist"] is None for row in rows)


def test_flat_series():
    close = np.full(60, 123.25)
    actual = rows_as_array(feed(SymbolIndicators(), _bars_from_closes(close)))
    col = {c: actual[:, j] for j, c in enumerate(INDICATOR_COLUMNS)}
    assert np.all(col["sma_5"][4:] == 123.25) and np.all(col["ema_26"][25:] == 123.25)
    # TA-Lib 0.8.1 reads a flat series as RSI 0 (no gain, no loss), not the "neutral" 50.
    assert np.all(col["rsi_14"][14:] == 0.0)
    assert np.all(col["macd"][33:] == 0.0) and np.all(col["macd_hist"][33:] == 0.0)
    # Zero width: the bands sit exactly on the middle band.
    assert np.all(col["bb_upper"][19:] == col["bb_middle"][19:])
    assert np.all(col["bb_lower"][19:] == col["bb_middle"][19:])
    np.testing.assert_array_equal(talib.RSI(close, 14)[14:], 0.0)


def test_single_step_up():
    close = np.r_[np.full(20, 100.0), np.full(15, 101.0)]
    ema = run(EMA(12), close)
    assert ema[19] == 100.0
    assert ema[20] == pytest.approx(100.0 + 2 / 13, rel=1e-15)
    assert ema[21] == pytest.approx(ema[20] + (101.0 - ema[20]) * 2 / 13, rel=1e-15)
    rsi = run(RSI(14), close)
    # No loss was ever seen: 0 while flat, exactly 100 from the step on.
    np.testing.assert_array_equal(rsi[14:20], 0.0)
    np.testing.assert_array_equal(rsi[20:], 100.0)
    sma = run(SMA(5), close)
    np.testing.assert_allclose(sma[20:25], [100.2, 100.4, 100.6, 100.8, 101.0], rtol=1e-15)
    assert np.array_equal(rsi, talib.RSI(close, 14), equal_nan=True)


def test_small_hand_computed_values():
    assert run(SMA(5), [1, 2, 3, 4, 5, 6]).tolist()[4:] == [3.0, 4.0]
    ema = run(EMA(3), [1, 2, 3, 4])  # seed (1+2+3)/3 = 2, then 2 + (4-2)*0.5 = 3
    assert ema.tolist()[2:] == [2.0, 3.0]
    rsi = run(RSI(2), [1, 2, 1, 3])  # gains .5/.5 -> 50; then (0.5+2)/2=1.25 vs (0.5+0)/2=0.25
    assert rsi[2] == 50.0
    assert rsi[3] == pytest.approx(100 * 1.25 / 1.5, rel=1e-15)
    upper, middle, lower = run(BollingerBands(4, 2.0), [2, 4, 4, 6])  # mean 4, population sd sqrt(2)
    assert middle[3] == 4.0
    assert upper[3] == pytest.approx(4 + 2 * math.sqrt(2), rel=1e-15)
    assert lower[3] == pytest.approx(4 - 2 * math.sqrt(2), rel=1e-15)


def test_long_runs_of_equal_closes_collapse_the_bands():
    rng = np.random.default_rng(9)
    close = np.r_[100 + rng.normal(0, 1, 30), np.full(25, 100.37), 100.37 + rng.normal(0, 1, 10)]
    upper, middle, lower = run(BollingerBands(20, 2.0), close)
    window_flat = slice(30 + 19, 55)  # windows made only of the repeated close
    np.testing.assert_array_equal(upper[window_flat], middle[window_flat])
    np.testing.assert_array_equal(lower[window_flat], middle[window_flat])
    assert np.all(upper[55:] > middle[55:])
    rsi = run(RSI(14), close)
    assert np.array_equal(rsi, talib.RSI(close, 14), equal_nan=True)


def test_all_up_and_all_down():
    up = np.arange(40, dtype="float64") + 10
    assert np.all(run(RSI(14), up)[14:] == 100.0)
    assert np.all(run(RSI(14), up[::-1])[14:] == 0.0)


def test_fine_ticks_are_not_zeroed():
    """Moves far below 1e-8 still give a real RSI and band width (old TA-Lib zeroed both)."""
    rng = np.random.default_rng(1)
    close = 100 + np.round(np.cumsum(rng.normal(0, 1e-9, 200)), 12)
    rsi = run(RSI(14), close)
    assert 0 < np.nanmin(rsi) and np.nanmax(rsi) < 100
    upper, middle, _ = run(BollingerBands(20, 2.0), close)
    assert np.all(upper[19:] > middle[19:])
    assert np.array_equal(rsi, talib.RSI(close, 14), equal_nan=True)


# --- state: serialise, restore, copy, recompute --------------------------------------------------


def _bars_from_closes(close: np.ndarray) -> pd.DataFrame:
    n = len(close)
    return pd.DataFrame(
        {
            "ts": pd.date_range("2026-06-01 13:30", periods=n, freq="min", tz="UTC"),
            "close": close,
            "vwap": close,
            "volume": np.full(n, 100.0),
        }
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_round_trip_at_random_splits_equals_uninterrupted(seed):
    bars = make_bars(3_000, seed=seed, start="2026-03-06 20:00", freq="7min")  # crosses sessions
    records = bars.to_dict("records")
    whole = SymbolIndicators()
    expected = [whole.update(bar) for bar in records]

    rng = np.random.default_rng(seed)
    cuts = sorted({0, len(records), *rng.integers(1, len(records), 8).tolist(), 1, 33, 34})
    indicators, actual = SymbolIndicators(), []
    for start, stop in zip(cuts, cuts[1:], strict=False):
        indicators = SymbolIndicators.from_state(json.loads(json.dumps(indicators.to_state())))
        actual.extend(indicators.update(bar) for bar in records[start:stop])
    assert actual == expected  # exact: floats survive JSON bit for bit
    assert indicators.to_state() == whole.to_state()
    assert indicators == whole


def test_state_is_plain_json():
    indicators = SymbolIndicators()
    feed(indicators, make_bars(100, seed=4))
    state = indicators.to_state()
    assert json.loads(json.dumps(state, allow_nan=False)) == state
    assert SymbolIndicators.from_state(state).to_state() == state
    assert SymbolIndicators.from_state(None) == SymbolIndicators()


def test_copy_is_independent_and_equal():
    bars = make_bars(200, seed=8).to_dict("records")
    original = SymbolIndicators()
    for bar in bars[:100]:
        original.update(bar)
    pickled = pickle.loads(pickle.dumps(original))  # Spark may pickle state objects
    for twin in (original.copy(), original.snapshot(), copy.copy(original), copy.deepcopy(original), pickled):
        assert twin == original
        first = [twin.update(bar) for bar in bars[100:]]
        assert twin != original and original.bars == 100
        again = original.copy()
        assert [again.update(bar) for bar in bars[100:]] == first


def test_recompute_from_snapshot_after_a_corrected_bar():
    """The streaming recipe: keep the state before a window, restore it and replay the corrected bars."""
    bars = make_bars(500, seed=12)
    records = bars.to_dict("records")
    live = SymbolIndicators()
    for bar in records[:400]:
        live.update(bar)
    before_window = live.to_state()
    for bar in records[400:]:
        live.update(bar)

    corrected = [dict(bar) for bar in records]
    corrected[450]["close"] += 1.25
    replay = SymbolIndicators.from_state(before_window)
    replayed = [replay.update(bar) for bar in corrected[400:]]

    fresh = SymbolIndicators()
    expected = [fresh.update(bar) for bar in corrected][400:]
    assert replayed == expected
    assert replay == fresh
    original = feed(SymbolIndicators.from_state(before_window), bars.iloc[400:])
    assert replayed[:50] == original[:50]
    assert replayed[50]["sma_5"] != original[50]["sma_5"]  # the correction does reach the output
    closes = np.array([bar["close"] for bar in corrected])
    for column, values in talib_columns(closes).items():
        got = np.array([np.nan if row[column] is None else row[column] for row in replayed])
        assert np.array_equal(got, values[400:], equal_nan=True), column


def test_state_version_is_checked():
    state = SymbolIndicators().to_state()
    state["v"] = 999
    with pytest.raises(ValueError, match="recompute"):
        SymbolIndicators.from_state(state)


# --- compute_frame ---------------------------------------------------------------------------------


def test_compute_frame_equals_per_bar_updates_and_chains():
    bars = make_bars(2_500, seed=21, start="2026-11-01 03:00", freq="3min")  # DST end + sessions
    bars.index = pd.RangeIndex(1000, 1000 + len(bars))
    bars["symbol"] = "AAPL"
    out, state = compute_frame(bars)
    assert list(out.columns) == [*bars.columns, *INDICATOR_COLUMNS]
    assert out.index.equals(bars.index) and (out["symbol"] == "AAPL").all()

    per_bar = SymbolIndicators()
    rows = rows_as_array(feed(per_bar, bars))
    assert np.array_equal(out[list(INDICATOR_COLUMNS)].to_numpy(), rows, equal_nan=True)
    assert state == per_bar.to_state()

    first, state_1 = compute_frame(bars.iloc[:777])
    second, state_2 = compute_frame(bars.iloc[777:], json.loads(json.dumps(state_1)))
    chained = pd.concat([first, second])
    assert np.array_equal(chained[list(INDICATOR_COLUMNS)].to_numpy(), rows, equal_nan=True)
    assert state_2 == state

    live = SymbolIndicators.from_state(state_1)
    compute_frame(bars.iloc[777:], live)
    assert live.to_state() == state_1  # a SymbolIndicators passed in is not modified


def test_compute_frame_accepts_naive_and_string_timestamps():
    bars = make_bars(300, seed=2)
    expected, _ = compute_frame(bars)
    naive = bars.assign(ts=bars["ts"].dt.tz_localize(None))
    strings = bars.assign(ts=bars["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    new_york = bars.assign(ts=bars["ts"].dt.tz_convert(NEW_YORK))
    for variant in (naive, strings, new_york):
        got, _ = compute_frame(variant)
        assert np.array_equal(
            got[list(INDICATOR_COLUMNS)].to_numpy(),
            expected[list(INDICATOR_COLUMNS)].to_numpy(),
            equal_nan=True,
        )


def test_compute_frame_empty_and_invalid():
    empty = make_bars(0, seed=1)
    out, state = compute_frame(empty)
    assert out.empty and list(out.columns[-13:]) == list(INDICATOR_COLUMNS)
    assert state == SymbolIndicators().to_state()

    bars = make_bars(50, seed=1)
    with pytest.raises(ValueError, match="increasing ts order; row 10"):
        compute_frame(pd.concat([bars.iloc[:10], bars.iloc[[0]], bars.iloc[10:]]))
    with pytest.raises(ValueError, match="lacks column"):
        compute_frame(bars.drop(columns="vwap"))
    with pytest.raises(TypeError, match="numbers"):
        compute_frame(bars.assign(ts=bars["ts"].astype("int64") // 1_000_000))  # epoch milliseconds
    _, state = compute_frame(bars)
    with pytest.raises(ValueError, match="increasing ts order"):
        compute_frame(bars.iloc[-5:], state)  # replaying bars the state has already seen


# --- vwap_session ----------------------------------------------------------------------------------


def _pandas_session_vwap(bars: pd.DataFrame) -> np.ndarray:
    session = bars["ts"].dt.tz_convert(NEW_YORK).dt.date
    counted = bars["vwap"].notna() & bars["volume"].notna()
    price_volume = (bars["vwap"] * bars["volume"]).where(counted, 0.0)
    volume = bars["volume"].where(counted, 0.0)
    cum_pv = price_volume.groupby(session).cumsum()
    cum_v = volume.groupby(session).cumsum()
    return (cum_pv / cum_v).where(cum_v > 0).to_numpy()


def _numpy_session_vwap(bars: pd.DataFrame) -> np.ndarray:
    """Plain left-to-right sums per session (pandas' grouped cumsum is Kahan-compensated)."""
    session = bars["ts"].dt.tz_convert(NEW_YORK).dt.date.to_numpy()
    counted = (bars["vwap"].notna() & bars["volume"].notna()).to_numpy()
    price_volume = np.where(counted, bars["vwap"] * bars["volume"], 0.0)
    volume = np.where(counted, bars["volume"], 0.0)
    out = np.full(len(bars), np.nan)
    for day in np.unique(session):
        rows = np.flatnonzero(session == day)
        cum_pv, cum_v = np.cumsum(price_volume[rows]), np.cumsum(volume[rows])
        with np.errstate(invalid="ignore", divide="ignore"):
            out[rows] = np.where(cum_v > 0, cum_pv / cum_v, np.nan)
    return out


def test_vwap_session_matches_pandas_groupby_across_sessions_and_dst():
    # 5-minute bars from Friday 2026-03-06 through the DST change on Sunday 2026-03-08 to Tuesday.
    bars = make_bars(1_500, seed=31, start="2026-03-06 12:00", freq="5min")
    bars.loc[bars.index % 97 == 0, "volume"] = 0.0
    bars.loc[bars.index % 101 == 0, "vwap"] = np.nan
    out, _ = compute_frame(bars)
    actual = out["vwap_session"].to_numpy()
    assert_matches_talib(actual, _pandas_session_vwap(bars), "vwap_session vs pandas groupby")
    assert np.array_equal(actual, _numpy_session_vwap(bars), equal_nan=True)
    assert out["vwap_session"].notna().sum() > 1_400
    assert bars["ts"].dt.tz_convert(NEW_YORK).dt.date.nunique() == 6


def test_vwap_session_resets_at_new_york_midnight():
    utc = UTC
    bars = [  # winter: New York midnight is 05:00 UTC
        {"ts": datetime(2026, 1, 14, 20, 59, tzinfo=utc), "close": 10.0, "vwap": 10.0, "volume": 100},
        {"ts": datetime(2026, 1, 15, 4, 59, tzinfo=utc), "close": 11.0, "vwap": 20.0, "volume": 300},
        {"ts": datetime(2026, 1, 15, 5, 0, tzinfo=utc), "close": 12.0, "vwap": 30.0, "volume": 0},
        {"ts": datetime(2026, 1, 15, 5, 1, tzinfo=utc), "close": 12.0, "vwap": 40.0, "volume": 50},
        {"ts": datetime(2026, 1, 15, 14, 30, tzinfo=utc), "close": 12.0, "vwap": None, "volume": 70},
        {"ts": datetime(2026, 1, 15, 14, 31, tzinfo=utc), "close": 12.0, "vwap": 10.0, "volume": 150},
    ]
    indicators = SymbolIndicators()
    values = [indicators.update(bar)["vwap_session"] for bar in bars]
    assert values == [10.0, (10.0 * 100 + 20.0 * 300) / 400, None, 40.0, 40.0, (40.0 * 50 + 10.0 * 150) / 200]
    assert indicators.vwap_session.session.isoformat() == "2026-01-15"


def test_vwap_session_summer_boundary_and_restored_state():
    utc = UTC
    vwap = SessionVWAP()
    before = epoch_seconds(datetime(2026, 7, 1, 3, 59, tzinfo=utc))  # 23:59 EDT on June 30
    after = epoch_seconds(datetime(2026, 7, 1, 4, 0, tzinfo=utc))  # 00:00 EDT on July 1
    assert vwap.update(before, 5.0, 10) == 5.0
    restored = SessionVWAP.from_state(json.loads(json.dumps(vwap.to_state())))
    assert restored.update(before + 30, 7.0, 10) == 6.0
    assert restored.update(after, 9.0, 10) == 9.0
    assert restored.session.isoformat() == "2026-07-01"


# --- input handling and validation -----------------------------------------------------------------


def test_bar_shapes_and_timestamp_forms_agree():
    moment = datetime(2026, 11, 24, 14, 31, tzinfo=UTC)
    forms = [
        moment,
        moment.astimezone(NEW_YORK),
        moment.replace(tzinfo=None),  # naive = UTC
        pd.Timestamp(moment),
        pd.Timestamp(moment).tz_localize(None),
        "2026-11-24T14:31:00Z",
        "2026-11-24T09:31:00-05:00",
    ]
    assert {epoch_seconds(form) for form in forms} == {moment.timestamp()}
    precise = datetime(2026, 11, 24, 14, 31, 5, 123456, tzinfo=UTC)
    assert epoch_seconds(pd.Timestamp(precise)) == precise.timestamp()
    with pytest.raises(TypeError):
        epoch_seconds(1_790_000_000)

    mapping = {"ts": moment, "close": 10.0, "vwap": 10.5, "volume": 7, "open": 1.0}
    as_object = SimpleNamespace(**mapping)
    as_series = pd.Series(mapping)
    results = [SymbolIndicators().update(bar) for bar in (mapping, as_object, as_series)]
    assert results[0] == results[1] == results[2]
    assert list(results[0]) == list(INDICATOR_COLUMNS)
    assert results[0]["vwap_session"] == 10.5


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"ts": datetime(2026, 1, 2, 15, 0, tzinfo=UTC)}, "increasing ts order"),  # duplicate
        ({"ts": datetime(2026, 1, 2, 14, 0, tzinfo=UTC)}, "increasing ts order"),  # late
        ({"close": float("nan")}, "finite"),
        ({"close": None}, "number"),
        ({"volume": -5}, "negative"),
    ],
)
def test_rejected_bar_leaves_state_untouched(change, error):
    indicators = SymbolIndicators()
    start = datetime(2026, 1, 2, 14, 30, tzinfo=UTC)
    for i in range(31):
        indicators.update({"ts": start + timedelta(minutes=i), "close": 10.0 + i % 3, "vwap": 10.0, "volume": 1})
    before = indicators.to_state()
    bar = {"ts": start + timedelta(minutes=31), "close": 11.0, "vwap": 10.0, "volume": 1} | change
    with pytest.raises(ValueError, match=error):
        indicators.update(bar)
    assert indicators.to_state() == before


def test_bad_parameters_are_refused():
    for make in (
        lambda: SMA(0),
        lambda: EMA(1),
        lambda: RSI(1),
        lambda: MACD(26, 12, 9),
        lambda: BollingerBands(1),
    ):
        with pytest.raises(ValueError):
            make()
    with pytest.raises(ValueError, match="not a EMA state"):
        EMA.from_state(SMA(3).to_state())
