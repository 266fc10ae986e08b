"""The range backfill's pure parts: how many calls a range needs, how long a follower waits."""

from __future__ import annotations

from datetime import date

from stockpipe.airflow.backfill import FOLLOWER_WAIT_S, PAGE_BARS, follower_wait_s, planned_calls
from stockpipe.calendar import trading_calendar


def test_planned_calls_are_pages_of_each_symbols_span():
    demo = trading_calendar("demo").sessions_between(date(2026, 9, 1), date(2026, 10, 30))  # 60 x 1,440
    nyse = trading_calendar("nyse").sessions_between(date(2026, 8, 1), date(2026, 10, 30))  # ~64 x 390
    assert planned_calls({"AAPL": demo, "MSFT": demo}) == 2 * 2  # 86,400 bars: 2 pages each
    assert planned_calls({"AAPL": nyse}) == 1
    assert planned_calls({"AAPL": [], "MSFT": demo[:1]}) == 1  # a complete symbol costs nothing
    # a symbol missing only the first and the last session is fetched over the span between them
    assert planned_calls({"AAPL": [demo[0], demo[-1]]}, demo, page_bars=PAGE_BARS) == 2


def test_a_follower_waits_until_the_leaders_estimate_within_bounds():
    low, high = FOLLOWER_WAIT_S
    assert follower_wait_s({"eta": 1_000 + 75}, now=1_000) == 75
    assert follower_wait_s({"eta": 1_000 + 5}, now=1_000) == low
    assert follower_wait_s({"eta": 1_000 + 3_600}, now=1_000) == high
    assert follower_wait_s(None, now=1_000) == low  # the lease just went away: look again soon
    assert follower_wait_s({"eta": "soon"}, now=1_000) == low
