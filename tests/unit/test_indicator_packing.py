"""The packed indicator state (stockpipe.indicators.packed) the stream's checkpoint holds: a round
trip gives back the very same state (every slot, floats bit for bit), so stepping on from it equals
never serialising — and TA-Lib; states written by earlier versions (pickled ``to_state()`` dicts)
still load."""

from __future__ import annotations

import json
import math
import pickle
import struct
from collections import deque
from datetime import date

import numpy as np
import pandas as pd
import pytest

talib = pytest.importorskip("talib")

from stockpipe.indicators import (  # noqa: E402  (after the talib skip)
    INDICATOR_COLUMNS,
    SymbolIndicators,
    epoch_seconds,
    is_packed,
    pack_indicators,
    unpack_indicators,
)
from stockpipe.streaming import state as st  # noqa: E402

_BITS = struct.Struct("<d")


def bits(value):
    """A value with its floats as their 8 bytes (so -0.0 != 0.0 and NaN == the same NaN)."""
    if isinstance(value, float):
        return ("f", _BITS.pack(value))
    if isinstance(value, tuple | list | deque):
        return (type(value).__name__, getattr(value, "maxlen", None), tuple(bits(v) for v in value))
    if value is None or isinstance(value, int | str | date):
        return value
    slots = [name for cls in type(value).__mro__ for name in getattr(cls, "__slots__", ())]
    return (type(value).__name__, tuple((name, bits(getattr(value, name))) for name in slots))


def old_dump(indicators: SymbolIndicators) -> bytes:
    """What state.dump_indicators wrote before the packed form (checkpoints written by it)."""
    return pickle.dumps(indicators.to_state(), protocol=pickle.HIGHEST_PROTOCOL)


def random_bars(n: int, seed: int) -> list[tuple[float, float, float | None, float | None]]:
    """(epoch seconds, close, vwap, volume): a random walk with gaps over New York midnights and a
    DST change (session resets), NaN or missing VWAP and volume, zero volume."""
    rng = np.random.default_rng(seed)
    gaps = rng.choice([60, 60, 60, 420, 3_600 * 9], size=n)
    ts = 1_772_827_200 + np.cumsum(gaps)  # from 2026-03-06 20:00 UTC, across 2026-03-08 (DST)
    close = 100.0 + np.cumsum(rng.normal(0.0, 0.5, n))
    bars = []
    for i in range(n):
        vwap: float | None = float(close[i] + rng.normal(0.0, 0.1))
        volume: float | None = float(rng.integers(0, 5_000))
        roll = rng.random()
        if roll < 0.05:
            vwap = math.nan
        elif roll < 0.08:
            vwap = None
        elif roll < 0.10:
            volume = None
        bars.append((float(ts[i]), float(close[i]), vwap, volume))
    return bars


def step_all(indicators: SymbolIndicators, bars) -> list:
    return [bits(indicators.step(*bar)) for bar in bars]


@pytest.mark.parametrize("seed", [1, 2])
def test_round_trip_at_every_warm_up_length_continues_bit_for_bit(seed):
    """Packed after 0…60 bars (every warm-up stage of every indicator) and after long runs, then
    stepped on: the same bits as never serialising, and the very same object state."""
    bars = random_bars(700, seed)
    whole = SymbolIndicators()
    expected = step_all(whole, bars)
    for cut in [*range(0, 61), 140, 333, 699, 700]:
        before = SymbolIndicators()
        step_all(before, bars[:cut])
        blob = pack_indicators(before)
        assert is_packed(blob)
        restored = unpack_indicators(blob)
        assert bits(restored) == bits(before), cut
        assert restored.to_state() == before.to_state()
        assert pack_indicators(restored) == blob
        assert step_all(restored, bars[cut:]) == expected[cut:], cut
        assert bits(restored) == bits(whole)


def test_packed_again_and_again_equals_talib():
    """Serialised after every bar (as the stream does), through the state module: equal to the
    uninterrupted run bit for bit, and to TA-Lib over the closes."""
    bars = random_bars(400, seed=7)
    whole = SymbolIndicators()
    expected = step_all(whole, bars)
    blob, got, rows = st.dump_indicators(SymbolIndicators()), [], []
    for bar in bars:
        indicators = st.load_indicators(blob)
        row = indicators.step(*bar)
        got.append(bits(row))
        rows.append(row)
        blob = st.dump_indicators(indicators)
    assert got == expected
    assert blob == pack_indicators(whole)

    closes = np.array([bar[1] for bar in bars])
    macd, signal, hist = talib.MACD(closes, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(closes, 20, 2, 2, talib.MA_Type.SMA)
    oracle = {
        "sma_5": talib.SMA(closes, 5),
        "sma_20": talib.SMA(closes, 20),
        "sma_50": talib.SMA(closes, 50),
        "ema_12": talib.EMA(closes, 12),
        "ema_26": talib.EMA(closes, 26),
        "rsi_14": talib.RSI(closes, 14),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
    }
    table = np.array([[np.nan if v is None else v for v in row] for row in rows])
    for j, name in enumerate(INDICATOR_COLUMNS[:-1]):
        assert np.array_equal(table[:, j], oracle[name], equal_nan=True), name  # bit for bit


def test_states_written_by_the_previous_format_still_load():
    """A checkpoint written before the packed form holds pickled to_state() dicts (and JSON text
    was accepted too): they load and continue exactly; what is written next is packed."""
    bars = random_bars(300, seed=3)
    whole = SymbolIndicators()
    expected = step_all(whole, bars)
    for cut in (0, 10, 49, 150):
        before = SymbolIndicators()
        step_all(before, bars[:cut])
        for legacy in (old_dump(before), json.dumps(before.to_state())):
            restored = st.load_indicators(legacy)
            assert bits(restored) == bits(before)
            assert step_all(restored, bars[cut:]) == expected[cut:]
            assert is_packed(st.dump_indicators(restored))
    assert bits(st.load_indicators(None)) == bits(SymbolIndicators())


def test_windows_that_are_not_tails_of_each_other_are_kept_apart_exactly():
    """Only the SMA(50) window is written when the others are its tails; a state where that does
    not hold bit for bit (a hand-made one; a close of 0.0 next to -0.0) keeps every window."""
    indicators = SymbolIndicators()
    for i, close in enumerate([3.0, 0.0, -0.0, 2.0, 5.0, 0.0, 1.5]):
        indicators.step(1_780_000_000.0 + 60 * i, close, None, None)
    indicators.sma_5._window[1] = -0.0  # differs from sma_50's 0.0 only in the sign bit
    state = indicators.to_state()
    state["sma_20"]["window"][0] = 42.0
    edited = SymbolIndicators.from_state(state)
    edited.sma_5._window[1] = -0.0
    for original in (indicators, edited):
        blob = pack_indicators(original)
        restored = unpack_indicators(blob)
        assert bits(restored) == bits(original)
        assert math.copysign(1.0, restored.sma_5._window[1]) == -1.0
    head = len(pack_indicators(SymbolIndicators()))
    assert len(pack_indicators(edited)) == head + 8 * (5 + 7 + 7 + 7)  # every window written
    shared = SymbolIndicators()
    step_all(shared, random_bars(80, seed=5))
    assert len(pack_indicators(shared)) == head + 8 * 50  # the SMA(50) window only


def test_packed_is_smaller_and_a_foreign_or_damaged_blob_is_refused():
    indicators = SymbolIndicators()
    step_all(indicators, random_bars(400, seed=9))
    blob = pack_indicators(indicators)
    assert len(blob) < 0.5 * len(old_dump(indicators))
    for bad in (b"", blob[:-8], blob + b"\0" * 8, b"\x00SI\x02" + blob[4:], old_dump(indicators)):
        with pytest.raises(ValueError, match="recompute this symbol|corrupt"):
            unpack_indicators(bad)


def test_an_old_checkpoints_bucket_state_advances_like_a_new_one():
    """Bucket state rows written by the previous version (``last``/``base`` pickled to_state()
    dicts) go through the operator's fast path and its general path (a correction, trimming) with
    the same rows as rows written packed; the rows it writes back are packed."""
    from stockpipe.streaming.operator import make_update_function
    from tests.unit.test_operator_buckets import BucketState, records

    symbols = ["AAPL", "MSFT", "TSLA"]
    horizon = 20
    batches = [records(symbols, range(0, 30), seed=0)]
    later = [records(symbols, range(30, 31), seed=1), records(symbols, range(25, 27), seed=2)]
    later[1]["fetched_us"] += 1_000_000  # corrections inside the window: the general path
    later[1]["close"] += 0.5
    later.append(records(symbols, range(31, 40), seed=3))  # past the horizon: trimming

    def run(convert_to_old: bool) -> list[pd.DataFrame]:
        update, bucket = make_update_function(horizon, None, None, buckets=16), BucketState()
        for batch in batches:
            list(update(("~b3",), iter([batch]), bucket))
        entries = pickle.loads(bucket.row[0])
        assert all(is_packed(entry[2]) for entry in entries.values())
        if convert_to_old:
            entries = {
                symbol: (
                    window,
                    None if base is None else old_dump(st.load_indicators(base)),
                    old_dump(st.load_indicators(last)),
                    *rest,
                )
                for symbol, (window, base, last, *rest) in entries.items()
            }
            bucket.update((pickle.dumps(entries), bucket.row[1]))
        from stockpipe.streaming import operator

        operator.live_indicators().clear()  # a restarted worker: nothing cached
        outs = []
        for batch in later:
            (out,) = update(("~b3",), iter([batch]), bucket)
            outs.append(out.sort_values(["kind", "symbol", "ts_ms"]).reset_index(drop=True))
        final = pickle.loads(bucket.row[0])
        assert all(is_packed(entry[2]) for entry in final.values())
        return outs

    new, old = run(False), run(True)
    for got, want in zip(old, new, strict=True):
        assert len(got) == len(want) > 0
        for name in ("ts_ms", *st.INDICATOR_COLUMNS):
            a = got[name].to_numpy(dtype=np.float64)
            b = want[name].to_numpy(dtype=np.float64)
            assert np.array_equal(a.view(np.int64), b.view(np.int64)), name


def test_packed_state_of_the_batch_helpers_is_unchanged():
    """epoch_seconds and the window stepping agree with the packed state's session bounds."""
    ts = pd.Timestamp("2026-11-01 05:30", tz="UTC")  # New York's DST end day
    indicators = SymbolIndicators()
    indicators.update({"ts": ts, "close": 1.0, "vwap": 1.0, "volume": 2.0})
    restored = unpack_indicators(pack_indicators(indicators))
    assert restored.vwap_session.session == date(2026, 11, 1)
    assert restored.vwap_session._end - restored.vwap_session._start == 25 * 3600
    assert restored.last_ts == epoch_seconds(ts)
