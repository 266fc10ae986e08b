"""When the simulated market trades: the minute grid of each day and the market status.

Two modes (``--clock``):

* ``demo`` — always open: every minute of every day has a bar, 24 h a day, weekends included, so
  a newcomer sees live data at any hour. Days are New York calendar days (like Polygon's dates).
* ``nyse`` — the real NYSE calendar (exchange-calendars ``XNYS``): bars only for session minutes,
  09:30–16:00 ET, 13:00 on early-close days, none on weekends and holidays. Dates outside the
  calendar's range (before 1990, more than two years ahead) have no session.

A clock never reads the time itself: callers pass ``now`` (unix seconds), so tests can freeze it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import cached_property, lru_cache
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

import pandas as pd

NEW_YORK = ZoneInfo("America/New_York")
PRE_MARKET_START = time(4, 0)
AFTER_HOURS_END = time(20, 0)

ClockMode = Literal["demo", "nyse"]


@dataclass(frozen=True)
class TradingDay:
    """The minute grid of one New York calendar day (``minutes == 0``: no trading)."""

    day: date
    first_minute_s: int
    minutes: int

    @property
    def end_s(self) -> int:
        """End of the last bar (the session close)."""
        return self.first_minute_s + 60 * self.minutes


def new_york_day(unix_s: float) -> date:
    return datetime.fromtimestamp(unix_s, NEW_YORK).date()


def new_york_midnight_s(day: date) -> int:
    return int(datetime.combine(day, time(0), NEW_YORK).timestamp())


def rfc3339_new_york(unix_s: float) -> str:
    return datetime.fromtimestamp(int(unix_s), NEW_YORK).isoformat()


class MarketClock(Protocol):
    mode: ClockMode

    def trading_day(self, day: date) -> TradingDay: ...

    def market_status(self, now_s: float) -> dict: ...

    def upcoming_holidays(self, now_s: float) -> list[dict]: ...


class DemoClock:
    """Market always open, every minute of every (New York) day."""

    mode: ClockMode = "demo"

    @lru_cache(maxsize=4096)  # noqa: B019 - one clock per server, lives as long as it
    def trading_day(self, day: date) -> TradingDay:
        start = new_york_midnight_s(day)
        end = new_york_midnight_s(day + timedelta(days=1))  # 23 h or 25 h on DST change days
        return TradingDay(day, start, (end - start) // 60)

    def market_status(self, now_s: float) -> dict:
        return _status_payload("open", early_hours=False, after_hours=False, now_s=now_s)

    def upcoming_holidays(self, now_s: float) -> list[dict]:
        return []


class NyseClock:
    """Real NYSE sessions from exchange-calendars."""

    mode: ClockMode = "nyse"

    @cached_property
    def calendar(self):
        import exchange_calendars  # ~0.2 s to build; only nyse-mode servers pay it

        last = (datetime.now(timezone.utc) + timedelta(days=730)).date()
        return exchange_calendars.get_calendar("XNYS", start="1990-01-01", end=last.isoformat())

    @lru_cache(maxsize=4096)  # noqa: B019 - one clock per server, lives as long as it
    def trading_day(self, day: date) -> TradingDay:
        calendar = self.calendar
        label = pd.Timestamp(day)
        if not (calendar.first_session <= label <= calendar.last_session) or not calendar.is_session(label):
            return TradingDay(day, new_york_midnight_s(day), 0)
        opens = int(calendar.session_open(label).timestamp())
        closes = int(calendar.session_close(label).timestamp())
        return TradingDay(day, opens, (closes - opens) // 60)

    def market_status(self, now_s: float) -> dict:
        local = datetime.fromtimestamp(now_s, NEW_YORK)
        session = self.trading_day(local.date())
        early = after = False
        if session.minutes and session.first_minute_s <= now_s < session.end_s:
            market = "open"
        elif session.minutes and PRE_MARKET_START <= local.time() and now_s < session.first_minute_s:
            market, early = "extended-hours", True
        elif session.minutes and now_s >= session.end_s and local.time() < AFTER_HOURS_END:
            market, after = "extended-hours", True
        else:
            market = "closed"
        return _status_payload(market, early_hours=early, after_hours=after, now_s=now_s)

    def upcoming_holidays(self, now_s: float) -> list[dict]:
        """Closed days and early closes of the next year, one entry per exchange, like Polygon."""
        calendar = self.calendar
        start = pd.Timestamp(new_york_day(now_s))
        end = min(start + pd.Timedelta(days=365), calendar.last_session)
        named: dict[date, str] = {}
        holidays = calendar.regular_holidays.holidays(start, end, return_name=True)
        for stamp, name in holidays.items():
            named[stamp.date()] = str(name)
        for _close_time, special in calendar.special_closes:
            for stamp, name in special.holidays(start, end, return_name=True).items():
                named[stamp.date()] = str(name)
        for stamp in calendar.adhoc_holidays:
            if start <= stamp <= end:
                named.setdefault(stamp.date(), "Special closure")

        entries: list[dict] = []
        for day in sorted(named):
            if day.weekday() >= 5:
                continue
            session = self.trading_day(day)
            for exchange in ("NYSE", "NASDAQ"):
                entry = {"date": day.isoformat(), "exchange": exchange, "name": named[day]}
                if session.minutes:
                    entry.update(
                        status="early-close",
                        open=_iso_utc_millis(session.first_minute_s),
                        close=_iso_utc_millis(session.end_s),
                    )
                else:
                    entry["status"] = "closed"
                entries.append(entry)
        return entries


def _iso_utc_millis(unix_s: int) -> str:
    return datetime.fromtimestamp(unix_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _status_payload(market: str, *, early_hours: bool, after_hours: bool, now_s: float) -> dict:
    return {
        "afterHours": after_hours,
        "earlyHours": early_hours,
        "market": market,
        "serverTime": rfc3339_new_york(now_s),
        "exchanges": {"nasdaq": market, "nyse": market, "otc": market},
        "currencies": {"crypto": "open", "fx": "open"},
    }


def make_clock(mode: ClockMode) -> MarketClock:
    if mode == "demo":
        return DemoClock()
    if mode == "nyse":
        return NyseClock()
    raise ValueError(f"unknown clock mode {mode!r}: use 'demo' or 'nyse'")
