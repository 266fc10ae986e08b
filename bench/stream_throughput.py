"""Benchmark (not a test): streaming throughput vs a raw Kafka→PostgreSQL COPY consumer, and latency.

    .venv/bin/python bench/stream_throughput.py [--symbols 500] [--bars-per-symbol 200]
        [--batch 20000] [--rates 100,1000] [--duration 45] [--warmup 5] [--trigger 1.0]

One run, on the services of the local stack (PostgreSQL, Redis, Kafka on 127.0.0.1), isolated from
them: database ``stockpipe_bench_stream`` (dropped and re-migrated), Redis db 12 (flushed), topics
``bench-prices-<id>`` + ``.dlq`` (deleted at the end), checkpoint ``.local/bench/stream_throughput/``.

1. **Backlog.** ``symbols × bars-per-symbol`` contract bars (a random walk per symbol, minute after
   minute) are produced into the bench topic before anything reads it.
2. **Raw baseline.** One confluent-kafka consumer reads the backlog, ``json.loads`` each value and
   COPYs batches of ``--batch`` rows into a plain table (``bench.raw_bars``: the bars_1m columns, no
   key, no index, no indicators), one commit per batch: the ceiling of "Kafka → PostgreSQL" here.
3. **Stream.** The real job (``spark_jobs/stream_indicators.py``, a child process, as Airflow runs
   it) with ``maxOffsetsPerTrigger = --batch`` and a ``--trigger`` s processingTime trigger reads
   the same backlog. Both figures are *sustained*: rows after the first batch / time from the first
   batch's commit to the last one's (the first batch pays for the consumer group join, Python
   workers and, for the stream, seeding 500 symbols' state) — ``ops.stream_batches`` has the
   stream's commit times. Target: stream ≥ 50 % of the baseline.
4. **Latency.** With the job caught up (state of every symbol warm), a paced producer writes each
   symbol's next bars round-robin at each ``--rates`` value for ``--duration`` s, ``fetched_at`` =
   send time. bar→PostgreSQL = ``written_at − fetched_at`` of those rows in market.bars_1m;
   bar→Redis = receive time of the ``stockpipe:bars`` pub/sub message − its ``fetched_at`` (the
   sink publishes the latest bar per symbol per micro-batch, so those are the samples). Bars sent
   in the first ``--warmup`` s of each rate are left out (the switch between rates). Target: p95 ≤
   2 s at 1,000 bars/s.

Prints one table and writes bench/results/stream_throughput.json (machine, load average, per-batch
figures, CPU seconds per component).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
import psutil
import psycopg
import redis
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from stockpipe.admin import admin_client, ensure_topics  # noqa: E402
from stockpipe.config import Settings, load_settings  # noqa: E402
from stockpipe.storage.migrate import migrate  # noqa: E402
from stockpipe.storage.redis_latest import BARS_CHANNEL  # noqa: E402

DATABASE = "stockpipe_bench_stream"  # dashboard.py: stockpipe_bench + Redis db 14; backfill.py: db 13
REDIS_DB = 12
QUERY_NAME = "bench_stream_indicators"
WORK = ROOT / ".local" / "bench" / "stream_throughput"
RESULTS = ROOT / "bench" / "results" / "stream_throughput.json"
THROUGHPUT_TARGET = 0.5  # of the raw baseline
P95_TARGET_S = 2.0  # at 1,000 bars/s
RAW_COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume", "vwap", "trades", "source", "fetched_at"]


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def iso_us(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def machine() -> dict:
    free = subprocess.run(["free", "-m"], capture_output=True, text=True).stdout.strip()
    return {
        "host": platform.node(),
        "nproc": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "?"),
        "free_m": free,
        "python": platform.python_version(),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- bars ------------------------------------------------------------------------------------------


class Walk:
    """Each symbol's random walk; ``next(i)`` is symbol i's next contract bar (minute after minute)."""

    def __init__(self, symbols: list[str], start: datetime, seed: int = 1) -> None:
        self.symbols, self.start = symbols, start
        self.rng = np.random.default_rng(seed)
        self.price = 20 + 300 * self.rng.random(len(symbols))
        self.count = np.zeros(len(symbols), dtype=np.int64)

    def next(self, i: int, source: str, fetched_at: str | None = None) -> tuple[bytes, bytes]:
        rng = self.rng
        ts = self.start + timedelta(minutes=int(self.count[i]))
        self.count[i] += 1
        open_ = float(self.price[i])
        close = max(1.0, open_ * float(np.exp(rng.normal(0, 0.002))))
        high = max(open_, close) * (1 + abs(float(rng.normal(0, 0.0008))))
        low = min(open_, close) * (1 - abs(float(rng.normal(0, 0.0008))))
        volume = float(rng.integers(100, 50_000))
        self.price[i] = close
        bar = {
            "v": 1, "symbol": self.symbols[i], "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": round(open_, 4),
            "high": round(high, 4), "low": round(low, 4), "close": round(close, 4), "volume": volume,
            "vwap": round((low + high + close) / 3, 4), "trades": int(volume // 50) + 1, "source": source,
            "fetched_at": fetched_at or (ts + timedelta(seconds=61)).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        }  # fmt: skip
        return self.symbols[i].encode(), json.dumps(bar, separators=(",", ":")).encode()


def producer(settings: Settings) -> Producer:
    return Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5, "enable.idempotence": True})


def preload(settings: Settings, walk: Walk, bars_per_symbol: int) -> tuple[int, float]:
    kafka = producer(settings)
    started = time.monotonic()
    n = 0
    for _ in range(bars_per_symbol):
        for i in range(len(walk.symbols)):
            key, value = walk.next(i, "bench")
            while True:
                try:
                    kafka.produce(settings.kafka_topic, key=key, value=value)
                    break
                except BufferError:
                    kafka.poll(0.05)
            n += 1
        kafka.poll(0)
    if kafka.flush(60):
        raise SystemExit("Kafka did not acknowledge the backlog")
    return n, time.monotonic() - started


# --- raw baseline ----------------------------------------------------------------------------------


def raw_baseline(settings: Settings, expected: int, batch: int, timeout_s: float) -> dict:
    """confluent-kafka consumer → json.loads → COPY into bench.raw_bars, one commit per batch."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    consumer.subscribe([settings.kafka_topic])
    commits: list[tuple[float, int]] = []  # (monotonic time of the commit, rows in the batch)
    cpu0 = time.process_time()
    started = time.monotonic()
    deadline = started + timeout_s
    done = 0
    with psycopg.connect(settings.pg_dsn("writer")) as conn:
        while done < expected and time.monotonic() < deadline:
            rows = []
            while len(rows) < batch and done + len(rows) < expected and time.monotonic() < deadline:
                for message in consumer.consume(num_messages=min(batch - len(rows), 100_000), timeout=0.5):
                    if message.error():
                        continue
                    bar = json.loads(message.value())
                    rows.append(tuple(bar[c] for c in RAW_COLUMNS))
            if not rows:
                continue
            with conn.cursor() as cur, cur.copy(f"COPY bench.raw_bars ({', '.join(RAW_COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            consumer.commit(asynchronous=False)
            done += len(rows)
            commits.append((time.monotonic(), len(rows)))
        (stored,) = conn.execute("SELECT count(*) FROM bench.raw_bars").fetchone()
    consumer.close()
    if done < expected:
        raise SystemExit(f"raw baseline: {done} of {expected} bars in {timeout_s:.0f} s")
    return {
        "bars": done,
        "stored": stored,
        "batches": len(commits),
        "wall_s": commits[-1][0] - started,
        "sustained_bars_per_s": sustained(commits),
        "overall_bars_per_s": done / (commits[-1][0] - started),
        "cpu_s": time.process_time() - cpu0,
    }


def sustained(commits: list[tuple[float, int]]) -> float | None:
    """Rows after the first batch / time from its commit to the last one's."""
    if len(commits) < 2:
        return None
    return sum(n for _, n in commits[1:]) / (commits[-1][0] - commits[0][0])


# --- the streaming job -----------------------------------------------------------------------------


class Job:
    """spark_jobs/stream_indicators.py in its own process group (JVM, Python driver, workers)."""

    def __init__(self, settings: Settings, batch: int, trigger_s: float, log_path: Path) -> None:
        env = dict(os.environ)
        env.update(
            {
                "STOCKPIPE_KAFKA_TOPIC": settings.kafka_topic,
                "STOCKPIPE_KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
                "STOCKPIPE_PG_DATABASE": settings.pg_database,
                "STOCKPIPE_REDIS_URL": settings.redis_url,
                "STOCKPIPE_STREAM_CHECKPOINT": settings.stream_checkpoint,
                "STOCKPIPE_STREAM_QUERY_NAME": QUERY_NAME,
                "STOCKPIPE_STREAM_TRIGGER_S": str(trigger_s),
                "STOCKPIPE_STREAM_MAX_OFFSETS_PER_TRIGGER": str(batch),
                "STOCKPIPE_STREAM_STARTING_OFFSETS": "earliest",
                "STOCKPIPE_ACCEPT_ANY_SYMBOL": "true",  # the bench's symbols are on no watchlist
            }
        )
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "spark_jobs" / "stream_indicators.py")],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise SystemExit(f"the streaming job exited ({self.process.returncode}):\n{tail}")

    def cpu_s(self) -> float:
        """CPU seconds of the job's process tree so far (live processes only)."""
        try:
            procs = [psutil.Process(self.process.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self.log.close()


def postgres_cpu_s() -> float | None:
    """CPU seconds of the PostgreSQL server's processes so far (the local stack's instance)."""
    pidfile = ROOT / ".local" / "postgres" / "data" / "postmaster.pid"
    try:
        root = psutil.Process(int(pidfile.read_text().split()[0]))
        total = 0.0
        for proc in [root, *root.children()]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total
    except (OSError, ValueError, psutil.Error):
        return None


def stream_batches(conn: psycopg.Connection, since_id: int = -1) -> list[tuple]:
    return conn.execute(
        "SELECT batch_id, rows_in, processing_ms, extract(epoch FROM committed_at)::float8 "
        "FROM ops.stream_batches WHERE query_name = %s AND batch_id > %s ORDER BY batch_id",
        (QUERY_NAME, since_id),
    ).fetchall()


def wait_for_rows(conn: psycopg.Connection, job: Job, expected: int, timeout_s: float) -> list[tuple]:
    deadline = time.monotonic() + timeout_s
    while True:
        batches = stream_batches(conn)
        if sum(b[1] for b in batches) >= expected:
            return batches
        job.check()
        if time.monotonic() > deadline:
            raise SystemExit(f"the stream applied {sum(b[1] for b in batches)} of {expected} bars in {timeout_s:.0f} s")
        time.sleep(0.25)


# --- latency ---------------------------------------------------------------------------------------


class Subscriber(threading.Thread):
    """Collects (receive time, message) of stockpipe:bars for the bench's symbols.

    Pub/sub channels are server-wide (not per Redis db): a running dev stream publishes on the same
    channel, hence the filter on the bench's source.
    """

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(BARS_CHANNEL)
        self.samples: list[tuple[float, float, str]] = []  # (received, fetched_at epoch, symbol)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is None:
                continue
            received = time.time()
            data = json.loads(message["data"])
            if data.get("source") != "bench-live":
                continue
            fetched = datetime.fromisoformat(data["fetched_at"].replace("Z", "+00:00")).timestamp()
            self.samples.append((received, fetched, data["symbol"]))

    def close(self) -> None:
        self.stopping.set()
        self.join(5)
        self.pubsub.close()
        self.client.close()


def paced(settings: Settings, walk: Walk, rate: float, duration_s: float) -> tuple[int, float, float]:
    """Send ``rate`` bars/s for ``duration_s`` (symbols round-robin); return (sent, t0, t1) epoch."""
    kafka = producer(settings)
    t0 = time.time()
    start = time.monotonic()
    sent = 0
    n_symbols = len(walk.symbols)
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= duration_s:
            break
        due = int(rate * elapsed) + 1
        while sent < due:
            key, value = walk.next(sent % n_symbols, "bench-live", iso_us(time.time()))
            kafka.produce(settings.kafka_topic, key=key, value=value)
            sent += 1
        kafka.poll(0)
        time.sleep(max(0.0, min(0.005, (sent / rate) - (time.monotonic() - start))))
    t1 = time.time()
    if kafka.flush(30):
        raise SystemExit("Kafka did not acknowledge the paced bars")
    return sent, t0, t1


def percentiles(values: list[float] | np.ndarray) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    if not len(arr):
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"n": int(len(arr)), "p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(arr.max())}


def latency_phase(
    settings: Settings, conn: psycopg.Connection, job: Job, walk: Walk, sub: Subscriber, rate: float, args
) -> dict:
    last_batch = max((b[0] for b in stream_batches(conn)), default=-1)
    cpu_job, cpu_pg = job.cpu_s(), postgres_cpu_s()
    load_before = loadavg()
    log(f"latency at {rate:g} bars/s for {args.duration:g} s")
    sent, t0, t1 = paced(settings, walk, rate, args.duration)
    # Wait for every paced bar of this phase to be stored.
    deadline = time.monotonic() + 120
    while True:
        (stored,) = conn.execute(
            "SELECT count(*) FROM market.bars_1m WHERE source = 'bench-live' AND fetched_at >= to_timestamp(%s) "
            "AND fetched_at <= to_timestamp(%s)",
            (t0, t1 + 1),
        ).fetchone()
        if stored >= sent or time.monotonic() > deadline:
            break
        job.check()
        time.sleep(0.25)
    time.sleep(max(0.0, 2 * args.trigger))  # the last pub/sub messages
    lo = t0 + args.warmup
    pg_lat = [
        r[0]
        for r in conn.execute(
            "SELECT extract(epoch FROM written_at - fetched_at)::float8 FROM market.bars_1m "
            "WHERE source = 'bench-live' AND fetched_at >= to_timestamp(%s) AND fetched_at <= to_timestamp(%s)",
            (lo, t1 + 1),
        )
    ]
    redis_lat = [received - fetched for received, fetched, _ in sub.samples if lo <= fetched <= t1 + 1]
    batches = stream_batches(conn, last_batch)
    proc = [b[2] for b in batches if b[1]]
    commit_times = [b[3] for b in batches if b[1]]
    if stored < sent:
        log(f"WARNING: only {stored} of {sent} bars stored 120 s after the {rate:g} bars/s phase: latency understated")
    cpu_pg_after = postgres_cpu_s()
    wall = time.time() - t0
    return {
        "rate": rate,
        "sent": sent,
        "stored": stored,
        "complete": stored >= sent,
        "achieved_rate": sent / (t1 - t0),
        "postgres_s": percentiles(pg_lat),
        "redis_s": percentiles(redis_lat),
        "batches": len(batches),
        "batch_rows_mean": float(np.mean([b[1] for b in batches])) if batches else None,
        "batch_processing_ms": percentiles(proc),
        # Time between consecutive commits: how often new bars become visible (≥ the trigger).
        "batch_interval_s": percentiles(np.diff(commit_times)),
        "cpu_job_pct": 100 * (job.cpu_s() - cpu_job) / wall,
        "cpu_postgres_pct": None if cpu_pg is None or cpu_pg_after is None else 100 * (cpu_pg_after - cpu_pg) / wall,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


# --- setup -----------------------------------------------------------------------------------------


def bench_settings() -> Settings:
    base = load_settings()
    suffix = uuid.uuid4().hex[:8]
    return load_settings(
        pg_database=DATABASE,
        redis_url=base.redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}",
        kafka_topic=f"bench-prices-{suffix}",
        kafka_dlq_topic=f"bench-prices-{suffix}.dlq",
        stream_checkpoint=str(WORK / "checkpoint"),
        stream_query_name=QUERY_NAME,
        accept_any_symbol=True,  # the bench's symbols are on no watchlist
    )


def prepare(settings: Settings) -> None:
    with psycopg.connect(settings.pg_dsn("admin", "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    migrate(settings, DATABASE, wait_s=30)
    with psycopg.connect(settings.pg_dsn("writer")) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        conn.execute(
            "CREATE TABLE bench.raw_bars (symbol text, ts timestamptz, open float8, high float8, low float8, "
            "close float8, volume float8, vwap float8, trades integer, source text, fetched_at timestamptz)"
        )
    client = settings.redis_client()
    client.flushdb()
    client.close()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    ensure_topics(settings, {settings.kafka_topic: settings.kafka_partitions, settings.kafka_dlq_topic: 1}, wait_s=30)


def delete_topics(settings: Settings) -> None:
    # Keep the client referenced until the futures resolve: a temporary AdminClient is destroyed
    # before the request is sent (the futures then fail with _DESTROY and nothing is deleted).
    client = admin_client(settings)
    for topic, future in client.delete_topics([settings.kafka_topic, settings.kafka_dlq_topic]).items():
        try:
            future.result(timeout=30)
        except Exception as error:  # noqa: BLE001
            if "UNKNOWN_TOPIC" not in str(error):
                log(f"could not delete topic {topic}: {error}")


# --- report ----------------------------------------------------------------------------------------


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:.2f}{unit}"
    return f"{value}{unit}"


def table(result: dict) -> str:
    rows: list[tuple[str, str, str, str, str, str]] = []
    raw, stream = result["raw_baseline"], result["stream"]
    ratio = result["throughput_ratio"]
    rows.append(
        (
            f"throughput, {result['params']['symbols']} symbols (bars/s, sustained)",
            fmt(stream["sustained_bars_per_s"]),
            fmt(raw["sustained_bars_per_s"]),
            fmt(ratio),
            f"≥ {THROUGHPUT_TARGET:.2f}",
            "yes" if ratio is not None and ratio >= THROUGHPUT_TARGET else "NO",
        )
    )
    rows.append(
        (
            "throughput incl. first batch (bars/s)",
            fmt(stream["overall_bars_per_s"]),
            fmt(raw["overall_bars_per_s"]),
            fmt(stream["overall_bars_per_s"] / raw["overall_bars_per_s"]),
            "",
            "",
        )
    )
    for phase in result["latency"]:
        interval, proc = phase["batch_interval_s"]["p50"], phase["batch_processing_ms"]["p50"]
        rows.append(
            (
                f"micro-batch interval / processing p50 at {phase['rate']:g} bars/s (s)",
                f"{fmt(interval)} / {fmt(None if proc is None else proc / 1000)}",
                "",
                "",
                "",
                "" if phase["complete"] else f"only {phase['stored']} of {phase['sent']} stored",
            )
        )
        for sink in ("postgres", "redis"):
            stats = phase[f"{sink}_s"]
            for p in ("p50", "p95", "p99"):
                target = met = ""
                if p == "p95" and phase["rate"] >= 1000:
                    target = f"≤ {P95_TARGET_S:g} s"
                    met = "yes" if stats[p] is not None and stats[p] <= P95_TARGET_S else "NO"
                rows.append(
                    (
                        f"bar→{'PostgreSQL' if sink == 'postgres' else 'Redis'} {p} at {phase['rate']:g} bars/s (s)",
                        fmt(stats[p]),
                        "",
                        "",
                        target,
                        met,
                    )
                )
    header = ("metric", "value", "baseline", "ratio", "target", "met?")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(6)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars-per-symbol", type=int, default=200, help="backlog of the throughput phase")
    parser.add_argument("--batch", type=int, default=20_000, help="maxOffsetsPerTrigger / baseline COPY batch")
    parser.add_argument("--rates", default="100,1000", help="input rates of the latency phase (bars/s)")
    parser.add_argument("--duration", type=float, default=45, help="seconds per latency rate")
    parser.add_argument("--warmup", type=float, default=5, help="seconds at the start of each rate left out")
    parser.add_argument(
        "--trigger", type=float, default=None, help="processingTime trigger of the stream (s; default: the setting's)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench topics (default: delete them)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    settings = bench_settings()
    if args.trigger is None:
        args.trigger = settings.stream_trigger_s
    started = time.monotonic()
    result: dict = {
        "benchmark": "stream_throughput",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_start": loadavg(),
        "params": {
            "symbols": args.symbols,
            "bars_per_symbol": args.bars_per_symbol,
            "batch": args.batch,
            "rates": rates,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "trigger_s": args.trigger,
            "spark_master": settings.spark_master,
            "shuffle_partitions": settings.spark_shuffle_partitions,
            "kafka_partitions": settings.kafka_partitions,
        },
    }
    log(f"load average {result['loadavg_start']}; preparing {DATABASE}, Redis db {REDIS_DB}, {settings.kafka_topic}")
    prepare(settings)
    job: Job | None = None
    sub: Subscriber | None = None
    try:
        symbols = [f"B{i:04d}" for i in range(args.symbols)]
        start = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
        walk = Walk(symbols, start)
        n, produce_s = preload(settings, walk, args.bars_per_symbol)
        result["backlog"] = {"bars": n, "produce_s": produce_s, "produce_bars_per_s": n / produce_s}
        log(f"backlog: {n} bars in {produce_s:.1f} s")

        log("raw baseline: Kafka → json → COPY bench.raw_bars")
        load0 = loadavg()
        raw = raw_baseline(settings, n, args.batch, timeout_s=120)
        raw["loadavg_before"], raw["loadavg_after"] = load0, loadavg()
        result["raw_baseline"] = raw
        log(f"raw baseline: {raw['sustained_bars_per_s'] or 0:,.0f} bars/s sustained, {raw['wall_s']:.1f} s")

        log("stream: spark_jobs/stream_indicators.py on the backlog")
        conn = psycopg.connect(settings.pg_dsn("writer"), autocommit=True)
        load0, cpu_pg0 = loadavg(), postgres_cpu_s()
        job = Job(settings, args.batch, args.trigger, WORK / "job.log")
        first = wait_for_rows(conn, job, 1, timeout_s=180)
        first_commit_s = time.monotonic() - job.started
        cpu_job0 = job.cpu_s()
        batches = wait_for_rows(conn, job, n, timeout_s=300)
        cpu_job1, cpu_pg1 = job.cpu_s(), postgres_cpu_s()
        commits = [(b[3], b[1]) for b in batches]
        caught_up_s = time.monotonic() - job.started
        span = commits[-1][0] - commits[0][0]
        result["stream"] = {
            "bars": sum(b[1] for b in batches),
            "batches": len(batches),
            "start_to_first_commit_s": first_commit_s,
            "first_batch_rows": first[0][1],
            "first_batch_processing_ms": first[0][2],
            "start_to_caught_up_s": caught_up_s,
            "sustained_bars_per_s": sustained(commits),
            # From the first batch's start (commit − processing time) to the last commit.
            "overall_bars_per_s": sum(b[1] for b in batches) / (span + batches[0][2] / 1000),
            "batch_processing_ms": [round(b[2]) for b in batches],
            "batch_rows": [b[1] for b in batches],
            "cpu_job_pct_after_first_batch": 100 * (cpu_job1 - cpu_job0) / span if span else None,
            "cpu_postgres_s": None if cpu_pg0 is None or cpu_pg1 is None else cpu_pg1 - cpu_pg0,
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        }
        stream = result["stream"]
        log(f"stream: {stream['sustained_bars_per_s'] or 0:,.0f} bars/s sustained over {len(batches)} batches")
        result["throughput_ratio"] = (
            stream["sustained_bars_per_s"] / raw["sustained_bars_per_s"]
            if stream["sustained_bars_per_s"] and raw["sustained_bars_per_s"]
            else None
        )

        sub = Subscriber(settings.redis_dsn)
        sub.start()
        result["latency"] = [latency_phase(settings, conn, job, walk, sub, rate, args) for rate in rates]
        conn.close()
    finally:
        if sub is not None:
            sub.close()
        if job is not None:
            job.stop()
        if not args.keep:
            delete_topics(settings)
    result["loadavg_end"] = loadavg()
    result["total_s"] = time.monotonic() - started
    result["targets"] = {"throughput_ratio": THROUGHPUT_TARGET, "p95_at_1000_s": P95_TARGET_S}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(table(result))
    print(
        f"\nload average: start {result['loadavg_start']}, end {result['loadavg_end']} "
        f"({result['machine']['nproc']} cores); total {result['total_s']:.0f} s; JSON: {RESULTS.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
