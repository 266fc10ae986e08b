"""Benchmark (not a test): the whole market — a 10,000-symbol backlog through the stream, beside a
raw Kafka→PostgreSQL COPY consumer in the same run, and the storage that market scale takes.

    .venv/bin/python bench/market_scale.py [--symbols 10000] [--minutes 45] [--batch 200000]
        [--trigger 0.5] [--profile py-spy] [--keep]

One run, on the services of the local stack, isolated from them like bench/stream_throughput.py
(whose pieces it reuses): database ``stockpipe_bench_market`` (dropped and re-migrated), Redis db
10 (flushed), topics ``bench-prices-<id>`` + ``.dlq`` (deleted at the end, also on failure),
checkpoint ``.local/bench/market_scale/``.

1. **Backlog.** ``minutes × symbols`` contract bars (a random walk per symbol; each minute's bars
   for every symbol, like an ``AM.*`` burst) are produced into the bench topic.
2. **Raw baseline.** One confluent-kafka consumer: ``json.loads`` + COPY into a plain table in
   batches of ``--batch`` rows, one commit per batch — the ceiling of "Kafka → PostgreSQL" here.
3. **Stream.** The real job (``spark_jobs/stream_indicators.py`` in a child process, all
   indicators, exactly-once sink) with ``maxOffsetsPerTrigger = --batch`` on the same backlog.
   Sustained = rows after the first batch / time from its commit to the last one's (the first
   batch seeds 10,000 symbols). Target: ≥ 25,000 bars/s; the ratio to the raw consumer is printed
   (long-term aim ≥ 0.5×).
4. **Storage.** ``pg_total_relation_size`` (heap + indexes + TOAST) of the partitions holding the
   backlog, per row, scaled to a 390-minute session of ``--symbols`` symbols: rows and GB per day.

``--profile py-spy`` samples the job's Python driver and its Python workers with py-spy (``PYSPY``
= path of the binary, default ``py-spy`` on PATH) while the backlog drains and prints their top
frames — where the time goes. Prints one table and writes bench/results/market_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "bench")]

import stream_throughput as base  # noqa: E402

DATABASE = "stockpipe_bench_market"
REDIS_DB = 10  # stream_throughput 12, backfill 13, dashboard 14, alerts_latency 11
QUERY_NAME = "bench_market_scale"
WORK = ROOT / ".local" / "bench" / "market_scale"
RESULTS = ROOT / "bench" / "results" / "market_scale.json"
AB_RESULTS = ROOT / "bench" / "results" / "market_scale_ab.json"
TARGET_BARS_PER_S = 25_000
RATIO_AIM = 0.5
SESSION_MINUTES = 390

# bench/stream_throughput.py's functions read these module globals: point them at this bench's own
# database, Redis db, query name and folders.
base.DATABASE, base.REDIS_DB, base.QUERY_NAME, base.WORK = DATABASE, REDIS_DB, QUERY_NAME, WORK
log = base.log


def storage(conn: psycopg.Connection, symbols: int) -> dict:
    """Size of each market table's partitions that hold rows (heap + indexes + TOAST), per row and
    scaled to a session of ``symbols`` symbols."""
    out: dict = {}
    for table in ("bars_1m", "indicators_1m"):
        parts = conn.execute(
            "SELECT c.oid::regclass::text, pg_total_relation_size(c.oid), pg_relation_size(c.oid), "
            "pg_indexes_size(c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            (f"market.{table}",),
        ).fetchall()
        total = heap = indexes = rows = 0
        for name, size, heap_size, index_size in parts:
            (count,) = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
            if count:
                total, heap, indexes, rows = total + size, heap + heap_size, indexes + index_size, rows + count
        per_row = total / rows if rows else None
        day_rows = symbols * SESSION_MINUTES
        out[table] = {
            "rows": rows,
            "total_bytes": total,
            "heap_bytes": heap,
            "index_bytes": indexes,
            "bytes_per_row": per_row,
            "rows_per_day": day_rows,
            "gb_per_day": None if per_row is None else per_row * day_rows / 1e9,
        }
    out["gb_per_day"] = sum(t["gb_per_day"] or 0 for t in out.values() if isinstance(t, dict))
    out["database_bytes"] = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return out


def cpu_by_part(job: base.Job) -> dict[str, float]:
    """CPU seconds so far of the job's parts: the Python driver (the job's own process), the JVM, and
    the Python workers (the JVM's Python children: PySpark's daemon and the workers it forked)."""
    parts = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}

    def cpu(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return times.user + times.system + times.children_user + times.children_system

    try:
        root = psutil.Process(job.process.pid)
        parts["driver"] = root.cpu_times().user + root.cpu_times().system
        for proc in root.children(recursive=True):
            try:
                if proc.name() == "java":
                    parts["jvm"] += proc.cpu_times().user + proc.cpu_times().system
                elif "python" in proc.name():
                    # only the daemon's own tree: its reaped workers count in children_*
                    parent = proc.parent()
                    if parent is not None and parent.name() == "java":
                        parts["workers"] += cpu(proc)
                    elif parent is not None and "python" in parent.name() and parent.pid != root.pid:
                        t = proc.cpu_times()
                        parts["workers"] += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return parts


def python_processes(job: base.Job) -> list[psutil.Process]:
    try:
        root = psutil.Process(job.process.pid)
        return [p for p in [root, *root.children(recursive=True)] if "python" in p.name()]
    except psutil.NoSuchProcess:
        return []


class Profiler:
    """py-spy record of each Python process of the job (driver + workers), raw collapsed stacks."""

    def __init__(self, binary: str, job: base.Job, duration_s: int) -> None:
        self.runs: list[tuple[int, Path, subprocess.Popen]] = []
        self.jfr: tuple[int, Path] | None = None
        jvm = [p for p in psutil.Process(job.process.pid).children(recursive=True) if p.name() == "java"]
        jcmd = shutil.which("jcmd") or str(Path(os.path.realpath(shutil.which("java") or "java")).parent / "jcmd")
        if jvm and Path(jcmd).exists():
            out = WORK / f"jvm-{jvm[0].pid}.jfr"
            subprocess.run(
                [jcmd, str(jvm[0].pid), "JFR.start", f"duration={duration_s}s", f"filename={out}", "settings=profile"],
                capture_output=True,
                check=False,
            )
            self.jfr = (jvm[0].pid, out)
        for proc in python_processes(job):
            out = WORK / f"pyspy-{proc.pid}.txt"
            command = [binary, "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "50"]
            command += ["--duration", str(duration_s), "--output", str(out), "--nonblocking"]
            self.runs.append(
                (proc.pid, out, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            )

    def report(self) -> dict:
        profiles = {}
        for pid, out, process in self.runs:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
            if not out.exists():
                continue
            own: dict[str, int] = {}
            total = 0
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                frames = stack.split(";")
                total += int(count)
                # Self time of the innermost frame, and inclusive time of a few frames of ours.
                leaf = frames[-1]
                own[leaf] = own.get(leaf, 0) + int(count)
            top = sorted(own.items(), key=lambda kv: -kv[1])[:15]
            profiles[str(pid)] = {"samples": total, "top_self": [(f, round(100 * c / total, 1)) for f, c in top]}
        if self.jfr is not None:
            profiles[f"jvm {self.jfr[0]}"] = jfr_summary(self.jfr[1])
        return profiles


def jfr_summary(path: Path) -> dict:
    """Top self and inclusive methods of a JFR recording's execution samples (the JVM's CPU)."""
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(1)
    jfr = Path(os.path.realpath(shutil.which("java") or "java")).parent / "jfr"
    text = subprocess.run(
        [str(jfr), "print", "--json", "--events", "jdk.ExecutionSample", "--stack-depth", "64", str(path)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    try:
        events = json.loads(text)["recording"]["events"]
    except (ValueError, KeyError):
        return {"samples": 0, "top_self": [], "top_inclusive": []}
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    for event in events:
        frames = event["values"]["stackTrace"]["frames"] if event["values"].get("stackTrace") else []
        names = [f"{f['method']['type']['name']}.{f['method']['name']}" for f in frames]
        thread = (event["values"].get("sampledThread") or {}).get("javaName") or "?"
        thread = re.sub(r"\d+", "N", thread)
        threads[thread] = threads.get(thread, 0) + 1
        if names:
            # how the top frame ran: Interpreted / JIT compiled / Inlined (a huge generated method
            # the JIT refuses to compile runs interpreted)
            top_frame = f"{names[0]} [{frames[0].get('type', '?')}]"
            own[top_frame] = own.get(top_frame, 0) + 1
        for name in set(names):
            inclusive[name] = inclusive.get(name, 0) + 1
    total = len(events) or 1

    def top(counts: dict[str, int], k: int) -> list:
        return [(f, round(100 * c / total, 1)) for f, c in sorted(counts.items(), key=lambda kv: -kv[1])[:k]]

    return {
        "samples": len(events),
        "top_self": top(own, 25),
        "top_inclusive": top(inclusive, 60),
        "threads": top(threads, 10),
    }


def market_page(settings, repeat: int) -> dict:
    """Server render of the dashboard's Market page over this database (bench/dashboard.py's AppTest
    measure: cold = caches and connections cleared, warm = the next rerun)."""
    bench_dashboard = _bench_dashboard()
    os.environ.update({"STOCKPIPE_PG_DATABASE": DATABASE, "STOCKPIPE_REDIS_URL": settings.redis_url})
    with psycopg.connect(settings.pg_dsn("writer"), autocommit=True) as conn:
        (symbols,) = conn.execute("SELECT count(*) FROM market.latest_1m").fetchone()
    load0 = base.loadavg()
    timing = bench_dashboard.measure("market", None, repeat)
    log(f"dashboard Market page over {symbols:,} symbols: cold {timing['cold_s']:.3f} s, warm {timing['warm_s']:.3f} s")
    return {"symbols": symbols, **timing, "target_s": 1.0, "loadavg_before": load0, "loadavg_after": base.loadavg()}


def _bench_dashboard():
    """bench/dashboard.py as a module (its name clashes with the dashboard package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_dashboard", ROOT / "bench" / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(result: dict) -> str:
    raw, stream, sto = result["raw_baseline"], result["stream"], result["storage"]
    ratio = result["throughput_ratio"]
    s = stream["sustained_bars_per_s"]
    rows = [
        (
            f"backlog, {result['params']['symbols']:,} symbols × {result['params']['minutes']} min (bars/s, sustained)",
            base.fmt(s),
            base.fmt(raw["sustained_bars_per_s"]),
            base.fmt(ratio),
            f"≥ {TARGET_BARS_PER_S:,}",
            "yes" if s and s >= TARGET_BARS_PER_S else f"NO ({s / TARGET_BARS_PER_S:.0%} of it)" if s else "NO",
        ),
        (
            "incl. first batch (bars/s)",
            base.fmt(stream["overall_bars_per_s"]),
            base.fmt(raw["overall_bars_per_s"]),
            base.fmt(stream["overall_bars_per_s"] / raw["overall_bars_per_s"]),
            f"ratio aim ≥ {RATIO_AIM}",
            "",
        ),
        (
            "micro-batches: count, rows, processing p50 (ms)",
            f"{stream['batches']}, {stream['batch_rows'][1] if len(stream['batch_rows']) > 1 else '-'}, "
            f"{stream['batch_processing_ms_p50']:.0f}",
            "",
            "",
            "",
            "",
        ),
        (
            "CPU per bar after the first batch: job / PostgreSQL (µs)",
            f"{stream['job_cpu_us_per_bar'] or 0:.1f} / {stream['postgres_cpu_us_per_bar'] or 0:.1f} "
            "(driver / JVM / workers: "
            + " / ".join(f"{v or 0:.1f}" for v in stream["cpu_us_per_bar_by_part"].values())
            + ")",
        )
        + ("",) * 4,
        (
            "first batch: rows, processing (ms)",
            f"{stream['first_batch_rows']}, {stream['first_batch_processing_ms']:.0f}",
        )
        + ("",) * 4,
    ]
    for name in ("bars_1m", "indicators_1m"):
        t = sto[name]
        rows.append(
            (
                f"{name}: bytes/row (incl. indexes) → GB per {SESSION_MINUTES}-min session",
                f"{t['bytes_per_row']:.0f} → {t['gb_per_day']:.2f}",
                "",
                "",
                "",
                "",
            )
        )
    rows.append(
        (f"storage per day, {result['params']['symbols']:,} symbols (GB)", f"{sto['gb_per_day']:.2f}", "", "", "", "")
    )
    page = result.get("dashboard")
    if page:
        rows.append(
            (
                f"dashboard Market page, {page['symbols']:,} symbols: server render cold / warm (s)",
                f"{page['cold_s']:.3f} / {page['warm_s']:.3f}",
                "",
                "",
                "< 1 s",
                "yes" if page["cold_s"] < 1.0 else "NO",
            )
        )
    header = ("metric", "stream", "raw COPY", "ratio", "target", "met?")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(6)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def append_ab(run: str, result: dict) -> None:
    """One line of the A/B record (bench/results/market_scale_ab.json): before and after runs
    measured back to back, CPU per bar beside the wall-clock figures."""
    stream, raw = result["stream"], result["raw_baseline"]
    empty = {"benchmark": "market_scale A/B", "runs": []}
    record = json.loads(AB_RESULTS.read_text()) if AB_RESULTS.exists() else empty
    record["runs"].append(
        {
            "run": run,
            "when": result["when"],
            "note": result["note"],
            "commit": result["commit"],
            "params": result["params"],
            "stream_sustained_bars_per_s": round(stream["sustained_bars_per_s"] or 0),
            "raw_sustained_bars_per_s": round(raw["sustained_bars_per_s"] or 0),
            "ratio": None if result["throughput_ratio"] is None else round(result["throughput_ratio"], 3),
            "job_cpu_us_per_bar": round(stream["job_cpu_us_per_bar"] or 0, 1),
            "cpu_us_per_bar_by_part": {k: round(v, 1) for k, v in stream["cpu_us_per_bar_by_part"].items() if v},
            "postgres_cpu_us_per_bar": None
            if stream["postgres_cpu_us_per_bar"] is None
            else round(stream["postgres_cpu_us_per_bar"], 1),
            "batch_processing_ms": stream["batch_processing_ms"],
            "loadavg_before": stream["loadavg_before"],
            "loadavg_after": stream["loadavg_after"],
            "loadavg_1m_max_during": stream["loadavg_1m_max_during"],
        }
    )
    AB_RESULTS.write_text(json.dumps(record, indent=2, default=str) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=45, help="minutes of bars per symbol in the backlog")
    parser.add_argument("--batch", type=int, default=200_000, help="maxOffsetsPerTrigger / raw COPY batch")
    parser.add_argument("--trigger", type=float, default=0.5, help="processingTime trigger of the stream (s)")
    parser.add_argument("--timeout", type=float, default=1200, help="most seconds the stream may take")
    parser.add_argument("--profile", choices=["py-spy"], default=None)
    parser.add_argument("--keep", action="store_true", help="keep the bench topics (default: delete them)")
    parser.add_argument("--note", default="", help="free text stored in the JSON (what this run changed)")
    parser.add_argument("--repeat", type=int, default=3, help="Market page renders (median)")
    parser.add_argument("--skip-dashboard", action="store_true", help="no Market page render (code before it)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument(
        "--ab",
        metavar="RUN",
        default=None,
        help="also append this run's summary as RUN (e.g. before-1 / after-1) to bench/results/market_scale_ab.json",
    )
    args = parser.parse_args()

    settings = base.bench_settings()
    started = time.monotonic()
    result: dict = {
        "benchmark": "market_scale",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": args.note,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "machine": base.machine(),
        "loadavg_start": base.loadavg(),
        "params": {
            "symbols": args.symbols,
            "minutes": args.minutes,
            "batch": args.batch,
            "trigger_s": args.trigger,
            "spark_master": settings.spark_master,
            "shuffle_partitions": settings.spark_shuffle_partitions,
            "kafka_partitions": settings.kafka_partitions,
            "state_buckets": settings.stream_state_buckets,
        },
    }
    log(f"load average {result['loadavg_start']}; preparing {DATABASE}, Redis db {REDIS_DB}, {settings.kafka_topic}")
    base.prepare(settings)
    job: base.Job | None = None
    try:
        symbols = [f"M{i:05d}" for i in range(args.symbols)]
        # Two New York sessions: the backlog starts 45 minutes before midnight in New York, so the
        # Market page has a previous close (the walk does not care about trading hours).
        start = (datetime.now(UTC) - timedelta(days=2)).replace(hour=4, minute=15, second=0, microsecond=0)
        walk = base.Walk(symbols, start)
        n, produce_s = base.preload(settings, walk, args.minutes)
        result["backlog"] = {"bars": n, "produce_s": produce_s}
        log(f"backlog: {n:,} bars in {produce_s:.1f} s")

        log("raw baseline: Kafka → json → COPY bench.raw_bars")
        load0 = base.loadavg()
        raw = base.raw_baseline(settings, n, args.batch, timeout_s=600)
        raw["loadavg_before"], raw["loadavg_after"] = load0, base.loadavg()
        result["raw_baseline"] = raw
        log(f"raw baseline: {raw['sustained_bars_per_s'] or 0:,.0f} bars/s sustained, {raw['wall_s']:.1f} s")

        log("stream: spark_jobs/stream_indicators.py on the backlog")
        conn = psycopg.connect(settings.pg_dsn("writer"), autocommit=True)
        load0, cpu_pg0 = base.loadavg(), base.postgres_cpu_s()
        job = base.Job(settings, args.batch, args.trigger, WORK / "job.log")
        first = base.wait_for_rows(conn, job, 1, timeout_s=600)
        first_commit_s = time.monotonic() - job.started
        cpu_job0, parts0 = job.cpu_s(), cpu_by_part(job)
        profiler = None
        if args.profile:
            remaining = n - first[0][1]
            profiler = Profiler(os.environ.get("PYSPY", "py-spy"), job, duration_s=max(10, int(remaining / 10_000)))
        load_samples = []
        deadline = time.monotonic() + args.timeout
        while True:
            batches = base.stream_batches(conn)
            if sum(b[1] for b in batches) >= n:
                break
            job.check()
            if time.monotonic() > deadline:
                raise SystemExit(f"the stream applied {sum(b[1] for b in batches)} of {n} bars in {args.timeout:.0f} s")
            load_samples.append(os.getloadavg()[0])
            time.sleep(1)
        cpu_job1, cpu_pg1, parts1 = job.cpu_s(), base.postgres_cpu_s(), cpu_by_part(job)
        commits = [(b[3], b[1]) for b in batches]
        span = commits[-1][0] - commits[0][0]
        after_first = sum(b[1] for b in batches[1:])
        processing = sorted(b[2] for b in batches[1:]) or [batches[0][2]]
        result["stream"] = {
            "bars": sum(b[1] for b in batches),
            "batches": len(batches),
            "start_to_first_commit_s": first_commit_s,
            "first_batch_rows": first[0][1],
            "first_batch_processing_ms": first[0][2],
            "sustained_bars_per_s": base.sustained(commits),
            "overall_bars_per_s": sum(b[1] for b in batches) / (span + batches[0][2] / 1000),
            "batch_processing_ms": [round(b[2]) for b in batches],
            "batch_processing_ms_p50": processing[len(processing) // 2],
            "batch_rows": [b[1] for b in batches],
            "cpu_job_pct_after_first_batch": 100 * (cpu_job1 - cpu_job0) / span if span else None,
            "cpu_postgres_pct": None
            if cpu_pg0 is None or cpu_pg1 is None
            else 100 * (cpu_pg1 - cpu_pg0) / span
            if span
            else None,
            # CPU per bar after the first batch: the robust figure on a loaded box (wall clock moves 2-3x)
            "job_cpu_us_per_bar": 1e6 * (cpu_job1 - cpu_job0) / after_first if after_first else None,
            "postgres_cpu_us_per_bar": None
            if cpu_pg0 is None or cpu_pg1 is None or not after_first
            else 1e6 * (cpu_pg1 - cpu_pg0) / after_first,
            "cpu_us_per_bar_by_part": {
                part: 1e6 * (parts1[part] - parts0[part]) / after_first if after_first else None for part in parts1
            },
            "loadavg_before": load0,
            "loadavg_after": base.loadavg(),
            "loadavg_1m_max_during": max(load_samples, default=None),
        }
        stream = result["stream"]
        log(f"stream: {stream['sustained_bars_per_s'] or 0:,.0f} bars/s sustained over {len(batches)} batches")
        result["throughput_ratio"] = (
            stream["sustained_bars_per_s"] / raw["sustained_bars_per_s"]
            if stream["sustained_bars_per_s"] and raw["sustained_bars_per_s"]
            else None
        )
        (stored,) = conn.execute("SELECT count(*) FROM market.bars_1m").fetchone()
        (with_ind,) = conn.execute("SELECT count(*) FROM market.indicators_1m").fetchone()
        result["stream"]["stored_bars"], result["stream"]["stored_indicator_rows"] = stored, with_ind
        result["storage"] = storage(conn, args.symbols)
        if profiler is not None:
            result["profile"] = profiler.report()
        conn.close()
        if not args.skip_dashboard:
            result["dashboard"] = market_page(settings, args.repeat)
        # The job's own log lines: where each batch's time went (Spark plan / PostgreSQL / Redis).
        result["job_log_batches"] = [
            line.split(" - ", 1)[-1][:300]
            for line in (WORK / "job.log").read_text(errors="replace").splitlines()
            if "records in," in line
        ][:40]
    finally:
        if job is not None:
            job.stop()
        if not args.keep:
            base.delete_topics(settings)
    result["loadavg_end"] = base.loadavg()
    result["total_s"] = time.monotonic() - started
    result["targets"] = {"sustained_bars_per_s": TARGET_BARS_PER_S, "ratio_aim": RATIO_AIM}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.ab:
        append_ab(args.ab, result)
    print(table(result))
    for pid, prof in (result.get("profile") or {}).items():
        print(f"\npy-spy, pid {pid} ({prof['samples']} samples), top self time:")
        for frame, pct in prof["top_self"][:10]:
            print(f"  {pct:5.1f} %  {frame}")
        if prof.get("top_inclusive"):
            print("  inclusive:")
            for frame, pct in prof["top_inclusive"][:40]:
                print(f"  {pct:5.1f} %  {frame}")
    print(
        f"\nload average: start {result['loadavg_start']}, end {result['loadavg_end']} "
        f"({result['machine']['nproc']} cores); total {result['total_s']:.0f} s; JSON: {args.results}"
    )
    shutil.rmtree(WORK / "checkpoint", ignore_errors=True)


if __name__ == "__main__":
    main()
