"""Benchmark (not a test): user alerts on the stream — bar arrival → alert on Redis pub/sub, and what
1,000 rules cost each micro-batch.

    .venv/bin/python bench/alerts_latency.py [--symbols 500] [--rules 1000] [--rate 1000] [--duration 40]

One run on the local stack's services, isolated from them: database ``stockpipe_bench_alerts``
(dropped and re-migrated), Redis db 11 (flushed), topics ``bench-alerts-<id>`` (deleted at the end),
checkpoint ``.local/bench/alerts_latency/``. The real streaming job (spark_jobs/stream_indicators.py)
and the real delivery worker (``python -m stockpipe.alerts.worker``) run as child processes.

1. A backlog of ``--warm-bars`` bars per symbol (so every indicator has its history) is streamed.
2. **Baseline** (no rule): ``--rate`` bars/s for ``--duration`` s, ``fetched_at`` = send time;
   bar → PostgreSQL (``written_at − fetched_at``) and the micro-batches' processing time.
3. **With rules**: ``--rules`` enabled rules (symbol rules of every kind, 5 of them on ``*`` with a
   cool-down), the worker running, the same rate and duration. Bar → alert = receive time of the
   ``stockpipe:alerts`` message − send time of the bar that fired it (the bench remembers each
   bar's send time). Bars sent in the first ``--warmup`` s of a phase are left out.

Target: bar → alert p95 ≤ 2 s at 1,000 bars/s with 1,000 rules. Prints a table and writes
bench/results/alerts_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from bench import stream_throughput as st  # noqa: E402
from stockpipe.admin import ensure_topics  # noqa: E402
from stockpipe.config import REDIS_ALERTS_CHANNEL, Settings  # noqa: E402
from stockpipe.storage import alerts as alert_store  # noqa: E402
from stockpipe.storage.migrate import migrate  # noqa: E402

DATABASE = "stockpipe_bench_alerts"
REDIS_DB = 11
WORK = ROOT / ".local" / "bench" / "alerts_latency"
RESULTS = ROOT / "bench" / "results" / "alerts_latency.json"
P95_TARGET_S = 2.0
EVAL_LINE = re.compile(r"alerts: \d+ rule\(s\) over (\d+) bar\(s\): .* ([\d.]+) ms")
log = st.log


def bench_settings() -> Settings:
    """stream_throughput's bench settings on this benchmark's database, Redis db and topics."""
    base = st.bench_settings()
    suffix = uuid.uuid4().hex[:8]
    return base.model_copy(
        update={
            "pg_database": DATABASE,
            "redis_url": base.redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}",
            "kafka_topic": f"bench-alerts-{suffix}",
            "kafka_dlq_topic": f"bench-alerts-{suffix}.dlq",
            "stream_checkpoint": str(WORK / "checkpoint"),
        }
    )


def prepare(settings: Settings) -> None:
    with psycopg.connect(settings.pg_dsn("admin", "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    migrate(settings, DATABASE, wait_s=30)
    client = settings.redis_client()
    client.flushdb()
    client.close()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    ensure_topics(settings, {settings.kafka_topic: settings.kafka_partitions, settings.kafka_dlq_topic: 1}, wait_s=30)


def make_rules(symbols: list[str], count: int, seed: int = 15) -> list[tuple[str, str, int]]:
    """``count`` rules over ``symbols``: every kind, levels spread; 5 on ``*`` with a 30-minute cool-down."""
    rng = np.random.default_rng(seed)
    lines = ["sma_5", "sma_20", "sma_50", "ema_12", "ema_26", "bb_upper", "bb_middle", "bb_lower"]
    rules = [
        ("*", "macd crosses above signal", 30),
        ("*", "rsi_14 crosses below 30", 30),
        ("*", "close crosses below bb_lower", 30),
        ("*", "volume >= 3x avg_20", 30),
        ("*", "close moves 1% within 15 minutes", 30),
    ][: min(5, count)]
    for i in range(count - len(rules)):
        symbol = symbols[i % len(symbols)]
        kind = i % 8
        if kind == 0:
            condition = f"rsi_14 crosses below {rng.integers(25, 40)}"
        elif kind == 1:
            condition = f"rsi_14 crosses above {rng.integers(60, 75)}"
        elif kind == 2:
            condition = "macd crosses above signal"
        elif kind == 3:
            condition = "macd crosses below signal"
        elif kind == 4:
            condition = f"close crosses above {lines[rng.integers(len(lines))]}"
        elif kind == 5:
            condition = f"close crosses below {lines[rng.integers(len(lines))]}"
        elif kind == 6:
            condition = f"close moves {rng.choice([0.3, 0.5, 0.8])}% within {rng.choice([5, 10, 15])} minutes"
        else:
            condition = f"volume >= {rng.choice([2, 2.5, 3])}x avg_20"
        rules.append((symbol, condition, int(rng.choice([0, 0, 5, 15]))))
    return rules


class AlertSubscriber(threading.Thread):
    """(receive time, symbol, bar ts, status) of every ``stockpipe:alerts`` message of the bench's symbols."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        super().__init__(daemon=True)
        self.client = settings.redis_client()
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(REDIS_ALERTS_CHANNEL)
        self.prefix = prefix
        self.samples: list[tuple[float, str, str, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is None:
                continue
            received = time.time()
            data = json.loads(message["data"])
            if data["symbol"].startswith(self.prefix):  # channels are server-wide: a dev stack's alerts too
                self.samples.append((received, data["symbol"], data["ts"], data["status"]))

    def close(self) -> None:
        self.stopping.set()
        self.join(5)
        self.pubsub.close()
        self.client.close()


def paced(settings: Settings, walk: st.Walk, rate: float, duration_s: float) -> dict[tuple[str, str], float]:
    """``rate`` bars/s for ``duration_s``; (symbol, bar ts) → send time (epoch s)."""
    kafka = st.producer(settings)
    sent_at: dict[tuple[str, str], float] = {}
    start = time.monotonic()
    sent = 0
    n_symbols = len(walk.symbols)
    while (elapsed := time.monotonic() - start) < duration_s:
        due = int(rate * elapsed) + 1
        while sent < due:
            now = time.time()
            key, value = walk.next(sent % n_symbols, "bench-live", st.iso_us(now))
            kafka.produce(settings.kafka_topic, key=key, value=value)
            bar = json.loads(value)
            sent_at[(bar["symbol"], bar["ts"])] = now
            sent += 1
        kafka.poll(0)
        time.sleep(max(0.0, min(0.005, (sent / rate) - (time.monotonic() - start))))
    if kafka.flush(30):
        raise SystemExit("Kafka did not acknowledge the paced bars")
    return sent_at


def wait_stored(conn: psycopg.Connection, job: st.Job, expected: int, timeout_s: float = 180) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        (stored,) = conn.execute("SELECT count(*) FROM market.bars_1m").fetchone()
        if stored >= expected or time.monotonic() > deadline:
            return stored
        job.check()
        time.sleep(0.25)


def phase(settings, conn, job, walk, args, sub: AlertSubscriber | None, expected_before: int) -> dict:
    last_batch = max((b[0] for b in st.stream_batches(conn)), default=-1)
    load_before = st.loadavg()
    t0 = time.time()
    sent_at = paced(settings, walk, args.rate, args.duration)
    t1 = time.time()
    stored = wait_stored(conn, job, expected_before + len(sent_at))
    time.sleep(3)  # the last alerts through the worker
    lo = t0 + args.warmup
    pg_lat = [
        r[0]
        for r in conn.execute(
            "SELECT extract(epoch FROM written_at - fetched_at)::float8 FROM market.bars_1m "
            "WHERE source = 'bench-live' AND fetched_at >= to_timestamp(%s) AND fetched_at <= to_timestamp(%s)",
            (lo, t1 + 1),
        )
    ]
    batches = [b for b in st.stream_batches(conn, last_batch) if b[1]]
    out = {
        "sent": len(sent_at),
        "stored_total": stored,
        "achieved_rate": len(sent_at) / (t1 - t0),
        "postgres_s": st.percentiles(pg_lat),
        "batches": len(batches),
        "batch_rows_mean": float(np.mean([b[1] for b in batches])) if batches else None,
        "batch_processing_ms": st.percentiles([b[2] for b in batches]),
        "loadavg_before": load_before,
        "loadavg_after": st.loadavg(),
    }
    if sub is not None:
        # the sink's own figure: "alerts: N rule(s) over B bar(s): ... X ms" per micro-batch (job log)
        lines = (WORK / "job.log").read_text(errors="replace").splitlines()
        eval_ms = [float(m.group(2)) for m in map(EVAL_LINE.search, lines) if m]
        bars = [int(m.group(1)) for m in map(EVAL_LINE.search, lines) if m]
        out["evaluation_ms"] = st.percentiles(eval_ms)
        out["evaluation_bars_mean"] = float(np.mean(bars)) if bars else None
        alert_lat = [
            received - sent_at[(symbol, ts)]
            for received, symbol, ts, status in list(sub.samples)
            if status == "fired" and (symbol, ts) in sent_at and sent_at[(symbol, ts)] >= lo
        ]
        (fired,) = conn.execute(
            "SELECT count(*) FROM market.alerts a JOIN market.bars_1m b USING (symbol, ts) "
            "WHERE b.source = 'bench-live' AND b.fetched_at >= to_timestamp(%s)",
            (t0,),
        ).fetchone()
        publish = [
            r[0]
            for r in conn.execute(
                "SELECT extract(epoch FROM published_at - fired_at)::float8 FROM market.alerts "
                "WHERE published_at IS NOT NULL AND fired_at >= to_timestamp(%s)",
                (lo,),
            )
        ]
        out["fired_to_published_s"] = st.percentiles(publish)
        (undelivered,) = conn.execute(
            "SELECT count(*) FROM market.alerts WHERE delivery IN ('pending', 'sending')"
        ).fetchone()
        out.update(
            {
                "alert_s": st.percentiles(alert_lat),
                "alerts_fired": fired,
                "alerts_per_s": fired / (t1 - t0),
                "alerts_undelivered_at_end": undelivered,
            }
        )
    return out


def fmt(value, unit: str = "") -> str:
    return st.fmt(value, unit)


def table(result: dict) -> str:
    base, rules = result["baseline"], result["with_rules"]
    rows = [
        ("bars/s sent", fmt(base["achieved_rate"]), fmt(rules["achieved_rate"]), ""),
        ("bar → PostgreSQL p50", fmt(base["postgres_s"]["p50"], " s"), fmt(rules["postgres_s"]["p50"], " s"), ""),
        ("bar → PostgreSQL p95", fmt(base["postgres_s"]["p95"], " s"), fmt(rules["postgres_s"]["p95"], " s"), ""),
        (
            "micro-batch processing p50",
            fmt(base["batch_processing_ms"]["p50"], " ms"),
            fmt(rules["batch_processing_ms"]["p50"], " ms"),
            "",
        ),
        (
            "micro-batch processing p95",
            fmt(base["batch_processing_ms"]["p95"], " ms"),
            fmt(rules["batch_processing_ms"]["p95"], " ms"),
            "",
        ),
        (
            "alert evaluation per micro-batch p50 / p95",
            "—",
            f"{fmt(rules['evaluation_ms']['p50'], ' ms')} / {fmt(rules['evaluation_ms']['p95'], ' ms')}",
            f"{fmt(rules['evaluation_bars_mean'])} bars judged per batch (mean)",
        ),
        ("alerts fired (per s)", "—", f"{rules['alerts_fired']} ({rules['alerts_per_s']:.0f}/s)", ""),
        (
            "alert stored → published p50 / p95",
            "—",
            f"{fmt(rules['fired_to_published_s']['p50'], ' s')} / {fmt(rules['fired_to_published_s']['p95'], ' s')}",
            "the worker's part (NOTIFY at the sink's commit)",
        ),
        ("bar → alert on pub/sub p50", "—", fmt(rules["alert_s"]["p50"], " s"), ""),
        (
            "bar → alert on pub/sub p95",
            "—",
            fmt(rules["alert_s"]["p95"], " s"),
            f"target ≤ {P95_TARGET_S:g} s: {'met' if (rules['alert_s']['p95'] or 99) <= P95_TARGET_S else 'MISSED'}",
        ),
        (
            "bar → alert on pub/sub p99 / max",
            "—",
            f"{fmt(rules['alert_s']['p99'], ' s')} / {fmt(rules['alert_s']['max'], ' s')}",
            "",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    p = result["params"]
    lines = [
        f"alerts latency: {p['symbols']} symbols, {p['rate']:g} bars/s for {p['duration_s']:g} s per phase, "
        f"{p['rules']} rules; load {result['loadavg_start']}; "
        + (f"after a {p['jit_warmup_s']:g} s JIT warm-up" if p.get("jit_warmup_s") else "a cold job (no JIT warm-up)"),
        f"{'':<{width}}  {'no rule':>14}  {str(p['rules']) + ' rules':>18}",
    ]
    lines += [f"{name:<{width}}  {a:>14}  {b:>18}  {note}" for name, a, b, note in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--duration", type=float, default=40)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--warm-bars", type=int, default=60, help="bars per symbol streamed before the phases")
    parser.add_argument("--trigger", type=float, default=None)
    parser.add_argument(
        "--jit-warmup",
        type=float,
        default=240,
        help="seconds of --rate bars/s sent (not measured) before the phases: the JVM's JIT warm-up (0: a cold job)",
    )
    args = parser.parse_args()
    settings = bench_settings()
    args.trigger = settings.stream_trigger_s if args.trigger is None else args.trigger
    result: dict = {
        "benchmark": "alerts_latency",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": st.machine(),
        "loadavg_start": st.loadavg(),
        "params": {
            "symbols": args.symbols, "rules": args.rules, "rate": args.rate, "duration_s": args.duration,
            "warmup_s": args.warmup, "warm_bars": args.warm_bars, "trigger_s": args.trigger,
            "jit_warmup_s": args.jit_warmup,
        },
    }  # fmt: skip
    log(f"load average {result['loadavg_start']}; preparing {DATABASE}, Redis db {REDIS_DB}, {settings.kafka_topic}")
    prepare(settings)
    job = worker = sub = None
    conn = psycopg.connect(settings.pg_dsn("writer"), autocommit=True)
    try:
        prefix = "A"
        symbols = [f"{prefix}{i:04d}" for i in range(args.symbols)]
        start = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
        walk = st.Walk(symbols, start, seed=7)
        n, _ = st.preload(settings, walk, args.warm_bars)
        job = st.Job(settings, 20_000, args.trigger, WORK / "job.log")
        stored = wait_stored(conn, job, n, timeout_s=300)
        log(f"warm: {stored} bars streamed")
        if args.jit_warmup > 0:
            # A live stream runs for hours; its first minutes are the JVM's JIT warm-up (the compiler
            # threads took ~9 s of CPU per 30 s 1.5 minutes into the job and ~2 s after 5 minutes on
            # the 2-core box: docs/benchmarks.md, "User alerts", session 6), which the phases below
            # would otherwise measure. Not measured; the job's JVM CPU is recorded.
            log(f"JIT warm-up: {args.rate:g} bars/s for {args.jit_warmup:g} s (not measured)")
            cpu0 = job.cpu_s()
            sent, _, _ = st.paced(settings, walk, args.rate, args.jit_warmup)
            stored = wait_stored(conn, job, stored + sent, timeout_s=300)
            result["jit_warmup"] = {"bars": sent, "job_cpu_s": round(job.cpu_s() - cpu0, 1), "stored_total": stored}
            log(f"JIT warm-up done: {stored} bars stored, job CPU {result['jit_warmup']['job_cpu_s']} s")

        log(f"baseline: no rule, {args.rate:g} bars/s for {args.duration:g} s")
        result["baseline"] = phase(settings, conn, job, walk, args, None, stored)
        stored = result["baseline"]["stored_total"]

        for symbol, condition, cooldown in make_rules(symbols, args.rules):
            alert_store.add_rule(conn, symbol, condition, cooldown)
        env = dict(os.environ, STOCKPIPE_PG_DATABASE=DATABASE, STOCKPIPE_REDIS_URL=settings.redis_url)
        worker_log = open(WORK / "worker.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, "-m", "stockpipe.alerts.worker"], env=env, stdout=worker_log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=ROOT,
        )  # fmt: skip
        sub = AlertSubscriber(settings, prefix)
        sub.start()
        time.sleep(2)
        log(f"with {args.rules} rules and the worker: {args.rate:g} bars/s for {args.duration:g} s")
        result["with_rules"] = phase(settings, conn, job, walk, args, sub, stored)
    finally:
        if sub is not None:
            sub.close()
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        if job is not None:
            job.stop()
        conn.close()
        st.delete_topics(settings)
    result["loadavg_end"] = st.loadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = RESULTS if args.rate == 1000 else RESULTS.with_name(f"alerts_latency_{args.rate:g}.json")
    results.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(table(result))
    print(f"\nwritten {results.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
