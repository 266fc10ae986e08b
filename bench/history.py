"""Benchmark (not a test): history at the speed the rate limit allows — `airflow backfill create`
over a range of sessions on the running stack (`make up`: simulator in real time, live producer and
market_stream running), while live ingest goes on.

    .venv/bin/python bench/history.py [--sessions 60] [--first-start 5] [--baseline-sessions 1]
        [--skip-range] [--skip-first-start] [--skip-baseline]

Cases, one after the other, each over sessions the stack has no bars of (older than its oldest):

1. **first start** — ``--first-start`` sessions (``make up``'s STOCKPIPE_BACKFILL_INITIAL_SESSIONS,
   5): `airflow backfill create --max-active-runs 1`, as infra/stack.sh does;
2. **range** — ``--sessions`` sessions (60): the README's `airflow backfill create --dag-id
   market_backfill --from-date … --to-date …` (Airflow's default of 10 active runs);
3. **baseline** — the code path before issue 13 for ``--baseline-sessions`` sessions, run by this
   process (no Airflow: its task overheads are left out, in the baseline's favour): per session, one
   aggregates call per symbol through the same shared limiter (backfill priority), upsert, then
   ``spark_jobs/backfill_indicators.py`` for that day (the old DAG's per-run Spark job).

Per case: wall time (`backfill create` → the last session's ``ops.backfill_runs`` row), API calls
the simulator logged for the range (aggregates whose ``from`` lies in the range: pages included),
calls per session, every session's check (``ops.backfill_runs`` status), TA-Lib equality of the
range's indicators (TA-Lib over each symbol's stored series up to the range's end, within 1e-9
relative, NULL where TA-Lib gives NaN), and live freshness meanwhile: for bars written while the case
ran whose minute closed then, ``written_at`` − (ts + 60 s) in ``market.bars_1m`` (p50, p95, max),
plus the longest gap between two live bars of a symbol. Also the most calls the simulator saw in any
rolling 60 s (invariant 4).

Prints a table (case, metric, value, target, met?) and writes bench/results/history.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from stockpipe.calendar import Session, trading_calendar  # noqa: E402
from stockpipe.clients import pg_connect  # noqa: E402
from stockpipe.config import load_settings  # noqa: E402
from stockpipe.sources.simulator.app import key_id  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "history.json"
AIRFLOW = ROOT / "infra" / "airflow" / "airflow.sh"
ADMIN_HEADER = "X-Admin-Token"
RANGE_TARGET_S = 600.0  # 60 sessions x 5 symbols at 5 calls/min
FIRST_START_TARGET_S = 900.0  # the first-start 5-session backfill
LIVE_P95_TARGET_S = 120.0
AGGS = re.compile(r"/v2/aggs/ticker/[^/]+/range/1/minute/(\d+)/(\d+)")


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


# --- the stack -----------------------------------------------------------------------------------
def airflow(*args: str, timeout: float = 300) -> str:
    done = subprocess.run([str(AIRFLOW), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def simulator_requests(settings: Any, since: float) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{settings.simulator_url}/_admin/requests",
        params={"since": since},
        headers={ADMIN_HEADER: settings.simulator_admin_token.get_secret_value()},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    return body["requests"] if isinstance(body, dict) else body


def range_calls(requests: list[dict[str, Any]], sessions: list[Session]) -> int:
    """Aggregates calls whose ``from`` lies in the range's sessions (pages and retries included)."""
    lo, hi = sessions[0].open.timestamp() * 1000, sessions[-1].close.timestamp() * 1000
    return sum(1 for r in requests if (m := AGGS.search(r["path"])) and lo <= int(m.group(1)) < hi)


def max_calls_in_60s(requests: list[dict[str, Any]], key: str | None = None) -> int:
    """Most calls in any rolling 60 s (of the API key ``key``'s fingerprint, when given)."""
    times = sorted(r["ts"] for r in requests if key is None or r.get("key_id") == key)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 60:
            j += 1
        best = max(best, i - j + 1)
    return best


def fresh_sessions(settings: Any, count: int, gap_days: int, end_before: date | None = None) -> list[Session]:
    """``count`` sessions ending ``gap_days`` before the oldest stored bar (or ``end_before``)."""
    calendar = trading_calendar(settings.calendar_mode)
    if end_before is None:
        with pg_connect(settings, "writer") as conn:
            (oldest,) = conn.execute(
                "SELECT min(ts) FROM market.bars_1m WHERE symbol = ANY(%s)", (settings.watchlist,)
            ).fetchone()
        end_before = (oldest or datetime.now(UTC)).date()
    last = end_before - timedelta(days=gap_days)
    found = calendar.sessions_between(last - timedelta(days=3 * count + 10), last)
    return found[-count:]


def other_benchmarks() -> list[str]:
    """Other benchmarks running on the shared stack meanwhile (they may pause or replace its producer)."""
    import psutil

    found = set()
    for process in psutil.process_iter(["cmdline"]):
        for part in process.info["cmdline"] or []:
            if part.startswith(("bench/", str(ROOT / "bench"))) or "/bench/" in part:
                name = Path(part).name
                if name.endswith(".py") and name != "history.py":
                    found.add(name)
    return sorted(found)


# --- measurements --------------------------------------------------------------------------------
def live_freshness(settings: Any, start: datetime, end: datetime) -> dict[str, Any]:
    """Bars whose minute closed in [start, end] (live ones): written_at − close, and the longest gap
    between two of a symbol's bars' written_at."""
    with pg_connect(settings, "writer") as conn:
        rows = conn.execute(
            "SELECT symbol, ts, extract(epoch FROM written_at - (ts + interval '60 seconds')), written_at"
            " FROM market.bars_1m WHERE symbol = ANY(%s) AND ts + interval '60 seconds' >= %s"
            " AND ts + interval '60 seconds' <= %s ORDER BY symbol, ts",
            (settings.watchlist, start, end),
        ).fetchall()
    if not rows:
        return {"bars": 0}
    lat = np.array([float(r[2]) for r in rows])
    gaps = []
    for symbol in settings.watchlist:
        written = sorted(r[3] for r in rows if r[0] == symbol)
        if len(written) > 1:
            gaps.append(max((b - a).total_seconds() for a, b in zip(written, written[1:], strict=False)))
    expected = len(settings.watchlist) * int((end - start).total_seconds() // 60)
    return {
        "bars": len(rows),
        "expected_bars": expected,
        "p50_s": round(float(np.percentile(lat, 50)), 1),
        "p95_s": round(float(np.percentile(lat, 95)), 1),
        "max_s": round(float(lat.max()), 1),
        "longest_gap_s": round(max(gaps), 1) if gaps else None,
    }


def checks(settings: Any, sessions: list[Session], since: datetime) -> dict[str, Any]:
    with pg_connect(settings, "writer") as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (session_date) session_date, status, bars, expected_bars, finished_at"
            " FROM ops.backfill_runs WHERE session_date BETWEEN %s AND %s AND finished_at >= %s"
            " ORDER BY session_date, finished_at DESC",
            (sessions[0].day, sessions[-1].day, since),
        ).fetchall()
    return {
        "recorded": len(rows),
        "ok": sum(1 for r in rows if r[1] == "ok"),
        "failed": [str(r[0]) for r in rows if r[1] != "ok"],
        "last_finished": max((r[4] for r in rows), default=None),
    }


def talib_equal(settings: Any, sessions: list[Session]) -> dict[str, Any]:
    """TA-Lib over each symbol's stored series up to the range's end vs the stored indicators in it."""
    from bench.talib_check import compare

    return compare(settings, list(settings.watchlist), sessions[0].open, sessions[-1].close)


# --- the cases -----------------------------------------------------------------------------------
def run_backfill(settings: Any, name: str, sessions: list[Session], extra: list[str], timeout_s: float) -> dict:
    first, last = sessions[0].day.isoformat(), sessions[-1].day.isoformat()
    log(f"{name}: airflow backfill create {first}..{last} ({len(sessions)} sessions) {' '.join(extra)}")
    since = time.time()
    started = datetime.now(UTC)
    load_start = os.getloadavg()
    airflow("backfill", "create", "--dag-id", "market_backfill", "--from-date", first, "--to-date", last, *extra)
    deadline = time.monotonic() + timeout_s
    state = checks(settings, sessions, started)
    while state["recorded"] < len(sessions) and time.monotonic() < deadline:
        time.sleep(15)
        state = checks(settings, sessions, started)
        log(f"{name}: {state['recorded']}/{len(sessions)} sessions recorded ({state['ok']} ok)")
    ended = state["last_finished"] or datetime.now(UTC)
    result = finish(settings, name, sessions, since, started, ended, state, done=state["recorded"] == len(sessions))
    return {**result, "load_avg_start": load_start}


def finish(settings: Any, name: str, sessions: list[Session], since: float, started: datetime, ended: datetime,
           state: dict, done: bool) -> dict:  # fmt: skip
    time.sleep(90)  # the live bars that closed at the end are written by now
    requests = simulator_requests(settings, since)
    calls = range_calls(requests, sessions)
    bars_per_symbol = sum(s.minutes for s in sessions)
    return {
        "case": name,
        "sessions": len(sessions),
        "first": sessions[0].day.isoformat(),
        "last": sessions[-1].day.isoformat(),
        "symbols": len(settings.watchlist),
        "done": done,
        "wall_s": round((ended - started).total_seconds(), 1),
        "api_calls": calls,
        "fewest_calls": len(settings.watchlist) * math.ceil(bars_per_symbol / 50_000),
        "calls_per_session": round(calls / len(sessions), 2),
        "checks": state,
        "max_calls_in_60s": max_calls_in_60s(requests, key_id(settings.market_data_key)),
        "max_calls_in_60s_all_keys": max_calls_in_60s(requests),
        "concurrent": other_benchmarks(),
        "load_avg_end": os.getloadavg(),  # 1, 5, 15 min: the box is shared
        "rate_limit_per_minute": settings.rate_limit_per_minute,
        "live": live_freshness(settings, started, ended),
        "talib": talib_equal(settings, sessions) if done else None,
    }


def run_baseline(settings: Any, sessions: list[Session]) -> dict:
    """The pre-issue-13 path: per session, one call per symbol, then a Spark job for that day."""
    from stockpipe import contract
    from stockpipe.clients import market_source
    from stockpipe.storage import queries

    log(f"baseline: per-session path over {sessions[0].day}..{sessions[-1].day} ({len(sessions)} sessions)")
    since = time.time()
    started = datetime.now(UTC)
    source = market_source(settings, priority="backfill")
    run_id = f"bench_baseline__{started:%Y%m%dT%H%M%S}"
    from stockpipe.airflow.backfill import check_session, record_run

    for session in sessions:
        with pg_connect(settings, "writer") as conn:
            queries.ensure_month_partitions(conn, session.open, session.close)
            conn.commit()
            for symbol in settings.watchlist:
                bars = source.minute_bars(symbol, session.open, session.close - timedelta(minutes=1))
                fetched_at = datetime.now(UTC)
                rows = [
                    (
                        symbol,
                        b.ts,
                        b.open,
                        b.high,
                        b.low,
                        b.close,
                        b.volume,
                        b.vwap,
                        b.trades,
                        settings.source_name,
                        fetched_at,
                    )  # fmt: skip
                    for b in bars
                    if session.contains(b.ts)
                    and not contract.invalid_reason(b.to_message(settings.source_name, fetched_at))
                ]
                queries.upsert_bars(conn, rows)
                log(f"baseline: {symbol} {session.day}: {len(rows)} bars")
        day = session.day.isoformat()
        subprocess.run(
            [sys.executable, str(ROOT / "spark_jobs" / "backfill_indicators.py"), "--start", day, "--end", day],
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        check = check_session(settings, session)
        record_run(settings, run_id, check, settings.watchlist, started)
        log(f"baseline: {day} computed and checked ({'ok' if check.ok else check.problems})")
    ended = datetime.now(UTC)
    state = checks(settings, sessions, started)
    return finish(settings, "baseline (per session)", sessions, since, started, ended, state, done=True)


# --- report --------------------------------------------------------------------------------------
def table(results: list[dict]) -> list[list[str]]:
    lines = [["case", "sessions", "wall", "API calls (fewest)", "calls/session", "checks ok", "TA-Lib",
              "live p50 / p95 / max", "longest live gap", "max calls/60 s", "target", "met?"]]  # fmt: skip
    for r in results:
        live = r["live"]
        if r["case"].startswith("range"):
            target, met = "≤ 600 s, live p95 ≤ 120 s", r["wall_s"] <= RANGE_TARGET_S
        elif r["case"].startswith("first"):
            target, met = "≤ 900 s, live p95 ≤ 120 s", r["wall_s"] <= FIRST_START_TARGET_S
        else:
            target, met = "baseline", None
        if met is not None:
            met = met and r["done"] and (live.get("p95_s") or 1e9) <= LIVE_P95_TARGET_S
            met = met and r["checks"]["ok"] == r["sessions"] and bool(r["talib"] and r["talib"]["equal"])
        talib = "-" if not r["talib"] else ("equal" if r["talib"]["equal"] else "DIFFERS")
        lines.append(
            [
                r["case"],
                str(r["sessions"]),
                f"{r['wall_s']:.0f} s",
                f"{r['api_calls']} ({r['fewest_calls']})",
                f"{r['calls_per_session']:.2f}",
                f"{r['checks']['ok']}/{r['sessions']}",
                talib,
                f"{live.get('p50_s')} / {live.get('p95_s')} / {live.get('max_s')} s",
                f"{live.get('longest_gap_s')} s",
                f"{r['max_calls_in_60s']} (limit {r['rate_limit_per_minute']})",
                target,
                "-" if met is None else ("yes" if met else "NO"),
            ]
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=60)
    parser.add_argument("--first-start", type=int, default=5)
    parser.add_argument("--baseline-sessions", type=int, default=1)
    parser.add_argument("--skip-range", action="store_true")
    parser.add_argument("--skip-first-start", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--timeout-min", type=float, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file (default: bench/results/history.json)")
    args = parser.parse_args(argv)
    settings = load_settings()
    results: list[dict] = []
    end_before = None
    plan = []
    if not args.skip_first_start:
        plan.append(("first start (5 sessions, 1 active run)", args.first_start, ["--max-active-runs", "1"]))
    if not args.skip_range:
        plan.append((f"range ({args.sessions} sessions)", args.sessions, []))
    for name, count, extra in plan:
        sessions = fresh_sessions(settings, count, gap_days=3, end_before=end_before)
        end_before = sessions[0].day
        results.append(run_backfill(settings, name, sessions, extra, args.timeout_min * 60))
        log(json.dumps(results[-1], default=str))
    if not args.skip_baseline:
        sessions = fresh_sessions(settings, args.baseline_sessions, gap_days=3, end_before=end_before)
        results.append(run_baseline(settings, sessions))
        log(json.dumps(results[-1], default=str))

    lines = table(results)
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    for row in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    for r in results:
        start, end = r.get("load_avg_start"), r.get("load_avg_end")
        loads = f"{start[0]:.2f} → {end[0]:.2f}" if start and end else f"{end[0]:.2f} at the end" if end else "?"
        print(f"{r['case']}: load average (1 min) {loads}; other benchmarks meanwhile: {r['concurrent'] or 'none'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "history",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "settings": {
                    "watchlist": settings.watchlist,
                    "rate_limit_per_minute": settings.rate_limit_per_minute,
                    "backfill_share": settings.backfill_share,
                    "calendar": settings.calendar_mode,
                },
                "results": results,
                "table": lines,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
