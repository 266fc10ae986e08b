"""Health of the running pipeline, for the stream_health DAG (and operators).

Checks (thresholds are ``STOCKPIPE_HEALTH_*`` settings):

* ``kafka_lag`` — messages on the bars topic the streaming query has not yet planned (end offsets of
  its last checkpointed batch vs the topic's high watermarks).
* ``stream_batch_age`` — seconds since the query last committed a micro-batch (``ops.stream_batches``);
  a breach only while input waits (lag > 0): an idle stream with nothing to read is healthy. This
  is the *stall* condition that gets the stream restarted.
* ``bar_age:SYMBOL`` — during a trading session, seconds since the end of the symbol's newest stored bar.
* ``dlq_growth`` — dead letters added since the previous health check.
* ``producer_cycle_age`` — during a trading session, seconds since the producer last finished a cycle
  (``ops.ingest_cycles``: market_producer's long-running loop, or market_ingest's runs).
* ``api_error_rate`` — failed share of the producer's symbol fetches over the last 15 minutes.

Every result is stored in ``ops.health_checks``; :meth:`HealthReport.message` is the one-paragraph
explanation a failed run shows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stockpipe import clients
from stockpipe.calendar import CalendarMode, trading_calendar
from stockpipe.config import Settings
from stockpipe.storage import queries

log = logging.getLogger("stockpipe.monitoring.health")


@dataclass
class Check:
    name: str
    value: float | None
    threshold: float | None
    ok: bool
    detail: str


@dataclass
class HealthReport:
    checked_at: datetime
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def breaches(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def stalled(self) -> bool:
        return any(c.name == "stream_batch_age" and not c.ok for c in self.checks)

    def message(self) -> str:
        if self.ok:
            return f"pipeline healthy ({len(self.checks)} checks)"
        return "pipeline unhealthy: " + "; ".join(f"{c.name}: {c.detail}" for c in self.breaches)


# --- kafka ---------------------------------------------------------------------------------------
def topic_end_offsets(settings: Settings, topic: str) -> dict[int, int] | None:
    """High watermark per partition, or None when the topic does not exist."""
    return clients.end_offsets(settings, topic, role="health", timeout_s=10)


def checkpoint_offsets(checkpoint: str, topic: str) -> dict[int, int] | None:
    """End offsets of the last *committed* batch in a local Spark checkpoint (None: unknown/remote)."""
    if "://" in checkpoint and not checkpoint.startswith("file://"):
        return None
    root = Path(checkpoint.removeprefix("file://"))
    commits = [int(p.name) for p in (root / "commits").glob("*") if p.name.isdigit()]
    if not commits:
        return None
    offsets_file = root / "offsets" / str(max(commits))
    try:
        lines = offsets_file.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and topic in data:
            return {int(p): int(o) for p, o in data[topic].items()}
    return None


# --- the checks ----------------------------------------------------------------------------------
def producer_cycle_check(last_cycle: datetime | None, now: datetime, limit: float) -> Check:
    """``producer_cycle_age``: seconds since the producer last finished a cycle (``ops.ingest_cycles``)."""
    if last_cycle is None:
        return Check("producer_cycle_age", None, limit, False, "the producer has recorded no cycle yet")
    age = max((now - last_cycle).total_seconds(), 0.0)
    detail = f"last producer cycle finished {age:.0f}s ago (limit {limit:.0f}s)"
    if age > limit:
        detail += ": is market_producer running (or STOCKPIPE_PRODUCER_MODE's producer)?"
    return Check("producer_cycle_age", age, limit, age <= limit, detail)


def check_health(
    settings: Settings,
    *,
    now: datetime | None = None,
    calendar: CalendarMode = "nyse",
    checkpoint: str | None = None,
    record: bool = True,
) -> HealthReport:
    now = now or datetime.now(UTC)
    report = HealthReport(now)
    checks = report.checks

    end_offsets = topic_end_offsets(settings, settings.kafka_topic)
    done = checkpoint_offsets(checkpoint or settings.stream_checkpoint, settings.kafka_topic)
    lag: int | None = None
    if end_offsets is None:
        checks.append(
            Check(
                "kafka_lag",
                None,
                settings.health_max_lag_messages,
                False,
                f"topic {settings.kafka_topic} not found on {settings.kafka_bootstrap}",
            )
        )
    elif done is None:
        lag = sum(end_offsets.values())  # no committed batch yet: everything waits
        ok = lag <= settings.health_max_lag_messages
        checks.append(
            Check(
                "kafka_lag",
                lag,
                settings.health_max_lag_messages,
                ok,
                f"{lag} messages waiting, the stream has committed no batch yet",
            )
        )
    else:
        lag = sum(max(end - done.get(p, 0), 0) for p, end in end_offsets.items())
        checks.append(
            Check(
                "kafka_lag",
                lag,
                settings.health_max_lag_messages,
                lag <= settings.health_max_lag_messages,
                f"{lag} messages not yet processed (limit {settings.health_max_lag_messages})",
            )
        )

    with clients.pg_connect(settings, "writer", connect_timeout=10, autocommit=True) as conn:
        state = queries.pipeline_state(
            conn, settings.stream_query_name, settings.watchlist, now=now, bars_since=now - timedelta(days=1)
        )
        last_batch = None if state.last_batch is None else state.last_batch["committed_at"]
        waiting = lag is None or lag > 0
        limit = settings.health_max_batch_age_s
        if last_batch is None:
            checks.append(
                Check(
                    "stream_batch_age",
                    None,
                    limit,
                    not waiting,
                    "the streaming query has committed no batch yet"
                    + (f" while {lag} messages wait" if waiting and lag else ""),
                )
            )
        else:
            age = (now - last_batch).total_seconds()
            ok = age <= limit or not waiting
            detail = f"last micro-batch {age:.0f}s ago (limit {limit:.0f}s)"
            if waiting and not ok:
                detail += f" while {lag if lag is not None else 'unknown'} messages wait: stream stalled"
            checks.append(Check("stream_batch_age", age, limit, ok, detail))

        session = trading_calendar(calendar).session_at(now)
        from stockpipe.producer.plan import freshness_allowance_s

        # a delayed market-data plan's newest bar is 15 minutes old by design
        max_age = settings.health_max_bar_age_s + freshness_allowance_s(settings)
        if session is not None and (now - session.open).total_seconds() > max_age:
            rows = state.newest_bars
            for symbol in settings.watchlist:
                newest = rows.get(symbol)
                if newest is None:
                    checks.append(
                        Check(f"bar_age:{symbol}", None, max_age, False, f"no bar of {symbol} in the last day")
                    )
                    continue
                age = (now - (newest + timedelta(minutes=1))).total_seconds()
                checks.append(
                    Check(
                        f"bar_age:{symbol}",
                        age,
                        max_age,
                        age <= max_age,
                        f"newest {symbol} bar ended {age:.0f}s ago (limit {max_age:.0f}s)",
                    )
                )

        # the producer (market_producer's loop, supervisord's, or market_ingest's runs) keeps cycling
        cycle_limit = settings.health_max_cycle_age_s
        if session is not None and (now - session.open).total_seconds() > cycle_limit:
            checks.append(producer_cycle_check(state.last_cycle, now, cycle_limit))

        dlq_offsets = topic_end_offsets(settings, settings.kafka_dlq_topic)
        if dlq_offsets is not None:
            total = sum(dlq_offsets.values())
            previous = queries.last_health_value(conn, "dlq_messages")
            growth = total - int(previous) if previous is not None and total >= previous else 0
            limit_dlq = settings.health_max_dlq_growth
            checks.append(
                Check(
                    "dlq_growth",
                    growth,
                    limit_dlq,
                    growth <= limit_dlq,
                    f"{growth} new dead letters since the last check (limit {limit_dlq})",
                )
            )
            checks.append(Check("dlq_messages", total, None, True, f"{total} dead letters in total"))

        failed, attempted = state.ingest_failed, state.ingest_attempted
        if attempted:
            rate = failed / attempted
            limit_rate = settings.health_max_api_error_rate
            checks.append(
                Check(
                    "api_error_rate",
                    rate,
                    limit_rate,
                    rate <= limit_rate,
                    f"{failed} of {attempted} symbol fetches failed in 15 min (limit {limit_rate:.0%})",
                )
            )

        if record:
            queries.record_health_checks(conn, [(now, c.name, c.value, c.threshold, c.ok, c.detail) for c in checks])
    log.info("%s", report.message())
    return report
