"""The stateful operator: ``applyInPandasWithState`` around :func:`state.advance_columns`.

Symbols are hashed into a fixed number of *state buckets* (``stream_state_buckets``); the operator
runs once per bucket and micro-batch, and the bucket's state row holds every one of its symbols'
states (:class:`~stockpipe.streaming.state.SymbolState` rows, pickled as plain tuples). Grouping by
bucket rather than by symbol is what makes 500 symbols cheap: Spark's Python runner pays a pandas
frame, an Arrow round trip and a state row per *group*, which cost ~5 ms a group — more than
computing a symbol's indicators — so per-symbol groups capped the stream at a few thousand bars/s.
Inside a bucket the symbols are processed from numpy columns, without pandas per symbol.

State lives in the query's checkpoint, so a restart — clean or after ``kill -9`` — resumes exactly
where the last committed batch left it. A symbol its bucket has never seen is seeded from its bars
already stored in PostgreSQL (when enabled; one query for all of a bucket's new symbols), so a new
checkpoint over an existing database still continues the stored series exactly; the same reader
rebuilds a symbol's state when a bar older than its recompute horizon arrives, or when a backfill
rewrote its history (its epoch in ``ops.symbol_epochs`` moved).

The bucket count is frozen into the checkpoint (a symbol's state lives in its bucket): the state row
records it, and a query restarted with another count fails with a message naming the setting.
"""

from __future__ import annotations

import gc
import os
import pickle
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout

from stockpipe.streaming import state as st
from stockpipe.streaming.parse import DLQ_GROUP

STATE_SCHEMA = T.StructType(
    [
        # pickle of {symbol: (window bytes, base, last, trimmed, epoch)} (see make_update_function)
        T.StructField("symbols", T.BinaryType()),
        # the bucket count the state was built with (stream_state_buckets)
        T.StructField("buckets", T.IntegerType()),
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
        # the symbol's ops.symbol_epochs epoch the row was computed on (NULL without an epoch
        # reader): the sink queues a repair when a backfill has moved it since (see storage.postgres)
        T.StructField("epoch", T.LongType()),
        # dead letters
        T.StructField("error", T.StringType()),
        T.StructField("topic", T.StringType()),
        T.StructField("kpartition", T.IntegerType()),
        T.StructField("koffset", T.LongType()),
        T.StructField("raw_key", T.BinaryType()),
        T.StructField("raw_value", T.BinaryType()),
        # stats: one row per group and Kafka partition of the batch: the records it got from that
        # partition (n_input) and their first and last offsets (koffset_first, koffset) — what the
        # sink's exactly-once record is keyed on (ops.stream_offsets)
        T.StructField("n_input", T.LongType()),
        T.StructField("koffset_first", T.LongType()),
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

Seeder = Callable[[list[str]], dict[str, pd.DataFrame]]
"""symbols → their stored bars (window columns, ts ascending; empty when none), one query for all."""
Epochs = Callable[[str], int]
"""symbol → its epoch in ops.symbol_epochs (0 when absent)."""
DeadLetterSender = Callable[[pd.DataFrame], None]
"""Sends invalid records (error, origin, raw bytes) to the dead-letter topic and waits for Kafka's
acknowledgement, or raises (the batch then fails and is retried)."""

_INPUT_INTS = ("ts_ms", "fetched_us", "kpartition", "koffset")
_INPUT_FLOATS = (*st.BAR_VALUE_COLUMNS, "trades")


def _columns(rows: pd.DataFrame) -> st.Columns:
    """The parsed rows of a bucket as numpy columns (NULL → NaN for the floats)."""
    columns: st.Columns = {name: rows[name].to_numpy(dtype=np.int64) for name in _INPUT_INTS}
    for name in _INPUT_FLOATS:
        columns[name] = pd.to_numeric(rows[name]).to_numpy(dtype=np.float64, na_value=np.nan)
    columns["source"] = rows["source"].to_numpy(dtype=object)
    return columns


def offset_stats(rows: pd.DataFrame) -> st.Columns:
    """The stats rows of a group's input: per (topic, partition) the record count and the first and
    last offset (at least one row: a group without input says ``n_input`` 0 and no partition)."""
    if not len(rows):
        return {"kind": np.array([st.KIND_STATS], dtype=object), "n_input": np.array([0], dtype=np.int64)}
    topics = rows["topic"].to_numpy(dtype=object)
    partitions = rows["kpartition"].to_numpy(dtype=np.int64)
    offsets = rows["koffset"].to_numpy(dtype=np.int64)
    if (topics == topics[0]).all():  # the usual case: one subscribed topic, numpy only
        keys, inverse = np.unique(partitions, return_inverse=True)
        key_topics = np.full(len(keys), topics[0], dtype=object)
    else:
        pairs = pd.MultiIndex.from_arrays([topics, partitions])
        codes, uniques = pd.factorize(pairs, sort=True)
        inverse, keys = codes, np.asarray(uniques.get_level_values(1), dtype=np.int64)
        key_topics = np.asarray(uniques.get_level_values(0), dtype=object)
    first = np.full(len(keys), np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(len(keys), -1, dtype=np.int64)
    np.minimum.at(first, inverse, offsets)
    np.maximum.at(last, inverse, offsets)
    return {
        "kind": np.full(len(keys), st.KIND_STATS, dtype=object),
        "topic": key_topics,
        "kpartition": keys,
        "koffset_first": first,
        "koffset": last,
        "n_input": np.bincount(inverse, minlength=len(keys)).astype(np.int64),
    }


def _frame(
    parts: list[tuple[str | np.ndarray, st.Columns]], rows: pd.DataFrame, dead: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every symbol's rows (then ``dead``'s) plus the stats rows of ``rows`` (the group's input), in
    :data:`OUTPUT_COLUMNS` (absent = NULL). A part's symbol is one name, or one per row."""
    pieces = [(len(part["ts_ms"]), part) for _, part in parts]
    if dead is not None:
        pieces.append((len(dead), {name: dead[name].to_numpy() for name in dead.columns}))
    stats = offset_stats(rows)
    pieces.append((len(stats["kind"]), stats))
    data: dict[str, object] = {}
    for name in OUTPUT_COLUMNS:
        kind = _PANDAS_TYPES[name]
        if kind == "float64":
            data[name] = np.concatenate(
                [np.asarray(p[name], dtype=np.float64) if name in p else np.full(n, np.nan) for n, p in pieces]
            )
        elif kind in ("Int64", "Int32", "boolean"):
            numpy_type = bool if kind == "boolean" else np.int64
            values, nulls = [], []
            for n, p in pieces:
                if name in p:
                    raw = np.asarray(p[name])
                    missing = pd.isna(raw) if raw.dtype == object or raw.dtype.kind == "f" else np.zeros(n, dtype=bool)
                    filled = np.where(missing, 0, raw) if missing.any() else raw
                    values.append(np.asarray(filled).astype(numpy_type))
                    nulls.append(np.asarray(missing, dtype=bool))
                else:
                    values.append(np.zeros(n, dtype=numpy_type))
                    nulls.append(np.ones(n, dtype=bool))
            merged, mask = np.concatenate(values), np.concatenate(nulls)
            if kind == "boolean":
                data[name] = pd.arrays.BooleanArray(merged, mask)
            else:
                data[name] = pd.array(pd.arrays.IntegerArray(merged, mask), dtype=kind)
        else:
            data[name] = np.concatenate(
                [np.asarray(p[name], dtype=object) if name in p else np.full(n, None, dtype=object) for n, p in pieces]
            )
    data["symbol"] = np.concatenate(
        [
            symbol if isinstance(symbol, np.ndarray) else np.full(n, symbol, dtype=object)
            for (symbol, _), (n, _) in zip(parts, pieces, strict=False)
        ]
        + [np.full(sum(n for n, _ in pieces[len(parts) :]), None, dtype=object)]
    )
    return pd.DataFrame(data)


def _bucket_state(state: GroupState, buckets: int) -> dict[str, tuple]:
    if not state.exists:
        return {}
    blob, built_with = state.get
    if built_with != buckets:
        raise RuntimeError(
            f"STOCKPIPE_STREAM_STATE_BUCKETS is {buckets} but the checkpoint's state was built with {built_with}: "
            "set it back, or start the query on a new STOCKPIPE_STREAM_CHECKPOINT (state is reseeded from PostgreSQL)"
        )
    return pickle.loads(bytes(blob))


_DEAD_COLUMNS = ["error", "topic", "kpartition", "koffset", "raw_key", "raw_value"]


def _dead_letter_group(batches: Iterator[pd.DataFrame], send: DeadLetterSender | None) -> pd.DataFrame:
    """The dead-letter group: with ``send``, each Arrow batch of invalid records is sent (and
    acknowledged) from this worker, and only their origin and reason travel on to the driver — the
    raw bytes of up to ``maxOffsetsPerTrigger`` records never gather there, and at most one Arrow
    batch of them is in memory here."""
    dead_parts, origin_parts = [], []
    for frame in batches:
        if not len(frame):
            continue
        dead = frame[_DEAD_COLUMNS].assign(kind=st.KIND_DEAD)
        if send is not None:
            send(dead)
            dead = dead.drop(columns=["raw_key", "raw_value"]).assign(kind=st.KIND_DEAD_SENT)
        dead_parts.append(dead)
        origin_parts.append(frame[["topic", "kpartition", "koffset"]])
    if not dead_parts:
        return _frame([], pd.DataFrame(columns=OUTPUT_COLUMNS))
    return _frame([], pd.concat(origin_parts, ignore_index=True), pd.concat(dead_parts, ignore_index=True))


_heap_frozen: list[bool] = []  # once per Python worker process

# The live indicators of the symbols this worker process advanced last (state.LiveIndicators): a
# symbol's next batch usually lands on the same worker with the state it left, and then skips
# restoring it (~25 µs a symbol). Bounded: cleared when it outgrows the symbols of the whole market.
_live_indicators: dict = {}
_LIVE_MAX = 50_000


def live_indicators() -> dict:
    """This worker process's cache of live indicators (see :data:`_live_indicators`).

    ``update`` reaches the cache through this module-level function, never as a global of its own:
    Spark ships ``update`` (a closure) to the workers with cloudpickle, which copies the globals a
    shipped function names into each task's unpickled copy — a cache named directly would be a new,
    empty dict in every task and never hit; a module-level function is shipped by reference and
    reads the worker's module."""
    if len(_live_indicators) > _LIVE_MAX:
        _live_indicators.clear()
    return _live_indicators


def freeze_worker_heap() -> None:
    """In a reused PySpark worker, move what is alive now (the imported modules: pandas, pyarrow,
    pyspark, ours — ~100,000 objects) out of the cyclic garbage collector's reach, once per process.

    PySpark's daemon runs a full ``gc.collect()`` after every task of a reused worker
    (``SPARK_REUSE_WORKER``); over those objects that took 60-80 ms of CPU per task on the 2-core
    box — two tasks every micro-batch, competing with the JVM and the sink for the same cores — and
    the automatic full collections inside the operator walked them too. Frozen objects are never
    freed by the collector (they live as long as the worker anyway); later objects are collected as
    before."""
    if _heap_frozen or not os.environ.get("SPARK_REUSE_WORKER"):
        return
    _heap_frozen.append(True)
    gc.collect()
    gc.freeze()


def make_update_function(
    horizon: int,
    seeder: Seeder | None,
    epochs: Epochs | None = None,
    buckets: int = 1,
    dead_letters: DeadLetterSender | None = None,
):
    """The function ``applyInPandasWithState`` runs once per state bucket (and once for dead letters).

    With ``epochs``: when a backfill rewrote a symbol's stored history (its epoch moved), the state
    is rebuilt from the stored series before the new bars are applied — EMA, RSI and MACD depend on
    every earlier bar, so a state built on the old history would drift from TA-Lib. Each output row
    carries the epoch it was computed on (``epoch``): a backfill that moves it after this read (the
    reader is cached for a second per worker) but before the sink commits is caught by the sink.
    With ``dead_letters``: invalid records are sent from the worker (see :func:`_dead_letter_group`);
    without, their raw bytes go to the driver as ``dead`` rows.
    """

    def update(key: tuple, batches: Iterator[pd.DataFrame], state: GroupState) -> Iterator[pd.DataFrame]:
        freeze_worker_heap()
        group = str(key[0])
        if group == DLQ_GROUP:
            yield _dead_letter_group(batches, dead_letters)
            return
        frames = [frame for frame in batches if len(frame)]
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=OUTPUT_COLUMNS)
        entries = _bucket_state(state, buckets)
        columns = _columns(rows)
        symbol_column = rows["symbol"].to_numpy(dtype=object)
        # each symbol's row positions, ascending (numpy: pandas' groupby over Arrow strings cost more)
        codes, names = pd.factorize(symbol_column, sort=True)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1)).tolist()
        symbols = [str(name) for name in names]
        by_symbol = {symbol: order[bounds[i] : bounds[i + 1]] for i, symbol in enumerate(symbols)}
        with_epochs = epochs is not None and seeder is not None
        current_epoch = {symbol: epochs(symbol) if with_epochs else 0 for symbol in symbols}
        reseed = [
            symbol
            for symbol in symbols
            if seeder is not None
            and (symbol not in entries or (with_epochs and (entries[symbol][4] or 0) != current_epoch[symbol]))
        ]
        seeds = seeder(reseed) if reseed else {}
        parts: list[tuple[str, st.Columns]] = []
        changed = not state.exists
        fast = st.advance_bucket(columns, symbol_column, entries, horizon, skip=set(seeds), live=live_indicators())
        if fast is not None:
            advanced, fast_rows = fast
            for symbol, row in advanced.items():
                entries[symbol] = (*row, current_epoch[symbol])
            changed = changed or bool(advanced)
            if len(fast_rows["ts_ms"]):
                row_symbols = fast_rows.pop("symbol")
                if with_epochs:
                    fast_rows["epoch"] = np.fromiter(
                        (current_epoch[s] for s in row_symbols), dtype=np.int64, count=len(row_symbols)
                    )
                parts.append((row_symbols, fast_rows))
        else:
            advanced = {}
        for symbol in symbols:
            if symbol in advanced:
                continue
            if symbol in seeds:
                current = st.seed(seeds[symbol], horizon)
            elif symbol in entries:
                current = st.SymbolState.from_row(tuple(entries[symbol][:4]))
            else:
                current = st.SymbolState()
            history = (lambda symbol=symbol: seeder([symbol])[symbol]) if seeder is not None else None
            bars = {name: values[by_symbol[symbol]] for name, values in columns.items()}
            new_state, out = st.advance_columns(current, bars, horizon, history)
            if new_state is not current or symbol in seeds or symbol not in entries:
                entries[symbol] = (*new_state.to_row(), current_epoch[symbol])
                changed = True
            if with_epochs:
                out["epoch"] = np.full(len(out["ts_ms"]), current_epoch[symbol], dtype=np.int64)
            parts.append((symbol, out))
        if changed:
            state.update((pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL), buckets))
        yield _frame(parts, rows)

    return update


def apply_indicators(
    parsed: DataFrame,
    horizon: int,
    seeder: Seeder | None = None,
    epochs: Epochs | None = None,
    buckets: int = 1,
    dead_letters: DeadLetterSender | None = None,
) -> DataFrame:
    """Parsed records (see parse.PARSED_COLUMNS, ``gkey`` = state bucket) → operator rows (:data:`OUTPUT_SCHEMA`)."""
    return parsed.groupBy("gkey").applyInPandasWithState(
        make_update_function(horizon, seeder, epochs, buckets, dead_letters),
        outputStructType=OUTPUT_SCHEMA,
        stateStructType=STATE_SCHEMA,
        outputMode="update",
        timeoutConf=GroupStateTimeout.NoTimeout,
    )
