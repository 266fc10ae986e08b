"""Incremental indicators that reproduce TA-Lib's output bar by bar.

Each class consumes one close at a time and returns what ``talib.<FUNC>(closes)[-1]`` would return
for the series seen so far (``None`` where TA-Lib gives NaN). They mirror TA-Lib's C code
(``src/ta_func/ta_SMA.c``, ``ta_EMA.c``, ``ta_RSI.c``, ``ta_MACD.c``, ``ta_BBANDS.c``) operation
for operation: the same running sums, updated in the same order, from the same 0.0 start. IEEE
doubles then give the same bits as TA-Lib, not just values within a tolerance, so the stream and a
batch recomputation agree exactly however long the series is.

TA-Lib details these classes reproduce on purpose:

* Running sums are never re-summed from the window: ``total += new``, emit ``total / n``, then
  ``total -= oldest``. The float error of that sum is part of TA-Lib's output.
* EMA(n) is seeded with the mean of its first n inputs; then ``(x - prev) * k + prev`` with
  ``k = 2 / (n + 1)``.
* RSI returns 0.0 (not NaN, not 50) when ``avg_gain + avg_loss`` is within 1e-8 of zero
  (``TA_IS_ZERO``), so a flat series, or one whose moves are all below ~1e-8, reads 0. With no
  losses it reads exactly 100.0.
* MACD seeds its fast EMA on the ``fast`` closes that end where the slow seed ends (bar slow-1),
  not on the first ``fast`` closes as ``talib.EMA`` does, so its fast line differs from
  ``EMA(12)`` early on. The signal EMA is seeded with the mean of the first ``signal`` MACD values;
  all three outputs start at bar ``slow + signal - 2`` (33 for 12/26/9).
* BBANDS with an SMA middle band computes the variance as ``mean(x²) - sma²`` from its own running
  sum of squares, and treats a variance below 1e-8 (``TA_IS_ZERO_OR_NEG``) as 0: a standard
  deviation under 1e-4 collapses both bands onto the middle one. That also absorbs the
  cancellation noise of ``mean(x²) - sma²`` at high price levels.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["SMA", "EMA", "RSI", "MACD", "BollingerBands"]

# TA-Lib's TA_IS_ZERO / TA_IS_ZERO_OR_NEG threshold (ta_func/ta_utility.h).
_TA_EPSILON = 0.00000001


def _check_period(name: str, period: int, minimum: int) -> int:
    if not isinstance(period, int) or isinstance(period, bool) or period < minimum:
        raise ValueError(f"{name} period must be an integer >= {minimum}, got {period!r}")
    return period


def _check_kind(state: dict[str, Any], kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"not a {kind} state: kind={state.get('kind')!r}")


class SMA:
    """Simple moving average of the last ``period`` values (``talib.SMA``)."""

    __slots__ = ("period", "_window", "_total")

    def __init__(self, period: int) -> None:
        self.period = _check_period("SMA", period, 1)
        self._window: deque[float] = deque(maxlen=period)
        self._total = 0.0

    def update(self, value: float) -> float | None:
        window = self._window
        self._total += value
        window.append(value)
        if len(window) < self.period:
            return None
        mean = self._total / self.period
        # The oldest value leaves the sum now; the deque drops it on the next append.
        self._total -= window[0]
        return mean

    @property
    def oldest(self) -> float:
        """The value that left the running sum on the last update that returned a mean."""
        return self._window[0]

    def to_state(self) -> dict[str, Any]:
        return {"kind": "SMA", "period": self.period, "total": self._total, "window": list(self._window)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SMA:
        _check_kind(state, "SMA")
        sma = cls(state["period"])
        sma._total = float(state["total"])
        sma._window.extend(float(v) for v in state["window"])
        return sma

    def copy(self) -> SMA:
        twin = SMA.__new__(SMA)
        twin.period = self.period
        twin._window = self._window.copy()
        twin._total = self._total
        return twin

    __copy__ = copy


class EMA:
    """Exponential moving average seeded with the SMA of the first ``period`` values (``talib.EMA``)."""

    __slots__ = ("period", "k", "_count", "_seed_total", "_value")

    def __init__(self, period: int) -> None:
        self.period = _check_period("EMA", period, 1)
        self.k = 2.0 / (period + 1)
        self._count = 0
        self._seed_total = 0.0
        self._value: float | None = None

    def update(self, value: float) -> float | None:
        prev = self._value
        if prev is None:
            self._seed_total += value
            self._count += 1
            if self._count < self.period:
                return None
            prev = self._seed_total / self.period
        else:
            prev = (value - prev) * self.k + prev
        self._value = prev
        return prev

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": "EMA",
            "period": self.period,
            "count": self._count,
            "seed_total": self._seed_total,
            "value": self._value,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EMA:
        _check_kind(state, "EMA")
        ema = cls(state["period"])
        ema._count = int(state["count"])
        ema._seed_total = float(state["seed_total"])
        ema._value = None if state["value"] is None else float(state["value"])
        return ema

    def copy(self) -> EMA:
        twin = EMA.__new__(EMA)
        twin.period, twin.k = self.period, self.k
        twin._count, twin._seed_total, twin._value = self._count, self._seed_total, self._value
        return twin

    __copy__ = copy


class RSI:
    """Wilder's RSI (``talib.RSI`` with unstable period 0, default compatibility)."""

    __slots__ = ("period", "_prev", "_changes", "_gain", "_loss")

    def __init__(self, period: int = 14) -> None:
        self.period = _check_period("RSI", period, 2)
        self._prev: float | None = None
        self._changes = 0
        self._gain = 0.0
        self._loss = 0.0

    def update(self, value: float) -> float | None:
        prev = self._prev
        self._prev = value
        if prev is None:
            return None
        change = value - prev
        period = self.period
        if self._changes < period:
            # Seed: the first averages are plain means of the first `period` changes.
            if change < 0.0:
                self._loss -= change
            else:
                self._gain += change
            self._changes += 1
            if self._changes < period:
                return None
            loss = self._loss / period
            gain = self._gain / period
        else:
            loss = self._loss * (period - 1)
            gain = self._gain * (period - 1)
            if change < 0.0:
                loss -= change
            else:
                gain += change
            loss /= period
            gain /= period
        self._loss = loss
        self._gain = gain
        total = gain + loss
        if -_TA_EPSILON < total < _TA_EPSILON:
            return 0.0
        return 100.0 * (gain / total)

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": "RSI",
            "period": self.period,
            "prev": self._prev,
            "changes": self._changes,
            "gain": self._gain,
            "loss": self._loss,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RSI:
        _check_kind(state, "RSI")
        rsi = cls(state["period"])
        rsi._prev = None if state["prev"] is None else float(state["prev"])
        rsi._changes = int(state["changes"])
        rsi._gain = float(state["gain"])
        rsi._loss = float(state["loss"])
        return rsi

    def copy(self) -> RSI:
        twin = RSI.__new__(RSI)
        twin.period, twin._prev, twin._changes = self.period, self._prev, self._changes
        twin._gain, twin._loss = self._gain, self._loss
        return twin

    __copy__ = copy


class MACD:
    """MACD line, signal and histogram (``talib.MACD``); ``update`` returns the triple or ``None``."""

    __slots__ = (
        "fast",
        "slow",
        "signal",
        "_fast_k",
        "_slow_k",
        "_signal_k",
        "_count",
        "_fast_total",
        "_slow_total",
        "_fast_ema",
        "_slow_ema",
        "_signal_count",
        "_signal_total",
        "_signal_ema",
    )

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self.fast = _check_period("MACD fast", fast, 2)
        self.slow = _check_period("MACD slow", slow, 2)
        self.signal = _check_period("MACD signal", signal, 1)
        if slow < fast:
            raise ValueError(f"MACD slow period ({slow}) must not be shorter than the fast one ({fast})")
        self._fast_k = 2.0 / (fast + 1)
        self._slow_k = 2.0 / (slow + 1)
        self._signal_k = 2.0 / (signal + 1)
        self._count = 0
        self._fast_total = 0.0
        self._slow_total = 0.0
        self._fast_ema: float | None = None
        self._slow_ema: float | None = None
        self._signal_count = 0
        self._signal_total = 0.0
        self._signal_ema: float | None = None

    def update(self, value: float) -> tuple[float, float, float] | None:
        slow_ema = self._slow_ema
        if slow_ema is None:
            # Both seed windows end on bar slow-1: the fast one is the last `fast` of the slow one.
            self._count += 1
            self._slow_total += value
            if self._count > self.slow - self.fast:
                self._fast_total += value
            if self._count < self.slow:
                return None
            slow_ema = self._slow_total / self.slow
            fast_ema = self._fast_total / self.fast
        else:
            fast_ema = (value - self._fast_ema) * self._fast_k + self._fast_ema
            slow_ema = (value - slow_ema) * self._slow_k + slow_ema
        self._fast_ema = fast_ema
        self._slow_ema = slow_ema
        macd = fast_ema - slow_ema
        signal_ema = self._signal_ema
        if signal_ema is None:
            self._signal_total += macd
            self._signal_count += 1
            if self._signal_count < self.signal:
                return None
            signal_ema = self._signal_total / self.signal
        else:
            signal_ema = (macd - signal_ema) * self._signal_k + signal_ema
        self._signal_ema = signal_ema
        return macd, signal_ema, macd - signal_ema

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": "MACD",
            "fast": self.fast,
            "slow": self.slow,
            "signal": self.signal,
            "count": self._count,
            "fast_total": self._fast_total,
            "slow_total": self._slow_total,
            "fast_ema": self._fast_ema,
            "slow_ema": self._slow_ema,
            "signal_count": self._signal_count,
            "signal_total": self._signal_total,
            "signal_ema": self._signal_ema,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MACD:
        _check_kind(state, "MACD")
        macd = cls(state["fast"], state["slow"], state["signal"])
        macd._count = int(state["count"])
        macd._fast_total = float(state["fast_total"])
        macd._slow_total = float(state["slow_total"])
        macd._fast_ema = _opt_float(state["fast_ema"])
        macd._slow_ema = _opt_float(state["slow_ema"])
        macd._signal_count = int(state["signal_count"])
        macd._signal_total = float(state["signal_total"])
        macd._signal_ema = _opt_float(state["signal_ema"])
        return macd

    def copy(self) -> MACD:
        twin = MACD.__new__(MACD)
        for name in MACD.__slots__:
            setattr(twin, name, getattr(self, name))
        return twin

    __copy__ = copy


class BollingerBands:
    """Bollinger Bands around an SMA (``talib.BBANDS(close, period, nbdev, nbdev, MA_Type.SMA)``).

    ``update`` returns ``(upper, middle, lower)`` or ``None``; the middle band is bit-identical to
    ``SMA(period)``.
    """

    __slots__ = ("period", "nbdev", "_sma", "_total_sq")

    def __init__(self, period: int = 20, nbdev: float = 2.0) -> None:
        self.period = _check_period("Bollinger Bands", period, 2)
        self.nbdev = float(nbdev)
        self._sma = SMA(period)
        self._total_sq = 0.0

    def update(self, value: float) -> tuple[float, float, float] | None:
        middle = self._sma.update(value)
        self._total_sq += value * value
        if middle is None:
            return None
        variance = self._total_sq / self.period
        oldest = self._sma.oldest
        self._total_sq -= oldest * oldest
        variance -= middle * middle
        deviation = 0.0 if variance < _TA_EPSILON else math.sqrt(variance) * self.nbdev
        return middle + deviation, middle, middle - deviation

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": "BBANDS",
            "period": self.period,
            "nbdev": self.nbdev,
            "total_sq": self._total_sq,
            "sma": self._sma.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BollingerBands:
        _check_kind(state, "BBANDS")
        bands = cls(state["period"], state["nbdev"])
        bands._total_sq = float(state["total_sq"])
        bands._sma = SMA.from_state(state["sma"])
        return bands

    def copy(self) -> BollingerBands:
        twin = BollingerBands.__new__(BollingerBands)
        twin.period, twin.nbdev, twin._total_sq = self.period, self.nbdev, self._total_sq
        twin._sma = self._sma.copy()
        return twin

    __copy__ = copy


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
