"""Fault-injection harness: a steady bar feed, a supervised streaming job, service faults, results.

Not a test module. The pieces:

- :class:`SteadyFeeder` sends scripted minute bars (``streamkit.random_bars``, round-robin over the
  symbols, one exact duplicate every 50 messages) into the test's topic at a fixed rate, through an
  idempotent producer whose delivery timeout outlasts any outage, so a broker restart only delays;
- :class:`SupervisedJob` runs ``spark_jobs/stream_indicators.py`` as a subprocess (its own process
  group) and restarts it when it exits, as Airflow's ``market_stream`` DAG does in production;
- :func:`supervisorctl` stops/starts the local stack's services (Kafka, PostgreSQL, Redis);
- :func:`run_stream_scenario` ties them together and measures; :func:`record` keeps each
  scenario's row (``test-artifacts/reliability.jsonl``) for the table printed at the end of the run.

Every scenario also runs user alert rules (:data:`ALERT_RULES`) on the stream: the alerts fired
must equal the TA-Lib oracle's (``tests/integration/alert_oracle``) over the final stored bars —
none missed, none stored twice or fired where the oracle has none.

"Time to recover" is measured from the end of the fault (the service is back, or the job was
killed) until PostgreSQL holds every bar sent before that moment and Redis holds each symbol's
latest stored bar.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from stockpipe.config import Settings
from stockpipe.storage import alerts as alert_store
from tests.integration import alert_oracle, alertkit
from tests.integration import streamkit as kit

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
RESULTS_FILE = ARTIFACTS / "reliability.jsonl"
RESULTS: list[dict] = []  # this run's rows, printed by conftest's terminal summary


# -- results ----------------------------------------------------------------------------------
@dataclass
class Result:
    scenario: str
    bars: int = 0  # distinct (symbol, ts) sent
    lost: int | None = None
    duplicated: int | None = None
    talib_ok: bool | None = None
    rate_limit_ok: bool | None = None  # None: no market-data API in this scenario
    recover_s: float | None = None
    dead_letters: int | None = None
    alerts: int | None = None  # fired alerts the oracle expects
    alerts_missed: int | None = None
    alerts_duplicated: int | None = None  # stored more than once, or fired where the oracle has none
    notes: str = ""
    extra: dict = field(default_factory=dict)


def record(result: Result) -> None:
    row = asdict(result)
    row["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.append(row)
    ARTIFACTS.mkdir(exist_ok=True)
    with RESULTS_FILE.open("a") as out:
        out.write(json.dumps(row) + "\n")
    print(f"\n[reliability] {format_row(row)}", flush=True)


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


def format_row(row: dict) -> str:
    recover = "n/a" if row["recover_s"] is None else f"{row['recover_s']:.1f} s"
    return (
        f"{row['scenario']} | bars {row['bars']} | lost {row['lost']} | duplicated {row['duplicated']} | "
        f"TA-Lib ok {_yes(row['talib_ok'])} | rate limit ok {_yes(row['rate_limit_ok'])} | recover {recover}"
        + (f" | {_alerts(row)}" if row.get("alerts") is not None else "")
        + (f" | {row['notes']}" if row["notes"] else "")
    )


def _alerts(row: dict) -> str:
    if row.get("alerts") is None:
        return "n/a"
    return f"{row['alerts']} (missed {row['alerts_missed']}, duplicated {row['alerts_duplicated']})"


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| scenario | bars | lost | duplicated | TA-Lib ok | rate limit ok | time to recover | alerts | notes |",
        "|---|---:|---:|---:|---|---|---:|---|---|",
    ]
    for row in rows:
        recover = "n/a" if row["recover_s"] is None else f"{row['recover_s']:.1f} s"
        lines.append(
            f"| {row['scenario']} | {row['bars']} | {row['lost']} | {row['duplicated']} | {_yes(row['talib_ok'])} "
            f"| {_yes(row['rate_limit_ok'])} | {recover} | {_alerts(row)} | {row['notes']} |"
        )
    return "\n".join(lines)


# -- the local stack's services ---------------------------------------------------------------
def supervisorctl(*args: str) -> str:
    env = dict(os.environ, STOCKPIPE_HOME=str(ROOT), STOCKPIPE_LOCAL=str(ROOT / ".local"))
    proc = subprocess.run(
        [str(ROOT / ".venv/bin/supervisorctl"), "-c", str(ROOT / "infra/supervisord.conf"), *args],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    if "ERROR" in out and "not running" not in out and "already started" not in out:
        raise RuntimeError(f"supervisorctl {' '.join(args)}: {out.strip()}")
    return out


def wait_ready(service: str, settings: Settings, timeout_s: float = 180) -> float:
    """Block until ``service`` answers; return the seconds waited."""
    started = time.monotonic()
    deadline = started + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if service == "postgres":
                with psycopg.connect(settings.pg_dsn("writer"), connect_timeout=3) as conn:
                    conn.execute("SELECT 1")
            elif service == "redis":
                client = settings.redis_client(socket_timeout=3)
                client.ping()
                client.close()
            elif service == "kafka":
                admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
                topics = admin.list_topics(settings.kafka_topic, timeout=5).topics
                meta = topics.get(settings.kafka_topic)
                if meta is None or meta.error is not None or any(p.leader < 0 for p in meta.partitions.values()):
                    raise RuntimeError(f"topic {settings.kafka_topic} has no leaders yet")
            else:
                raise ValueError(service)
            return time.monotonic() - started
        except Exception as error:  # not up yet
            last = error
            time.sleep(0.5)
    raise TimeoutError(f"{service} did not come back within {timeout_s} s: {last}")


def outage(service: str, settings: Settings, down_s: float) -> Callable[[SupervisedJob], None]:
    """A fault: stop ``service``, keep it down ``down_s`` seconds, start it, wait until it answers."""

    def fault(_job: SupervisedJob) -> None:
        supervisorctl("stop", service)
        time.sleep(down_s)
        supervisorctl("start", service)
        wait_ready(service, settings)

    return fault


# -- the feed ---------------------------------------------------------------------------------
class SteadyFeeder(threading.Thread):
    """Bars at ``rate`` messages/s into the test topic until :meth:`finish` (or the series ends)."""

    def __init__(self, settings: Settings, series: dict[str, list[dict]], rate: float, script: kit.Script) -> None:
        super().__init__(name="steady-feeder", daemon=True)
        self.settings, self.series, self.rate, self.script = settings, series, rate, script
        self.errors: list[str] = []
        self.sent = 0
        self._stop_after: float | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> int:
        """Distinct (symbol, ts) sent so far."""
        with self._lock:
            return len(self.script.expected)

    def finish(self, after_s: float = 0.0) -> None:
        self._stop_after = time.monotonic() + after_s

    def run(self) -> None:
        producer = Producer({
            "bootstrap.servers": self.settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "message.timeout.ms": 900_000, "log_level": 2,
        })  # fmt: skip

        def on_delivery(err, _msg) -> None:
            if err is not None:
                self.errors.append(str(err))

        started = time.monotonic()
        symbols = list(self.series)
        length = min(len(bars) for bars in self.series.values())
        for i in range(length):
            for symbol in symbols:
                if self._stop_after is not None and time.monotonic() >= self._stop_after:
                    break
                bar = self.series[symbol][i]
                value = json.dumps(bar).encode()
                producer.produce(self.settings.kafka_topic, key=symbol.encode(), value=value, on_delivery=on_delivery)
                with self._lock:
                    self.script.bar(bar)
                self.sent += 1
                if self.sent % 50 == 0:  # an exact duplicate now and then
                    producer.produce(self.settings.kafka_topic, key=symbol.encode(), value=value,
                                     on_delivery=on_delivery)  # fmt: skip
                producer.poll(0)
                pause = started + self.sent / self.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            else:
                continue
            break
        remaining = producer.flush(900)
        if remaining:
            self.errors.append(f"{remaining} message(s) never acknowledged")


# -- the streaming job ------------------------------------------------------------------------
class SupervisedJob:
    """``spark_jobs/stream_indicators.py`` in a subprocess, restarted whenever it exits."""

    def __init__(self, settings: Settings, log_path: Path, *, trigger_s: float = 0.5, max_offsets: int = 300) -> None:
        self.env = dict(os.environ)
        self.env.update({
            "STOCKPIPE_KAFKA_TOPIC": settings.kafka_topic,
            "STOCKPIPE_KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
            "STOCKPIPE_PG_DATABASE": settings.pg_database,
            "STOCKPIPE_REDIS_URL": settings.redis_url,
            "STOCKPIPE_STREAM_CHECKPOINT": settings.stream_checkpoint,
            "STOCKPIPE_STREAM_TRIGGER_S": str(trigger_s),
            "STOCKPIPE_STREAM_MAX_OFFSETS_PER_TRIGGER": str(max_offsets),
        })  # fmt: skip
        self.checkpoint = Path(settings.stream_checkpoint)
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115
        self._before_respawn: Callable[[], None] | None = None
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.exits: list[int] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="job-supervisor", daemon=True)

    def _spawn(self) -> None:
        self.starts += 1
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "spark_jobs" / "stream_indicators.py")],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            if self.process is None:
                self._spawn()
            elif self.process.poll() is not None:
                self.exits.append(self.process.returncode)
                if self._stopping.wait(1.0):  # a short back-off, as a supervisor would
                    return
                if self._before_respawn is not None:
                    self._before_respawn()
                    self._before_respawn = None
                self._spawn()
            self._stopping.wait(0.3)

    def start(self) -> None:
        self._thread.start()

    def kill9(self) -> None:
        """kill -9 of the whole job: driver JVM, Python driver and Python workers."""
        assert self.process is not None and self.process.poll() is None, self.tail()
        os.killpg(self.process.pid, signal.SIGKILL)

    def reset_checkpoint(self) -> None:
        """README's recovery step, mid-stream: stop the job (SIGTERM: after its running batch), move
        its checkpoint aside; the supervisor starts it again on the same, now empty, path."""
        assert self.process is not None and self.process.poll() is None, self.tail()
        moved = self.checkpoint.with_name(self.checkpoint.name + ".moved")
        self._before_respawn = lambda: self.checkpoint.rename(moved)
        os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while self._before_respawn is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self._before_respawn is None, "the job did not stop within 120 s of SIGTERM"

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)
        process = self.process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
        self.log.close()

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


# -- probes -----------------------------------------------------------------------------------
class Probe:
    """Read-only looks at PostgreSQL and Redis that survive their restarts (reconnect on error)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn: psycopg.Connection | None = None
        self.redis = settings.redis_client(decode_responses=True, socket_timeout=3)

    def _query(self, sql: str) -> list[tuple]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.settings.pg_dsn("writer"), autocommit=True, connect_timeout=3)
        try:
            return self.conn.execute(sql).fetchall()
        except psycopg.Error:
            self.conn.close()
            self.conn = None
            raise

    def stored(self) -> int | None:
        try:
            return self._query("SELECT count(*) FROM market.bars_1m")[0][0]
        except psycopg.Error:
            return None

    def batches(self) -> int | None:
        try:
            return self._query("SELECT count(*) FROM ops.stream_batches")[0][0]
        except psycopg.Error:
            return None

    def redis_caught_up(self) -> bool:
        try:
            last = dict(self._query("SELECT symbol, max(ts) FROM market.bars_1m GROUP BY symbol"))
            for symbol, ts in last.items():
                if self.redis.hget(f"stockpipe:latest:{symbol}", "ts") != kit.iso(ts):
                    return False
            return bool(last)
        except (psycopg.Error, redis.RedisError):
            return False

    def wait(
        self, condition: Callable[[], bool], timeout_s: float, what: str, job: SupervisedJob | None = None
    ) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if condition():
                return time.monotonic() - started
            time.sleep(0.25)
        raise TimeoutError(f"{what}: not reached in {timeout_s:.0f} s" + (f"\n{job.tail()}" if job else ""))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.redis.close()


# -- user alerts ------------------------------------------------------------------------------
#: Rules of every kind on every symbol; cool-downs make a firing depend on the one before it.
ALERT_RULES = [
    ("*", "rsi_14 crosses below 35", 0),
    ("*", "rsi_14 crosses above 65", 20),
    ("*", "macd crosses above signal", 0),
    ("*", "macd crosses below signal", 10),
    ("*", "close crosses above sma_20", 0),
    ("*", "close crosses below bb_middle", 5),
    ("*", "close moves 0.5% within 5 minutes", 0),
    ("*", "volume >= 2x avg_20", 0),
]


def add_alert_rules(settings: Settings) -> list[dict]:
    """Store :data:`ALERT_RULES` (before the stream starts); the oracle's view of them."""
    with psycopg.connect(settings.pg_dsn("writer"), autocommit=True) as conn:
        rules = [alert_store.add_rule(conn, s, condition, cooldown) for s, condition, cooldown in ALERT_RULES]
    return alertkit.oracle_rules(rules)


def measure_alerts(settings: Settings, frame, rules: list[dict], result: Result) -> list[AssertionError]:
    """Fill the alert columns of ``result``: stored fired alerts vs the oracle over ``frame``.

    The steady feed never corrects a bar, so nothing may be retracted either: a retracted alert
    the oracle does not have was fired where it should not have been (and, had the worker run,
    delivered twice: once fired, once retracted) — it counts as duplicated."""
    with psycopg.connect(settings.pg_dsn("writer"), autocommit=True) as conn:
        stored = alert_oracle.stored_alerts(conn)
        retracted = set(alert_oracle.stored_alerts(conn, ("retracted",)))
    expected = alert_oracle.expected_alerts(frame, rules)
    result.alerts = len(expected)
    result.alerts_missed = len(expected - set(stored))
    phantoms = len(set(stored) - expected) + len(retracted - expected)
    result.alerts_duplicated = (len(stored) - len(set(stored))) + phantoms
    result.extra["alerts_retracted"] = len(retracted)
    if result.alerts_missed or result.alerts_duplicated:
        return [AssertionError(f"alerts: {result.alerts_missed} missed, {result.alerts_duplicated} duplicated")]
    return []


# -- the scenario -----------------------------------------------------------------------------
def measure(settings: Settings, script: kit.Script, result: Result) -> tuple[object, list[AssertionError]]:
    """Fill lost/duplicated/TA-Lib of ``result`` from what PostgreSQL holds; return the frame and
    the invariant violations found (asserted by the caller after recording the row)."""
    failures: list[AssertionError] = []
    with psycopg.connect(settings.pg_dsn("writer"), autocommit=True) as conn:
        (rows, distinct) = conn.execute("SELECT count(*), count(DISTINCT (symbol, ts)) FROM market.bars_1m").fetchone()
        (dup_ind,) = conn.execute("SELECT count(*) - count(DISTINCT (symbol, ts)) FROM market.indicators_1m").fetchone()
        frame = kit.stored(conn)
    keys = set(zip(frame["symbol"], frame["ts"], strict=True))
    result.bars = len(script.expected)
    result.lost = len(set(script.expected) - keys)
    result.duplicated = (rows - distinct) + dup_ind
    result.extra["unexpected_rows"] = len(keys - set(script.expected))
    client = settings.redis_client(decode_responses=True)
    try:
        for check in (
            lambda: kit.assert_latest_values(frame, script.expected),
            lambda: kit.assert_redis_matches(client, frame),
        ):
            try:
                check()
            except AssertionError as error:
                failures.append(error)
        try:
            kit.assert_talib_exact(frame)
            result.talib_ok = True
        except AssertionError as error:
            result.talib_ok = False
            failures.append(error)
    finally:
        client.close()
    return frame, failures


def run_stream_scenario(
    name: str,
    settings: Settings,
    tmp_path: Path,
    fault: Callable[[SupervisedJob], None],
    *,
    rate: float = 10.0,
    after_fault_s: float = 10.0,
    seed: int = 100,
    recover_timeout_s: float = 420.0,
    settle_s: float = 2.0,
) -> Result:
    """Steady feed → supervised streaming job; ``fault`` once the stream is flowing; measure."""
    settings = settings.model_copy(update={"stream_checkpoint": str(tmp_path / "checkpoint")})
    series = {s: kit.random_bars(s, kit.SESSION_OPEN, 1500, seed=seed + n) for n, s in enumerate(kit.SYMBOLS)}
    script = kit.Script()
    result = Result(name)
    rules = add_alert_rules(settings)
    job = SupervisedJob(settings, tmp_path / "job.log")
    feeder = SteadyFeeder(settings, series, rate, script)
    probe = Probe(settings)
    try:
        job.start()
        feeder.start()
        # Flowing: a few micro-batches committed, bars in PostgreSQL.
        probe.wait(lambda: (probe.batches() or 0) >= 3 and (probe.stored() or 0) > 0, 240, "stream start", job)
        time.sleep(settle_s)  # mid-stream, micro-batches in flight
        before = probe.stored()
        fault_started = time.monotonic()
        fault(job)
        fault_ended = time.monotonic()
        target = feeder.snapshot()
        result.recover_s = round(
            probe.wait(lambda: (probe.stored() or 0) >= target and probe.redis_caught_up(), recover_timeout_s,
                       f"{name}: recovery to {target} bars", job), 1,
        )  # fmt: skip
        feeder.finish(after_s=after_fault_s)
        feeder.join(960)
        assert not feeder.is_alive(), "the feeder did not finish"
        total = feeder.snapshot()
        probe.wait(lambda: probe.stored() == total and probe.redis_caught_up(), recover_timeout_s,
                   f"{name}: final drain to {total} bars", job)  # fmt: skip
    finally:
        job.stop()
        probe.close()
    result.extra.update({
        "fault_s": round(fault_ended - fault_started, 1), "stored_before_fault": before,
        "job_starts": job.starts, "job_exits": job.exits, "messages_sent": feeder.sent,
        "feeder_errors": feeder.errors[:3],
    })  # fmt: skip
    restarts = job.starts - 1
    result.notes = f"fault lasted {result.extra['fault_s']} s; job (re)started {restarts}×"
    frame, failures = measure(settings, script, result)
    failures += measure_alerts(settings, frame, rules, result)
    record(result)
    assert not feeder.errors, feeder.errors[:3]
    if failures:
        raise failures[0]
    assert result.lost == 0 and result.duplicated == 0 and result.extra["unexpected_rows"] == 0
    assert result.alerts and result.alerts_missed == 0 and result.alerts_duplicated == 0
    return result
