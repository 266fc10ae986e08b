"""Benchmark (not a test): one whole-market minute burst — a micro-batch of one bar for each of
10,000 symbols — through the real streaming query, part by part, baseline code vs the working tree.

    .venv/bin/python bench/stream_burst.py [--symbols 10000] [--bursts 8] [--baseline COMMIT]
        [--event-log] [--variants baseline,current] [--keep]

Each variant runs in its own child process (the stream in-process there, like a probe), one after
the other, on the services of the local stack, isolated from them: database
``stockpipe_bench_burst`` (dropped and re-migrated per variant), Redis db ``--redis-db`` (flushed),
topics ``bench-burst-<id>`` + ``.dlq`` (deleted at the end, also on failure), checkpoint
``.local/bench/stream_burst/<variant>/``. ``baseline`` runs the ``plugins/`` tree of ``--baseline``
(default ``HEAD``; extracted with ``git archive``), ``current`` the working tree's.

1. A first burst (one bar per symbol) seeds every symbol's state; then ``--bursts`` bursts follow,
   each produced (and acknowledged by Kafka) at the end of the previous micro-batch's
   ``foreachBatch`` — so each burst is exactly one micro-batch of ``--symbols`` rows, the case of a
   minute close of ``AM.*`` landing in Kafka before the trigger. The first two bursts after the
   seed are left out (warm-up), the rest are the steady state.
2. Per micro-batch: Spark's progress (``durationMs``: latestOffset, queryPlanning, addBatch, commit
   logs; the state store's commit time), the sink's parts (wall and the driver thread's CPU):
   ``toPandas`` (the Spark job: Kafka read, parse, shuffle, the stateful operator, the hand-over to
   the driver), the applied-offsets check, and in PostgreSQL's transaction each statement (COPY,
   bars upsert, indicators upsert, alerts, ``latest_1m``, bookkeeping, commit), then Redis — timed by
   wrapping psycopg's cursor and the sink's methods from here, so both variants are measured the
   same way without instrumenting them. CPU per micro-batch by process: the driver's Python (less
   the bench's own producing), the driver JVM, the Python workers, the PostgreSQL backends of the
   bench database, Redis' server (shared: other users' load counts too).
3. ``--event-log``: Spark's event log per stage of each micro-batch (wall from submission to
   completion, tasks, executor run and CPU time).

The box is shared: CPU per batch is the main A/B figure, wall time secondary. Prints one table per
variant and the A/B summary; writes bench/results/stream_burst.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "stockpipe_bench_burst"
# flushed at each variant: not 15, the test suite's (stream_throughput 12, backfill 13, dashboard 14,
# alerts_latency 11, market_scale 10)
REDIS_DB = 6
QUERY_NAME = "bench_stream_burst"
WORK = ROOT / ".local" / "bench" / "stream_burst"
RESULTS = ROOT / "bench" / "results" / "stream_burst.json"
WARMUP_BURSTS = 2


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def symbols_of(n: int) -> list[str]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = []
    for i in range(n):
        name, k = "", i
        for _ in range(4):
            name = letters[k % 26] + name
            k //= 26
        out.append("X" + name)
    return out


def percentile(values, q: float) -> float | None:
    return None if not len(values) else float(np.percentile(np.asarray(values, dtype=float), q))


# --- child: one variant ----------------------------------------------------------------------------


class Timer:
    """Named spans: wall ms and the calling thread's CPU ms, summed per name within one batch."""

    def __init__(self) -> None:
        self.current: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def span(self, name: str):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            entry = self.current.setdefault(name, [0.0, 0.0])
            entry[0] += (time.perf_counter() - wall) * 1000
            entry[1] += (time.thread_time() - cpu) * 1000

    def take(self) -> dict[str, list[float]]:
        out, self.current = self.current, {}
        return out


def sql_name(query: str) -> str:
    text = " ".join(str(query).split()).lower()
    for needle, name in (
        ("insert into market.bars_1m", "pg.upsert_bars"),
        ("insert into market.indicators_1m", "pg.upsert_indicators"),
        ("insert into market.latest_1m", "pg.latest_1m"),
        ("ops.stream_offsets", "pg.offsets"),
        ("ops.stream_batches", "pg.bookkeeping"),
        ("alert", "pg.alerts_sql"),
        ("create temp table", "pg.stage_table"),
    ):
        if needle in text:
            return name
    return "pg.other_sql"


def instrument(timer: Timer) -> None:
    """Wrap psycopg's cursor and the sink's steps so every variant is timed the same way."""
    import psycopg

    from stockpipe.storage import postgres, redis_latest
    from stockpipe.streaming import sink

    def wrap(owner, attr: str, name) -> None:
        original = getattr(owner, attr)

        def wrapped(*args, **kwargs):
            label = name(*args, **kwargs) if callable(name) else name
            with timer.span(label):
                return original(*args, **kwargs)

        setattr(owner, attr, wrapped)

    wrap(psycopg.Cursor, "execute", lambda self, query, *a, **k: sql_name(query))
    wrap(psycopg.Cursor, "executemany", lambda self, query, *a, **k: sql_name(query))
    original_copy = psycopg.Cursor.copy

    @contextlib.contextmanager
    def copy(self, *args, **kwargs):
        with timer.span("pg.copy"), original_copy(self, *args, **kwargs) as c:
            yield c

    psycopg.Cursor.copy = copy
    original_transaction = psycopg.Connection.transaction

    @contextlib.contextmanager
    def transaction(self, *args, **kwargs):
        with original_transaction(self, *args, **kwargs) as tx:
            yield tx
            commit = timer.span("pg.commit")
            commit.__enter__()
        commit.__exit__(None, None, None)

    psycopg.Connection.transaction = transaction
    wrap(postgres, "stage_copy", "pg.copy_encode")
    wrap(postgres, "evaluate_for_sink", "pg.alerts")
    wrap(postgres.PostgresSink, "write", "pg.write")
    wrap(postgres.PostgresSink, "ensure_partitions", "pg.partitions")
    wrap(postgres.PostgresSink, "applied_offsets", "sink.applied_offsets")
    wrap(redis_latest.LatestWriter, "write", "redis.write")
    wrap(sink.BatchWriter, "write_latest", "redis.write_latest")
    wrap(sink.BatchWriter, "write_frame", "sink.write_frame")


def process_groups(db: str) -> dict[str, list]:
    import psutil

    me = psutil.Process()
    groups: dict[str, list] = {"driver_python": [me], "jvm": [], "python_workers": [], "postgres": [], "redis": []}
    for child in me.children():
        if "java" in child.name():
            groups["jvm"].append(child)
            groups["python_workers"] += child.children(recursive=True)
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith("postgres:") and f" {db} " in cmd:
            groups["postgres"].append(proc)
        elif (proc.info["name"] or "").startswith("redis-server"):
            groups["redis"].append(proc)
    return groups


def cpu_snapshot(db: str) -> dict[str, float]:
    import psutil

    out = {}
    for name, procs in process_groups(db).items():
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        out[name] = total
    return out


class Feed:
    """The bursts: bar k of every symbol, one minute apart, ``fetched_at`` = send time."""

    def __init__(self, settings, symbols: list[str]) -> None:
        from confluent_kafka import Producer

        self.settings, self.symbols = settings, symbols
        self.producer = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5, "enable.idempotence": True}
        )
        rng = np.random.default_rng(14)
        self.price = 20 + 300 * rng.random(len(symbols))
        self.rng = rng
        self.start = FEED_START
        self.count = 0

    def burst(self) -> float:
        started = time.perf_counter()
        ts = (self.start + timedelta(minutes=self.count)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.count += 1
        fetched = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        moves = np.exp(self.rng.normal(0, 0.002, len(self.symbols)))
        wiggle = np.abs(self.rng.normal(0, 0.0008, (2, len(self.symbols))))
        volumes = self.rng.integers(100, 50_000, len(self.symbols))
        for i, symbol in enumerate(self.symbols):
            open_ = float(self.price[i])
            close = max(1.0, open_ * float(moves[i]))
            high, low = max(open_, close) * (1 + wiggle[0, i]), min(open_, close) * (1 - wiggle[1, i])
            self.price[i] = close
            volume = float(volumes[i])
            bar = {
                "v": 1, "symbol": symbol, "ts": ts, "open": round(open_, 4), "high": round(high, 4),
                "low": round(low, 4), "close": round(close, 4), "volume": volume,
                "vwap": round((low + high + close) / 3, 4), "trades": int(volume // 50) + 1, "source": "bench",
                "fetched_at": fetched,
            }  # fmt: skip
            value = json.dumps(bar, separators=(",", ":")).encode()
            while True:
                try:
                    self.producer.produce(self.settings.kafka_topic, key=symbol.encode(), value=value)
                    break
                except BufferError:
                    self.producer.poll(0.05)
        if self.producer.flush(60):
            raise SystemExit("Kafka did not acknowledge a burst")
        return (time.perf_counter() - started) * 1000


FEED_START = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)


def store_history(settings, symbols: list[str], minutes: int) -> None:
    """``minutes`` stored bars per symbol before the first burst, so the first burst seeds each
    symbol's state with a window of that many bars (390: a whole session, the recompute horizon) —
    the state a stream carries late in a trading day."""
    import psycopg

    from stockpipe.storage.postgres import PostgresSink

    started = time.monotonic()
    first = FEED_START - timedelta(minutes=minutes)
    sink = PostgresSink(settings)
    sink.ensure_partitions(np.array([int(first.timestamp() * 1000), int(FEED_START.timestamp() * 1000)]))
    sink.close()
    rng = np.random.default_rng(7)
    with psycopg.connect(settings.pg_dsn("writer")) as conn, conn.cursor() as cur:
        columns = "symbol, ts, open, high, low, close, volume, vwap, trades, source, fetched_at"
        with cur.copy(f"COPY market.bars_1m ({columns}) FROM STDIN") as copy:
            for symbol in symbols:
                closes = (20 + 300 * rng.random()) * np.exp(np.cumsum(rng.normal(0, 0.002, minutes)))
                for k in range(minutes):
                    ts = first + timedelta(minutes=k)
                    c = float(closes[k])
                    copy.write_row((symbol, ts, c, c * 1.001, c * 0.999, c, 1000.0, c, 20, "bench", ts))
    log(f"stored {len(symbols) * minutes:,} bars of history in {time.monotonic() - started:.0f} s")


def profile_operator(folder: Path) -> None:
    """cProfile each call of the operator's function in the Python workers: one file per call."""
    from stockpipe.streaming import operator

    folder.mkdir(parents=True, exist_ok=True)
    original = operator.make_update_function

    def make(*args, **kwargs):
        update = original(*args, **kwargs)

        def profiled(key, batches, state):
            import cProfile
            import os as worker_os
            import time as worker_time

            profile = cProfile.Profile()
            profile.enable()
            try:
                out = list(update(key, batches, state))
            finally:
                profile.disable()
                profile.dump_stats(f"{folder}/{worker_os.getpid()}-{worker_time.time_ns()}.prof")
            yield from out

        return profiled

    operator.make_update_function = make


def parse_event_log(folder: Path) -> dict[int, list[dict]]:
    """batch id → its stages (in submission order): wall, tasks, executor run and CPU ms."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    job_batch: dict[int, int] = {}
    stage_job: dict[int, int] = {}
    stages: dict[int, list[dict]] = {}
    for path in files:
        for line in path.open(errors="replace"):
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            kind = event.get("Event")
            if kind == "SparkListenerJobStart":
                batch = (event.get("Properties") or {}).get("streaming.sql.batchId")
                if batch is not None:
                    job_batch[event["Job ID"]] = int(batch)
                    for stage in event.get("Stage IDs", []):
                        stage_job[stage] = event["Job ID"]
            elif kind == "SparkListenerStageCompleted":
                info = event["Stage Info"]
                job = stage_job.get(info["Stage ID"])
                if job is None or "Completion Time" not in info:
                    continue
                acc = {a.get("Name"): a.get("Value") for a in info.get("Accumulables", [])}
                stages.setdefault(job_batch[job], []).append(
                    {
                        "stage": info["Stage ID"],
                        "name": info.get("Stage Name", "")[:60],
                        "tasks": info.get("Number of Tasks"),
                        "wall_ms": info["Completion Time"] - info["Submission Time"],
                        "run_ms": acc.get("internal.metrics.executorRunTime"),
                        "cpu_ms": (acc.get("internal.metrics.executorCpuTime") or 0) / 1e6,
                    }
                )
    return stages


def child(args: argparse.Namespace) -> None:
    code = Path(args.code)
    sys.path[:0] = [str(code), str(ROOT)]
    work = WORK / args.variant
    event_dir = work / "events"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if args.event_log:
        event_dir.mkdir()
        os.environ["PYSPARK_SUBMIT_ARGS"] = (
            f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file://{event_dir} "
            "--conf spark.eventLog.compress=false pyspark-shell"
        )
    import psycopg

    import stockpipe.streaming.query as query_module
    from stockpipe.admin import admin_client, ensure_topics
    from stockpipe.config import load_settings
    from stockpipe.storage.migrate import migrate
    from stockpipe.streaming.sink import BatchWriter
    from stockpipe.streaming.spark import spark_session

    assert str(code) in query_module.__file__, f"{query_module.__file__} is not under {code}"
    base = load_settings()
    suffix = uuid.uuid4().hex[:8]
    settings = load_settings(
        pg_database=DATABASE,
        redis_url=base.redis_url.rsplit("/", 1)[0] + f"/{args.redis_db}",
        kafka_topic=f"bench-burst-{suffix}",
        kafka_dlq_topic=f"bench-burst-{suffix}.dlq",
        stream_checkpoint=str(work / "checkpoint"),
        stream_query_name=QUERY_NAME,
        stream_starting_offsets="earliest",
        stream_trigger_s=args.trigger,
        accept_any_symbol=True,
        **({"stream_recompute_horizon_bars": args.horizon} if args.horizon else {}),
    )
    with psycopg.connect(settings.pg_dsn("admin", "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    migrate(settings, DATABASE, wait_s=30)
    client = settings.redis_client()
    client.flushdb()
    client.close()
    ensure_topics(settings, {settings.kafka_topic: settings.kafka_partitions, settings.kafka_dlq_topic: 1}, wait_s=30)

    if args.history:
        store_history(settings, symbols_of(args.symbols), args.history)
    timer = Timer()
    instrument(timer)
    if args.profile_operator:
        profile_operator(work / "profiles")
    feed = Feed(settings, symbols_of(args.symbols))
    batches: list[dict] = []
    done = threading.Event()
    state = {"mark": None, "bursts_left": args.bursts}

    class ProbeWriter(BatchWriter):
        def __call__(self, batch_df, batch_id: int) -> None:
            started_wall, started_cpu = time.perf_counter(), time.thread_time()
            super().__call__(batch_df, batch_id)
            wall = (time.perf_counter() - started_wall) * 1000
            cpu = (time.thread_time() - started_cpu) * 1000
            parts = timer.take()
            snapshot = cpu_snapshot(DATABASE)
            mark = state["mark"]
            cpu_by = {k: (snapshot[k] - mark[k]) * 1000 for k in snapshot} if mark else {}
            batches.append(
                {"batch_id": batch_id, "sink_wall_ms": wall, "sink_cpu_ms": cpu, "parts": parts, "cpu_ms": cpu_by}
            )
            if state["bursts_left"] > 0:
                state["bursts_left"] -= 1
                batches[-1]["produce_ms"] = feed.burst()
                state["mark"] = cpu_snapshot(DATABASE)  # the next batch's CPU starts after the producing
            else:
                done.set()

    spark = spark_session(settings, app_name=QUERY_NAME)
    log(f"{args.variant}: seeding {args.symbols} symbols")
    feed.burst()
    state["mark"] = cpu_snapshot(DATABASE)
    query, writer = query_module.start_stream(spark, settings, writer=ProbeWriter(settings))
    try:
        while not done.wait(1.0):
            if query.exception() is not None:
                raise SystemExit(f"query failed: {query.exception()}")
        deadline = time.monotonic() + 10  # the last batch's progress comes after its foreachBatch
        while time.monotonic() < deadline and not any(
            p.batchId == batches[-1]["batch_id"] for p in query.recentProgress
        ):
            time.sleep(0.2)
        progresses = {p["batchId"]: p for p in (json.loads(p.json) for p in query.recentProgress)}
    finally:
        query.stop()
        writer.close()
        spark.stop()
        client = admin_client(settings)
        for topic, future in client.delete_topics([settings.kafka_topic, settings.kafka_dlq_topic]).items():
            try:
                future.result(timeout=30)
            except Exception as error:  # noqa: BLE001
                log(f"could not delete topic {topic}: {error}")
    for batch in batches:
        progress = progresses.get(batch["batch_id"], {})
        batch["rows"] = progress.get("numInputRows")
        batch["duration_ms"] = progress.get("durationMs", {})
        ops = (progress.get("stateOperators") or [{}])[0]
        batch["state"] = {k: ops.get(k) for k in ("numRowsTotal", "commitTimeMs", "memoryUsedBytes")}
        batch["state_custom"] = ops.get("customMetrics", {})
    if args.event_log:
        stages = parse_event_log(event_dir)
        for batch in batches:
            batch["stages"] = stages.get(batch["batch_id"], [])
    with open(args.out, "w") as out:
        json.dump({"variant": args.variant, "code": str(code), "batches": batches}, out, indent=1, default=str)
    if not args.keep:
        with psycopg.connect(settings.pg_dsn("admin", "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        shutil.rmtree(work / "checkpoint", ignore_errors=True)


# --- parent: the variants and the report -----------------------------------------------------------


def summarise(run: dict, symbols: int, warmup: int = WARMUP_BURSTS) -> dict:
    steady = [b for b in run["batches"] if b.get("rows") == symbols][warmup:]
    out: dict = {"batches": len(steady)}
    if not steady:
        return out

    def p50(values):
        return percentile([v for v in values if v is not None], 50)

    out["trigger_ms"] = p50([b["duration_ms"].get("triggerExecution") for b in steady])
    out["add_batch_less_produce_ms"] = p50(
        [b["duration_ms"].get("addBatch", 0) - b.get("produce_ms", 0) for b in steady]
    )
    for key in ("latestOffset", "queryPlanning", "getBatch", "walCommit", "commitOffsets"):
        out[f"spark.{key}_ms"] = p50([b["duration_ms"].get(key) for b in steady])
    out["state_commit_ms"] = p50([b["state"].get("commitTimeMs") for b in steady])
    out["sink_ms"] = p50([b["sink_wall_ms"] for b in steady])
    names = sorted({n for b in steady for n in b["parts"]})
    out["parts_wall_ms"] = {n: p50([b["parts"].get(n, [0, 0])[0] for b in steady]) for n in names}
    out["parts_cpu_ms"] = {n: p50([b["parts"].get(n, [0, 0])[1] for b in steady]) for n in names}
    cpu_names = sorted({n for b in steady for n in b["cpu_ms"]})
    out["cpu_ms"] = {n: p50([b["cpu_ms"].get(n) for b in steady]) for n in cpu_names}
    out["cpu_ms_total_less_redis"] = p50([sum(v for k, v in b["cpu_ms"].items() if k != "redis") for b in steady])
    if any(b.get("stages") for b in steady):
        count = max(len(b.get("stages", [])) for b in steady)
        out["stages"] = [
            {
                "name": next((b["stages"][i]["name"] for b in steady if len(b.get("stages", [])) > i), ""),
                **{
                    k: p50([b["stages"][i][k] for b in steady if len(b.get("stages", [])) > i])
                    for k in ("tasks", "wall_ms", "run_ms", "cpu_ms")
                },
            }
            for i in range(count)
        ]
    return out


def table(summaries: dict[str, dict]) -> str:
    variants = list(summaries)
    rows: list[tuple[str, list]] = []

    def add(label: str, get) -> None:
        rows.append((label, [get(summaries[v]) for v in variants]))

    add("steady batches measured", lambda s: s.get("batches"))
    add("triggerExecution p50 (ms)", lambda s: s.get("trigger_ms"))
    add("  addBatch less the bench's producing", lambda s: s.get("add_batch_less_produce_ms"))
    for key in ("latestOffset", "queryPlanning", "walCommit", "commitOffsets"):
        add(f"  {key}", lambda s, key=key: s.get(f"spark.{key}_ms"))
    add("  state store commit", lambda s: s.get("state_commit_ms"))
    names = sorted({n for s in summaries.values() for n in s.get("parts_wall_ms", {})})
    for n in names:
        add(
            f"sink {n} wall / CPU",
            lambda s, n=n: (s.get("parts_wall_ms", {}).get(n), s.get("parts_cpu_ms", {}).get(n)),
        )
    cpu_names = sorted({n for s in summaries.values() for n in s.get("cpu_ms", {})})
    for n in cpu_names:
        add(f"CPU per batch: {n} (ms)", lambda s, n=n: s.get("cpu_ms", {}).get(n))
    add("CPU per batch, all but Redis (ms)", lambda s: s.get("cpu_ms_total_less_redis"))
    count = max((len(s.get("stages", [])) for s in summaries.values()), default=0)
    for i in range(count):
        add(
            f"stage {i} wall / run / CPU (tasks)",
            lambda s, i=i: (
                None
                if len(s.get("stages", [])) <= i
                else tuple(s["stages"][i][k] for k in ("wall_ms", "run_ms", "cpu_ms", "tasks"))
            ),
        )

    def cell(value) -> str:
        if value is None:
            return "—"
        if isinstance(value, tuple):
            return " / ".join(cell(v) for v in value)
        return f"{value:,.0f}" if isinstance(value, float | int) else str(value)

    lines = [f"| part (p50 over the steady batches) | {' | '.join(variants)} |", "|---|" + "---|" * len(variants)]
    lines += [f"| {label} | {' | '.join(cell(v) for v in values)} |" for label, values in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=10_000)
    parser.add_argument("--bursts", type=int, default=8, help="bursts after the seed (the first --warmup left out)")
    parser.add_argument(
        "--warmup", type=int, default=WARMUP_BURSTS, help="batches left out (the JVM's JIT warms up for minutes)"
    )
    parser.add_argument("--trigger", type=float, default=0.5)
    parser.add_argument("--baseline", default="HEAD", help="the commit whose plugins/ the baseline variant runs")
    parser.add_argument("--variants", default="baseline,current")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB)
    parser.add_argument("--event-log", action="store_true")
    parser.add_argument("--horizon", type=int, default=0, help="STOCKPIPE_STREAM_RECOMPUTE_HORIZON_BARS (0: default)")
    parser.add_argument("--history", type=int, default=0, help="stored bars per symbol before the first burst")
    parser.add_argument("--profile-operator", action="store_true", help="cProfile the operator in the workers")
    parser.add_argument("--keep", action="store_true", help="keep the bench database and checkpoint")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="current", help=argparse.SUPPRESS)
    parser.add_argument("--code", default=str(ROOT / "plugins"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    WORK.mkdir(parents=True, exist_ok=True)
    baseline_commit = subprocess.run(
        ["git", "rev-parse", args.baseline], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    current_commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = bool(
        subprocess.run(["git", "status", "--porcelain", "plugins"], cwd=ROOT, capture_output=True, text=True).stdout
    )
    runs, summaries = {}, {}
    for variant in args.variants.split(","):
        if variant == "baseline":
            tree = WORK / "baseline-code"
            shutil.rmtree(tree, ignore_errors=True)
            tree.mkdir(parents=True)
            archive = subprocess.run(["git", "archive", baseline_commit, "plugins"], cwd=ROOT, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
            code = tree / "plugins"
        else:
            code = ROOT / "plugins"
        out = WORK / f"{variant}.json"
        load_before = os.getloadavg()
        log(f"variant {variant}: {code}")
        command = [sys.executable, __file__, "--child", "--variant", variant, "--code", str(code), "--out", str(out)]
        command += ["--symbols", str(args.symbols), "--bursts", str(args.bursts), "--trigger", str(args.trigger)]
        command += ["--redis-db", str(args.redis_db)] + (["--event-log"] if args.event_log else [])
        command += ["--profile-operator"] if args.profile_operator else []
        command += ["--history", str(args.history), "--horizon", str(args.horizon)]
        command += ["--keep"] if args.keep else []
        subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(code)})
        runs[variant] = json.loads(out.read_text())
        runs[variant]["load_before"] = [round(x, 2) for x in load_before]
        runs[variant]["load_after"] = [round(x, 2) for x in os.getloadavg()]
        summaries[variant] = summarise(runs[variant], args.symbols, args.warmup)
    print(table(summaries))
    for variant, run in runs.items():
        print(f"{variant}: load average before {run['load_before']}, after {run['load_after']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "symbols": args.symbols,
                "bursts": args.bursts,
                "warmup_bursts": args.warmup,
                "history_bars_per_symbol": args.history,
                "horizon_bars": args.horizon or "default",
                "baseline_commit": baseline_commit,
                "current_commit": current_commit + ("+dirty" if dirty else ""),
                "nproc": os.cpu_count(),
                "summaries": summaries,
                "runs": runs,
            },
            indent=1,
            default=str,
        )
    )
    log(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
