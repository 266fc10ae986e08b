"""Budget-optimal polling: when the producer fetches each watchlist symbol (pure; no I/O but
:func:`publish` and :func:`read`).

The market-data API counts calls in a rolling window (``STOCKPIPE_RATE_LIMIT_PER_MINUTE`` calls
per ``STOCKPIPE_RATE_LIMIT_WINDOW_S`` + ``STOCKPIPE_RATE_LIMIT_GUARD_S`` seconds, the shared limiter's
window). A rolling window does not care *where* in the minute the calls fall, only that the call
B places later is at least one window later; so the plan fetches every due symbol right after its
minute closes (``LEAD_S``, then ``spacing_s`` apart), in a fixed order, and never waits on the limiter:

* **B > N** (budget above the watchlist): one call per symbol per minute at a fixed offset; the
  minute repeats exactly, any window holds at most N + 1 <= B calls, and B - N calls a minute are
  spare (retries, metadata, the backfill).
* **B <= N**: min(N, B) = B calls a minute would repeat every 60 s, but the window is longer than
  60 s (the guard band), so B calls every minute exceed it. The calls drift instead: each minute of
  a cycle of ``cycle_minutes`` starts ``step_s`` (the window's excess over 60 s) later than the one
  before, and the cycle's last minute leaves out its last call, which takes the drift back by one
  ``spacing_s`` (>= cycle_minutes x step_s). With a 0.25 s guard that is one deferred fetch in ~50
  (the bar comes a minute later); docs/architecture.md has the figures.
* **B < N**: the calls rotate over the watchlist, call j fetching symbol j mod N, so each symbol is
  fetched every N/B minutes or so, and :meth:`PollingPlan.stale_by_design` says how stale each
  symbol is by design (published for the dashboard under :data:`SCHEDULE_KEY`).

Every call fetches what closed since the symbol's checkpoint, so a deferred or failed call loses
nothing: the next one brings both bars. Live before backfill: while a backfill waits for the
shared limiter, :func:`live_budget` leaves it a share (``STOCKPIPE_BACKFILL_SHARE``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

#: Seconds after the minute's close of the first call: the source has the bar by then.
LEAD_S = 1.5
#: Least seconds between two planned calls (one fetch and its Kafka delivery take ~0.1-0.3 s).
MIN_SPACING_S = 0.5
#: B <= N: at most one deferred fetch per this many (sets the drift cycle's length).
FETCHES_PER_DEFERRAL = 50
#: Slack over the window's exact boundary (the limiter refuses a call exactly one window later).
MARGIN_S = 0.01
#: The minute's planned calls end this long before the next close.
TAIL_S = 3.0
MINUTE_S = 60.0

SCHEDULE_KEY = "stockpipe:producer:schedule"
#: Default share of the budget the live plan leaves a waiting backfill (STOCKPIPE_BACKFILL_SHARE):
#: at 5 calls/min, 2 for the backfill and 3 live, which polls each of 5 symbols every ~100 s.
BACKFILL_SHARE = 0.4
#: Longest a planned live call may wait for a slot because of the backfill (see :func:`live_slack`).
LIVE_SLACK_S = 1.0


@dataclass(frozen=True)
class Call:
    """One planned fetch: ``symbol`` at unix time ``at``, after the minute that closed at ``close``."""

    at: float
    symbol: str
    close: float

    @property
    def offset_s(self) -> float:
        return self.at - self.close


@dataclass(frozen=True)
class PollingPlan:
    """The fetch plan of ``symbols`` under ``budget`` calls per ``window_s`` (the limiter's window,
    guard band included). Minutes are numbered as unix time // 60: minute ``m`` closes at m x 60 s."""

    symbols: tuple[str, ...]
    budget: int
    window_s: float = 60.25
    lead_s: float = LEAD_S
    per_minute: int = field(init=False)
    step_s: float = field(init=False)
    cycle_minutes: int = field(init=False)
    spacing_s: float = field(init=False)

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("the watchlist is empty: set STOCKPIPE_WATCHLIST")
        if self.budget < 1:
            raise ValueError("the plan needs at least one call per window (STOCKPIPE_RATE_LIMIT_PER_MINUTE)")
        n = len(self.symbols)
        per_minute = min(n, self.budget)
        excess = self.window_s - MINUTE_S  # how much later the same call may come a minute on
        drifting = per_minute == self.budget and excess >= 0
        step = excess + MARGIN_S if drifting else 0.0
        room = MINUTE_S - TAIL_S - self.lead_s  # seconds of the minute the calls may use
        if drifting:
            cycle = max(1, math.ceil(FETCHES_PER_DEFERRAL / per_minute))
            spacing = max(MIN_SPACING_S, cycle * step)
            # the minute's calls and the cycle's drift must fit in the minute: shorten the cycle
            while cycle > 1 and (per_minute - 1) * spacing + (cycle - 1) * step > room:
                cycle -= 1
                spacing = max(MIN_SPACING_S, cycle * step)
            if (per_minute - 1) * spacing > room:
                spacing = max(step, room / max(per_minute - 1, 1))
            if (per_minute - 1) * spacing > room or spacing < cycle * step:
                raise ValueError(
                    f"STOCKPIPE_RATE_LIMIT_GUARD_S is too large to plan {per_minute} calls a minute within the rate "
                    "limit: make it smaller"
                )
        else:
            cycle = 1
            spacing = max(2 * max(excess, 0.0) + MARGIN_S, min(MIN_SPACING_S, room / max(per_minute, 1)))
        object.__setattr__(self, "per_minute", per_minute)
        object.__setattr__(self, "step_s", step)
        object.__setattr__(self, "cycle_minutes", cycle)
        object.__setattr__(self, "spacing_s", spacing)

    # -- the calls --------------------------------------------------------------------------
    @property
    def drifting(self) -> bool:
        return self.step_s > 0

    @property
    def spare_per_minute(self) -> int:
        """Calls a minute the plan leaves to retries, metadata and the backfill."""
        return self.budget - self.per_minute

    def calls(self, minute: int) -> list[Call]:
        """The calls after minute ``minute`` closes (at minute x 60 s), in time order."""
        n, k, cycle = len(self.symbols), self.per_minute, self.cycle_minutes
        position = minute % cycle
        calls_per_cycle = cycle * k - (1 if self.drifting else 0)
        first = (minute // cycle) * calls_per_cycle + position * k  # global index of the minute's first call
        close = minute * MINUTE_S
        ranks = k - 1 if self.drifting and position == cycle - 1 else k
        start = close + self.lead_s + position * self.step_s
        return [Call(start + rank * self.spacing_s, self.symbols[(first + rank) % n], close) for rank in range(ranks)]

    def calls_between(self, start: float, end: float) -> list[Call]:
        """Every planned call with ``start <= at < end`` (unix seconds), in time order."""
        first, last = int(start // MINUTE_S) - 1, int(end // MINUTE_S) + 1
        return [c for m in range(first, last + 1) for c in self.calls(m) if start <= c.at < end]

    # -- what it means for freshness ------------------------------------------------------------
    def stale_by_design(self) -> dict[str, dict[str, float]]:
        """Per symbol: ``max_s`` and ``mean_s``, seconds from a bar's close until the planned fetch
        that brings it, and ``every_s``, the mean seconds between two fetches; over one full
        repetition of the plan."""
        n = len(self.symbols)
        horizon = n * self.cycle_minutes * max(1, math.ceil(n / self.per_minute)) + 2
        warmup = math.ceil(n / self.per_minute) + 2
        fetches: dict[str, list[float]] = {s: [] for s in self.symbols}
        for minute in range(horizon + warmup + math.ceil(n / self.per_minute) + 2):
            for call in self.calls(minute):
                fetches[call.symbol].append(call.at)
        result: dict[str, dict[str, float]] = {}
        for symbol, times in fetches.items():
            delays = []
            index = 0
            for minute in range(warmup, warmup + horizon):
                close = minute * MINUTE_S
                while times[index] < close:
                    index += 1
                delays.append(times[index] - close)
            gaps = [b - a for a, b in zip(times, times[1:], strict=False) if warmup * MINUTE_S <= a]
            result[symbol] = {
                "max_s": round(max(delays), 2),
                "mean_s": round(sum(delays) / len(delays), 2),
                "every_s": round(sum(gaps) / len(gaps), 2) if gaps else MINUTE_S,
            }
        return result

    def describe(self) -> dict[str, Any]:
        return {
            "symbols": len(self.symbols),
            "budget": self.budget,
            "window_s": self.window_s,
            "per_minute": self.per_minute,
            "spare_per_minute": self.spare_per_minute,
            "lead_s": self.lead_s,
            "spacing_s": round(self.spacing_s, 3),
            "step_s": round(self.step_s, 3),
            "cycle_minutes": self.cycle_minutes,
        }


def backfill_share(calls_per_window: int, share: float = BACKFILL_SHARE) -> int:
    """Calls a window the live plan leaves to a waiting backfill: ``share`` of the budget
    (``STOCKPIPE_BACKFILL_SHARE``) rounded down, at least one, never the last one (live ingest keeps
    it: none when the budget is a single call or ``share`` is 0)."""
    if calls_per_window < 2 or share <= 0:
        return 0
    return min(calls_per_window - 1, max(1, math.floor(share * calls_per_window + 1e-9)))


def live_budget(calls_per_window: int, *, backfill_waiting: bool, share: float = BACKFILL_SHARE) -> int:
    """Calls a window the live plan uses: all of them, or all but :func:`backfill_share` while a
    backfill waits for the limiter (so that it moves). With fewer calls than symbols the plan
    rotates fairly over the watchlist (:class:`PollingPlan`), so the share costs each symbol the
    same staleness."""
    return calls_per_window - (backfill_share(calls_per_window, share) if backfill_waiting else 0)


def live_slack(plan: PollingPlan) -> float:
    """Seconds a planned live call may wait for a slot the backfill took (:func:`backfill_may_call`):
    :data:`LIVE_SLACK_S`, at most half the plan's spacing (a live call waits up to its spacing before
    it is deferred, so the backfill never defers one)."""
    return min(LIVE_SLACK_S, plan.spacing_s / 2)


def backfill_may_call(
    now: float,
    taken: Sequence[float],
    live_calls: Sequence[float],
    limit: int,
    window_s: float,
    slack_s: float = 0.0,
) -> bool:
    """Live before backfill: whether a backfill call at ``now`` leaves every live call planned
    within the next window its slot, at the latest ``slack_s`` after its planned time. ``taken``:
    the times of the calls in the shared window (any caller); ``live_calls``: the live plan's call
    times (those planned up to ``slack_s`` before ``now`` included: they may be waiting). Each live
    call at t must find the calls alive at t + ``slack_s`` (made before ``now``, still inside their
    window, plus this one) and the live calls planned up to t within ``limit``.

    The slack is what makes the backfill's share real on a busy machine: the live calls are granted
    a little after their planned times (milliseconds; a few hundred under load), and one that came
    late is still alive at the planned time of its successor one window on, so without it the
    check took that late call's slot for the whole window from the backfill.
    """
    entries = [t for t in taken if t > now - window_s] + [now]
    if len(entries) > limit:
        return False
    upcoming = sorted(t for t in live_calls if now - slack_s <= t < now + window_s)
    return all(sum(1 for t in entries if t > at + slack_s - window_s) + i + 1 <= limit for i, at in enumerate(upcoming))


# -- published for the dashboard and `make status` -----------------------------------------------
def publish(
    client: Any,
    plan: PollingPlan,
    stale: dict[str, dict[str, float]] | None = None,
    *,
    policy: str,
    limit: int,
    now: datetime | None = None,
) -> None:
    """Store the plan and each symbol's staleness by design (``stale``: :meth:`PollingPlan.stale_by_design`,
    computed when not given) under :data:`SCHEDULE_KEY`."""
    client.hset(
        SCHEDULE_KEY,
        mapping={
            "policy": policy,
            "limit": str(limit),
            "symbols": json.dumps(list(plan.symbols)),
            "published_unix": f"{(now or datetime.now(UTC)).timestamp():.3f}",
            "plan": json.dumps(plan.describe()),
            "stale_by_design": json.dumps(stale if stale is not None else plan.stale_by_design()),
            "updated_at": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )


def read(client: Any) -> dict[str, Any]:
    """The published plan: ``policy``, ``limit``, ``plan`` (dict), ``stale_by_design`` (symbol ->
    max_s/mean_s/every_s), ``updated_at``; {} when none was published or it is unreadable."""
    raw = {_text(k): _text(v) for k, v in (client.hgetall(SCHEDULE_KEY) or {}).items()}
    if not raw:
        return {}
    try:
        return {
            **raw,
            "limit": int(raw.get("limit") or 0),
            "symbols": json.loads(raw.get("symbols") or "[]"),
            "published_unix": float(raw.get("published_unix") or 0),
            "plan": json.loads(raw.get("plan") or "{}"),
            "stale_by_design": json.loads(raw.get("stale_by_design") or "{}"),
        }
    except ValueError:  # a garbled key must not break a page
        return {}


def published_plan(client: Any, now: float, max_age_s: float = 150.0) -> PollingPlan | None:
    """The live producer's plan as it last published it (it does every minute), None when there
    is none that recent (no live producer running: nothing to give way to)."""
    known = read(client)
    if not known or known.get("policy") != "planned" or now - known["published_unix"] > max_age_s:
        return None
    try:
        return _plan_of(tuple(known["symbols"]), int(known["plan"]["budget"]), float(known["plan"]["window_s"]))
    except (KeyError, TypeError, ValueError):
        return None


@lru_cache(maxsize=8)
def _plan_of(symbols: tuple[str, ...], budget: int, window_s: float) -> PollingPlan:
    return PollingPlan(symbols, budget, window_s=window_s)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
