"""The polling plan (stockpipe.producer.schedule): within the rate limit in every rolling window,
right after the close, fair when the budget is short, live before backfill."""

from __future__ import annotations

import math
import random
from collections import Counter, deque

import pytest

from stockpipe.producer.schedule import MINUTE_S, PollingPlan, backfill_may_call, live_budget, live_slack

SYMBOLS = tuple(f"S{i:02d}" for i in range(12))
START = 29_400_000  # a minute index (unix time // 60) in 2025
TWO_HOURS = 120


def planned_times(plan: PollingPlan, minutes: int = TWO_HOURS, start: int = START) -> list[float]:
    return [call.at for m in range(start, start + minutes) for call in plan.calls(m)]


def most_in_any_window(times: list[float], window_s: float) -> int:
    """Most calls in any half-open window [t, t + window_s), the simulator's count."""
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window_s:
            first += 1
        best = max(best, last - first + 1)
    return best


@pytest.mark.parametrize("guard_s", [0.25, 1.0])
@pytest.mark.parametrize("symbols", [1, 5, 12])
@pytest.mark.parametrize("budget", [1, 3, 5, 10, 20])
def test_never_over_the_limit_in_any_rolling_window(budget, symbols, guard_s):
    window = 60 + guard_s
    plan = PollingPlan(SYMBOLS[:symbols], budget, window_s=window)
    times = planned_times(plan)
    assert times == sorted(times)
    # the limiter's rule: the call `budget` places later comes more than one window later ...
    assert all(later - earlier > window for earlier, later in zip(times, times[budget:], strict=False))
    # ... so the server, counting arrivals up to `guard_s` late, never sees more than the budget
    assert most_in_any_window(times, window) <= budget
    # and the plan uses the budget: as many calls as the limit allows, or one per symbol a minute
    per_minute = len(times) / TWO_HOURS
    assert per_minute >= min(symbols, budget * 60 / window) * 0.97


@pytest.mark.parametrize(("budget", "symbols"), [(10, 5), (20, 5), (3, 1), (24, 12)])
def test_with_twice_the_watchlist_every_symbol_right_after_the_close_and_budget_to_spare(budget, symbols):
    plan = PollingPlan(SYMBOLS[:symbols], budget)
    assert plan.spare_per_minute == budget - symbols
    for minute in range(START, START + TWO_HOURS):
        calls = plan.calls(minute)
        assert sorted(c.symbol for c in calls) == sorted(SYMBOLS[:symbols])  # each symbol every minute
        assert all(1.0 <= c.offset_s <= 1.5 + symbols * 0.51 for c in calls)  # seconds after the close
        assert [c.symbol for c in calls] == [c.symbol for c in plan.calls(START)]  # a fixed offset per symbol


def test_budget_equal_to_the_watchlist_defers_one_fetch_in_fifty_and_spreads_the_calls():
    plan = PollingPlan(SYMBOLS[:5], 5, window_s=60.25)
    minutes = [plan.calls(m) for m in range(START, START + TWO_HOURS)]
    fetched = sum(len(calls) for calls in minutes)
    assert fetched >= 0.98 * 5 * TWO_HOURS  # at most one fetch in fifty waits for the next minute
    for calls in minutes:
        offsets = [c.offset_s for c in calls]
        assert all(b - a >= plan.spacing_s - 1e-6 for a, b in zip(offsets, offsets[1:], strict=False))
        assert offsets[0] >= 1.5 and offsets[-1] <= 20  # within seconds of the close, never near the next
    for before, after in zip(minutes, minutes[1:], strict=False):
        missing = {c.symbol for c in after} ^ set(SYMBOLS[:5])
        if len(before) < 5:  # the deferred symbol goes first the next minute
            deferred = (set(SYMBOLS[:5]) - {c.symbol for c in before}).pop()
            assert after[0].symbol == deferred
        assert not missing or len(after) == 4


def test_deferrals_rotate_over_the_symbols():
    plan = PollingPlan(SYMBOLS[:5], 5, window_s=60.25)
    deferred = Counter()
    for minute in range(START, START + 50 * 10):
        fetched = {c.symbol for c in plan.calls(minute)}
        deferred.update(set(SYMBOLS[:5]) - fetched)
    assert set(deferred) == set(SYMBOLS[:5]) and max(deferred.values()) - min(deferred.values()) <= 1


@pytest.mark.parametrize(("budget", "symbols"), [(1, 5), (3, 5), (1, 12), (3, 12), (5, 12), (10, 12)])
def test_short_budget_rotates_fairly_and_says_how_stale_each_symbol_is(budget, symbols):
    plan = PollingPlan(SYMBOLS[:symbols], budget, window_s=60.25)
    calls = [c for m in range(START, START + TWO_HOURS) for c in plan.calls(m)]
    counts = Counter(c.symbol for c in calls)
    assert set(counts) == set(SYMBOLS[:symbols]) and max(counts.values()) - min(counts.values()) <= 1
    every = math.ceil(symbols / budget)  # each symbol's turn comes every N/B minutes or so
    stale = plan.stale_by_design()
    for symbol in SYMBOLS[:symbols]:
        times = [c.at for c in calls if c.symbol == symbol]
        longest_gap = max(b - a for a, b in zip(times, times[1:], strict=False))
        assert longest_gap <= (every + 1) * MINUTE_S
        # by design: a bar waits at most until the symbol's next turn (the published figure)
        assert stale[symbol]["max_s"] <= longest_gap + 2 and stale[symbol]["max_s"] >= (every - 1) * MINUTE_S
        assert stale[symbol]["every_s"] == pytest.approx(symbols / len(calls) * TWO_HOURS * MINUTE_S, rel=0.05)


def test_full_budget_is_stale_by_design_only_seconds():
    stale = PollingPlan(SYMBOLS[:5], 10).stale_by_design()
    assert all(v["max_s"] < 5 and v["every_s"] == 60 for v in stale.values())
    default = PollingPlan(SYMBOLS[:5], 5, window_s=60.25).stale_by_design()
    assert all(v["mean_s"] < 15 and v["max_s"] <= 62 for v in default.values())  # the deferred bar: a minute


def test_a_guard_band_too_large_for_the_budget_is_one_sentence_naming_the_setting():
    with pytest.raises(ValueError, match="STOCKPIPE_RATE_LIMIT_GUARD_S"):
        PollingPlan(SYMBOLS[:12], 12, window_s=70)


class MovingWindow:
    """The shared limiter's rule: a call may be made while fewer than ``limit`` were made in the
    last ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s, self.calls = limit, window_s, deque()

    def free(self, t: float) -> int:
        while self.calls and self.calls[0] <= t - self.window_s:
            self.calls.popleft()
        return self.limit - len(self.calls)

    def take(self, t: float) -> None:
        assert self.free(t) > 0
        self.calls.append(t)


@pytest.mark.parametrize("lateness", [0.0, 0.9])
@pytest.mark.parametrize(("limit", "symbols"), [(5, 5), (10, 5), (5, 12), (20, 12), (3, 1)])
def test_live_keeps_priority_while_the_backfill_moves(limit, symbols, lateness):
    """A backfill polling the limiter every 0.25 s (the limiter's loop) takes a slot only when every
    live call planned within the next window still finds one within the slack; while it waits, the
    live plan leaves it a share. No live call waits longer than the slack (so none is deferred),
    and the backfill gets its share — also when the live calls are ready up to ``lateness`` x the
    slack after their planned times (a busy machine: without the slack a late call took a backfill
    slot for a whole window, and the backfill got ~1.6 of its 2 calls a minute)."""
    window = 60.25
    live_plan = PollingPlan(SYMBOLS[:symbols], live_budget(limit, backfill_waiting=True), window_s=window)
    assert live_budget(limit, backfill_waiting=False) == limit
    slack = live_slack(live_plan)
    assert 0 < slack < live_plan.spacing_s  # a live call waits up to its spacing before it is deferred
    rng = random.Random(7)
    limiter = MovingWindow(limit, window)
    live = deque((at, at + rng.uniform(0, lateness * slack)) for at in planned_times(live_plan))  # planned, ready
    backfill_calls, longest_wait, t = 0, 0.0, START * MINUTE_S
    while live:
        planned, ready = live[0]
        if ready <= t:
            if limiter.free(t) > 0:
                limiter.take(t)
                live.popleft()
                longest_wait = max(longest_wait, t - ready)
        elif limiter.free(t) > 0:
            upcoming = [c.at for c in live_plan.calls_between(t - slack, t + window)]
            if backfill_may_call(t, list(limiter.calls), upcoming, limit, window, slack):
                limiter.take(t)
                backfill_calls += 1
        t += 0.25 if not live or live[0][1] > t + 0.25 else max(live[0][1] - t, 0.01)
    assert longest_wait <= slack + 0.02
    share = limit - live_plan.budget
    assert backfill_calls >= TWO_HOURS * share * 0.95


def test_without_a_waiting_backfill_the_live_plan_takes_the_whole_budget():
    # and the backfill then gets only what the live plan leaves in a window: nothing when B == N
    limit, window = 5, 60.25
    plan = PollingPlan(SYMBOLS[:5], live_budget(limit, backfill_waiting=False), window_s=window)
    now = START * MINUTE_S + 1.0
    taken = [c.at for c in plan.calls_between(now - window, now)]
    upcoming = [c.at for c in plan.calls_between(now, now + window)]
    assert not backfill_may_call(now, taken, upcoming, limit, window)
    assert backfill_may_call(now, taken, upcoming[1:], limit, window)  # one live call fewer: room for one
