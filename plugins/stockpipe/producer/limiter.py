"""The market-data API's rate limit, shared by every process through Redis.

A moving-window limit from the ``limits`` library: at most N calls in any rolling 60 s, counted
per API-key fingerprint (never the key itself) so two producers, the backfill and Airflow's tasks
all draw from one budget. Calls wait for their slot; they never fail because of the limit. A
limiter with a ``reserve`` (the backfill's) takes a slot only while more than ``reserve`` are free,
so live ingest always finds one. Build it with :func:`stockpipe.clients.market_source`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

GUARD_BAND_S = 1


class SharedRateLimiter:
    def __init__(
        self,
        redis_url: str,
        calls_per_window: int,
        api_key: str,
        window_s: int = 60,
        *,
        reserve: int = 0,
        on_wait: Callable[[float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._limiter = MovingWindowRateLimiter(RedisStorage(redis_url))
        # A 1 s guard band: a slot is taken a moment before the request reaches the server, and that
        # moment varies; without it the server could see N+1 calls inside one of its windows.
        self._item = RateLimitItemPerSecond(calls_per_window, window_s + GUARD_BAND_S)
        self._scope = "stockpipe-api-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]
        self._reserve = reserve
        self._on_wait = on_wait
        self._sleep = sleep

    def acquire(self) -> float:
        """Block until a call may be made; return the seconds waited."""
        waited = 0.0
        while not self._hit():
            reset_at = self._limiter.get_window_stats(self._item, self._scope).reset_time
            pause = min(max(reset_at - time.time(), 0.05), float(self._item.get_expiry()))
            if self._on_wait:
                self._on_wait(pause)
            self._sleep(pause)
            waited += pause
        return waited

    def _hit(self) -> bool:
        if self._reserve and self._limiter.get_window_stats(self._item, self._scope).remaining <= self._reserve:
            return False  # the last slots of the window are live ingest's
        return self._limiter.hit(self._item, self._scope)

    def clear(self) -> None:
        self._limiter.clear(self._item, self._scope)
