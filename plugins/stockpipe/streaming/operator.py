"""The stateful per-symbol operator: ``applyInPandasWithState`` around :func:`state.advance`.

State lives in the query's checkpoint (one row per symbol, :data:`STATE_SCHEMA`), so a restart —
clean or after ``kill -9`` — resumes exactly where the last committed batch left it. A symbol the
state store has never seen is seeded from its bars already stored in PostgreSQL (when enabled), so
a new checkpoint over an existing database still continues the stored series exactly; the same
reader rebuilds a symbol's state when a bar older than its recompute horizon arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout

from stockpipe.streaming import state as st
from stockpipe.streaming.parse import DLQ_GROUP

STATE_SCHEMA = T.StructType(
    [
        T.StructField("window", T.BinaryType()),
        T.StructField("base", T.StringType()),
        T.StructField("last", T.StringType()),
        T.StructField("trimmed", T.BooleanType()),
        # ops.symbol_epochs' epoch the state was built from (see make_update_function)
        T.StructField("epoch", T.LongType()),
    ]
)

OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("kind", T.StringType()),
        T.StructField("symbol", T.StringType()),
        T.StructField("ts_ms", T.LongType()),
        *(T.StructField(name, T.DoubleType()) for name in st.BAR_VALUE_COLUMNS),
        T.StructField("trades", T.LongType()),
        T.StructField("source", T.StringType()),
        T.StructField("fetched_us", T.LongType()),
        T.StructField("bar_changed", T.BooleanType()),
        *(T.StructField(name, T.DoubleType()) for name in st.INDICATOR_COLUMNS),
        # dead letters
        T.StructField("error", T.StringType()),
        T.StructField("topic", T.StringType()),
        T.StructField("kpartition", T.IntegerType()),
        T.StructField("koffset", T.LongType()),
        T.StructField("raw_key", T.BinaryType()),
        T.StructField("raw_value", T.BinaryType()),
        # stats
        T.StructField("n_input", T.LongType()),
    ]
)
OUTPUT_COLUMNS = OUTPUT_SCHEMA.fieldNames()
# Nullable pandas types, so a NULL never turns a long into a float on its way to Arrow.
_PANDAS_TYPES = {
    f.name: {T.LongType: "Int64", T.IntegerType: "Int32", T.BooleanType: "boolean", T.DoubleType: "float64"}.get(
        type(f.dataType), object
    )
    for f in OUTPUT_SCHEMA.fields
}

Seeder = Callable[[str], pd.DataFrame]
"""symbol → its stored bars (window columns, ts ascending); empty when it has none."""
Epochs = Callable[[str], int]
"""symbol → its epoch in ops.symbol_epochs (0 when absent)."""


def _shape(frame: pd.DataFrame, symbol: str | None, n_input: int) -> pd.DataFrame:
    """``frame`` plus one stats row, in :data:`OUTPUT_COLUMNS` (absent columns NULL)."""
    n = len(frame)
    columns = {}
    for name in OUTPUT_COLUMNS:
        values = frame[name].tolist() if name in frame else [None] * n
        columns[name] = values + [None]
    columns["symbol"] = [symbol] * (n + 1)
    columns["kind"][-1] = st.KIND_STATS
    columns["n_input"][-1] = n_input
    return pd.DataFrame({name: pd.array(values, dtype=_PANDAS_TYPES[name]) for name, values in columns.items()})


def make_update_function(horizon: int, seeder: Seeder | None, epochs: Epochs | None = None):
    """The function ``applyInPandasWithState`` runs once per symbol (and once for dead letters).

    With ``epochs``: when a backfill rewrote a symbol's stored history (its epoch moved), the state
    is rebuilt from the stored series before the new bars are applied — EMA, RSI and MACD depend on
    every earlier bar, so a state built on the old history would drift from TA-Lib.
    """

    def update(key: tuple, batches: Iterator[pd.DataFrame], state: GroupState) -> Iterator[pd.DataFrame]:
        group = str(key[0])
        frames = [frame for frame in batches if len(frame)]
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=OUTPUT_COLUMNS)
        if group == DLQ_GROUP:
            dead = rows[["error", "topic", "kpartition", "koffset", "raw_key", "raw_value"]].assign(kind=st.KIND_DEAD)
            yield _shape(dead, None, len(rows))
            return
        epoch = epochs(group) if epochs is not None and seeder is not None else 0
        stale = False
        if state.exists:
            row = state.get
            current = st.SymbolState.from_row(tuple(row[:4]))
            stale = seeder is not None and (row[4] or 0) != epoch
        if stale or (not state.exists and seeder is not None):
            current = st.seed(seeder(group), horizon)
        elif not state.exists:
            current = st.SymbolState()
        history = (lambda: seeder(group)) if seeder is not None else None
        new_state, out = st.advance(current, rows, horizon, history)
        if new_state is not current or not state.exists or stale:
            state.update((*new_state.to_row(), epoch))
        yield _shape(out, group, len(rows))

    return update


def apply_indicators(
    parsed: DataFrame, horizon: int, seeder: Seeder | None = None, epochs: Epochs | None = None
) -> DataFrame:
    """Parsed records (see parse.PARSED_COLUMNS) → operator rows (:data:`OUTPUT_SCHEMA`)."""
    return parsed.groupBy("gkey").applyInPandasWithState(
        make_update_function(horizon, seeder, epochs),
        outputStructType=OUTPUT_SCHEMA,
        stateStructType=STATE_SCHEMA,
        outputMode="update",
        timeoutConf=GroupStateTimeout.NoTimeout,
    )
