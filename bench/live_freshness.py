"""Benchmark (not a test): live freshness — bar close → Redis latest and → PostgreSQL — against the
running stack (`make up`: simulator in real time, market_stream running), per producer policy.

    .venv/bin/python bench/live_freshness.py [--quick] [--warmup-s 120]
        [--baseline-min 6] [--default-min 15] [--double-min 6]

While it runs, the stack's own producer is paused (Airflow DAGs ``market_producer`` and
``market_ingest``, restored at the end, even on failure) and the benchmark runs its own
``python -m stockpipe.producer`` (same checkpoints, topic and limiter as the stack's), one phase
after the other:

1. **baseline** — ``STOCKPIPE_PRODUCER_POLICY=cycle`` with the former 1 s guard band: the whole
   watchlist back to back every 60 s (+2 s), through the shared limiter (the policy before issue 13);
2. **planned, default budget** — ``planned`` at ``STOCKPIPE_RATE_LIMIT_PER_MINUTE=5`` (the default:
   5 symbols, 5 calls/min, 0.25 s guard band);
3. **planned, 2 calls per symbol per minute** — ``planned`` at 10 calls/min.

Each phase: a warm-up (the producer catches up and settles), a steady window whose bars are
measured, then a drain (the window's last bars still arrive). Per bar whose minute closed inside the
window: **Redis** = first arrival on the pub/sub channel ``stockpipe:bars`` of that bar or a newer one of the
symbol (Redis keeps the latest bar only) − (ts + 60 s);
**PostgreSQL** = the commit of the bar's row (and its indicators row) − (ts + 60 s) in ``market.bars_1m``
(bench/pg_commit.py; ``written_at``, when the write started, if ``track_commit_timestamp`` is off —
said so). Also, per phase, the most calls
the simulator logged for the stack's key in any rolling 60 s (invariant 4), and once, the delay
between a limiter grant and the call's arrival at the simulator (what the guard band covers).

Prints a table and writes bench/results/live_freshness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import httpx  # noqa: E402
import psutil  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from bench import pg_commit  # noqa: E402
from bench.websocket_feed import BarArrivals  # noqa: E402  (stamps each socket read: see its docstring)
from stockpipe import clients  # noqa: E402
from stockpipe.airflow.restart import dag_is_paused, set_dag_paused  # noqa: E402
from stockpipe.config import load_settings  # noqa: E402
from stockpipe.producer import schedule  # noqa: E402
from stockpipe.producer.limiter import BACKFILL_WAITING_KEY  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "live_freshness.json"
PRODUCER_DAGS = ("market_producer", "market_ingest")
JITTER_KEY = "stockpipe-bench-jitter"
ADMIN_HEADER = "X-Admin-Token"
BACKFILL_WAITING = BACKFILL_WAITING_KEY.format(scope="*")


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_s": _round(percentile(values, 50)),
        "p95_s": _round(percentile(values, 95)),
        "max_s": _round(max(values) if values else None),
        "mean_s": _round(statistics.fmean(values) if values else None),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def most_in_any_window(times: list[float], window_s: float = 60.0) -> int:
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window_s:
            first += 1
        best = max(best, last - first + 1)
    return best


def other_producers() -> list[int]:
    """Pids of running ``python -m stockpipe.producer`` processes other than ours."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if "stockpipe.producer" in cmdline and "-m" in cmdline and process.pid != os.getpid():
            found.append(process.pid)
    return found


def grant_to_arrival(settings: Any, calls: int) -> dict[str, Any]:
    """Delay between the limiter's grant and the call's arrival at the simulator (request log)."""
    probe = settings.model_copy(
        update={"simulator_api_key": SecretStr(JITTER_KEY), "rate_limit_per_minute": 1_000_000, "polygon_api_key": None}
    )
    source = clients.market_source(probe)
    grants: list[float] = []
    acquire = source.limiter.acquire

    def granted() -> float:
        waited = acquire()
        grants.append(time.time())
        return waited

    source.limiter.acquire = granted
    since = time.time()
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    for _ in range(calls):
        source.minute_bars("AAPL", end - timedelta(minutes=3), end - timedelta(minutes=1))
        time.sleep(0.05)
    source.limiter.clear()
    arrivals = sorted(r["ts"] for r in simulator_requests(settings, JITTER_KEY, since))
    delays = [(a - g) * 1000 for a, g in zip(arrivals, grants, strict=False)]
    return {
        "calls": len(delays),
        "min_ms": _round(min(delays)),
        "p50_ms": _round(percentile(delays, 50)),
        "p99_ms": _round(percentile(delays, 99)),
        "max_ms": _round(max(delays)),
    }


def simulator_requests(settings: Any, api_key: str, since: float) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{settings.simulator_url}/_admin/requests",
        params={"api_key": api_key, "since": since},
        headers={ADMIN_HEADER: settings.simulator_admin_token.get_secret_value()},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    return body["requests"] if isinstance(body, dict) else body


def run_phase(
    settings: Any, name: str, env: dict[str, str], warmup_s: float, steady_s: float, drain_s: float, log_dir: Path
) -> dict[str, Any]:
    started = time.time()
    log_path = log_dir / f"bench-live-freshness-{name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stockpipe.producer"],
            cwd=ROOT,
            env={**os.environ, "STOCKPIPE_PRODUCER_METRICS_PORT": "0", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            window_start = started + warmup_s
            window_start = (int(window_start // 60) + 1) * 60  # whole minutes
            window_end = window_start + steady_s
            plan_seen: dict[str, Any] = {}
            backfill_waiting_s = 0
            others: set[int] = set()
            redis = settings.redis_client(socket_timeout=5)
            while time.time() < window_end + drain_s:
                if process.poll() is not None:
                    raise SystemExit(f"the producer of phase {name} exited ({process.returncode}); see {log_path}")
                if window_start <= time.time() < window_end:
                    if not plan_seen and env.get("STOCKPIPE_PRODUCER_POLICY") == "planned":
                        plan_seen = schedule.read(redis)
                    # a backfill waiting for the limiter takes a share of the live budget: say so
                    backfill_waiting_s += any(redis.scan_iter(BACKFILL_WAITING, count=100))
                    others.update(p for p in other_producers() if p != process.pid)  # another helper's?
                time.sleep(1)
            redis.close()
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    return {
        "name": name,
        "env": {k: v for k, v in env.items() if "KEY" not in k},
        "started_at": started,
        "window_start": window_start,
        "window_end": window_end,
        "ended_at": time.time(),
        "log": str(log_path),
        "plan": plan_seen.get("plan"),
        "backfill_waiting_s": backfill_waiting_s,
        "other_producers": sorted(others),
        "stale_by_design": plan_seen.get("stale_by_design"),
    }


def measure(settings: Any, phase: dict[str, Any], arrivals: BarArrivals) -> None:
    symbols = list(settings.watchlist)
    first_close, last_close = phase["window_start"], phase["window_end"]  # bars closing in [first, last)
    expected = [(s, close - 60) for s in symbols for close in range(int(first_close), int(last_close), 60)]
    # Redis holds the latest bar only: a bar that arrives together with a newer one (a deferred
    # fetch brings two) is covered when the newer one lands
    redis_delays = []
    for symbol, ts in expected:
        landed = [at for (s, t), at in arrivals.first.items() if s == symbol and t >= ts]
        if landed:
            redis_delays.append(min(landed) - (ts + 60))
    with clients.pg_connect(settings, "reader") as conn:
        on = pg_commit.tracking(conn)
        rows = conn.execute(
            "SELECT b.symbol, extract(epoch FROM b.ts)::bigint, extract(epoch FROM b.written_at), "
            f"{pg_commit.commit_epoch('b', on)}, {pg_commit.commit_epoch('i', on)} FROM market.bars_1m b "
            "LEFT JOIN market.indicators_1m i ON i.symbol = b.symbol AND i.ts = b.ts "
            "WHERE b.symbol = ANY(%s) AND b.ts >= to_timestamp(%s) AND b.ts < to_timestamp(%s)",
            (symbols, first_close - 60, last_close - 60),
        ).fetchall()
    pg_delays = [pg_commit.visible_at(float(w), cb, ci)[0] - (ts + 60) for _, ts, w, cb, ci in rows]
    pg_started = [float(w) - (ts + 60) for _, ts, w, *_ in rows]
    calls = sorted(
        r["ts"]
        for r in simulator_requests(settings, settings.simulator_api_key.get_secret_value(), phase["started_at"])
        if r["ts"] <= phase["ended_at"]
    )
    phase.update(
        expected_bars=len(expected),
        redis=summary(redis_delays),
        postgres=summary(pg_delays),
        postgres_measure=pg_commit.COMMITTED if on else pg_commit.FALLBACK,
        postgres_write_started=summary(pg_started),
        redis_missing=len(expected) - len(redis_delays),
        postgres_missing=len(expected) - len(pg_delays),
        simulator_calls=len(calls),
        most_calls_in_any_60s=most_in_any_window(calls),
        redis_delays_s=[round(d, 2) for d in redis_delays],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup-s", type=float, default=120)
    parser.add_argument("--baseline-min", type=float, default=6)
    parser.add_argument("--default-min", type=float, default=15)
    parser.add_argument("--double-min", type=float, default=6)
    parser.add_argument("--quick", action="store_true", help="1-minute windows, 30 s warm-up (a dry run)")
    parser.add_argument("--jitter-calls", type=int, default=300)
    parser.add_argument("--wait-others-s", type=float, default=900, help="wait for other producers to end")
    parser.add_argument(
        "--api-key",
        help="the phases' producer uses this simulator API key, its own rate-limit scope (a shared stack: another "
        "benchmark's backfill then takes no share of the measured budget)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--phases", default="baseline-cycle,planned-default,planned-2x", help="comma-separated")
    args = parser.parse_args()
    if args.quick:
        args.warmup_s, args.baseline_min, args.default_min, args.double_min, args.jitter_calls = 30, 1, 1, 1, 50

    settings = load_settings()
    if args.api_key:
        settings = settings.model_copy(update={"simulator_api_key": SecretStr(args.api_key)})
    own_key = {"STOCKPIPE_SIMULATOR_API_KEY": args.api_key} if args.api_key else {}
    symbols = len(settings.watchlist)
    limit = settings.rate_limit_per_minute
    phases_spec = [
        ("baseline-cycle", {"STOCKPIPE_PRODUCER_POLICY": "cycle", "STOCKPIPE_RATE_LIMIT_PER_MINUTE": str(limit),
                            "STOCKPIPE_RATE_LIMIT_GUARD_S": "1"}, args.baseline_min, 200),
        ("planned-default", {"STOCKPIPE_PRODUCER_POLICY": "planned", "STOCKPIPE_RATE_LIMIT_PER_MINUTE": str(limit)},
         args.default_min, 90),
        ("planned-2x", {"STOCKPIPE_PRODUCER_POLICY": "planned", "STOCKPIPE_RATE_LIMIT_PER_MINUTE": str(2 * symbols)},
         args.double_min, 90),
    ]  # fmt: skip
    phases_spec = [spec for spec in phases_spec if spec[0] in args.phases.split(",")]
    log_dir = Path(os.environ.get("STOCKPIPE_LOCAL") or ROOT / ".local") / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    print(f"live freshness: {symbols} symbols, default budget {limit} calls/min; pausing {', '.join(PRODUCER_DAGS)}")
    paused_before = {dag: dag_is_paused(settings, dag) for dag in PRODUCER_DAGS}
    arrivals = BarArrivals(settings)
    results: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "phases": []}
    try:
        for dag in PRODUCER_DAGS:
            set_dag_paused(settings, dag, True)
        deadline = time.time() + args.wait_others_s
        if other_producers():
            print(f"waiting up to {args.wait_others_s:.0f} s for other producers to end: {other_producers()}")
        while other_producers() and time.time() < deadline:
            time.sleep(2)
        if other_producers():
            raise SystemExit(f"another producer is still running (pids {other_producers()}): stop it first")
        results["grant_to_arrival"] = grant_to_arrival(settings, args.jitter_calls)
        print(f"grant → arrival at the simulator: {results['grant_to_arrival']}")
        for name, env, minutes, drain in phases_spec:
            print(f"phase {name}: {env} — {args.warmup_s:.0f} s warm-up, {minutes:g} min measured, {drain} s drain")
            if own_key:
                print("  (its own simulator API key: its own rate-limit scope)")
            phase = run_phase(settings, name, {**env, **own_key}, args.warmup_s, minutes * 60, drain, log_dir)
            results["phases"].append(phase)
    finally:
        arrivals_done = arrivals
        for dag, was_paused in paused_before.items():
            try:
                set_dag_paused(settings, dag, was_paused)
            except Exception as error:  # say it; the operator must restore it by hand
                print(f"could not restore {dag} (paused={was_paused}): {error}")
    time.sleep(2)
    arrivals_done.close()
    for phase in results["phases"]:
        measure(settings, phase, arrivals)

    targets = {"planned-default": {"p50": 30.0, "p95": 60.0}, "planned-2x": {"p95": 15.0}}
    baseline = next((p for p in results["phases"] if p["name"] == "baseline-cycle"), None)
    header = (
        f"{'phase':<16} {'calls/min':>9} {'bars':>8} {'Redis p50':>9} {'p95':>7} {'max':>7} "
        f"{'PG p50':>7} {'p95':>7} {'max':>7} {'max/60s':>7} {'p95 vs base':>11}  target"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for phase in results["phases"]:
        r, pg = phase["redis"], phase["postgres"]
        target = targets.get(phase["name"], {})
        met = all(r.get(f"{k}_s") is not None and r[f"{k}_s"] <= v for k, v in target.items()) if target else None
        phase["target"] = target
        phase["met"] = met
        ratio = (
            f"{baseline['redis']['p95_s'] / r['p95_s']:.1f}x better"
            if baseline and phase is not baseline and r["p95_s"] and baseline["redis"]["p95_s"]
            else "-"
        )
        text = ", ".join(f"{k} ≤ {v:g} s" for k, v in target.items()) or "-"
        verdict = "" if met is None else (" met" if met else " MISSED")
        print(
            f"{phase['name']:<16} {phase['env']['STOCKPIPE_RATE_LIMIT_PER_MINUTE']:>9} "
            f"{r['n']:>4}/{phase['expected_bars']:<3} {_s(r['p50_s']):>9} {_s(r['p95_s']):>7} {_s(r['max_s']):>7} "
            f"{_s(pg['p50_s']):>7} {_s(pg['p95_s']):>7} {_s(pg['max_s']):>7} {phase['most_calls_in_any_60s']:>7} "
            f"{ratio:>11}  {text}{verdict}"
        )
    for phase in results["phases"]:
        if phase.get("postgres_measure"):
            started = phase.get("postgres_write_started") or {}
            print(
                f"{phase['name']}: PostgreSQL = {phase['postgres_measure']}; write started (written_at) p50/p95 "
                f"{_s(started.get('p50_s'))} / {_s(started.get('p95_s'))}"
            )
        if phase.get("backfill_waiting_s"):
            print(f"note: during {phase['name']} a backfill waited for the limiter {phase['backfill_waiting_s']} s")
        if phase.get("other_producers"):
            print(f"note: during {phase['name']} other producers ran too (pids {phase['other_producers']})")
    jitter = results.get("grant_to_arrival", {})
    print(
        f"\nlimiter grant → arrival at the simulator ({jitter.get('calls')} calls): p50 {jitter.get('p50_ms')} ms, "
        f"p99 {jitter.get('p99_ms')} ms, max {jitter.get('max_ms')} ms (the guard band: 250 ms)"
    )
    results.update(
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=f"{os.cpu_count()} cpu, {platform.platform()}, Python {platform.python_version()}",
        loadavg=os.getloadavg(),
        params={
            "symbols": symbols,
            "warmup_s": args.warmup_s,
            "minutes": {"baseline": args.baseline_min, "default": args.default_min, "double": args.double_min},
            "own_api_key": bool(args.api_key),
        },
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.results}")
    return 0


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


if __name__ == "__main__":
    raise SystemExit(main())
