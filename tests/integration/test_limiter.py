"""The shared rate limiter against the real Redis: one budget per API key whatever rate a caller
was configured with, and live-before-backfill checked and granted in one step."""

from __future__ import annotations

import random
import threading
import time

import pytest

from stockpipe.producer import schedule
from stockpipe.producer.limiter import ACQUIRE_SCRIPT, NoSlot, SharedRateLimiter
from stockpipe.producer.schedule import PollingPlan, backfill_may_call

pytestmark = pytest.mark.integration

KEY = "test-key-limiter"
SYMBOLS = ("AAPL", "MSFT", "GOOGL", "AMZN", "TSLA")


class Stop(Exception):
    pass


def refuse_to_wait(seconds: float) -> None:
    raise Stop(seconds)


def test_callers_configured_with_different_rates_share_one_budget(base_settings, redis_client):
    # the plan allows 5 calls a window; a second process configured with 10 must not add its own 5
    # (was: the Redis key carried the configured rate, so each counted only its own calls)
    strict = SharedRateLimiter(base_settings.redis_dsn, 5, KEY, window_s=2)
    loose = SharedRateLimiter(base_settings.redis_dsn, 10, KEY, window_s=2)
    try:
        for _ in range(5):
            assert loose.acquire(max_wait_s=0) == 0
        with pytest.raises(NoSlot):
            strict.acquire(max_wait_s=0.1)  # the window already holds the other's 5

        strict.clear()
        for _ in range(5):
            assert strict.acquire(max_wait_s=0) == 0
        for _ in range(5):
            assert loose.acquire(max_wait_s=0) == 0
        with pytest.raises(NoSlot):
            loose.acquire(max_wait_s=0.1)  # 10 in the window, whoever took them
        assert len(loose.taken()) == len(strict.taken()) == 10
        # a different API key is a different budget
        other = SharedRateLimiter(base_settings.redis_dsn, 5, KEY + "-other", window_s=2)
        assert other.acquire(max_wait_s=0) == 0
        other.clear()
    finally:
        strict.clear()


def race(limiters: list[SharedRateLimiter]) -> int:
    """Each limiter tries one call at the same moment, none waits; the number granted."""
    start = threading.Barrier(len(limiters))
    granted: list[bool] = []

    def attempt(limiter: SharedRateLimiter) -> None:
        start.wait()
        try:
            limiter.acquire()
            granted.append(True)
        except Stop:
            granted.append(False)

    threads = [threading.Thread(target=attempt, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return sum(granted)


def test_the_backfill_reserve_is_checked_and_granted_in_one_step(base_settings, redis_client):
    # No live plan: a backfill leaves 1 of 5 slots free. Twelve backfill callers at once (Airflow's
    # parallel tasks) take 4, never 5 (was: each checked "more than 1 free", then took a slot in a
    # second step, so several passed the check together and the last slot went too).
    redis_client.delete(schedule.SCHEDULE_KEY)
    backfills = [
        SharedRateLimiter(base_settings.redis_dsn, 5, KEY, window_s=30, reserve=1, sleep=refuse_to_wait)
        for _ in range(12)
    ]
    live = SharedRateLimiter(base_settings.redis_dsn, 5, KEY, window_s=30, sleep=refuse_to_wait)
    try:
        assert race(backfills) == 4
        assert live.acquire() == 0  # live ingest's slot is still there
        with pytest.raises(Stop):
            live.acquire()
    finally:
        live.clear()


def calls_allowed(plan: PollingPlan, now: float, limit: int = 5) -> int:
    """How many backfill calls at ``now`` the rule allows one after the other (an empty window)."""
    slack = schedule.live_slack(plan)
    planned = [c.at for c in plan.calls_between(now - slack, now + plan.window_s)]
    taken: list[float] = []
    while backfill_may_call(now, taken, planned, limit, plan.window_s, slack):
        taken.append(now)
    return len(taken)


def test_the_live_plan_is_checked_and_granted_in_one_step(base_settings, redis_client):
    # A published live plan of 3 calls a window (5 symbols, a backfill waiting): twelve backfill
    # callers at once get the 2 slots the plan leaves, never one of the live calls' slots.
    window = 60.25
    plan = PollingPlan(SYMBOLS, 3, window_s=window)
    schedule.publish(redis_client, plan, {}, policy="planned", limit=5)
    backfills = [
        SharedRateLimiter(base_settings.redis_dsn, 5, KEY, window_s=60, reserve=1, sleep=refuse_to_wait)
        for _ in range(12)
    ]
    try:
        before = time.time()
        granted = race(backfills)
        after = time.time()
        # what the plan leaves at the race's start and end (a planned call passing meanwhile changes it)
        allowed = [calls_allowed(plan, t) for t in (before, after)]
        assert min(allowed) <= granted <= max(allowed) and granted >= 1
    finally:
        backfills[0].clear()
        redis_client.delete(schedule.SCHEDULE_KEY)


def test_the_script_decides_as_backfill_may_call(redis_client):
    # the priority rule in Lua is schedule.backfill_may_call, case by case
    script = redis_client.register_script(ACQUIRE_SCRIPT)
    key = "stockpipe:limiter:calls:test-script"
    rng = random.Random(13)
    now, window = 1_000_000.0, 60.25
    try:
        for _ in range(400):
            limit = rng.randint(1, 8)
            taken = sorted((now - rng.uniform(0, 70) for _ in range(rng.randint(0, 9))), reverse=True)
            slack = rng.choice([0.0, 0.255, 1.0])
            planned = sorted(now + rng.uniform(-slack, window) for _ in range(rng.randint(0, 8)))
            redis_client.delete(key)
            if taken:
                redis_client.rpush(key, *(repr(t) for t in taken))
            args = [repr(now), limit, repr(window), 71.0, "plan", repr(slack), *(repr(t) for t in planned)]
            granted, _, _ = script(keys=[key], args=args)
            expected = backfill_may_call(now, taken, planned, limit, window, slack)
            assert bool(granted) == expected, (limit, taken, planned, slack)
            live, _, _ = script(keys=[key + ":live"], args=[repr(now), limit, repr(window), 71.0, "live"])
            assert live == 1
            redis_client.delete(key + ":live")
    finally:
        redis_client.delete(key, key + ":live")
