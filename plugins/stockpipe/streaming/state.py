"""Per-symbol stream state and how a batch of bars advances it (pure: pandas/numpy, no Spark, no I/O).

The state of one symbol is

* ``window``: its most recent stored bars, in ts order, at most ``horizon`` of them (the recompute
  horizon; default one trading day, 390 bars). Only the fields indicators read are kept, plus
  ``fetched_at`` for "latest fetched_at wins";
* ``base``: the serialised :class:`~stockpipe.indicators.SymbolIndicators` state as of just before
  ``window[0]`` (``None``: the symbol's series starts inside the window);
* ``last``: the indicator state after ``window[-1]``;
* ``trimmed``: whether bars older than ``window[0]`` exist (then ``base`` is not the empty state).

A bar newer than ``window[-1]`` advances ``last`` (the common case: one update per bar). A bar at or
before it within the window (late, out of order, or a correction with a newer ``fetched_at``) is put
in its place, and every indicator from that bar on is recomputed from ``base`` and emitted again.
A bar older than ``window[0]`` when the window has been trimmed is beyond the horizon: it is
emitted as ``late`` (stored by the sink, queued in ``ops.repair_queue`` for the backfill, which
recomputes the stored indicators between it and the window). Because EMA/RSI/MACD never forget a
bar, ``base`` must include it too: given the stored series (``history``), the state is rebuilt from
it with the late bar merged in and the window's indicators are emitted again (a rare, O(history)
event); without ``history`` the state is left as it was. Invariant 1 holds because the window
always equals the stored series' tail and ``base`` is the exact state of everything before it.
When the window outgrows the horizon its oldest bars are folded into ``base`` (one indicator
update per bar), never dropped.

A bar with an older ``fetched_at`` than the one applied, or an equal one, changes nothing.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable, Container, MutableMapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stockpipe.indicators import INDICATOR_COLUMNS as _INDICATOR_COLUMNS
from stockpipe.indicators import SymbolIndicators, pack_indicators, unpack_indicators
from stockpipe.indicators.packed import MAGIC as _PACKED

INDICATOR_COLUMNS = list(_INDICATOR_COLUMNS)
BAR_VALUE_COLUMNS = ["open", "high", "low", "close", "volume", "vwap"]
# What the window keeps per bar: ts and fetched_at (epoch ms / µs) and the values indicators read.
WINDOW_INT_COLUMNS = ["ts_ms", "fetched_us"]
# ...and the values: only what indicators read (open/high/low of a re-emitted bar are not needed:
# the sink rewrites only its indicators), which keeps the state ~40 % smaller.
WINDOW_VALUE_COLUMNS = ["close", "volume", "vwap"]
WINDOW_COLUMNS = WINDOW_INT_COLUMNS + WINDOW_VALUE_COLUMNS

_NV = len(WINDOW_VALUE_COLUMNS)

History = Callable[[], pd.DataFrame]
"""Reads the symbol's stored bars (window columns, ts ascending) when a bar beyond the horizon needs them."""

# Kinds of rows the operator emits (column ``kind``).
KIND_BAR = "bar"  # bar (if bar_changed) and its indicators: upsert both
KIND_LATE = "late"  # bar older than the recompute horizon: store it, queue it for the backfill
KIND_DEAD = "dead"  # invalid record: dead-letter topic
KIND_DEAD_SENT = "dead_sent"  # invalid record the operator's worker already sent to the dead-letter topic
KIND_STATS = "stats"  # one per group and batch: how many input records it saw


def new_indicators() -> SymbolIndicators:
    return SymbolIndicators()


def load_indicators(serialised: bytes | str | None) -> SymbolIndicators:
    """From :func:`dump_indicators` — or what earlier versions wrote: a pickled ``to_state()`` dict
    (a checkpoint written before the packed form) or the JSON text of ``to_state()``."""
    if serialised is None:
        return SymbolIndicators()
    if isinstance(serialised, str):
        return SymbolIndicators.from_state(json.loads(serialised))
    if serialised[:4] == _PACKED:
        return unpack_indicators(serialised)
    return SymbolIndicators.from_state(pickle.loads(serialised))


def dump_indicators(indicators: SymbolIndicators) -> bytes:
    """The packed form (:mod:`stockpipe.indicators.packed`): bit-exact, ~0.65 KB instead of a ~1.1 KB
    pickled ``to_state()`` dict, and several times cheaper to write and to restore."""
    return pack_indicators(indicators)


def _step(indicators: SymbolIndicators, ts_ms: int, values: np.ndarray) -> tuple[float | None, ...]:
    """One bar into ``indicators``; ``values`` follows :data:`WINDOW_VALUE_COLUMNS` (NaN vwap = none).

    ``ts_ms / 1000`` is the same double as ``epoch_seconds()`` of the bar's timestamp (both are the
    correctly rounded quotient of the same integer), so stream and batch see identical sessions.
    """
    vwap = float(values[2])
    return indicators.step(ts_ms / 1000.0, float(values[0]), None if vwap != vwap else vwap, float(values[1]))


@dataclass
class Window:
    """Columnar bars, ts ascending: ``ints`` (n × 2: ts_ms, fetched_us), ``values`` (n × 3: close,
    volume, vwap)."""

    ints: np.ndarray = field(default_factory=lambda: np.empty((0, 2), dtype=np.int64))
    values: np.ndarray = field(default_factory=lambda: np.empty((0, _NV), dtype=np.float64))

    def __len__(self) -> int:
        return len(self.ints)

    @property
    def ts(self) -> np.ndarray:
        return self.ints[:, 0]

    def to_bytes(self) -> bytes:
        n = np.array([len(self)], dtype=np.int64)
        return n.tobytes() + np.ascontiguousarray(self.ints).tobytes() + np.ascontiguousarray(self.values).tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Window:
        n = int(np.frombuffer(blob, dtype=np.int64, count=1)[0])
        ints = np.frombuffer(blob, dtype=np.int64, count=2 * n, offset=8).reshape(n, 2)
        values = np.frombuffer(blob, dtype=np.float64, count=_NV * n, offset=8 + 16 * n).reshape(n, _NV)
        return cls(ints.copy(), values.copy())

    @classmethod
    def from_frame(cls, bars: pd.DataFrame) -> Window:
        ints = bars[WINDOW_INT_COLUMNS].to_numpy(dtype=np.int64).reshape(-1, 2)
        values = bars[WINDOW_VALUE_COLUMNS].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        return cls(ints.copy(), values.reshape(-1, _NV).copy())


@dataclass
class SymbolState:
    window: Window = field(default_factory=Window)
    base: bytes | None = None
    last: bytes | None = None
    trimmed: bool = False

    # The Spark state row (see operator.STATE_SCHEMA): plain types only.
    def to_row(self) -> tuple:
        return (self.window.to_bytes(), self.base, self.last, self.trimmed)

    @classmethod
    def from_row(cls, row: tuple) -> SymbolState:
        blob, base, last, trimmed = row
        return cls(Window.from_bytes(bytes(blob)), base, last, bool(trimmed))


def _replay(indicators: SymbolIndicators, window: Window, start: int, stop: int) -> None:
    ts, values = window.ts.tolist(), window.values
    for i in range(start, stop):
        _step(indicators, ts[i], values[i])


def _emit(indicators: SymbolIndicators, window: Window, start: int) -> np.ndarray:
    """Indicator rows (n × 13, NaN = NULL) for ``window[start:]``."""
    ts, values = window.ts.tolist(), window.values
    rows = [_step(indicators, ts[i], values[i]) for i in range(start, len(window))]
    return np.array(rows, dtype=np.float64).reshape(-1, len(INDICATOR_COLUMNS))


Columns = dict[str, np.ndarray]
"""A set of rows as named numpy columns (cheaper than pandas for the few rows of one batch)."""


def _floats(values) -> np.ndarray:
    """A float64 column (NaN for NULL) from a pandas Series, a numpy array or a list."""
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values
    return pd.to_numeric(pd.Series(values)).to_numpy(dtype=np.float64, na_value=np.nan)


def latest_per_ts(bars: pd.DataFrame | Columns) -> Columns:
    """One bar per ts, ts ascending: the highest fetched_at; on a tie the first received (lowest
    partition, offset). Ordering on every column that can differ makes the result independent of
    the order Spark hands the rows over in, so a replayed batch produces the same output.

    ``bars`` is a frame or named numpy columns (the operator's fast path: no pandas per symbol)."""
    ts = np.asarray(bars["ts_ms"], dtype=np.int64)
    fetched = np.asarray(bars["fetched_us"], dtype=np.int64)
    order = np.lexsort(
        (np.asarray(bars["koffset"], dtype=np.int64), np.asarray(bars["kpartition"], dtype=np.int64), -fetched, ts)
    )
    ts_sorted = ts[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = ts_sorted[1:] != ts_sorted[:-1]
    pick = order[first]
    columns: Columns = {"ts_ms": ts[pick], "fetched_us": fetched[pick]}
    for name in BAR_VALUE_COLUMNS:
        columns[name] = _floats(bars[name])[pick]
    columns["trades"] = _floats(bars["trades"])[pick]
    columns["source"] = np.asarray(bars["source"], dtype=object)[pick]
    return columns


def _take(columns: Columns, mask: np.ndarray) -> Columns:
    return {name: values[mask] for name, values in columns.items()}


def _as_window(columns: Columns) -> Window:
    ints = np.column_stack([columns["ts_ms"], columns["fetched_us"]]).astype(np.int64).reshape(-1, 2)
    values = np.column_stack([columns[name] for name in WINDOW_VALUE_COLUMNS]).astype(np.float64).reshape(-1, _NV)
    return Window(ints, values)


def _late_rows(columns: Columns) -> Columns:
    n = len(columns["ts_ms"])
    return {**columns, "kind": np.full(n, KIND_LATE, dtype=object), "bar_changed": np.ones(n, dtype=bool)}


def _window_rows(window: Window, start: int, values: np.ndarray) -> Columns:
    rows: Columns = {"ts_ms": window.ts[start:], "fetched_us": window.ints[start:, 1]}
    for j, name in enumerate(WINDOW_VALUE_COLUMNS):
        rows[name] = window.values[start:, j]
    for j, name in enumerate(INDICATOR_COLUMNS):
        rows[name] = values[:, j]
    n = len(rows["ts_ms"])
    rows["kind"] = np.full(n, KIND_BAR, dtype=object)
    rows["bar_changed"] = np.zeros(n, dtype=bool)
    return rows


def advance(
    state: SymbolState, bars: pd.DataFrame | Columns, horizon: int, history: History | None = None
) -> tuple[SymbolState, pd.DataFrame]:
    """:func:`advance_columns` with the rows as a frame."""
    new_state, rows = advance_columns(state, bars, horizon, history)
    return new_state, pd.DataFrame(rows)


def advance_columns(
    state: SymbolState, bars: pd.DataFrame | Columns, horizon: int, history: History | None = None
) -> tuple[SymbolState, Columns]:
    """Apply one batch of valid bars of one symbol; return the new state and the rows to write.

    ``bars`` has the parsed columns (``ts_ms``, ``fetched_us``, prices, ``trades``, ``source``,
    ``kpartition``, ``koffset``), as a frame or numpy columns. The result has one row per bar to
    write: ``kind`` (bar/late), ``bar_changed`` (whether the bar itself must be upserted) and the
    indicator columns.

    ``history`` (the symbol's stored bars, read on demand) lets a bar beyond the horizon also
    repair the state: see :func:`reseed_after_late`.
    """
    incoming = latest_per_ts(bars)
    parts: list[Columns] = []
    if state.trimmed and len(state.window):
        beyond = incoming["ts_ms"] < int(state.window.ts[0])
        if beyond.any():
            late = _take(incoming, beyond)
            if history is not None:
                reseeded = reseed_after_late(history(), late, horizon)
                if reseeded is not None:
                    state, window_rows = reseeded
                    parts.append(window_rows)
            parts.append(_late_rows(late))
            incoming = _take(incoming, ~beyond)

    window = state.window
    inc_ts = incoming["ts_ms"]
    # Bars already in the window count only with a newer fetched_at.
    at = np.searchsorted(window.ts, inc_ts)
    inside = at < len(window)
    known = np.zeros(len(inc_ts), dtype=bool)
    known[inside] = window.ts[at[inside]] == inc_ts[inside]
    stale = np.zeros(len(inc_ts), dtype=bool)
    stale[known] = incoming["fetched_us"][known] <= window.ints[at[known], 1]
    new = _take(incoming, ~stale)
    if not len(new["ts_ms"]):
        return state, _finish(parts)

    changed_ts = new["ts_ms"]
    new_window = _as_window(new)
    if not len(window) or changed_ts[0] > window.ts[-1]:
        # The common case: every bar is newer than the window (``new`` is ts ascending).
        replaced = np.zeros(len(window), dtype=bool)
        merged = Window(
            np.concatenate([window.ints, new_window.ints]), np.concatenate([window.values, new_window.values])
        )
    else:
        replaced = np.isin(window.ts, changed_ts)
        merged_ints = np.concatenate([window.ints[~replaced], new_window.ints])
        merged_values = np.concatenate([window.values[~replaced], new_window.values])
        order = np.argsort(merged_ints[:, 0], kind="stable")
        merged = Window(merged_ints[order], merged_values[order])

    first_changed = int(np.searchsorted(merged.ts, changed_ts[0]))
    if first_changed == len(window) and not replaced.any() and state.last is not None:
        # Only bars after the last one: continue from `last`.
        indicators = load_indicators(state.last)
    else:
        indicators = load_indicators(state.base)
        _replay(indicators, merged, 0, first_changed)
    rows = _window_rows(merged, first_changed, _emit(indicators, merged, first_changed))
    # Bars of this batch: upsert them too, with their trades and source.
    pos = np.searchsorted(changed_ts, rows["ts_ms"])
    pos_ok = np.minimum(pos, len(changed_ts) - 1)
    is_new = changed_ts[pos_ok] == rows["ts_ms"]
    rows["bar_changed"] = is_new
    for name in ("open", "high", "low", "trades"):
        rows[name] = np.where(is_new, new[name][pos_ok], np.nan)
    rows["source"] = np.where(is_new, new["source"][pos_ok], None)
    parts.append(rows)

    new_state = SymbolState(merged, state.base, dump_indicators(indicators), state.trimmed)
    return trim(new_state, horizon), _finish(parts)


_INT64 = struct.Struct("=q")  # the window's header and ts: native int64, as numpy's tobytes() writes them

LiveIndicators = MutableMapping[str, tuple[bytes, SymbolIndicators]]
"""symbol → (serialised ``last``, the live indicators it deserialises to): a worker-side cache that
saves :func:`load_indicators` when the next batch of a symbol comes with the state this worker
left it in (compared by the exact bytes, so any other state — a retried batch, another checkpoint —
misses and is loaded)."""


def advance_bucket(
    columns: Columns,
    symbols: np.ndarray,
    entries: dict[str, tuple],
    horizon: int,
    skip: Container[str] = (),
    live: LiveIndicators | None = None,
) -> tuple[dict[str, tuple], Columns] | None:
    """:func:`advance_columns` for every symbol of a bucket whose bars all come after its window —
    the common case — at once: one sort and dedupe of the whole bucket instead of ~60 small numpy
    operations per symbol, the window appended as bytes, the rows gathered in one set of columns.

    ``columns``: the bucket's parsed rows (numpy columns, as :func:`advance_columns` takes them);
    ``symbols``: their symbol per row; ``entries``: symbol → its state row (``SymbolState.to_row()``,
    possibly with more fields after it). Symbols not in ``entries``, in ``skip``, or with a bar at or
    before their window's last one are left out (the caller runs :func:`advance_columns` for them).

    Returns ``None`` (nothing to do) or the state rows of the symbols it advanced (``to_row()``
    tuples, bit-identical to what :func:`advance_columns` gives) and their output rows (the columns
    of :data:`OUTPUT_COLUMNS` plus ``symbol``).
    """
    if not len(symbols) or not entries:
        return None
    codes, names = pd.factorize(symbols, sort=True)
    ts = np.asarray(columns["ts_ms"], dtype=np.int64)
    fetched = np.asarray(columns["fetched_us"], dtype=np.int64)
    # latest_per_ts of every symbol at once: per (symbol, ts) the highest fetched_at, then the
    # lowest (partition, offset).
    order = np.lexsort(
        (
            np.asarray(columns["koffset"], dtype=np.int64),
            np.asarray(columns["kpartition"], dtype=np.int64),
            -fetched,
            ts,
            codes,
        )
    )
    codes_sorted, ts_sorted = codes[order], ts[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (ts_sorted[1:] != ts_sorted[:-1]) | (codes_sorted[1:] != codes_sorted[:-1])
    pick = order[first]
    pick_codes, pick_ts = codes[pick], ts[pick]
    bounds = np.searchsorted(pick_codes, np.arange(len(names) + 1)).tolist()
    pick_ts_list = pick_ts.tolist()
    ints = np.column_stack([pick_ts, fetched[pick]])
    values = np.column_stack([np.asarray(columns[name], dtype=np.float64)[pick] for name in WINDOW_VALUE_COLUMNS])
    epochs = (pick_ts / 1000.0).tolist()  # the same double as ts_ms / 1000.0 per bar (see _step)
    closes, volumes = values[:, 0].tolist(), values[:, 1].tolist()
    vwaps = [None if v != v else v for v in values[:, 2].tolist()]
    unpack, pack = _INT64.unpack_from, _INT64.pack
    advanced: dict[str, tuple] = {}
    taken: list[np.ndarray] = []
    results: list[tuple[float | None, ...]] = []
    cache = live if live is not None else {}
    for code, symbol in enumerate(names.tolist()):
        entry = entries.get(symbol)
        if entry is None or symbol in skip or entry[2] is None:
            continue
        start, stop = bounds[code], bounds[code + 1]
        blob = entry[0]
        (n,) = unpack(blob, 0)
        if n and pick_ts_list[start] <= unpack(blob, 8 + 16 * (n - 1))[0]:
            continue  # a late or corrected bar: the general path
        last = entry[2]
        cached = cache.pop(symbol, None)  # out while it is being stepped: a failure leaves no stale entry
        indicators = cached[1] if cached is not None and cached[0] == last else load_indicators(last)
        step = indicators.step
        for i in range(start, stop):
            results.append(step(epochs[i], closes[i], vwaps[i], volumes[i]))
        last = dump_indicators(indicators)
        window = b"".join(
            (
                pack(n + stop - start),
                blob[8 : 8 + 16 * n],
                ints[start:stop].tobytes(),
                blob[8 + 16 * n : 8 + 40 * n],
                values[start:stop].tobytes(),
            )
        )
        row = (window, entry[1], last, bool(entry[3]))
        if n + stop - start > horizon + horizon // 10:
            row = trim(SymbolState.from_row(row), horizon).to_row()
        cache[symbol] = (last, indicators)
        advanced[symbol] = row
        taken.append(np.arange(start, stop))
    if not advanced:
        return None
    at = np.concatenate(taken)
    rows = pick[at]
    out: Columns = {"kind": np.full(len(at), KIND_BAR, dtype=object), "symbol": symbols[rows]}
    for name in ("ts_ms", "fetched_us", *BAR_VALUE_COLUMNS):
        out[name] = np.asarray(columns[name])[rows]
    out["trades"] = _floats(columns["trades"])[rows]
    out["source"] = np.asarray(columns["source"], dtype=object)[rows]
    out["bar_changed"] = np.ones(len(at), dtype=bool)
    indicator_values = np.array(results, dtype=np.float64).reshape(-1, len(INDICATOR_COLUMNS))
    for j, name in enumerate(INDICATOR_COLUMNS):
        out[name] = indicator_values[:, j]
    return advanced, out


def trim(state: SymbolState, horizon: int) -> SymbolState:
    """Fold the bars beyond the horizon into ``base``.

    Trimming waits until the window is a tenth over the horizon, so the base state is rewritten
    every few dozen bars rather than on every batch; the window never holds fewer than
    ``horizon`` bars once it has that many.
    """
    if len(state.window) <= horizon + horizon // 10:
        return state
    excess = len(state.window) - horizon
    indicators = load_indicators(state.base)
    _replay(indicators, state.window, 0, excess)
    window = Window(state.window.ints[excess:].copy(), state.window.values[excess:].copy())
    return SymbolState(window, dump_indicators(indicators), state.last, True)


def seed(history: pd.DataFrame, horizon: int) -> SymbolState:
    """The state of a symbol whose stored bars (ts ascending, window columns) are ``history``."""
    return _seed(Window.from_frame(history), horizon)[0]


def _seed(full: Window, horizon: int) -> tuple[SymbolState, Columns]:
    """:func:`seed` of a window, plus the indicator rows of the bars that end up in the window."""
    first = max(0, len(full) - horizon)
    indicators = new_indicators()
    _replay(indicators, full, 0, first)
    base = dump_indicators(indicators) if first else None
    values = _emit(indicators, full, first)
    window = Window(full.ints[first:].copy(), full.values[first:].copy())
    return SymbolState(window, base, dump_indicators(indicators), first > 0), _window_rows(window, 0, values)


def reseed_after_late(stored: pd.DataFrame, late: Columns, horizon: int) -> tuple[SymbolState, Columns] | None:
    """The exact state after bars older than the window (``late``) land in ``stored``.

    EMA, RSI and MACD never forget a bar, so a late bar changes ``base`` and every later value.
    The stream rebuilds its state from the stored series with the late bars merged in (latest
    fetched_at wins) and re-emits the window's indicators; the bars between the late one and the
    window are left to the backfill (the sink queues them in ``ops.repair_queue``). ``None`` when
    no late bar is newer than the stored one (nothing changes).
    """
    stored_window = Window.from_frame(stored)
    at = np.searchsorted(stored_window.ts, late["ts_ms"])
    at_ok = np.minimum(at, max(len(stored_window) - 1, 0))
    present = (
        (at < len(stored_window)) & (stored_window.ts[at_ok] == late["ts_ms"])
        if len(stored_window)
        else (np.zeros(len(at), dtype=bool))
    )
    wins = ~present | (late["fetched_us"] > (stored_window.ints[at_ok, 1] if len(stored_window) else 0))
    if not wins.any():
        return None
    won = _as_window(_take(late, wins))
    keep = ~np.isin(stored_window.ts, won.ts)
    ints = np.concatenate([stored_window.ints[keep], won.ints])
    values = np.concatenate([stored_window.values[keep], won.values])
    order = np.argsort(ints[:, 0], kind="stable")
    return _seed(Window(ints[order], values[order]), horizon)


OUTPUT_COLUMNS = [
    "kind", "ts_ms", *BAR_VALUE_COLUMNS, "trades", "source", "fetched_us", "bar_changed", *INDICATOR_COLUMNS,
]  # fmt: skip
_EMPTY = {"kind": object, "source": object, "bar_changed": bool, "ts_ms": np.int64, "fetched_us": np.int64}


def _finish(parts: list[Columns]) -> Columns:
    parts = [part for part in parts if len(part["ts_ms"])]
    columns: Columns = {}
    for name in OUTPUT_COLUMNS:
        pieces = []
        for part in parts:
            if name in part:
                pieces.append(part[name])
            else:
                n = len(part["ts_ms"])
                pieces.append(np.full(n, None, dtype=object) if name == "source" else np.full(n, np.nan))
        if len(pieces) == 1:
            columns[name] = pieces[0]
        else:
            columns[name] = np.concatenate(pieces) if pieces else np.array([], dtype=_EMPTY.get(name, np.float64))
    if len(parts) > 1 and len(np.unique(columns["ts_ms"])) < len(columns["ts_ms"]):
        # A bar re-emitted by a later step: its last indicators count, and it changed if any step said so.
        # Bar values: the last step that carried them (a re-emitted window row has no open/high/low).
        out = pd.DataFrame(columns)
        by_ts = out.groupby("ts_ms")
        carried = {name: by_ts[name].transform("last") for name in (*BAR_VALUE_COLUMNS, "trades", "source")}
        changed = by_ts["bar_changed"].transform("any")
        out = out.assign(bar_changed=changed, **carried).drop_duplicates("ts_ms", keep="last").reset_index(drop=True)
        columns = {name: out[name].to_numpy() for name in OUTPUT_COLUMNS}
    return columns
