"""Session VWAP: the volume-weighted average price of a symbol's bars so far in its session.

Definition (the ``vwap_session`` column)::

    vwap_session = sum(vwap_i * volume_i) / sum(volume_i)

over the bars of the current session up to and including this one, where ``vwap_i`` is the bar's
own VWAP (Polygon's ``vw``) and a *session* is a calendar date in America/New_York: a session starts
with the first bar whose New York date differs from the previous bar's. Pre-market and after-hours
bars therefore belong to the day they trade on, and a DST change never splits or merges a day.

Edge cases, decided here so stream and batch agree:

* A bar without a usable VWAP or volume (``None`` or NaN) adds nothing to either sum; the value
  stays what it was.
* Until the session has seen volume > 0 the value is ``None`` (NULL), never a guess.
* Both sums are accumulated left to right in plain doubles: the same bits as ``numpy.cumsum`` per
  session. (pandas' grouped ``cumsum`` is Kahan-compensated and may differ in the last bit.)
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["SessionVWAP", "SESSION_TIMEZONE", "session_bounds"]

SESSION_TIMEZONE = ZoneInfo("America/New_York")
_ONE_DAY = timedelta(days=1)


def session_bounds(session: date) -> tuple[float, float]:
    """UTC epoch seconds ``[start, end)`` of a New York calendar date (23, 24 or 25 hours long)."""
    following = session + _ONE_DAY
    start = datetime(session.year, session.month, session.day, tzinfo=SESSION_TIMEZONE)
    end = datetime(following.year, following.month, following.day, tzinfo=SESSION_TIMEZONE)
    return start.timestamp(), end.timestamp()


class SessionVWAP:
    """Running VWAP since the start of the bar's New York trading date."""

    __slots__ = ("_session", "_start", "_end", "_price_volume", "_volume")

    def __init__(self) -> None:
        self._session: date | None = None
        # Cached [start, end) of the current session, so most bars cost two comparisons.
        self._start = 0.0
        self._end = 0.0
        self._price_volume = 0.0
        self._volume = 0.0

    @property
    def session(self) -> date | None:
        """The New York date of the current session (``None`` before the first bar)."""
        return self._session

    def update(self, epoch_seconds: float, vwap: float | None, volume: float | None) -> float | None:
        # `x == x` is False for NaN: a missing VWAP or volume contributes nothing.
        counted = vwap is not None and volume is not None and vwap == vwap and volume == volume
        if counted and volume < 0:
            raise ValueError(f"bar volume must not be negative, got {volume!r}")
        if not self._start <= epoch_seconds < self._end:
            self._enter_session(epoch_seconds)
        if counted:
            self._price_volume += vwap * volume
            self._volume += volume
        if self._volume > 0.0:
            return self._price_volume / self._volume
        return None

    def _enter_session(self, epoch_seconds: float) -> None:
        session = datetime.fromtimestamp(epoch_seconds, SESSION_TIMEZONE).date()
        if session != self._session:
            self._session = session
            self._price_volume = 0.0
            self._volume = 0.0
        self._start, self._end = session_bounds(session)

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": "SessionVWAP",
            "session": None if self._session is None else self._session.isoformat(),
            "price_volume": self._price_volume,
            "volume": self._volume,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SessionVWAP:
        if state.get("kind") != "SessionVWAP":
            raise ValueError(f"not a SessionVWAP state: kind={state.get('kind')!r}")
        vwap = cls()
        if state["session"] is not None:
            vwap._session = date.fromisoformat(state["session"])
            vwap._start, vwap._end = session_bounds(vwap._session)
        vwap._price_volume = float(state["price_volume"])
        vwap._volume = float(state["volume"])
        return vwap

    def copy(self) -> SessionVWAP:
        twin = SessionVWAP.__new__(SessionVWAP)
        twin._session, twin._start, twin._end = self._session, self._start, self._end
        twin._price_volume, twin._volume = self._price_volume, self._volume
        return twin

    __copy__ = copy
