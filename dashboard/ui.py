"""Shared page pieces: the down banner, the empty state, the market clock, formatting."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from dashboard.data import START_COMMAND, ServiceDown
from stockpipe.calendar import NEW_YORK, trading_calendar
from stockpipe.config import Settings

log = logging.getLogger("stockpipe.dashboard")


def down_banner(error: ServiceDown) -> None:
    st.error(f"**{error.headline}** {error.sentence}", icon=":material/power_off:")


def empty_state(what: str = "No market data yet.") -> None:
    st.info(
        f"**{what}** Start the pipeline with `{START_COMMAND}`: the producer publishes a bar per "
        "symbol every minute, the streaming job stores it, and this page fills in by itself.",
        icon=":material/schedule:",
    )


def guarded(section: Callable[[], None]) -> None:
    """Run one section of a page; a down service becomes a banner, any other failure one sentence
    (the traceback goes to the server log), so the rest of the page still renders."""
    try:
        section()
    except ServiceDown as error:
        down_banner(error)
    except Exception as error:  # the page must never show a traceback
        log.exception("dashboard section failed")
        st.error(f"This section failed: {type(error).__name__}: {error}. The server log has the details.")


def market_status(settings: Settings, now: datetime | None = None) -> str:
    """NYSE open/closed and the next session, from exchange-calendars (XNYS)."""
    now = now or datetime.now(UTC)
    calendar = trading_calendar("nyse")
    session = calendar.session_at(now)
    if session is not None:
        text = f":green[**NYSE open**] — closes {ny_time(session.close)} (in {duration(session.close - now)})"
    else:
        upcoming = calendar.next_session(now)
        text = ":red[**NYSE closed**]"
        if upcoming is not None:
            opens = ny_time(upcoming.open, with_day=True)
            text += f" — next session opens {opens} (in {duration(upcoming.open - now)})"
    if settings.uses_simulator and settings.simulator_clock == "demo":
        text += " · the simulator's demo clock trades around the clock"
    return text


def ny_time(ts: datetime | pd.Timestamp, with_day: bool = False) -> str:
    local = pd.Timestamp(ts).tz_convert(NEW_YORK)
    return local.strftime("%a %d %b %H:%M ET" if with_day else "%H:%M ET")


def ny_stamp(ts: datetime | pd.Timestamp | None) -> str:
    if ts is None or pd.isna(ts):
        return "—"
    return pd.Timestamp(ts).tz_convert(NEW_YORK).strftime("%Y-%m-%d %H:%M ET")


def duration(delta: timedelta | pd.Timedelta | None) -> str:
    if delta is None or pd.isna(delta):
        return "—"
    seconds = int(pd.Timedelta(delta).total_seconds())
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 120:
        return f"{sign}{seconds} s"
    if seconds < 7200:
        return f"{sign}{seconds // 60} min"
    if seconds < 172800:
        return f"{sign}{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{sign}{seconds // 86400} d"


def rsi_state(rsi: float | None) -> str:
    if rsi is None or pd.isna(rsi):
        return "RSI warming up"
    if rsi > 70:
        return f"RSI {rsi:.1f} · overbought"
    if rsi < 30:
        return f"RSI {rsi:.1f} · oversold"
    return f"RSI {rsi:.1f} · neutral"
