"""The market-data API's rate limit, shared by every process through Redis.

A moving-window limit from the ``limits`` library: at most N calls in any rolling window of
``window_s`` + ``guard_s`` seconds, counted per API-key fingerprint (never the key itself) so two
producers, the backfill and Airflow's tasks all draw from one budget. Calls wait for their slot;
they never fail because of the limit.

The guard band covers what happens between the grant and the server's count: a slot is taken a
moment before the request reaches the server, and that moment varies (loopback: a few
milliseconds; see docs/architecture.md for the figures). Without it the server could see N+1
calls inside one of its windows; a whole second (the former fixed band) made a strictly periodic
schedule of one call per symbol per minute impossible and cost up to a fifth of the budget, so
it is a setting (``STOCKPIPE_RATE_LIMIT_GUARD_S``), fractions of a second included.

Priority: a limiter with a ``reserve`` (the backfill's) takes a slot only if every live call the
live producer's published polling plan has in the next window still finds one
(:mod:`stockpipe.producer.schedule`; without a live plan, only while more than ``reserve`` are
free); while it waits it says so in Redis (:meth:`SharedRateLimiter.backfill_waiting`), and the
live plan then leaves it a share of the budget. Build it with
:func:`stockpipe.clients.market_source`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

#: Default guard band in seconds (STOCKPIPE_RATE_LIMIT_GUARD_S).
GUARD_S = 0.25
BACKFILL_WAITING_KEY = "stockpipe:limiter:backfill-waiting:{scope}"


class NoSlot(RuntimeError):
    """No rate-limit slot within the wait a caller allowed."""


class _Window(RateLimitItemPerSecond):
    """A moving window that needs not last whole seconds (limits' items count in whole units).

    Its key is that of the whole-second item it rounds up to, so processes configured with
    different guard bands still count the same calls."""

    __slots__ = ("seconds",)

    def __init__(self, amount: int, seconds: float) -> None:
        super().__init__(amount, math.ceil(seconds))
        self.seconds = seconds

    def get_expiry(self) -> float:  # type: ignore[override]
        return self.seconds


class _RedisStorage(RedisStorage):
    """limits' Redis storage whose moving-window script also takes a fractional window: it compares
    the timestamps with the window as given (they are float seconds already) and lets the list
    expire after the window in milliseconds (Redis' EXPIRE refuses a fraction)."""

    _EXPIRE = b"redis.call('expire', KEYS[1], expiry)"
    SCRIPT_ACQUIRE_MOVING_WINDOW = RedisStorage.SCRIPT_ACQUIRE_MOVING_WINDOW.replace(
        _EXPIRE, b"redis.call('pexpire', KEYS[1], math.ceil(expiry * 1000))"
    )
    if _EXPIRE not in RedisStorage.SCRIPT_ACQUIRE_MOVING_WINDOW:  # pragma: no cover - a new limits release
        raise ImportError("limits' acquire_moving_window.lua changed: review stockpipe.producer.limiter._RedisStorage")


class SharedRateLimiter:
    def __init__(
        self,
        redis_url: str,
        calls_per_window: int,
        api_key: str,
        window_s: int = 60,
        *,
        guard_s: float = GUARD_S,
        reserve: int = 0,
        on_wait: Callable[[float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._storage = _RedisStorage(redis_url)
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._item = _Window(calls_per_window, window_s + guard_s)
        self.calls_per_window = calls_per_window
        self.window_s = window_s + guard_s
        self._scope = "stockpipe-api-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]
        self._waiting_key = BACKFILL_WAITING_KEY.format(scope=self._scope)
        self._reserve = reserve
        self._on_wait = on_wait
        self._sleep = sleep

    def acquire(self, max_wait_s: float | None = None) -> float:
        """Block until a call may be made; return the seconds waited. With ``max_wait_s``, raise
        :class:`NoSlot` instead of waiting longer (a planned live call then skips its turn)."""
        waited = 0.0
        while not self._hit():
            if self._reserve:  # the live plan leaves the backfill a share while it waits
                self._storage.get_connection().set(self._waiting_key, "1", px=int(2000 * self.window_s))
            reset_at = self._limiter.get_window_stats(self._item, self._scope).reset_time
            # a backfill held back by the live plan (free slots, live calls due) looks again soon
            pause = min(max(reset_at - time.time(), 0.25 if self._reserve else 0.05), self.window_s)
            if max_wait_s is not None and waited + pause > max_wait_s:
                raise NoSlot(f"no rate-limit slot within {max_wait_s:g} s")
            if self._on_wait:
                self._on_wait(pause)
            self._sleep(pause)
            waited += pause
        return waited

    def _hit(self) -> bool:
        if self._reserve and not self._live_leaves_a_slot():
            return False
        return self._limiter.hit(self._item, self._scope)

    def _live_leaves_a_slot(self) -> bool:
        """Live before backfill: with a live producer's polling plan published, a backfill call may
        be made only if every live call planned within the next window still finds its slot
        (:func:`~stockpipe.producer.schedule.backfill_may_call`); without one, only while more than
        ``reserve`` slots are free."""
        from stockpipe.producer import schedule

        connection = self._storage.get_connection()
        now = time.time()
        live = schedule.published_plan(connection, now)
        if live is None:
            return self._limiter.get_window_stats(self._item, self._scope).remaining > self._reserve
        key = self._storage.prefixed_key(self._item.key_for(self._scope))
        taken = [float(t) for t in connection.lrange(key, 0, -1)]
        planned = [call.at for call in live.calls_between(now, now + self.window_s)]
        return schedule.backfill_may_call(now, taken, planned, self.calls_per_window, self.window_s)

    def backfill_waiting(self) -> bool:
        """Whether a backfill waited for a slot within the last two windows."""
        return bool(self._storage.get_connection().exists(self._waiting_key))

    def clear(self) -> None:
        self._limiter.clear(self._item, self._scope)
        self._storage.get_connection().delete(self._waiting_key)
