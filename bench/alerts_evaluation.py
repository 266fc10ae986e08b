"""Benchmark (not a test): what the sink's user-alert evaluation costs per micro-batch, step by step,
against a baseline commit's code on the same staged rows.

    .venv/bin/python bench/alerts_evaluation.py [--source stockpipe_bench_alerts] [--baseline 97b8363]
        [--rounds 10] [--mode new|corrections]

Needs a database holding a streamed history and rules: by default the one ``bench/alerts_latency.py``
leaves (500 symbols, ~110,000 bars, 1,000 rules). It is copied (``CREATE DATABASE … TEMPLATE``) to
``stockpipe_bench_alerts_eval``, dropped at the end; the source is only read. No Spark, Kafka or
Redis.

Each round, in one transaction rolled back at its end: the newest 2 bars of every symbol (3 for
every 9th) are deleted with their alerts (``--mode new``: new bars, as the live stream brings them)
or kept (``--mode corrections``: the same bars re-sent with closes ±0.4 % on two thirds of the
symbols and volume ×4 on a fifth), staged in ``stage_rows`` as the sink stages them and upserted
by the sink's own statements; then ``evaluate_batch`` runs — the baseline commit's
``storage/alerts.py`` + ``alerts/evaluate.py`` and the working tree's, alternating. Measured: wall
time per step (p50), and per evaluation the CPU of this process and of its PostgreSQL backend
(``/proc/<pid>/stat``: the same host). Both must leave the same ``market.alerts`` rows, or the
benchmark says so. Prints a table; JSON in bench/results/alerts_evaluation.json.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from stockpipe.alerts import evaluate as current_evaluate  # noqa: E402
from stockpipe.clients import pg_connect_dsn  # noqa: E402
from stockpipe.config import load_settings  # noqa: E402
from stockpipe.storage import alerts as current_store  # noqa: E402
from stockpipe.storage import postgres as sink_sql  # noqa: E402

COPY = "stockpipe_bench_alerts_eval"
RESULTS = ROOT / "bench" / "results" / "alerts_evaluation.json"
IND = ", ".join(sink_sql.INDICATOR_COLUMNS)

# The statements evaluate_batch sends, by a phrase only each one has (both versions).
STATEMENTS = {
    "rules": ("FROM market.alert_rules WHERE enabled", "FROM market.alert_rules r WHERE r.enabled"),
    "existing alerts": ("SELECT rule_id, symbol, ts, status FROM market.alerts", "a.ts >= s.t0 OR"),
    "lock rules": ("FOR KEY SHARE",),
    "upsert alerts": ("INSERT INTO market.alerts",),
    "retract": ("UPDATE market.alerts",),
}


class Rollback(Exception):
    pass


def load_baseline(commit: str, workdir: Path) -> ModuleType:
    """The baseline commit's storage/alerts.py, importing that commit's alerts/evaluate.py."""

    def source(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout

    (workdir / "baseline_evaluate.py").write_text(source("plugins/stockpipe/alerts/evaluate.py"))
    store = source("plugins/stockpipe/storage/alerts.py").replace(
        "from stockpipe.alerts.evaluate import", "from baseline_evaluate import"
    )
    (workdir / "baseline_store.py").write_text(store)
    sys.path.insert(0, str(workdir))
    spec = importlib.util.spec_from_file_location("baseline_store", workdir / "baseline_store.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_store"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def stage(cur: psycopg.Cursor, mode: str) -> None:
    """The batch's rows in stage_rows and upserted, as PostgresSink.write leaves them before the alerts."""
    cur.execute(sink_sql._CREATE_STAGE)
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS pick AS SELECT symbol, ts FROM ("
        " SELECT symbol, ts, row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) AS n,"
        " dense_rank() OVER (ORDER BY symbol) AS k FROM market.bars_1m) x WHERE n <= 2 OR (n = 3 AND k % 9 = 0)"
    )
    cur.execute(
        f"INSERT INTO stage_rows (kind, symbol, ts, open, high, low, close, volume, vwap, trades, source, "
        f"fetched_at, bar_changed, {IND}) SELECT 'bar', b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, "
        f"b.vwap, b.trades, b.source, b.fetched_at, true, {', '.join('i.' + c for c in sink_sql.INDICATOR_COLUMNS)} "
        "FROM pick p JOIN market.bars_1m b USING (symbol, ts) JOIN market.indicators_1m i USING (symbol, ts)"
    )
    if mode == "corrections":
        cur.execute(
            "UPDATE stage_rows SET fetched_at = fetched_at + interval '1 second', close = close * CASE "
            "WHEN hashtext(symbol) % 3 = 0 THEN 1.004 WHEN hashtext(symbol) % 3 = 1 THEN 0.996 ELSE 1 END, "
            "volume = volume * CASE WHEN hashtext(symbol) % 5 = 0 THEN 4 ELSE 1 END"
        )
    else:
        for table in ("market.alerts", "market.indicators_1m", "market.bars_1m"):
            cur.execute(f"DELETE FROM {table} a USING pick p WHERE a.symbol = p.symbol AND a.ts = p.ts")
    cur.execute(sink_sql._UPSERT_BARS, {"late": sink_sql.REASON_LATE, "stale": sink_sql.REASON_STALE}).fetchone()
    cur.execute(sink_sql._UPSERT_INDICATORS)


def backend_cpu_s(conn: psycopg.Connection) -> float:
    with open(f"/proc/{conn.info.backend_pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Timings:
    """Wall ms per step of one evaluation: the module's series/crossings/cool-down functions and the
    statements (a cursor class that times its execute)."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def add(self, name: str, started: float) -> None:
        self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - started) * 1000

    def wrap(self, name: str, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(name, started)

        return timed

    def cursor_class(self) -> type[psycopg.Cursor]:
        timings = self

        class TimedCursor(psycopg.Cursor):
            def execute(self, query, params=None, **kwargs):
                text = str(query)
                name = next((n for n, phrases in STATEMENTS.items() if any(p in text for p in phrases)), None)
                started = time.perf_counter()
                try:
                    return super().execute(query, params, **kwargs)
                finally:
                    if name:
                        timings.add(name, started)

        return TimedCursor


def instrument(store: ModuleType, evaluate: ModuleType, timings: Timings) -> None:
    store.series_around_batch = timings.wrap("series (queries + frame)", store.series_around_batch)
    store.crossings = timings.wrap("crossings", evaluate.crossings)
    store.apply_cooldown = timings.wrap("cool-down", evaluate.apply_cooldown)


def one_round(conn: psycopg.Connection, store: ModuleType, timings: Timings, mode: str) -> dict[str, Any]:
    timings.ms = {}
    out: dict[str, Any] = {}
    try:
        with conn.transaction():
            cur = conn.cursor()
            stage(cur, mode)
            cpu, backend, started = time.process_time(), backend_cpu_s(conn), time.perf_counter()
            with conn.transaction():
                counts = store.evaluate_batch(cur)
            out["wall_ms"] = (time.perf_counter() - started) * 1000
            out["python_cpu_ms"] = (time.process_time() - cpu) * 1000
            out["backend_cpu_ms"] = (backend_cpu_s(conn) - backend) * 1000
            out["judged"], out["fired"], out["retracted"] = counts.bars, counts.fired, counts.retracted
            out["alerts"] = cur.execute(
                "SELECT rule_id, symbol, ts, status, description, close, value, delivery FROM market.alerts "
                "WHERE ts >= (SELECT min(ts) - interval '1 day' FROM pick) ORDER BY 1, 2, 3"
            ).fetchall()
            raise Rollback
    except Rollback:
        pass
    steps = dict(timings.ms)
    steps["other (Python, savepoint)"] = out["wall_ms"] - sum(steps.values())
    out["steps_ms"] = steps
    return out


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="stockpipe_bench_alerts", help="database to copy (only read)")
    parser.add_argument("--baseline", default="97b8363", help="commit whose alerts code is the baseline")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--mode", choices=["new", "corrections"], default="new")
    args = parser.parse_args()

    settings = load_settings()
    with pg_connect_dsn(settings.pg_dsn("admin", "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{COPY}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{COPY}" TEMPLATE "{args.source}"')
    timings = Timings()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            baseline = load_baseline(args.baseline, Path(workdir))
            instrument(baseline, sys.modules["baseline_evaluate"], timings)
            instrument(current_store, current_evaluate, timings)
            versions = {"baseline": baseline, "current": current_store}
            loadavg_start = os.getloadavg()
            with pg_connect_dsn(settings.pg_dsn("admin", COPY), cursor_factory=timings.cursor_class()) as conn:
                for store in versions.values():  # warm-up (caches, first imports), not counted
                    one_round(conn, store, timings, args.mode)
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in versions}
                for i in range(args.rounds):
                    order = list(versions) if i % 2 == 0 else list(reversed(versions))
                    for name in order:
                        runs[name].append(one_round(conn, versions[name], timings, args.mode))
            loadavg_end = os.getloadavg()
    finally:
        with pg_connect_dsn(settings.pg_dsn("admin", "postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{COPY}" WITH (FORCE)')

    same = all(a["alerts"] == b["alerts"] for a, b in zip(runs["baseline"], runs["current"], strict=True))
    steps = list(dict.fromkeys(s for rs in runs.values() for r in rs for s in r["steps_ms"]))
    summary: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": args.source,
        "baseline": args.baseline,
        "mode": args.mode,
        "rounds": args.rounds,
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg_end,
        "same_alerts": same,
    }
    for name, rs in runs.items():
        summary[name] = {
            "judged": rs[0]["judged"],
            "fired": rs[0]["fired"],
            "retracted": rs[0]["retracted"],
            "wall_ms_p50": p50([r["wall_ms"] for r in rs]),
            "python_cpu_ms_p50": p50([r["python_cpu_ms"] for r in rs]),
            "backend_cpu_ms_mean": statistics.fmean(r["backend_cpu_ms"] for r in rs),
            "steps_ms_p50": {s: p50([r["steps_ms"].get(s, 0.0) for r in rs]) for s in steps},
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2, default=str) + "\n")

    base, cur = summary["baseline"], summary["current"]
    print(
        f"alert evaluation per micro-batch ({args.mode}: {cur['judged']} bars judged; "
        f"{args.rounds} rounds each, interleaved; load {loadavg_start[0]:.1f} → {loadavg_end[0]:.1f})"
    )
    print(f"{'step, wall p50 (ms)':34} {'baseline ' + args.baseline:>18} {'current':>10}")
    for s in steps:
        print(f"{s:34} {base['steps_ms_p50'][s]:18.1f} {cur['steps_ms_p50'][s]:10.1f}")
    for label, key in (
        ("total wall p50 (ms)", "wall_ms_p50"),
        ("Python CPU p50 (ms)", "python_cpu_ms_p50"),
        ("PostgreSQL backend CPU mean (ms)", "backend_cpu_ms_mean"),
    ):
        print(f"{label:34} {base[key]:18.1f} {cur[key]:10.1f}")
    print(f"fired / retracted: {base['fired']} / {base['retracted']} vs {cur['fired']} / {cur['retracted']}")
    print("same alerts: yes" if same else "same alerts: NO — the two versions left different market.alerts rows")
    print(f"\nwritten {RESULTS.relative_to(ROOT)}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
