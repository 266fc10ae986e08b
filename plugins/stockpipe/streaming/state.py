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
emitted as ``late`` (stored by the sink, queued in ``ops.repair_queue`` for the backfill) and does
not touch the state. Invariant 1 holds because the window always equals the stored series' tail
and ``base`` is the exact state of everything before it. When the window outgrows the horizon its
oldest bars are folded into ``base`` (one indicator update per bar), never dropped.

A bar with an older ``fetched_at`` than the one applied, or an equal one, changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
import numpy as np
import pandas as pd

from stockpipe.indicators import INDICATOR_COLUMNS as _INDICATOR_COLUMNS
from stockpipe.indicators import SymbolIndicators

INDICATOR_COLUMNS = list(_INDICATOR_COLUMNS)
BAR_VALUE_COLUMNS = ["open", "high", "low", "close", "volume", "vwap"]
# What the window keeps per bar: ts and fetched_at (epoch ms / µs) and the values indicators read.
WINDOW_INT_COLUMNS = ["ts_ms", "fetched_us"]
WINDOW_COLUMNS = WINDOW_INT_COLUMNS + BAR_VALUE_COLUMNS

# Kinds of rows the operator emits (column ``kind``).
KIND_BAR = "bar"  # bar (if bar_changed) and its indicators: upsert both
KIND_LATE = "late"  # bar older than the recompute horizon: store it, queue it for the backfill
KIND_DEAD = "dead"  # invalid record: dead-letter topic
KIND_STATS = "stats"  # one per group and batch: how many input records it saw


def new_indicators() -> SymbolIndicators:
    return SymbolIndicators()


def load_indicators(serialised: str | None) -> SymbolIndicators:
    return SymbolIndicators() if serialised is None else SymbolIndicators.from_state(json.loads(serialised))


def dump_indicators(indicators: SymbolIndicators) -> str:
    return json.dumps(indicators.to_state(), separators=(",", ":"))


def _step(indicators: SymbolIndicators, ts_ms: int, values: np.ndarray) -> tuple[float | None, ...]:
    """One bar into ``indicators``; ``values`` follows :data:`BAR_VALUE_COLUMNS` (NaN vwap = none).

    ``ts_ms / 1000`` is the same double as ``epoch_seconds()`` of the bar's timestamp (both are the
    correctly rounded quotient of the same integer), so stream and batch see identical sessions.
    """
    vwap = float(values[5])
    return indicators.step(ts_ms / 1000.0, float(values[3]), None if vwap != vwap else vwap, float(values[4]))


@dataclass
class Window:
    """Columnar bars, ts ascending: ``ints`` (n × 2: ts_ms, fetched_us) and ``values`` (n × 6)."""

    ints: np.ndarray = field(default_factory=lambda: np.empty((0, 2), dtype=np.int64))
    values: np.ndarray = field(default_factory=lambda: np.empty((0, 6), dtype=np.float64))

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
        values = np.frombuffer(blob, dtype=np.float64, count=6 * n, offset=8 + 16 * n).reshape(n, 6)
        return cls(ints.copy(), values.copy())

    @classmethod
    def from_frame(cls, bars: pd.DataFrame) -> Window:
        ints = bars[WINDOW_INT_COLUMNS].to_numpy(dtype=np.int64).reshape(-1, 2)
        values = bars[BAR_VALUE_COLUMNS].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        return cls(ints.copy(), values.reshape(-1, 6).copy())


@dataclass
class SymbolState:
    window: Window = field(default_factory=Window)
    base: str | None = None
    last: str | None = None
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


def latest_per_ts(bars: pd.DataFrame) -> pd.DataFrame:
    """One bar per ts: the highest fetched_at; on a tie the first received (lowest partition/offset).

    Sorting on every column that can differ makes the result independent of the order Spark hands
    the rows over in, so a replayed batch produces the same output.
    """
    ordered = bars.sort_values(
        ["ts_ms", "fetched_us", "kpartition", "koffset"], ascending=[True, False, True, True], kind="mergesort"
    )
    return ordered.drop_duplicates("ts_ms", keep="first")


def advance(state: SymbolState, bars: pd.DataFrame, horizon: int) -> tuple[SymbolState, pd.DataFrame]:
    """Apply one batch of valid bars of one symbol; return the new state and the rows to write.

    ``bars`` has the parsed columns (``ts_ms``, ``fetched_us``, prices, ``trades``, ``source``,
    ``kpartition``, ``koffset``). The result has one row per bar to write: ``kind`` (bar/late),
    ``bar_changed`` (whether the bar itself must be upserted) and the indicator columns.
    """
    incoming = latest_per_ts(bars)
    window = state.window
    position = {int(ts): i for i, ts in enumerate(window.ts)}
    first_ts = int(window.ts[0]) if len(window) else None

    accepted: list[int] = []  # row positions in `incoming`
    late: list[int] = []
    inc_ts = incoming["ts_ms"].to_numpy(dtype=np.int64)
    inc_fetched = incoming["fetched_us"].to_numpy(dtype=np.int64)
    for row, (ts, fetched) in enumerate(zip(inc_ts.tolist(), inc_fetched.tolist(), strict=True)):
        at = position.get(ts)
        if at is not None:
            if fetched > int(window.ints[at, 1]):
                accepted.append(row)
        elif state.trimmed and first_ts is not None and ts < first_ts:
            late.append(row)
        else:
            accepted.append(row)

    frames = []
    if late:
        late_rows = incoming.iloc[late].copy()
        late_rows["kind"] = KIND_LATE
        late_rows["bar_changed"] = True
        frames.append(late_rows)

    if not accepted:
        return state, _finish(frames)

    new = incoming.iloc[accepted]
    new_window = Window.from_frame(new)
    changed_ts = set(new_window.ts.tolist())
    merged_ints = np.concatenate([window.ints, new_window.ints])
    merged_values = np.concatenate([window.values, new_window.values])
    # Replaced bars: drop the stored version, keep the new one (it comes second in `merged`).
    keep = np.ones(len(merged_ints), dtype=bool)
    keep[: len(window)] = [int(ts) not in changed_ts for ts in window.ts]
    merged_ints, merged_values = merged_ints[keep], merged_values[keep]
    order = np.argsort(merged_ints[:, 0], kind="stable")
    merged = Window(merged_ints[order], merged_values[order])

    first_changed = int(np.searchsorted(merged.ts, min(changed_ts)))
    if first_changed == len(window) and state.last is not None:
        # Only bars after the last one: continue from `last`.
        indicators = load_indicators(state.last)
    else:
        indicators = load_indicators(state.base)
        _replay(indicators, merged, 0, first_changed)
    values = _emit(indicators, merged, first_changed)

    emitted = pd.DataFrame(
        {
            "ts_ms": merged.ts[first_changed:],
            "fetched_us": merged.ints[first_changed:, 1],
            **{name: merged.values[first_changed:, j] for j, name in enumerate(BAR_VALUE_COLUMNS)},
        }
    )
    for j, name in enumerate(INDICATOR_COLUMNS):
        emitted[name] = values[:, j]
    emitted["bar_changed"] = emitted["ts_ms"].isin(changed_ts)
    extras = new.set_index("ts_ms")[["trades", "source"]]
    emitted = emitted.join(extras, on="ts_ms")
    emitted["kind"] = KIND_BAR
    frames.append(emitted)

    new_state = SymbolState(merged, state.base, dump_indicators(indicators), state.trimmed)
    return trim(new_state, horizon), _finish(frames)


def trim(state: SymbolState, horizon: int) -> SymbolState:
    """Fold the bars beyond the horizon into ``base``."""
    excess = len(state.window) - horizon
    if excess <= 0:
        return state
    indicators = load_indicators(state.base)
    _replay(indicators, state.window, 0, excess)
    window = Window(state.window.ints[excess:].copy(), state.window.values[excess:].copy())
    return SymbolState(window, dump_indicators(indicators), state.last, True)


def seed(history: pd.DataFrame, horizon: int) -> SymbolState:
    """The state of a symbol whose stored bars (ts ascending, window columns) are ``history``."""
    window = Window.from_frame(history)
    indicators = new_indicators()
    _replay(indicators, window, 0, len(window))
    state = SymbolState(window, None, dump_indicators(indicators), False)
    return trim(state, horizon)


OUTPUT_COLUMNS = [
    "kind", "ts_ms", *BAR_VALUE_COLUMNS, "trades", "source", "fetched_us", "bar_changed", *INDICATOR_COLUMNS,
]  # fmt: skip


def _finish(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame({name: [] for name in OUTPUT_COLUMNS})
    out = pd.concat(frames, ignore_index=True)
    for name in OUTPUT_COLUMNS:
        if name not in out:
            out[name] = np.nan
    return out[OUTPUT_COLUMNS]
