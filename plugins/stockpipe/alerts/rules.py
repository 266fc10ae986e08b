"""The alert rules' fixed vocabulary: parse a condition, validate a rule, say it back as text (pure).

A condition is written the way the CLI, the dashboard and the stored ``description`` say it:

======================================  =====================  ======================================
text                                    kind                   holds on a bar when
======================================  =====================  ======================================
``rsi_14 crosses below 30``             ``rsi_cross_below``    rsi_14 < 30
``rsi_14 crosses above 70``             ``rsi_cross_above``    rsi_14 > 70
``macd crosses above signal``           ``macd_cross_up``      macd > macd_signal
``macd crosses below signal``           ``macd_cross_down``    macd < macd_signal
``close crosses above sma_20``          ``close_cross_above``  close > sma_20 (any of :data:`LINES`)
``close crosses below bb_lower``        ``close_cross_below``  close < bb_lower
``close moves 2% within 15 minutes``    ``close_move``         abs(close / ref − 1) · 100 ≥ 2, ref = the
                                                               close of the last bar at or before
                                                               ts − 15 min
``volume >= 3x avg_20``                 ``volume_spike``       volume ≥ 3 · SMA(volume, 20) (the 20
                                                               bars ending with this one)
======================================  =====================  ======================================

A rule *fires* on a bar when its condition holds there and did not hold on the symbol's previous
stored bar, both bars having the values the condition reads (an indicator is NULL during its
lookback: no crossing from or into NULL). With a cool-down of C minutes, a firing less than C
minutes (bar time) after the rule's last firing for that symbol is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from stockpipe.contract import SYMBOL_RE

LINES = ("sma_5", "sma_20", "sma_50", "ema_12", "ema_26", "bb_upper", "bb_middle", "bb_lower")
KINDS = (
    "rsi_cross_below",
    "rsi_cross_above",
    "macd_cross_up",
    "macd_cross_down",
    "close_cross_above",
    "close_cross_below",
    "close_move",
    "volume_spike",
)
MAX_COOLDOWN_MINUTES = 10080  # a week
MAX_MOVE_MINUTES = 1440

EXAMPLES = (
    "rsi_14 crosses below 30",
    "rsi_14 crosses above 70",
    "macd crosses above signal",
    "macd crosses below signal",
    "close crosses above sma_20",
    "close crosses below bb_lower",
    "close moves 2% within 15 minutes",
    "volume >= 3x avg_20",
)


class RuleError(ValueError):
    """A rule that cannot be stored; the message is one sentence saying what to write instead."""


@dataclass(frozen=True)
class Condition:
    kind: str
    line: str | None = None
    level: float | None = None
    minutes: int | None = None

    @property
    def text(self) -> str:
        return describe(self.kind, self.line, self.level, self.minutes)


@dataclass
class Rule:
    """A stored rule (market.alert_rules)."""

    id: int
    symbol: str
    kind: str
    line: str | None = None
    level: float | None = None
    minutes: int | None = None
    cooldown_minutes: int = 0
    webhook_url: str | None = None
    enabled: bool = True
    created_at: Any = None

    @property
    def condition(self) -> Condition:
        return Condition(self.kind, self.line, self.level, self.minutes)

    @property
    def description(self) -> str:
        return self.condition.text


def _number(value: float) -> str:
    return f"{value:g}"


def describe(kind: str, line: str | None, level: float | None, minutes: int | None) -> str:
    """The condition as text (what :func:`parse_condition` reads back)."""
    if kind == "rsi_cross_below":
        return f"rsi_14 crosses below {_number(level)}"
    if kind == "rsi_cross_above":
        return f"rsi_14 crosses above {_number(level)}"
    if kind == "macd_cross_up":
        return "macd crosses above signal"
    if kind == "macd_cross_down":
        return "macd crosses below signal"
    if kind == "close_cross_above":
        return f"close crosses above {line}"
    if kind == "close_cross_below":
        return f"close crosses below {line}"
    if kind == "close_move":
        return f"close moves {_number(level)}% within {minutes} minutes"
    if kind == "volume_spike":
        return f"volume >= {_number(level)}x avg_20"
    raise RuleError(f"unknown condition kind {kind!r}; use one of {', '.join(KINDS)}.")


_NUM = r"(\d+(?:\.\d+)?)"
_PATTERNS = [
    (re.compile(rf"rsi(?:_?14)?\s+crosses\s+(below|above)\s+{_NUM}"), "rsi"),
    (re.compile(r"macd\s+crosses\s+(above|below|up|down)(?:\s+(?:its\s+)?signal)?"), "macd"),
    (re.compile(r"close\s+crosses\s+(above|below)\s+([a-z_0-9]+)"), "cross"),
    (re.compile(rf"close\s+moves\s+{_NUM}\s*%\s+(?:with)?in\s+(\d+)\s*(?:minutes?|mins?|m)"), "move"),
    (re.compile(rf"volume\s*>=\s*{_NUM}\s*x\s*(?:its\s+)?(?:avg_?20|average|20-bar average)"), "volume"),
]


def parse_condition(text: str) -> Condition:
    """One of the vocabulary's conditions (see the module docstring), or :class:`RuleError`."""
    normalised = " ".join(str(text).strip().lower().split())
    for pattern, family in _PATTERNS:
        match = pattern.fullmatch(normalised)
        if not match:
            continue
        if family == "rsi":
            level = float(match.group(2))
            if not 0 < level < 100:
                raise RuleError(f"an RSI level must lie between 0 and 100 (exclusive), not {_number(level)}.")
            return Condition("rsi_cross_below" if match.group(1) == "below" else "rsi_cross_above", level=level)
        if family == "macd":
            return Condition("macd_cross_up" if match.group(1) in ("above", "up") else "macd_cross_down")
        if family == "cross":
            line = match.group(2)
            if line not in LINES:
                raise RuleError(f"close can cross one of {', '.join(LINES)}, not {line!r}.")
            return Condition("close_cross_above" if match.group(1) == "above" else "close_cross_below", line=line)
        if family == "move":
            level, minutes = float(match.group(1)), int(match.group(2))
            if level <= 0:
                raise RuleError("a move must be more than 0 %.")
            if not 1 <= minutes <= MAX_MOVE_MINUTES:
                raise RuleError(f"a move's window must be 1 to {MAX_MOVE_MINUTES} minutes, not {minutes}.")
            return Condition("close_move", level=level, minutes=minutes)
        level = float(match.group(1))
        if level <= 0:
            raise RuleError("a volume factor must be more than 0.")
        return Condition("volume_spike", level=level)
    raise RuleError(f"unknown condition {text!r}; write one like: {'; '.join(EXAMPLES)}.")


def check_symbol(symbol: str) -> str:
    value = str(symbol).strip().upper()
    if value != "*" and not SYMBOL_RE.fullmatch(value):
        raise RuleError(f"symbol {symbol!r} is not a ticker (like AAPL) nor * (every streamed symbol).")
    return value


def check_cooldown(minutes: Any) -> int:
    try:
        value = int(minutes)
    except (TypeError, ValueError):
        raise RuleError(f"the cool-down must be a whole number of minutes, not {minutes!r}.") from None
    if not 0 <= value <= MAX_COOLDOWN_MINUTES:
        raise RuleError(f"the cool-down must be 0 to {MAX_COOLDOWN_MINUTES} minutes, not {value}.")
    return value


def check_webhook(url: str | None) -> str | None:
    if url is None or not str(url).strip():
        return None
    value = str(url).strip()
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise RuleError(f"the webhook must be an http(s):// URL, not {value!r}.")
    return value
