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
