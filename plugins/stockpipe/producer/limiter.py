"""The market-data API's rate limit, shared by every process through Redis.

A moving window: at most N calls in any rolling window of ``window_s`` + ``guard_s`` seconds. Every
caller of one API key counts in one Redis list of grant times, keyed by a fingerprint of the key
(never the key itself) and nothing else: not by the configured rate or window, so two processes
configured with different calls per minute still see each other's calls (each grants only while the
list holds fewer than its own limit: together they never exceed the largest configured one). Calls
wait for their slot; they never fail because of the limit.

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
live plan then leaves it a share of the budget (``STOCKPIPE_BACKFILL_SHARE``). The check and the
grant are one Lua script (:data:`ACQUIRE_SCRIPT`), so no other caller's grant comes between them.
Build it with :func:`stockpipe.clients.market_source`.

Not ``limits``' moving window (the simulator's): its Redis key carries the configured rate, its
script trims the list to the caller's own limit (a smaller limit would erase a larger one's calls),
and it can not check the live plan in the same step as the grant.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import redis

#: Default guard band in seconds (STOCKPIPE_RATE_LIMIT_GUARD_S).
GUARD_S = 0.25
#: The grant times of one API key's calls, newest first (one list for every caller of that key).
CALLS_KEY = "stockpipe:limiter:calls:{scope}"
BACKFILL_WAITING_KEY = "stockpipe:limiter:backfill-waiting:{scope}"
#: Grants are kept at least this long: the longest window a minute-based caller counts (60 s + the
#: largest guard band), whatever window the caller that trims the list uses.
KEEP_S = 71.0

#: Check and grant in one step. KEYS[1]: the scope's grant times (unix seconds, newest first).
#: ARGV: now, limit, window_s, keep_s, mode, then (mode "plan") the slack and the live plan's call
#: times in [now - slack, now + window_s), sorted. Modes: "live" (a slot if the window holds fewer
#: than limit), "reserve" (the backfill without a live plan: only while more than ARGV[6] slots are
#: free), "plan" (the backfill: only if every planned live call still finds its slot within the
#: slack, as stockpipe.producer.schedule.backfill_may_call). Returns {granted (0/1), the time the fullness
#: of the window eases (text: Lua numbers become integers), the grants in the window (text)}.
ACQUIRE_SCRIPT = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
local mode = ARGV[5]
while true do
  local oldest = redis.call('lindex', KEYS[1], -1)
  if not oldest or tonumber(oldest) > now - keep then break end
  redis.call('rpop', KEYS[1])
end
local alive = {}
for _, value in ipairs(redis.call('lrange', KEYS[1], 0, -1)) do
  local t = tonumber(value)
  if t > now - window then alive[#alive + 1] = t end
end
local eases = now
if #alive >= limit then eases = alive[limit] + window end
local granted = #alive < limit
if granted and mode == 'reserve' then
  granted = limit - #alive > tonumber(ARGV[6])
elseif granted and mode == 'plan' then
  local slack = tonumber(ARGV[6])
  alive[#alive + 1] = now
  for i = 7, #ARGV do
    local at = tonumber(ARGV[i])
    local count = i - 6
    for _, t in ipairs(alive) do
      if t > at + slack - window then count = count + 1 end
    end
    if count > limit then granted = false break end
  end
  alive[#alive] = nil
end
if not granted then return {0, tostring(eases), tostring(#alive)} end
redis.call('lpush', KEYS[1], ARGV[1])
redis.call('pexpire', KEYS[1], math.ceil(keep * 1000))
return {1, tostring(eases), tostring(#alive + 1)}
"""


class NoSlot(RuntimeError):
    """No rate-limit slot within the wait a caller allowed."""


def scope_of(api_key: str) -> str:
    """The rate-limit scope of an API key: a fingerprint, never the key."""
    return "stockpipe-api-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


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
        self._redis = redis.Redis.from_url(redis_url)
        self._acquire = self._redis.register_script(ACQUIRE_SCRIPT)
        self.calls_per_window = calls_per_window
        self.window_s = window_s + guard_s
        self._keep_s = max(self.window_s, KEEP_S)
        self._scope = scope_of(api_key)
        self._calls_key = CALLS_KEY.format(scope=self._scope)
        self._waiting_key = BACKFILL_WAITING_KEY.format(scope=self._scope)
        self._reserve = reserve
        self._on_wait = on_wait
        self._sleep = sleep

    def acquire(self, max_wait_s: float | None = None) -> float:
        """Block until a call may be made; return the seconds waited. With ``max_wait_s``, raise
        :class:`NoSlot` instead of waiting longer (a planned live call then skips its turn)."""
        waited = 0.0
        while True:
            now = time.time()
            granted, eases_at = self._try(now)
            if granted:
                return waited
            if self._reserve:  # the live plan leaves the backfill a share while it waits
                self._redis.set(self._waiting_key, "1", px=int(2000 * self.window_s))
            # a backfill held back by the live plan (free slots, live calls due) looks again soon
            pause = min(max(eases_at - now, 0.25 if self._reserve else 0.05), self.window_s)
            if max_wait_s is not None and waited + pause > max_wait_s:
                raise NoSlot(f"no rate-limit slot within {max_wait_s:g} s")
            if self._on_wait:
                self._on_wait(pause)
            self._sleep(pause)
            waited += pause

    def _try(self, now: float) -> tuple[bool, float]:
        """One attempt: check and grant atomically (:data:`ACQUIRE_SCRIPT`). Live before backfill:
        with a live producer's polling plan published, a backfill call is granted only if every
        live call planned within the next window still finds its slot
        (:func:`~stockpipe.producer.schedule.backfill_may_call`); without one, only while more than
        ``reserve`` slots are free."""
        args: list[str | float | int] = [repr(now), self.calls_per_window, repr(self.window_s), repr(self._keep_s)]
        if not self._reserve:
            args.append("live")
        else:
            from stockpipe.producer import schedule

            live = schedule.published_plan(self._redis, now)
            if live is None:
                args += ["reserve", self._reserve]
            else:
                slack = schedule.live_slack(live)
                args += ["plan", repr(slack)]
                args += [repr(call.at) for call in live.calls_between(now - slack, now + self.window_s)]
        granted, eases_at, _ = self._acquire(keys=[self._calls_key], args=args)
        return bool(granted), float(eases_at)

    def taken(self, now: float | None = None) -> list[float]:
        """The grant times within the window before ``now`` (every caller of the key), newest first."""
        now = time.time() if now is None else now
        return [t for t in (float(v) for v in self._redis.lrange(self._calls_key, 0, -1)) if t > now - self.window_s]

    def backfill_waiting(self) -> bool:
        """Whether a backfill waited for a slot within the last two windows."""
        return bool(self._redis.exists(self._waiting_key))

    def clear(self) -> None:
        self._redis.delete(self._calls_key, self._waiting_key)
