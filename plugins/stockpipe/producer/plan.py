"""What the market-data plan serves, as the producer learns it from the answers.

Massive (formerly Polygon.io) sells its data in tiers; the answers tell which one a key has:

* **real-time** (Advanced and up): minute aggregates answer ``"status": "OK"`` up to the last
  closed minute;
* **delayed** (Starter): answers carry ``"status": "DELAYED"`` and the newest bar is ~15 minutes
  old, so the freshness checks (stream_health, the exporter's bar age) allow 15 more minutes;
* **end-of-day** (Basic, the free tier): recent minute aggregates answer HTTP 403
  ``NOT_AUTHORIZED`` ("Your plan doesn't include this data timeframe"): live ingest idles (one
  probing call per cycle) while the backfill still loads past days.

The producer says the plan once, in one sentence, when it first learns it or it changes (log, and
the Redis hash :data:`PLAN_KEY` that ``make status`` and the dashboard show).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

log = logging.getLogger("stockpipe.producer")

PLAN_KEY = "stockpipe:producer:plan"

Plan = Literal["real-time", "delayed", "end-of-day"]

#: How much later than real time a plan's newest minute bar is.
DELAY_S: dict[str, float] = {"real-time": 0.0, "delayed": 15 * 60.0, "end-of-day": 0.0}

SENTENCES: dict[str, str] = {
    "real-time": "The market-data plan serves real-time minute bars.",
    "delayed": "The market-data plan serves minute bars 15 minutes delayed: the newest bar is about 15 minutes "
    "old, and the freshness checks allow for it.",
    "end-of-day": "The market-data plan serves end-of-day data only (not today's minute bars): live ingest idles "
    "while the backfill still loads past days; upgrade the plan for live bars.",
}


def record(client: Any, plan: Plan, source: str, now: datetime | None = None) -> bool:
    """Store ``plan`` in Redis and say it once (log) when it differs from the stored one; True then."""
    if read(client).get("plan") == plan:
        return False
    client.hset(
        PLAN_KEY,
        mapping={
            "plan": plan,
            "delay_s": f"{DELAY_S[plan]:g}",
            "sentence": SENTENCES[plan],
            "source": source,
            "detected_at": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    (log.info if plan == "real-time" else log.warning)("%s", SENTENCES[plan])
    return True


def read(client: Any) -> dict[str, str]:
    """The stored plan (``plan``, ``delay_s``, ``sentence``, ``source``, ``detected_at``), {} when unknown."""
    raw = client.hgetall(PLAN_KEY) or {}
    return {_text(key): _text(value) for key, value in raw.items()}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def delay_s(client: Any) -> float:
    """Seconds the stored plan's newest bar lags real time (0 when unknown or unreadable)."""
    try:
        return float(read(client).get("delay_s") or 0.0)
    except ValueError:  # a freshness check must not fail on a garbled key
        return 0.0


def freshness_allowance_s(settings: Any) -> float:
    """Seconds the freshness checks (stream_health's bar age, the exporter's threshold, the
    dashboard) add to ``STOCKPIPE_HEALTH_MAX_BAR_AGE_S``: the recorded plan's delay (15 minutes on a
    delayed plan), 0 when none is recorded or Redis does not answer."""
    import redis

    try:
        client = settings.redis_client(socket_timeout=2, socket_connect_timeout=2)
        try:
            return delay_s(client)
        finally:
            client.close()
    except redis.RedisError:
        return 0.0


def main() -> int:
    """``python -m stockpipe.producer.plan``: the plan in one line (``make status`` prints it)."""
    import argparse

    import redis

    argparse.ArgumentParser(
        prog="python -m stockpipe.producer.plan", description="The market-data plan the producer detected."
    ).parse_args()

    from stockpipe.config import load_settings

    settings = load_settings()
    try:
        client = settings.redis_client(socket_timeout=2, socket_connect_timeout=2)
        known = read(client)
    except redis.RedisError:
        print("market-data plan: unknown (Redis does not answer)")
        return 0
    if not known:
        print("market-data plan: not known yet (the producer learns it from its first fetch)")
    else:
        print(f"market-data plan: {known.get('plan')} ({known.get('source')}): {known.get('sentence')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
