"""Health of the running pipeline, for the stream_health DAG (and operators).

Checks (thresholds are ``STOCKPIPE_HEALTH_*`` settings):

* ``kafka_lag`` — messages on the bars topic the streaming query has not yet planned (end offsets of
  its last checkpointed batch vs the topic's high watermarks).
* ``stream_batch_age`` — is the streaming job making progress? Judged by the job's heartbeat
  (``ops.stream_heartbeats``: alive, batch in progress since when, batches finished) and its commits
  (``ops.stream_batches``), see :func:`stream_progress_check`: a live job busy with its first
  micro-batch has ``STOCKPIPE_HEALTH_FIRST_BATCH_GRACE_S``, a job that has finished one
  ``STOCKPIPE_HEALTH_MAX_BATCH_AGE_S`` since its last, a job whose heartbeat stopped
  ``STOCKPIPE_HEALTH_HEARTBEAT_TIMEOUT_S``. A breach only while input waits (lag > 0): an idle
  stream with nothing to read is healthy. This is the *stall* condition that gets the stream restarted.
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
from stockpipe.storage.heartbeat import Heartbeat, last_stream_restart, stream_heartbeat

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


def stream_liveness(conn, query_name: str) -> tuple[Heartbeat | None, datetime | None]:
    """The job's heartbeat and stream_health's last restart of it (None, None before migration 015)."""
    import psycopg

    try:
        return stream_heartbeat(conn, query_name), last_stream_restart(conn)
    except psycopg.errors.UndefinedTable:
        log.warning("ops.stream_heartbeats is missing (run the migrations): judging the stream by its commits only")
        return None, None


def _age(now: datetime, then: datetime) -> float:
    return max((now - then).total_seconds(), 0.0)


def stream_progress_check(
    settings: Settings,
    now: datetime,
    last_commit: datetime | None,
    heartbeat: Heartbeat | None,
    restarted_at: datetime | None,
    lag: int | None,
) -> Check:
    """``stream_batch_age``: is the streaming job making progress? (its breach restarts the job)

    Judged by the job's own heartbeat (``ops.stream_heartbeats``) where there is one:

    * no input waiting (lag 0): healthy, whatever the age of the last batch;
    * stream_health restarted the job and no job has beaten since: the new one is still being
      launched, stalled only ``health_first_batch_grace_s`` after the restart;
    * heartbeat older than ``health_heartbeat_timeout_s``: the driver is gone or hung — stalled;
      a job that stopped cleanly (``stopped_at``) gets the first-batch grace for its relaunch;
    * a live job that has finished no micro-batch since it started: its first batch seeds every
      symbol's state from PostgreSQL, stalled only ``health_first_batch_grace_s`` (at least
      ``health_max_batch_age_s``) after the job started;
    * a live job that has: stalled when its last finished batch (or commit) is older than
      ``health_max_batch_age_s``.

    Without a heartbeat (a job from before migration 015) only the last commit's age counts.
    """
    limit = settings.health_max_batch_age_s
    grace = max(settings.health_first_batch_grace_s, limit)
    waiting = lag is None or lag > 0
    wait_text = f" while {lag if lag is not None else 'an unknown number of'} messages wait"

    def verdict(value: float | None, threshold: float, ok: bool, detail: str) -> Check:
        ok = ok or not waiting
        if not ok:
            detail += wait_text + ": stream stalled"
        return Check("stream_batch_age", value, threshold, ok, detail)

    if restarted_at is not None and (heartbeat is None or heartbeat.started_at < restarted_at):
        since = _age(now, restarted_at)
        if since <= grace:
            return verdict(
                since,
                grace,
                True,
                f"stream_health restarted the job {since:.0f}s ago: the new job has not started yet "
                f"(grace {grace:.0f}s)",
            )
        if heartbeat is None:
            return verdict(since, grace, False, f"no job has started in the {since:.0f}s since the restart")

    if heartbeat is None:
        if last_commit is None:
            return verdict(None, limit, False, "the streaming query has committed no batch yet")
        age = _age(now, last_commit)
        return verdict(age, limit, age <= limit, f"last micro-batch {age:.0f}s ago (limit {limit:.0f}s)")

    if heartbeat.stopped_at is not None:
        since = _age(now, heartbeat.stopped_at)
        return verdict(
            since,
            grace,
            since <= grace,
            f"the streaming job stopped {since:.0f}s ago and no new one has started (grace {grace:.0f}s)",
        )

    beat_age = _age(now, heartbeat.beat_at)
    timeout = settings.health_heartbeat_timeout_s
    if beat_age > timeout:
        return verdict(
            beat_age,
            timeout,
            False,
            f"the streaming job's last heartbeat is {beat_age:.0f}s old (limit {timeout:.0f}s): "
            "its driver is gone or hung",
        )

    running = ""
    if heartbeat.batch_id is not None and heartbeat.batch_started_at is not None:
        running = f"; batch {heartbeat.batch_id} in progress for {_age(now, heartbeat.batch_started_at):.0f}s"
    if heartbeat.status_message:
        running += f" (Spark: {heartbeat.status_message})"
    progress = [t for t in (heartbeat.last_done_at, last_commit) if t is not None and t >= heartbeat.started_at]
    if not progress and heartbeat.batches_done == 0:
        up = _age(now, heartbeat.started_at)
        return verdict(
            up,
            grace,
            up <= grace,
            f"the streaming job started {up:.0f}s ago and has finished no micro-batch yet{running} "
            f"(first-batch grace {grace:.0f}s)",
        )
    latest = max(progress) if progress else heartbeat.started_at
    age = _age(now, latest)
    return verdict(age, limit, age <= limit, f"last micro-batch {age:.0f}s ago (limit {limit:.0f}s){running}")


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
        heartbeat, restarted_at = stream_liveness(conn, settings.stream_query_name)
        checks.append(stream_progress_check(settings, now, last_batch, heartbeat, restarted_at, lag))

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
