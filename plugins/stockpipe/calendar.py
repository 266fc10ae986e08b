"""Trading sessions: when the market trades, for the scheduler and the data-quality checks.

Two calendars, matching the simulator's clocks (``STOCKPIPE_SIMULATOR_CLOCK``):

* ``nyse`` — the real NYSE calendar from exchange-calendars (``XNYS``): holidays (Good Friday
  included), early closes at 13:00 ET, DST handled by the library (sessions are in UTC).
* ``demo`` — the simulator's always-open market: every New York calendar day is a session from
  midnight to midnight (23 h or 25 h on DST change days), every minute trades.

A session is the half-open UTC interval ``[open, close)``; its bars start at ``open, open+1min, …,
close-1min``, so ``minutes`` is the number of bars a complete day has per symbol.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

CalendarMode = Literal["nyse", "demo"]
NEW_YORK = ZoneInfo("America/New_York")
MINUTE = timedelta(minutes=1)
# exchange-calendars needs explicit bounds; sessions outside them are treated as closed days.
FIRST_DAY = date(2000, 1, 3)
YEARS_AHEAD = 2


@dataclass(frozen=True)
class Session:
    day: date  # the session's New York date
    open: datetime  # UTC, first bar's start
    close: datetime  # UTC, end of the last bar

    @property
    def minutes(self) -> int:
        return int((self.close - self.open) / MINUTE)

    @property
    def early_close(self) -> bool:
        """Closes before the regular 16:00 New York time (NYSE half days close at 13:00)."""
        local_close = self.close.astimezone(NEW_YORK)
        return local_close.date() == self.day and local_close.time() < time(16, 0)

    def contains(self, ts: datetime) -> bool:
        return self.open <= ts < self.close

    def bar_starts(self) -> Iterator[datetime]:
        ts = self.open
        while ts < self.close:
            yield ts
            ts += MINUTE


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: pass an aware one (UTC)")
    return ts.astimezone(UTC)


def _ny_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), NEW_YORK).astimezone(UTC)


class TradingCalendar:
    """Session lookups for one calendar mode; build with :func:`trading_calendar` (cached)."""

    def __init__(self, mode: CalendarMode) -> None:
        if mode not in ("nyse", "demo"):
            raise ValueError(f"unknown calendar {mode!r}: use 'nyse' or 'demo'")
        self.mode: CalendarMode = mode
        if mode == "nyse":
            self._days, self._opens, self._closes = _nyse_schedule()

    # -- sessions ------------------------------------------------------------------------------
    def session(self, day: date) -> Session | None:
        """The session on this New York date, or None when the market is closed that day."""
        if self.mode == "demo":
            return Session(day, _ny_midnight(day), _ny_midnight(day + timedelta(days=1)))
        i = bisect.bisect_left(self._days, day)
        if i < len(self._days) and self._days[i] == day:
            return self._at(i)
        return None

    def _at(self, i: int) -> Session:
        return Session(self._days[i], self._opens[i], self._closes[i])

    def session_at(self, ts: datetime) -> Session | None:
        """The session trading at ``ts`` (open <= ts < close), or None outside sessions."""
        ts = _utc(ts)
        if self.mode == "demo":
            return self.session(ts.astimezone(NEW_YORK).date())
        i = bisect.bisect_right(self._closes, ts)  # first session closing after ts
        if i < len(self._days) and self._opens[i] <= ts:
            return self._at(i)
        return None

    def next_session(self, ts: datetime) -> Session | None:
        """The first session opening at or after ``ts``."""
        ts = _utc(ts)
        if self.mode == "demo":
            current = self.session(ts.astimezone(NEW_YORK).date())
            assert current is not None
            return current if current.open >= ts else self.session(current.day + timedelta(days=1))
        i = bisect.bisect_left(self._opens, ts)
        return self._at(i) if i < len(self._days) else None

    def previous_session(self, ts: datetime) -> Session | None:
        """The last session closing at or before ``ts``."""
        ts = _utc(ts)
        if self.mode == "demo":
            current = self.session(ts.astimezone(NEW_YORK).date())
            assert current is not None
            return current if current.close <= ts else self.session(current.day - timedelta(days=1))
        i = bisect.bisect_right(self._closes, ts) - 1
        return self._at(i) if i >= 0 else None

    def sessions_between(self, first: date, last: date) -> list[Session]:
        """Sessions whose New York date is in [first, last]."""
        if self.mode == "demo":
            return [self.session(first + timedelta(days=n)) for n in range((last - first).days + 1)]  # type: ignore[misc]
        lo, hi = bisect.bisect_left(self._days, first), bisect.bisect_right(self._days, last)
        return [self._at(i) for i in range(lo, hi)]

    def last_sessions(self, count: int, before: datetime) -> list[Session]:
        """The ``count`` most recent sessions that closed at or before ``before``, oldest first."""
        sessions: list[Session] = []
        cursor = _utc(before)
        while len(sessions) < count:
            found = self.previous_session(cursor)
            if found is None:
                break
            sessions.append(found)
            cursor = found.open
        return sessions[::-1]

    # -- minutes -------------------------------------------------------------------------------
    def is_trading_minute(self, ts: datetime) -> bool:
        return self.session_at(ts) is not None

    def next_trading_minute(self, ts: datetime) -> datetime | None:
        """The first bar start at or after ``ts`` (rounded up to the minute) inside a session."""
        ts = _utc(ts)
        floored = ts.replace(second=0, microsecond=0)
        ts = floored if floored == ts else floored + MINUTE
        if self.session_at(ts) is not None:
            return ts
        upcoming = self.next_session(ts)
        return upcoming.open if upcoming else None

    def previous_trading_minute(self, ts: datetime) -> datetime | None:
        """The last bar start at or before ``ts`` (rounded down) inside a session."""
        ts = _utc(ts).replace(second=0, microsecond=0)
        if self.session_at(ts) is not None:
            return ts
        earlier = self.previous_session(ts)
        return earlier.close - MINUTE if earlier else None


def _nyse_schedule() -> tuple[list[date], list[datetime], list[datetime]]:
    import exchange_calendars  # ~1 s to build: only when a NYSE calendar is asked for

    last = date.today().replace(month=12, day=31) + timedelta(days=365 * YEARS_AHEAD)
    calendar = exchange_calendars.get_calendar("XNYS", start=FIRST_DAY.isoformat(), end=last.isoformat())
    schedule = calendar.schedule
    days = [stamp.date() for stamp in schedule.index]
    opens = [stamp.to_pydatetime() for stamp in schedule["open"]]
    closes = [stamp.to_pydatetime() for stamp in schedule["close"]]
    return days, opens, closes


@lru_cache(maxsize=2)
def trading_calendar(mode: CalendarMode = "nyse") -> TradingCalendar:
    return TradingCalendar(mode)
