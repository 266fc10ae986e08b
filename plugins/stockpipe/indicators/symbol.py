"""All of one symbol's indicators, fed bar by bar, with a JSON-serialisable state.

The state after bar i is a pure function of bars 0..i, so ``SymbolIndicators.from_state(s)``
followed by the bars after ``s`` gives exactly what an uninterrupted run gives. That is the whole
recompute story for late or corrected bars: keep the state as of just before the earliest bar that
changed, restore it, replay the bars from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .session_vwap import SessionVWAP
from .talib_compat import EMA, MACD, RSI, SMA, BollingerBands

__all__ = ["INDICATOR_COLUMNS", "STATE_VERSION", "SymbolIndicators", "epoch_seconds"]

#: Output columns, in the order of ``market.indicators_1m`` (the PostgreSQL contract).
INDICATOR_COLUMNS: tuple[str, ...] = (
    "sma_5",
    "sma_20",
    "sma_50",
    "ema_12",
    "ema_26",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "vwap_session",
)

#: Bumped whenever the state layout or the arithmetic changes; old states are then refused.
STATE_VERSION = 1

_NO_MACD = (None, None, None)
_NO_BANDS = (None, None, None)

# The parts of a SymbolIndicators: attribute and state key -> (class, constructor arguments).
_PARTS: dict[str, tuple[type, tuple[Any, ...]]] = {
    "sma_5": (SMA, (5,)),
    "sma_20": (SMA, (20,)),
    "sma_50": (SMA, (50,)),
    "ema_12": (EMA, (12,)),
    "ema_26": (EMA, (26,)),
    "rsi_14": (RSI, (14,)),
    "macd": (MACD, (12, 26, 9)),
    "bbands": (BollingerBands, (20, 2.0)),
    "vwap_session": (SessionVWAP, ()),
}


def epoch_seconds(ts: Any) -> float:
    """UTC epoch seconds of a bar timestamp, at microsecond resolution.

    Accepts an aware ``datetime`` / ``pandas.Timestamp``, a naive one (taken as UTC, which is what
    Spark hands a pandas UDF when the session time zone is UTC) or an ISO-8601 string
    (``"2026-11-24T14:31:00Z"``). Numbers are refused: seconds and milliseconds look alike.
    Computed as integer microseconds / 1e6, the same bits ``datetime.timestamp()`` gives, so
    ``compute_frame``'s vectorised conversion agrees with this one.
    """
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    if not isinstance(ts, datetime):
        raise TypeError(f"bar ts must be a datetime, pandas Timestamp or ISO-8601 string, got {ts!r}")
    nanos = getattr(ts, "value", None)  # pandas.Timestamp: ns since the epoch, naive = UTC
    if type(nanos) is int:
        return (nanos // 1000) / 1e6
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


def _field(bar: Any, name: str) -> Any:
    if isinstance(bar, Mapping):
        return bar.get(name)
    return getattr(bar, name, None)


class SymbolIndicators:
    """The indicator set of ``market.indicators_1m`` for one symbol.

    Feed bars in strictly increasing ``ts`` order; ``update`` returns one row of
    ``INDICATOR_COLUMNS`` (``None`` where TA-Lib gives NaN).
    """

    __slots__ = (*_PARTS, "bars", "last_ts")

    sma_5: SMA
    sma_20: SMA
    sma_50: SMA
    ema_12: EMA
    ema_26: EMA
    rsi_14: RSI
    macd: MACD
    bbands: BollingerBands
    vwap_session: SessionVWAP

    def __init__(self) -> None:
        for name, (kind, args) in _PARTS.items():
            setattr(self, name, kind(*args))
        self.bars = 0
        self.last_ts: float | None = None  # epoch seconds of the last bar

    def update(self, bar: Any) -> dict[str, float | None]:
        """Consume one bar (mapping or object with ``ts``, ``close``, ``vwap``, ``volume``)."""
        values = self.step(
            epoch_seconds(_field(bar, "ts")), _field(bar, "close"), _field(bar, "vwap"), _field(bar, "volume")
        )
        return dict(zip(INDICATOR_COLUMNS, values, strict=True))

    def step(self, ts: float, close: float, vwap: float | None, volume: float | None) -> tuple[float | None, ...]:
        """The hot path of ``update``: ``ts`` in epoch seconds, values in ``INDICATOR_COLUMNS`` order."""
        try:
            close = float(close)
        except (TypeError, ValueError):
            raise ValueError(f"bar close must be a number, got {close!r}") from None
        if close - close != 0.0:
            raise ValueError(f"bar close must be finite, got {close!r}")
        last_ts = self.last_ts
        if last_ts is not None and ts <= last_ts:
            raise ValueError(
                f"bars must arrive in strictly increasing ts order: {ts} after {last_ts}; "
                "to apply a late or corrected bar, restore the state from before it and replay"
            )
        # The VWAP validates its inputs before it changes anything; after it nothing can fail,
        # so a rejected bar leaves the state untouched.
        vwap_session = self.vwap_session.update(ts, vwap, volume)
        self.last_ts = ts
        self.bars += 1
        macd = self.macd.update(close) or _NO_MACD
        bands = self.bbands.update(close) or _NO_BANDS
        return (
            self.sma_5.update(close),
            self.sma_20.update(close),
            self.sma_50.update(close),
            self.ema_12.update(close),
            self.ema_26.update(close),
            self.rsi_14.update(close),
            *macd,
            *bands,
            vwap_session,
        )

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable state (floats survive ``json.dumps``/``loads`` bit for bit)."""
        state: dict[str, Any] = {"v": STATE_VERSION, "bars": self.bars, "last_ts": self.last_ts}
        for name in _PARTS:
            state[name] = getattr(self, name).to_state()
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> SymbolIndicators:
        """Rebuild from ``to_state()`` output; ``None`` gives a fresh, empty set."""
        if state is None:
            return cls()
        if state.get("v") != STATE_VERSION:
            raise ValueError(
                f"indicator state version {state.get('v')!r} is not {STATE_VERSION}; "
                "recompute this symbol from its bars instead of restoring it"
            )
        indicators = cls.__new__(cls)
        for name, (kind, _) in _PARTS.items():
            setattr(indicators, name, kind.from_state(state[name]))
        indicators.bars = int(state["bars"])
        indicators.last_ts = None if state["last_ts"] is None else float(state["last_ts"])
        return indicators

    def copy(self) -> SymbolIndicators:
        """An independent copy (a few small deques; far cheaper than a state round-trip)."""
        twin = SymbolIndicators.__new__(SymbolIndicators)
        for name in _PARTS:
            setattr(twin, name, getattr(self, name).copy())
        twin.bars = self.bars
        twin.last_ts = self.last_ts
        return twin

    __copy__ = copy
    snapshot = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> SymbolIndicators:
        return self.copy()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SymbolIndicators):
            return NotImplemented
        return self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"SymbolIndicators(bars={self.bars}, last_ts={self.last_ts!r})"
