"""Batch helper: run one symbol's bars (a pandas frame) through ``SymbolIndicators``.

The same state machine as the stream, not a vectorised re-derivation: a frame computed here is
bit-identical to feeding the bars one by one, which is what keeps stream == batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .symbol import INDICATOR_COLUMNS, SymbolIndicators

__all__ = ["compute_frame", "compute_values", "REQUIRED_COLUMNS"]

#: Bar columns ``compute_frame`` reads; any other columns are carried through untouched.
REQUIRED_COLUMNS: tuple[str, ...] = ("ts", "close", "vwap", "volume")


def _float_column(frame: pd.DataFrame, name: str) -> list[float]:
    return pd.to_numeric(frame[name], errors="raise").to_numpy(dtype="float64", na_value=np.nan).tolist()


def compute_frame(
    df: pd.DataFrame, state: Mapping[str, Any] | SymbolIndicators | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Indicators for one symbol's bars, continuing from ``state``.

    ``df`` holds one symbol's bars in strictly increasing ``ts`` order (columns ``ts``, ``close``,
    ``vwap``, ``volume``; ``ts`` aware, naive-as-UTC, or ISO strings). ``state`` is a
    ``SymbolIndicators.to_state()`` dict, a ``SymbolIndicators`` (not modified) or ``None`` to
    start from nothing. Returns a copy of ``df`` with the ``INDICATOR_COLUMNS`` added (float64, NaN
    where the value is NULL; no indicator is ever NaN otherwise) and the state after its last bar.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in df.columns]
    if missing:
        raise ValueError(f"bars frame lacks column(s) {missing}; it needs {list(REQUIRED_COLUMNS)}")
    if isinstance(state, SymbolIndicators):
        indicators = state.copy()
    else:
        indicators = SymbolIndicators.from_state(state)

    if pd.api.types.is_numeric_dtype(df["ts"]):
        # pandas would read integers as nanoseconds; Polygon's `t` is milliseconds. Refuse both.
        raise TypeError("bars frame column 'ts' holds numbers; convert it to datetimes first")
    ts = pd.to_datetime(df["ts"], utc=True)
    if ts.isna().any():
        raise ValueError(f"bars frame has {int(ts.isna().sum())} bar(s) without a ts")
    micros = ts.dt.tz_localize(None).to_numpy(dtype="datetime64[us]").astype("int64")
    backwards = np.flatnonzero(np.diff(micros) <= 0)
    if backwards.size:
        row = int(backwards[0]) + 1
        raise ValueError(
            f"bars must be in strictly increasing ts order; row {row} ({ts.iloc[row]}) "
            f"does not follow row {row - 1} ({ts.iloc[row - 1]})"
        )
    values = compute_values(
        micros, _float_column(df, "close"), _float_column(df, "vwap"), _float_column(df, "volume"), indicators
    )
    out = df.assign(**{name: values[:, j] for j, name in enumerate(INDICATOR_COLUMNS)})
    return out, indicators.to_state()


def compute_values(
    ts_us: np.ndarray,
    close: Sequence[float],
    vwap: Sequence[float],
    volume: Sequence[float],
    indicators: SymbolIndicators,
) -> np.ndarray:
    """The loop of :func:`compute_frame` without pandas: bars as columns, ``indicators`` stepped in place.

    ``ts_us`` holds integer epoch microseconds (strictly increasing), the other columns floats (NaN
    for a missing VWAP or volume). Returns an n × ``len(INDICATOR_COLUMNS)`` float64 array, NaN
    where a value is NULL. For a symbol's whole series this is the batch's hot path.
    """
    # Integer microseconds / 1e6: the same bits as datetime.timestamp() in the per-bar path.
    epochs = (np.asarray(ts_us, dtype=np.int64) / 1e6).tolist()
    step = indicators.step
    rows = [
        step(ts_, close_, vwap_, volume_)
        for ts_, close_, vwap_, volume_ in zip(epochs, _floats(close), _floats(vwap), _floats(volume), strict=True)
    ]
    return np.array(rows, dtype="float64").reshape(len(rows), len(INDICATOR_COLUMNS))


def _floats(values: Sequence[float]) -> list[float]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)
