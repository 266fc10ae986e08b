"""Incremental indicators that reproduce TA-Lib's output bar by bar, bit for bit.

Each class consumes one close at a time and returns what ``talib.<FUNC>(closes)[-1]`` returns for
the series seen so far (``None`` where TA-Lib gives NaN). TA-Lib's value at bar i depends only on
bars 0..i (default compatibility, unstable period 0), so an incremental state machine can equal it.
They mirror the C code that the pinned ``ta-lib`` wheel (TA-Lib C 0.8.1) runs, operation for
operation: the same running sums, updated in the same order, from the same 0.0 start, rounded the
same way. The result is the same bits as TA-Lib, not values within a tolerance, so the stream, a
batch recomputation and TA-Lib agree exactly however long the series is.

What TA-Lib 0.8.1 does, and these classes reproduce on purpose (checked against the wheel, not
just read in the source, which keeps changing):

* SMA: one running sum that is never re-summed: ``total += new``, emit ``total / n``, then
  ``total -= oldest``. Its float drift is part of TA-Lib's output.
* EMA(n): seeded with the mean of the first n inputs; then ``fma(x - prev, k, prev)``,
  ``k = 2 / (n + 1)``. The compiled library fuses that multiply-add (see ``_fma``).
* RSI: seeds the averages with the sum of the first n gains / losses times ``1/n``; the Wilder step
  is ``avg = (avg * (n - 1) + delta) * (1/n)``, gain and loss split without a branch. The output is
  0.0 when ``avg_gain + avg_loss`` is exactly 0 (a flat series) and exactly 100.0 with no losses.
  Older TA-Lib zeroed anything under 1e-8 instead, which zeroed finely quoted instruments.
* MACD: the fast EMA is seeded on the ``fast`` closes that end where the slow seed ends
  (bar slow-1), not on the first ``fast`` closes as ``talib.EMA`` does, so early on it differs
  from EMA(12). The signal EMA is seeded with the mean of the first ``signal`` MACD values; all
  three outputs start at bar ``slow + signal - 2`` (33 for 12/26/9).
* BBANDS with an SMA middle band: the middle band is the SMA (bit-identical); the variance comes
  from running sums of deviations from a *shift* (initially the first close, re-anchored to the
  window mean by a fresh two-pass "reseed" every 32 windows, or when cancellation or an outlier
  leaving the window would cost digits). A reseed's variance under 1e-12 of its mean squared
  deviation is floored to 0, so a flat window has width exactly 0; otherwise the square root is
  taken unconditionally (no fixed 1e-8 floor any more: fine ticks keep their width).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from ._fma import fma

__all__ = ["SMA", "EMA", "RSI", "MACD", "BollingerBands"]


def _check_period(name: str, period: int, minimum: int) -> int:
    if not isinstance(period, int) or isinstance(period, bool) or period < minimum:
        raise ValueError(f"{name} period must be an integer >= {minimum}, got {period!r}")
    return period


def _check_kind(state: dict[str, Any], kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"not a {kind} state: kind={state.get('kind')!r}")


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


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
    def window(self) -> deque[float]:
        """The last ``period`` values (fewer before the first output). Read-only by convention."""
        return self._window

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
        # Period 1 is left out: TA-Lib special-cases it as a plain copy of the input.
        self.period = _check_period("EMA", period, 2)
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
            prev = fma(value - prev, self.k, prev)
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
        ema._value = _opt_float(state["value"])
        return ema

    def copy(self) -> EMA:
        twin = EMA.__new__(EMA)
        twin.period, twin.k = self.period, self.k
        twin._count, twin._seed_total, twin._value = self._count, self._seed_total, self._value
        return twin

    __copy__ = copy


class RSI:
    """Wilder's relative strength index (``talib.RSI``, unstable period 0)."""

    __slots__ = ("period", "_inv_period", "_prev", "_changes", "_gain", "_loss")

    def __init__(self, period: int = 14) -> None:
        self.period = _check_period("RSI", period, 2)
        self._inv_period = 1.0 / period
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
        gain_delta = change if change > 0.0 else 0.0
        if self._changes < self.period:
            # Seed: the first averages are the sums of the first `period` gains/losses over period.
            self._gain += gain_delta
            self._loss += gain_delta - change
            self._changes += 1
            if self._changes < self.period:
                return None
            gain = self._gain * self._inv_period
            loss = self._loss * self._inv_period
        else:
            smoothing = self.period - 1
            gain = (self._gain * smoothing + gain_delta) * self._inv_period
            loss = (self._loss * smoothing + (gain_delta - change)) * self._inv_period
        self._gain = gain
        self._loss = loss
        total = gain + loss
        if total > 0.0:
            return 100.0 * (gain / total)
        return 0.0

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
        rsi._prev = _opt_float(state["prev"])
        rsi._changes = int(state["changes"])
        rsi._gain = float(state["gain"])
        rsi._loss = float(state["loss"])
        return rsi

    def copy(self) -> RSI:
        twin = RSI.__new__(RSI)
        twin.period, twin._inv_period, twin._prev = self.period, self._inv_period, self._prev
        twin._changes, twin._gain, twin._loss = self._changes, self._gain, self._loss
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
            fast_ema = self._fast_ema
            fast_ema = fma(value - fast_ema, self._fast_k, fast_ema)
            slow_ema = fma(value - slow_ema, self._slow_k, slow_ema)
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
            signal_ema = fma(macd - signal_ema, self._signal_k, signal_ema)
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


# BBANDS variance reseed policy, TA-Lib 0.8.1 (ta_codegen/input/var/var.c, #118 and #243).
_RESEED_EVERY_WINDOWS = 32
_RESEED_CANCELLATION_RATIO = 0.000001
_RESEED_OUTLIER_RATIO = 1000000.0
_VARIANCE_FLOOR_RATIO = 0.000000000001


class BollingerBands:
    """Bollinger Bands around an SMA (``talib.BBANDS(close, period, nbdev, nbdev, MA_Type.SMA)``).

    ``update`` returns ``(upper, middle, lower)`` or ``None``; the middle band is bit-identical to
    ``SMA(period)``. The standard deviation is the population one (divide by ``period``).
    """

    __slots__ = (
        "period",
        "nbdev",
        "_inv_period",
        "_sma",
        "_shift",
        "_dev_total",
        "_dev_sq_total",
        "_bars_to_reseed",
    )

    def __init__(self, period: int = 20, nbdev: float = 2.0) -> None:
        self.period = _check_period("Bollinger Bands", period, 2)
        self.nbdev = float(nbdev)
        self._inv_period = 1.0 / period
        self._sma = SMA(period)
        self._shift: float | None = None
        self._dev_total = 0.0
        self._dev_sq_total = 0.0
        self._bars_to_reseed = _RESEED_EVERY_WINDOWS * period

    def update(self, value: float) -> tuple[float, float, float] | None:
        middle = self._sma.update(value)
        shift = self._shift
        if shift is None:
            shift = self._shift = value
        deviation = value - shift
        self._dev_total += deviation
        self._dev_sq_total += deviation * deviation
        if middle is None:
            return None
        inv_period = self._inv_period
        mean_dev = self._dev_total * inv_period
        variance = self._dev_sq_total * inv_period - mean_dev * mean_dev
        # Take the oldest value out now, as TA-Lib does, before deciding whether to reseed.
        window = self._sma.window
        deviation = window[0] - shift
        self._dev_total -= deviation
        deviation *= deviation
        self._dev_sq_total -= deviation
        self._bars_to_reseed -= 1
        if (
            variance < _RESEED_CANCELLATION_RATIO * (self._dev_sq_total * inv_period)
            or deviation > _RESEED_OUTLIER_RATIO * self._dev_sq_total
            or self._bars_to_reseed <= 0
        ):
            variance = self._reseed(window)
        width = (math.sqrt(variance) if variance != 0.0 else 0.0) * self.nbdev
        return middle + width, middle, middle - width

    def _reseed(self, window: deque[float]) -> float:
        """Re-anchor the shift on the window mean and rebuild the sums by a fresh two-pass."""
        inv_period = self._inv_period
        self._bars_to_reseed = _RESEED_EVERY_WINDOWS * self.period
        total = 0.0
        for value in window:
            total += value
        shift = self._shift = total * inv_period
        dev_total = 0.0
        dev_sq_total = 0.0
        for value in window:
            deviation = value - shift
            dev_total += deviation
            dev_sq_total += deviation * deviation
        mean_dev = dev_total * inv_period
        variance = dev_sq_total * inv_period - mean_dev * mean_dev
        if variance < _VARIANCE_FLOOR_RATIO * (dev_sq_total * inv_period):
            variance = 0.0
        deviation = window[0] - shift
        self._dev_total = dev_total - deviation
        self._dev_sq_total = dev_sq_total - deviation * deviation
        return variance

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": "BBANDS",
            "period": self.period,
            "nbdev": self.nbdev,
            "sma": self._sma.to_state(),
            "shift": self._shift,
            "dev_total": self._dev_total,
            "dev_sq_total": self._dev_sq_total,
            "bars_to_reseed": self._bars_to_reseed,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BollingerBands:
        _check_kind(state, "BBANDS")
        bands = cls(state["period"], state["nbdev"])
        bands._sma = SMA.from_state(state["sma"])
        bands._shift = _opt_float(state["shift"])
        bands._dev_total = float(state["dev_total"])
        bands._dev_sq_total = float(state["dev_sq_total"])
        bands._bars_to_reseed = int(state["bars_to_reseed"])
        return bands

    def copy(self) -> BollingerBands:
        twin = BollingerBands.__new__(BollingerBands)
        for name in BollingerBands.__slots__:
            setattr(twin, name, getattr(self, name))
        twin._sma = self._sma.copy()
        return twin

    __copy__ = copy
