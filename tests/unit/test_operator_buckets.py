"""The bucketed stateful operator (streaming.operator) without Spark: its per-bucket state holds
every symbol's state, and each symbol's rows equal what the per-symbol state machine gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockpipe.streaming import state as st
from stockpipe.streaming.operator import OUTPUT_COLUMNS, make_update_function
from stockpipe.streaming.parse import DLQ_GROUP

T0 = 1_795_962_600_000
MINUTE = 60_000


class BucketState:
    """The slice of pyspark's GroupState the operator uses (exists / get / update)."""

    def __init__(self) -> None:
        self.row: tuple | None = None

    @property
    def exists(self) -> bool:
        return self.row is not None

    @property
    def get(self) -> tuple:
        return self.row

    def update(self, row: tuple) -> None:
        # The state row crosses Arrow/pickle as plain values: copy to prove nothing else is kept.
        self.row = (bytes(row[0]), int(row[1]))


def records(symbols: list[str], minutes: range, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k, symbol in enumerate(symbols):
        for minute in minutes:
            ts = T0 + MINUTE * minute
            close = 100 + k + float(rng.normal(0, 0.5))
            rows.append(
                {
                    "gkey": "~b3", "symbol": symbol, "ts_ms": ts, "open": close, "high": close + 1,
                    "low": close - 1, "close": close, "volume": 1000.0, "vwap": close, "trades": 3,
                    "source": "simulator", "fetched_us": ts * 1000 + 5, "error": None, "topic": "t",
                    "kpartition": 0, "koffset": len(rows), "raw_key": None, "raw_value": None,
                }
            )  # fmt: skip
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed)  # Spark's order is arbitrary


def test_bucket_rows_equal_the_per_symbol_state_machine():
    symbols = ["AAPL", "MSFT", "TSLA"]
    update = make_update_function(60, None, None, buckets=16)
    bucket, single = BucketState(), {s: st.SymbolState() for s in symbols}
    for step, minutes in enumerate([range(0, 50), range(50, 51), range(51, 90), range(70, 72)]):
        batch = records(symbols, minutes, seed=step)
        if step == 3:  # corrections inside the horizon: newer fetched_at
            batch["fetched_us"] += 1_000_000
            batch["close"] += 0.25
        (out,) = update(("~b3",), iter([batch]), bucket)
        assert list(out.columns) == OUTPUT_COLUMNS
        stats = out[out["kind"] == st.KIND_STATS]
        assert len(stats) == 1 and int(stats["n_input"].iloc[0]) == len(batch)
        for symbol in symbols:
            single[symbol], want = st.advance(single[symbol], batch[batch["symbol"] == symbol], 60)
            got = out[out["symbol"] == symbol].reset_index(drop=True)
            assert len(got) == len(want) > 0
            np.testing.assert_array_equal(got["ts_ms"].to_numpy(dtype=np.int64), want["ts_ms"].to_numpy())
            for name in st.INDICATOR_COLUMNS:
                np.testing.assert_array_equal(got[name].to_numpy(dtype=float), want[name].to_numpy(dtype=float))
            assert got["bar_changed"].tolist() == want["bar_changed"].tolist()


def test_dead_letters_pass_through_their_own_group():
    update = make_update_function(60, None, None, buckets=16)
    dead = records(["AAPL"], range(2), seed=1).assign(gkey=DLQ_GROUP, error="close is not a finite number")
    (out,) = update((DLQ_GROUP,), iter([dead]), BucketState())
    assert out["kind"].tolist() == [st.KIND_DEAD, st.KIND_DEAD, st.KIND_STATS]
    assert out["error"].iloc[0] == "close is not a finite number"


def test_a_changed_bucket_count_names_the_setting():
    state = BucketState()
    list(make_update_function(60, None, None, buckets=16)(("~b3",), iter([records(["AAPL"], range(3), 0)]), state))
    with pytest.raises(
        RuntimeError, match="STOCKPIPE_STREAM_STATE_BUCKETS is 8 but the checkpoint's state was built with 16"
    ):
        list(
            make_update_function(60, None, None, buckets=8)(("~b3",), iter([records(["AAPL"], range(3, 4), 0)]), state)
        )


def _entries(state: BucketState) -> dict[str, tuple]:
    import pickle

    return pickle.loads(state.row[0])


def test_the_bucket_fast_path_equals_the_per_symbol_path_bit_for_bit():
    """state.advance_bucket (every symbol whose bars follow its window, at once) against
    advance_columns symbol by symbol: the same output rows, column for column, and the same state
    bytes — across duplicates within a batch, corrections, a new symbol, a missing VWAP, trimming
    past the horizon and a retried batch (the worker's cache of live indicators must not leak)."""
    horizon = 20
    symbols = [f"S{i:03d}" for i in range(12)]
    update = make_update_function(horizon, None, None, buckets=16)
    bucket, single = BucketState(), {}
    plan = [range(0, 30), range(30, 31), range(31, 45), range(45, 47), range(47, 60), range(40, 42), range(60, 75)]
    for step, minutes in enumerate(plan):
        names = symbols if step < 3 else [*symbols, "NEW"]
        batch = records(names, minutes, seed=step)
        if step == 2:  # the same bars again from another partition, one of them with a newer fetched_at
            again = batch.copy().assign(kpartition=1, koffset=batch["koffset"] + 10_000)
            again.loc[again.index[::3], "fetched_us"] += 7
            again.loc[again.index[::3], "close"] += 0.5
            batch = pd.concat([batch, again])
        if step == 3:
            batch.loc[batch["symbol"] == "S001", "vwap"] = np.nan
        if step == 5:  # corrections inside the horizon for half the symbols: the general path
            batch = batch[batch["symbol"].isin(symbols[::2])].assign(fetched_us=lambda f: f["fetched_us"] + 1_000_000)
        before = bucket.row
        (out,) = update(("~b3",), iter([batch]), bucket)
        if step == 4:  # a retry of this batch from the state before it gives the same rows and state
            after = bucket.row
            bucket.row = before
            (again_out,) = update(("~b3",), iter([batch]), bucket)
            assert bucket.row == after
            pd.testing.assert_frame_equal(
                again_out.sort_values(["symbol", "ts_ms", "kind"], na_position="last").reset_index(drop=True),
                out.sort_values(["symbol", "ts_ms", "kind"], na_position="last").reset_index(drop=True),
            )
        entries = _entries(bucket)
        for symbol in sorted(set(batch["symbol"])):
            rows = batch[batch["symbol"] == symbol]
            single[symbol], want = st.advance(single.get(symbol, st.SymbolState()), rows, horizon)
            assert entries[symbol][:4] == single[symbol].to_row(), (step, symbol)
            got = out[out["symbol"] == symbol].reset_index(drop=True)
            assert len(got) == len(want) > 0
            for name in st.OUTPUT_COLUMNS:
                if name in ("kind", "source", "bar_changed"):
                    assert got[name].tolist() == want[name].tolist(), (step, symbol, name)
                else:
                    np.testing.assert_array_equal(
                        got[name].to_numpy(dtype=float, na_value=np.nan), want[name].to_numpy(dtype=float), err_msg=name
                    )
    assert len(single["S000"].window) <= horizon + horizon // 10 and single["S000"].trimmed


def test_the_live_indicators_cache_survives_spark_shipping_the_function():
    """Spark ships ``update`` to its workers with cloudpickle; the worker's cache of live indicators
    must be the worker module's, filled by one task and found by the next — not a copy made when the
    function was unpickled (which never hits: every batch restored every symbol's state)."""
    from pyspark import cloudpickle

    from stockpipe.streaming import operator

    operator.live_indicators().clear()
    shipped = cloudpickle.dumps(make_update_function(60, None, None, buckets=16))
    bucket = BucketState()
    for step, minutes in enumerate([range(0, 30), range(30, 32), range(32, 34)]):
        task = cloudpickle.loads(shipped)  # a new copy per task, as a worker gets it
        list(task(("~b3",), iter([records(["AAPL", "MSFT"], minutes, seed=step)]), bucket))
        if step:  # from the second batch on, the symbols' indicators stay live in this process
            entries = _entries(bucket)
            live = operator.live_indicators()
            assert sorted(live) == ["AAPL", "MSFT"]
            assert all(live[symbol][0] == entries[symbol][2] for symbol in live)
