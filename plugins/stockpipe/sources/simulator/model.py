"""Deterministic price model of the market simulator (pure: no I/O, no clock, no global state).

Every number the simulator serves comes from here, as a function of ``(seed, symbol, day)`` and
the day's minute grid (which the clock decides: 24 h in demo mode, the NYSE session in nyse mode).
Same inputs, same bars, in every process and on every run: random generators are seeded from
SHA-256 of the inputs, never from Python's salted ``hash()``.

How a day is built, and why:

* **Anchor prices.** Each day has an anchor, the price at its first minute. The anchor is the
  symbol's base price times a slow, bounded drift (a sum of a few seeded sinusoids with periods of
  weeks to years) and a little day noise. It needs no history, so any date (a backfill five years
  back, tomorrow) costs the same, and consecutive anchors differ by about one percent like real
  overnight moves.
* **Intraday path.** The day's minute closes are a Brownian bridge in log price from today's
  anchor to tomorrow's anchor, so the day's last close *is* the next calendar day's open: in demo
  mode (24 h days) the series is continuous; in nyse mode there is an overnight/weekend gap.
* **Bars.** open = previous minute's close; high/low add seeded wicks beyond open/close; vwap lies
  inside [low, high]; volume follows a U-shaped intraday curve (busy open and close) with
  log-normal noise; trades = volume / a seeded average trade size. Prices are rounded to 4
  decimals, volume and trades are integers >= 1.

Known symbols (:func:`is_known_symbol`): ``^[A-Z]{1,5}(\\.[A-Z])?$`` (AAPL, BRK.B), except those
starting with ``ZZZ``, which are reserved as "unknown" so tests can exercise Polygon's not-found
behaviour.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np

KNOWN_SYMBOL_PATTERN = re.compile(r"^[A-Z]{1,5}(\.[A-Z])?$")
UNKNOWN_SYMBOL_PREFIX = "ZZZ"

PRICE_DECIMALS = 4
MINUTES_PER_SESSION = 390  # the volatility/volume scales are quoted per regular NYSE session

# Symbols the simulator names and lists in "grouped daily" (the whole-market endpoint).
# Any other known symbol works everywhere else, with a generic name.
COMPANY_NAMES: dict[str, str] = {
    "AAPL": "Apple Inc.",
    "GOOGL": "Alphabet Inc. Class A Common Stock",
    "MSFT": "Microsoft Corp",
    "AMZN": "Amazon.Com Inc",
    "TSLA": "Tesla, Inc. Common Stock",
    "META": "Meta Platforms, Inc. Class A Common Stock",
    "NVDA": "Nvidia Corp",
    "NFLX": "Netflix Inc",
    "JPM": "JPMorgan Chase & Co.",
    "KO": "Coca-Cola Co",
}
MARKET_UNIVERSE: tuple[str, ...] = tuple(COMPANY_NAMES)


DEFAULT_UNIVERSE_SIZE = 10_000
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@lru_cache(maxsize=4)
def market_universe(size: int = DEFAULT_UNIVERSE_SIZE) -> tuple[str, ...]:
    """The ``size`` symbols the whole-market endpoints serve (``/v3/reference/tickers``, the
    WebSocket's ``AM.*``), sorted: the named companies, then 1-4 letter tickers in a fixed
    pseudo-random order (the same on every run and for every seed; never a ``ZZZ`` one)."""
    named = set(MARKET_UNIVERSE)
    if size <= len(named):
        return tuple(sorted(MARKET_UNIVERSE[:size]))
    letters = np.array(list(_ALPHABET))
    counts = [26**n for n in range(1, 5)]
    order = np.random.default_rng(20261201).permutation(sum(counts))
    chosen = list(named)
    for index in order:
        index = int(index)
        length = 1
        while index >= counts[length - 1]:
            index -= counts[length - 1]
            length += 1
        digits = []
        for _ in range(length):
            index, digit = divmod(index, 26)
            digits.append(letters[digit])
        symbol = "".join(reversed(digits))
        if symbol in named or symbol.startswith(UNKNOWN_SYMBOL_PREFIX):
            continue
        chosen.append(symbol)
        if len(chosen) == size:
            break
    return tuple(sorted(chosen))


def is_known_symbol(symbol: str) -> bool:
    """Whether the simulated market lists ``symbol`` (case-sensitive, like Polygon)."""
    return bool(KNOWN_SYMBOL_PATTERN.match(symbol)) and not symbol.startswith(UNKNOWN_SYMBOL_PREFIX)


def company_name(symbol: str) -> str:
    return COMPANY_NAMES.get(symbol, f"{symbol} Simulated Holdings Inc.")


def seeded_rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``parts`` (stable across processes)."""
    text = ":".join(str(part) for part in (seed, *parts))
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


@dataclass(frozen=True)
class SymbolProfile:
    """The seeded character of one symbol: price level, volatility, liquidity."""

    base_price: float
    daily_volatility: float  # std. dev. of log return over one 390-minute session
    session_volume: float  # mean shares traded per 390-minute session
    mean_trade_size: float  # shares per trade
    drift_amplitudes: tuple[float, ...]
    drift_periods_days: tuple[float, ...]
    drift_phases: tuple[float, ...]
    shares_outstanding: int


@lru_cache(maxsize=1024)
def symbol_profile(seed: int, symbol: str) -> SymbolProfile:
    rng = seeded_rng(seed, symbol, "profile")
    waves = 4
    return SymbolProfile(
        base_price=float(math.exp(rng.uniform(math.log(15.0), math.log(600.0)))),
        daily_volatility=float(rng.uniform(0.008, 0.025)),
        session_volume=float(math.exp(rng.uniform(math.log(2e6), math.log(8e7)))),
        mean_trade_size=float(rng.uniform(60.0, 180.0)),
        # Amplitudes shrink with period so day-to-day anchor moves stay around one percent.
        drift_periods_days=tuple(float(p) for p in rng.uniform([15, 60, 250, 900], [40, 180, 600, 2000])),
        drift_amplitudes=tuple(float(a) for a in rng.uniform([0.02, 0.05, 0.10, 0.15], [0.04, 0.09, 0.18, 0.30])),
        drift_phases=tuple(float(p) for p in rng.uniform(0, 2 * math.pi, waves)),
        shares_outstanding=int(math.exp(rng.uniform(math.log(1e8), math.log(1.6e10)))),
    )


def anchor_price(seed: int, symbol: str, day: date) -> float:
    """Price at the first minute of ``day`` (and at the last close of the day before)."""
    profile = symbol_profile(seed, symbol)
    ordinal = day.toordinal()
    drift = sum(
        amplitude * math.sin(2 * math.pi * ordinal / period + phase)
        for amplitude, period, phase in zip(
            profile.drift_amplitudes, profile.drift_periods_days, profile.drift_phases, strict=True
        )
    )
    noise = seeded_rng(seed, symbol, day.isoformat(), "anchor").normal(0.0, 0.004)
    return profile.base_price * math.exp(drift + noise)


@dataclass(frozen=True)
class DayBars:
    """One symbol's minute bars for one day, as parallel read-only arrays in time order."""

    start_s: np.ndarray  # int64 unix seconds of each bar's start
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # int64
    vwap: np.ndarray
    trades: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.start_s)

    def select(self, mask: np.ndarray) -> DayBars:
        return DayBars(*(getattr(self, name)[mask] for name in _FIELDS))


_FIELDS = ("start_s", "open", "high", "low", "close", "volume", "vwap", "trades")


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


# ~90 kB per 24 h day: 256 days are a few weeks of a watchlist, enough for live polling.
@lru_cache(maxsize=256)
def day_bars(seed: int, symbol: str, day: date, first_minute_s: int, minutes: int) -> DayBars:
    """The ``minutes`` consecutive minute bars of ``symbol`` on ``day``, from ``first_minute_s``.

    The grid comes from the caller's clock; the bars depend on it (an early-close day is a shorter
    bridge) but never on the time of the query, so a bar, once closed, never changes.
    """
    if minutes <= 0:
        empty_f, empty_i = np.empty(0, dtype=float), np.empty(0, dtype=np.int64)
        return DayBars(empty_i, empty_f, empty_f, empty_f, empty_f, empty_i, empty_f, empty_i)

    profile = symbol_profile(seed, symbol)
    rng = seeded_rng(seed, symbol, day.isoformat(), "minutes")
    minute_sigma = profile.daily_volatility / math.sqrt(MINUTES_PER_SESSION)

    # Brownian bridge in log price: from today's anchor to tomorrow's, so days chain.
    start_log = math.log(anchor_price(seed, symbol, day))
    end_log = math.log(anchor_price(seed, symbol, date.fromordinal(day.toordinal() + 1)))
    walk = np.cumsum(rng.normal(0.0, minute_sigma, minutes))
    progress = np.arange(1, minutes + 1) / minutes
    close_log = start_log + walk - progress * walk[-1] + progress * (end_log - start_log)
    close_log[-1] = end_log  # exactly, not within rounding: the next day opens at this price

    close = np.round(np.exp(close_log), PRICE_DECIMALS)
    open_ = np.concatenate(([round(math.exp(start_log), PRICE_DECIMALS)], close[:-1]))
    upper_wick = np.abs(rng.normal(0.0, 0.6 * minute_sigma, minutes))
    lower_wick = np.abs(rng.normal(0.0, 0.6 * minute_sigma, minutes))
    # Rounding is monotonic, so high >= max(open, close) and low <= min(open, close) survive it.
    high = np.round(np.maximum(open_, close) * np.exp(upper_wick), PRICE_DECIMALS)
    low = np.round(np.minimum(open_, close) * np.exp(-lower_wick), PRICE_DECIMALS)
    middle = (open_ + close) / 2
    vwap = np.clip(np.round(middle + rng.normal(0.0, 1.0, minutes) * (high - low) / 6, PRICE_DECIMALS), low, high)

    # U-shaped intraday volume: heavy at the open and close, quiet at midday.
    position = (np.arange(minutes) + 0.5) / minutes
    shape = 1.0 + 3.0 * (2.0 * position - 1.0) ** 2
    per_minute = profile.session_volume / MINUTES_PER_SESSION
    volume = np.maximum(1, np.round(per_minute * shape / shape.mean() * rng.lognormal(0.0, 0.35, minutes)))
    trades = np.clip(np.round(volume / profile.mean_trade_size * rng.lognormal(0.0, 0.2, minutes)), 1, volume)

    start_s = first_minute_s + 60 * np.arange(minutes, dtype=np.int64)
    return DayBars(
        *(
            _frozen(array)
            for array in (
                start_s,
                open_,
                high,
                low,
                close,
                volume.astype(np.int64),
                vwap,
                trades.astype(np.int64),
            )
        )
    )


@dataclass(frozen=True)
class Aggregate:
    """Bars merged into one window (a day, an hour, n minutes)."""

    start_s: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    vwap: float
    trades: int
    bars: int  # how many minute bars were merged (Polygon's queryCount counts these)


def aggregate_buckets(bars: DayBars, bucket_start_s: np.ndarray) -> list[Aggregate]:
    """Merge time-ordered ``bars`` into one :class:`Aggregate` per distinct ``bucket_start_s``."""
    if len(bars) == 0:
        return []
    change = np.flatnonzero(np.diff(bucket_start_s)) + 1
    first = np.concatenate(([0], change))
    last = np.concatenate((change - 1, [len(bars) - 1]))
    volume = np.add.reduceat(bars.volume, first)
    notional = np.add.reduceat(bars.vwap * bars.volume, first)
    high = np.maximum.reduceat(bars.high, first)
    low = np.minimum.reduceat(bars.low, first)
    trades = np.add.reduceat(bars.trades, first)
    return [
        Aggregate(
            start_s=int(bucket_start_s[i]),
            open=float(bars.open[i]),
            high=float(high[k]),
            low=float(low[k]),
            close=float(bars.close[j]),
            volume=int(volume[k]),
            vwap=float(min(max(round(notional[k] / volume[k], PRICE_DECIMALS), low[k]), high[k])),
            trades=int(trades[k]),
            bars=int(j - i + 1),
        )
        for k, (i, j) in enumerate(zip(first, last, strict=True))
    ]


def concat(parts: list[DayBars]) -> DayBars:
    if len(parts) == 1:
        return parts[0]
    return DayBars(*(np.concatenate([getattr(part, name) for part in parts]) for name in _FIELDS))
