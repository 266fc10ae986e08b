"""When the simulated market trades: each day's minute grid, and the market-status endpoints.

The sessions come from :mod:`stockpipe.calendar`, the same calendar the scheduler and the
data-quality checks use, in one of its two modes (``--clock``):

* ``demo`` — always open: every minute of every New York calendar day has a bar, weekends
  included, so a newcomer sees live data at any hour.
* ``nyse`` — the real NYSE calendar (exchange-calendars ``XNYS``): bars only for session minutes,
  09:30–16:00 ET, 13:00 on early-close days, none on weekends and holidays.

A clock never reads the time itself: callers pass ``now`` (unix seconds), so tests can freeze it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from stockpipe.calendar import NEW_YORK, CalendarMode, trading_calendar

PRE_MARKET_START = time(4, 0)
AFTER_HOURS_END = time(20, 0)
UPCOMING_DAYS = 365
NYSE_SESSION_MINUTES = 390  # 09:30-16:00 ET; early closes are shorter

ClockMode = CalendarMode


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


class MarketClock:
    def __init__(self, mode: ClockMode) -> None:
        self.mode = mode
        self.calendar = trading_calendar(mode)

    @property
    def max_minutes_per_day(self) -> int:
        """Most bars one symbol has on one day: every minute (demo), a regular session (nyse)."""
        return 24 * 60 if self.mode == "demo" else NYSE_SESSION_MINUTES

    @lru_cache(maxsize=8192)  # noqa: B019 - one clock per server, alive as long as the server
    def trading_day(self, day: date) -> TradingDay:
        session = self.calendar.session(day)
        if session is None:
            return TradingDay(day, new_york_midnight_s(day), 0)
        return TradingDay(day, int(session.open.timestamp()), session.minutes)

    def market_status(self, now_s: float) -> dict:
        """The body of ``/v1/marketstatus/now``."""
        local = datetime.fromtimestamp(now_s, NEW_YORK)
        today = self.trading_day(local.date())
        early = after = False
        if today.minutes and today.first_minute_s <= now_s < today.end_s:
            market = "open"
        elif today.minutes and now_s < today.first_minute_s and local.time() >= PRE_MARKET_START:
            market, early = "extended-hours", True
        elif today.minutes and now_s >= today.end_s and local.time() < AFTER_HOURS_END:
            market, after = "extended-hours", True
        else:
            market = "closed"
        return {
            "afterHours": after,
            "earlyHours": early,
            "market": market,
            "serverTime": local.replace(microsecond=0).isoformat(),
            "exchanges": {"nasdaq": market, "nyse": market, "otc": market},
            "currencies": {"crypto": "open", "fx": "open"},
        }

    def upcoming_holidays(self, now_s: float) -> list[dict]:
        """The body of ``/v1/marketstatus/upcoming``: closed weekdays and early closes of the next
        year, one entry per exchange like Polygon. The demo market has none."""
        if self.mode == "demo":
            return []
        entries: list[dict] = []
        first = new_york_day(now_s)
        names = _holiday_names(first)
        for offset in range(UPCOMING_DAYS):
            day = first + timedelta(days=offset)
            if day.weekday() >= 5:
                continue
            session = self.calendar.session(day)
            if session is not None and not session.early_close:
                continue
            name = names.get(day, "Market holiday")
            for exchange in ("NYSE", "NASDAQ"):
                entry = {"date": day.isoformat(), "exchange": exchange, "name": name, "status": "closed"}
                if session is not None:
                    entry.update(status="early-close", open=_iso_millis(session.open), close=_iso_millis(session.close))
                entries.append(entry)
        return entries


@lru_cache(maxsize=8)
def _holiday_names(first: date) -> dict[date, str]:
    """Names of NYSE holidays and early closes ("Thanksgiving", "Christmas Eve") in the year from
    ``first``; only the upcoming-holidays endpoint needs them."""
    import exchange_calendars
    import pandas as pd

    xnys = exchange_calendars.get_calendar("XNYS")
    start, end = pd.Timestamp(first), pd.Timestamp(first + timedelta(days=UPCOMING_DAYS))
    names: dict[date, str] = {}
    for holidays in [xnys.regular_holidays] + [special for _, special in xnys.special_closes]:
        for stamp, name in holidays.holidays(start, end, return_name=True).items():
            names[stamp.date()] = str(name)
    return names


def _iso_millis(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def make_clock(mode: ClockMode) -> MarketClock:
    if mode not in ("demo", "nyse"):
        raise ValueError(f"unknown clock mode {mode!r}: use 'demo' or 'nyse'")
    return MarketClock(mode)
