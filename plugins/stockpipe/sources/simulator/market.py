"""The simulated market as the API sees it at a given moment: closed bars only, plus injected
late bars and corrections, aggregated to any window.

The price model (:mod:`.model`) knows every bar of every day in advance; this layer decides which
of them exist yet. A bar starting at ``t`` exists once its minute has closed (``now >= t + 60``).
A *late* bar additionally waits ``delay_s``; a *corrected* bar is served with replaced values from
the moment the correction is registered. Time is always passed in (``now_s``), never read here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

import numpy as np

from .clock import MarketClock, TradingDay, new_york_day, new_york_midnight_s
from .model import Aggregate, DayBars, aggregate_buckets, concat, day_bars, is_known_symbol

Timespan = Literal["minute", "hour", "day"]
SUPPORTED_TIMESPANS: tuple[str, ...] = ("minute", "hour", "day")
EARLIEST_DAY = date(1990, 1, 1)  # ranges are clipped here so `from=0` doesn't walk back to 1970
MAX_DAYS_BACK_TO_LAST_SESSION = 15  # longer than any NYSE closure since 1990
CORRECTABLE_FIELDS = ("open", "high", "low", "close", "volume", "vwap", "trades")


@dataclass(frozen=True)
class AggregatePage:
    results: list[Aggregate]  # in the requested order
    has_more: bool
    # Where the next page starts, in ms: its `from` when ascending, its `to` when descending.
    resume_ms: int | None = None


@dataclass
class MarketAdjustments:
    """Injected data faults: late bars and corrections, keyed by (symbol, bar start seconds)."""

    late_delay_s: dict[tuple[str, int], float] = field(default_factory=dict)
    corrections: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)


class SimulatedMarket:
    def __init__(self, seed: int, clock: MarketClock) -> None:
        self.seed = seed
        self.clock = clock
        self._adjustments = MarketAdjustments()
        self._lock = threading.Lock()

    # --- injected data faults -----------------------------------------------------------------
    def add_late_bar(self, symbol: str, start_s: int, delay_s: float) -> None:
        """Withhold the bar until ``delay_s`` after its minute closes."""
        with self._lock:
            self._adjustments.late_delay_s[(symbol, _minute(start_s))] = delay_s

    def add_correction(self, symbol: str, start_s: int, values: dict[str, float] | None = None) -> None:
        """From now on, serve the bar with ``values`` replacing its own fields.

        Without values the close moves up 0.5 % (high follows if needed) and volume grows by 1 %,
        so the corrected bar is different but still consistent.
        """
        if values:
            unknown = set(values) - set(CORRECTABLE_FIELDS)
            if unknown:
                raise ValueError(f"cannot correct {sorted(unknown)}; correctable: {CORRECTABLE_FIELDS}")
        with self._lock:
            self._adjustments.corrections[(symbol, _minute(start_s))] = dict(values or {})

    def clear_adjustments(self) -> None:
        with self._lock:
            self._adjustments = MarketAdjustments()

    def describe_adjustments(self) -> dict:
        with self._lock:
            return {
                "late_bars": [
                    {"symbol": symbol, "ts": start_s, "delay_s": delay}
                    for (symbol, start_s), delay in sorted(self._adjustments.late_delay_s.items())
                ],
                "corrections": [
                    {"symbol": symbol, "ts": start_s, **values}
                    for (symbol, start_s), values in sorted(self._adjustments.corrections.items())
                ],
            }

    def adjustments_at(self, start_s: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """The injected faults of one minute: {symbol: late delay_s}, {symbol: corrected values}."""
        minute = _minute(start_s)
        with self._lock:
            late = {symbol: delay for (symbol, at), delay in self._adjustments.late_delay_s.items() if at == minute}
            fixed = {symbol: dict(v) for (symbol, at), v in self._adjustments.corrections.items() if at == minute}
        return late, fixed

    # --- minute bars --------------------------------------------------------------------------
    def trading_day(self, day: date) -> TradingDay:
        return self.clock.trading_day(day)

    def visible_bars(
        self, symbol: str, day: date, now_s: float, from_s: float | None = None, to_s: float | None = None
    ) -> DayBars:
        """The bars of ``day`` that the API serves at ``now_s``, optionally within [from_s, to_s]."""
        session = self.clock.trading_day(day)
        bars = day_bars(self.seed, symbol, day, session.first_minute_s, session.minutes)
        if len(bars) == 0:
            return bars
        starts = bars.start_s
        mask = starts + 60 <= now_s
        if from_s is not None:
            mask &= starts >= from_s
        if to_s is not None:
            mask &= starts <= to_s
        with self._lock:
            late = [
                (start, delay)
                for (late_symbol, start), delay in self._adjustments.late_delay_s.items()
                if late_symbol == symbol and session.first_minute_s <= start < session.end_s
            ]
            corrections = [
                (start, values)
                for (fixed_symbol, start), values in self._adjustments.corrections.items()
                if fixed_symbol == symbol and session.first_minute_s <= start < session.end_s
            ]
        for start, delay in late:
            if now_s < start + 60 + delay:
                mask &= starts != start
        visible = bars.select(mask)  # a copy: corrections below never touch the cached day
        for start, values in corrections:
            _apply_correction(visible, start, values)
        return visible

    # --- aggregates ---------------------------------------------------------------------------
    def aggregates(
        self,
        symbol: str,
        multiplier: int,
        timespan: Timespan,
        from_s: float,
        to_s: float,
        now_s: float,
        *,
        descending: bool = False,
        limit: int = 5000,
    ) -> AggregatePage:
        """Bars merged into ``multiplier`` × ``timespan`` windows, at most ``limit`` of them."""
        if not is_known_symbol(symbol):
            return AggregatePage([], False)
        window_of = _window_function(multiplier, timespan)
        parts = self._collect(symbol, from_s, to_s, now_s, descending, limit, window_of)
        if not parts:
            return AggregatePage([], False)
        bars = concat([bars for bars, _ in parts])
        merged = aggregate_buckets(bars, np.concatenate([windows for _, windows in parts]))
        if descending:
            merged.reverse()
        if len(merged) <= limit:
            return AggregatePage(merged, has_more=False)
        # Windows are contiguous, so the next page starts where the first unreturned window does.
        resume_ms = merged[limit - 1].start_s * 1000 - 1 if descending else merged[limit].start_s * 1000
        return AggregatePage(merged[:limit], has_more=True, resume_ms=resume_ms)

    def base_bars_bound(
        self, multiplier: int, timespan: Timespan, from_s: float, to_s: float, now_s: float, limit: int
    ) -> int:
        """At most how many minute bars :meth:`aggregates` generates for these arguments, computed
        without generating any: the days it would walk × the clock's bars per day, or, when fewer,
        the ``limit + 1`` windows it stops after (plus the rest of the day it stops on)."""
        span = self._day_span(from_s, to_s, now_s)
        if span is None:
            return 0
        per_day = self.clock.max_minutes_per_day
        days = (span[1] - span[0]).days + 1
        window_bars = multiplier * {"minute": 1, "hour": 60, "day": per_day}[timespan]
        return min(days * per_day, (limit + 1) * window_bars + per_day)

    def day_aggregate(self, symbol: str, day: date, now_s: float) -> Aggregate | None:
        bars = self.visible_bars(symbol, day, now_s)
        if len(bars) == 0:
            return None
        # Polygon stamps daily bars with the day's New York midnight.
        return aggregate_buckets(bars, np.full(len(bars), new_york_midnight_s(day), dtype=np.int64))[0]

    def latest_day_with_bars(self, symbol: str, now_s: float, before: date | None = None) -> date | None:
        """The most recent day (strictly before ``before``, if given) with at least one visible bar."""
        day = before - timedelta(days=1) if before else new_york_day(now_s)
        for _ in range(MAX_DAYS_BACK_TO_LAST_SESSION):
            if self.clock.trading_day(day).minutes and len(self.visible_bars(symbol, day, now_s)):
                return day
            day -= timedelta(days=1)
        return None

    def _collect(self, symbol, from_s, to_s, now_s, descending, limit, window_of) -> list[tuple]:
        """(visible bars, their window starts) day by day, in time order, stopping once more than
        ``limit`` windows are complete."""
        span = self._day_span(from_s, to_s, now_s)
        if span is None:
            return []
        first_day, last_day = span
        days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
        if descending:
            days.reverse()
        parts: list[tuple[DayBars, np.ndarray]] = []
        windows = 0
        edge_window = None  # the window at the growing end of what we have collected
        for day in days:
            bars = self.visible_bars(symbol, day, now_s, from_s, to_s)
            if len(bars) == 0:
                continue
            keys = window_of(bars.start_s, day)
            distinct = 1 + int(np.count_nonzero(np.diff(keys)))
            inner_edge, outer_edge = (keys[-1], keys[0]) if descending else (keys[0], keys[-1])
            windows += distinct - (1 if inner_edge == edge_window else 0)
            edge_window = outer_edge
            parts.append((bars, keys))
            # A window is complete once a later one has started, so limit+1 windows suffice.
            if windows > limit:
                break
        if descending:
            parts.reverse()
        return parts

    @staticmethod
    def _day_span(from_s: float, to_s: float, now_s: float) -> tuple[date, date] | None:
        """The New York days [first, last] that may hold bars in [from_s, to_s] closed by ``now_s``
        (none before :data:`EARLIEST_DAY`), or None."""
        last_start = min(to_s, now_s - 60)
        if from_s > last_start:
            return None
        first_day = max(new_york_day(max(from_s, 0)), EARLIEST_DAY)
        last_day = new_york_day(last_start) if last_start >= 0 else None
        if last_day is None or first_day > last_day:
            return None
        return first_day, last_day


def _minute(start_s: int) -> int:
    return int(start_s) // 60 * 60


def _window_function(multiplier: int, timespan: str):
    """``f(bar starts, their New York day) -> window starts``: minute and hour windows are aligned
    on the epoch, day windows start at New York midnight."""
    if multiplier < 1:
        raise ValueError("multiplier must be a positive integer")
    if timespan in ("minute", "hour"):
        width = 60 * multiplier * (60 if timespan == "hour" else 1)
        return lambda starts, day: starts - starts % width
    if timespan == "day":

        def day_window(starts: np.ndarray, day: date) -> np.ndarray:
            first_day = date.fromordinal(day.toordinal() - day.toordinal() % multiplier)
            return np.full(len(starts), new_york_midnight_s(first_day), dtype=np.int64)

        return day_window
    raise ValueError(f"timespan {timespan!r} is not simulated; use one of {', '.join(SUPPORTED_TIMESPANS)}")


def _apply_correction(bars: DayBars, start_s: int, values: dict[str, float]) -> None:
    hits = np.flatnonzero(bars.start_s == start_s)
    if not len(hits):
        return
    i = int(hits[0])
    if not values:
        corrected_close = round(float(bars.close[i]) * 1.005, 4)
        values = {
            "close": corrected_close,
            "high": max(float(bars.high[i]), corrected_close),
            "volume": int(bars.volume[i]) + max(1, int(bars.volume[i]) // 100),
        }
    for name, value in values.items():
        getattr(bars, name)[i] = value
