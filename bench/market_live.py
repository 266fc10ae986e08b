"""Benchmark (not a test): the whole market live over the WebSocket, on the running stack — issue 14's
targets "Live, WebSocket, 10,000 symbols, ≥ 30 minutes: minute close → row with indicators in
PostgreSQL p95 ≤ 3 s, → Redis latest p95 ≤ 3 s; 0 gaps and 0 duplicates (verify); indicators equal
TA-Lib over the stored bars" and "Whole stack under the 10,000-symbol load: PSS ≤ 6 GiB".

    .venv/bin/python bench/market_live.py [--minutes 30] [--warmup-max-s 600] [--warmup-min-s 240] [--drain-max-s 180]
        [--sample-s 30] [--talib-symbols all|N] [--wait-stream-s 300]

It measures the stack as it runs, changing nothing: the stack must be in the market-wide mode, i.e.
``STOCKPIPE_WEBSOCKET_SYMBOLS=all`` in ``.env`` and ``make up FEED=websocket`` (the producer under
Airflow subscribes to ``AM.*``; the simulator pushes a bar for each of its
``STOCKPIPE_SIMULATOR_UNIVERSE_SIZE`` symbols, default 10,000, at every minute close — every symbol
trades every minute on its clock, so every symbol has a bar every minute of the calendar; the
stream accepts any symbol). Switching a running stack is not done here: the stream reads the
symbol policy at start, so the mode takes a ``make up``.

1. **Warm-up**: until the burst of a minute that closed after the start is stored whole (the first
   burst seeds 10,000 symbols' state in the stream; a stream restarted meanwhile has caught up), at
   most ``--warmup-max-s``, and at least ``--warmup-min-s`` (default 240 s, as ``alerts_latency``'s:
   the stream's JVM compiles its hot paths in the first minutes after a start — the steady state of a
   platform that runs all day is what is measured; the per-minute figures show the window's minutes);
   the window starts at the next minute close.
2. **Window**: ``--minutes`` minute closes. Per bar that closes in it (ts + 60 s in the window):
   **PostgreSQL** = when the row became visible − close: the commit of the transaction that wrote the
   bar's current version in ``market.bars_1m`` and its ``market.indicators_1m`` row (the later of the
   two, ``pg_xact_commit_timestamp(xmin)``; the sink writes both in one transaction; a bar without its
   indicators row counts as missing). This needs ``track_commit_timestamp = on`` (the stack's
   postgresql.conf; a server restart): when it is off the run says so and falls back to ``written_at``.
   Also, as a second figure comparable with earlier runs, **PostgreSQL, write started** =
   ``written_at`` − close (``clock_timestamp()`` at the bars upsert, ~0.1–0.35 s before the commit:
   bench/pg_commit.py);
   **Redis** = first arrival on pub/sub ``stockpipe:bars`` of that bar or a newer one of the symbol
   (the latest state moved to it) − close, stamped as the bytes reach the benchmark (the socket read
   in bulk, parsed off the clock: ``BarArrivals``; bench/pubsub_arrivals.py sizes the former reader's
   lag); the subscriber's coverage is reported and the latest
   hashes are checked at the end (every symbol's ``ts_ms`` at or after the window's last bar);
   **producer** = the message's ``fetched_at`` − close (the producer's share).
   Bars expected per minute = the simulator's universe (``market_universe``) on the calendar's
   minutes; stored per minute from PostgreSQL; **verify** (``stockpipe.verify``) over the topic's
   messages of the window: gaps, duplicates, corrections, invalid.
3. **TA-Lib**: ``bench/talib_check.py`` over every stored bar of the window of each symbol
   (``--talib-symbols all``, the default) or of a random sample of N symbols (seed 14, listed in the
   JSON), TA-Lib run over each symbol's whole stored series.
4. **Memory and load**: every ``--sample-s`` from the warm-up to the end of the drain, the PSS of
   every process of the stack (``bench/stack_memory.py``'s process tree and components): max and
   p95 of the total, each component's max and its share at the peak; load average at the start,
   during (max, mean) and at the end; the stream's micro-batches from ``ops.stream_batches``.

Prints a table (target | measured | met) and writes bench/results/market_live.json.
"""

from __future__ import annotations

import argparse
import bisect
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import json  # noqa: E402

from bench import pg_commit, stack_memory  # noqa: E402
from bench.talib_check import compare as talib_compare  # noqa: E402
from bench.websocket_feed import BarArrivals, admin, check_simulator_websocket, percentile, summary  # noqa: E402
from stockpipe import clients, contract, verify  # noqa: E402
from stockpipe.config import load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "market_live.json"
GIB = 1024**3
TARGET_SYMBOLS, TARGET_MINUTES = 10_000, 30
TARGET_PG_P95_S = TARGET_REDIS_P95_S = 3.0
TARGET_PSS_BYTES = 6 * GIB
TALIB_SEED = 14
START_HINT = (
    "the stack is not in the market-wide mode: add STOCKPIPE_WEBSOCKET_SYMBOLS=all to .env and run "
    "`make up FEED=websocket`"
)


# --- pure parts (tests/unit/test_bench_market_live.py) -------------------------------------------


def close_delays(expected: list[tuple[str, int]], arrivals: dict[tuple[str, int], float]) -> dict:
    """Per expected (symbol, ts): the first arrival of that bar or of a newer one of the symbol (the
    latest state holds the newest bar) − its close (ts + 60). A bar no arrival covers is absent."""
    by_symbol: dict[str, list[tuple[int, float]]] = {}
    for (symbol, ts), at in arrivals.items():
        by_symbol.setdefault(symbol, []).append((ts, at))
    index: dict[str, tuple[list[int], list[float]]] = {}
    for symbol, items in by_symbol.items():
        items.sort()
        suffix_min, best = [0.0] * len(items), float("inf")
        for i in range(len(items) - 1, -1, -1):
            best = min(best, items[i][1])
            suffix_min[i] = best
        index[symbol] = ([ts for ts, _ in items], suffix_min)
    delays = {}
    for symbol, ts in expected:
        if symbol not in index:
            continue
        times, suffix_min = index[symbol]
        i = bisect.bisect_left(times, ts)
        if i < len(times):
            delays[(symbol, ts)] = suffix_min[i] - (ts + 60)
    return delays


def latency_by_minute(delays: dict[str, dict[tuple[str, int], float]]) -> list[dict[str, Any]]:
    """Per bar minute (ts order), each measure's p50 / p95 / max over that minute's bars — whether the
    tail comes from a few minutes (e.g. the first ones, while the JVM's JIT warms up) or from all."""
    minutes = sorted({ts for by_bar in delays.values() for _, ts in by_bar})
    out = []
    for ts in minutes:
        row: dict[str, Any] = {"ts": datetime.fromtimestamp(ts, UTC).strftime("%H:%M")}
        for name, by_bar in delays.items():
            values = [d for (_, t), d in by_bar.items() if t == ts]
            row[name] = {k: summary(values)[k] for k in ("n", "p50_s", "p95_s", "max_s")} if values else None
        out.append(row)
    return out


def per_minute(expected: list[tuple[str, int]], stored: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """Bars expected and stored per bar minute (ts order)."""
    want, have = Counter(ts for _, ts in expected), Counter(ts for _, ts in stored)
    got = Counter(ts for key in expected for ts in [key[1]] if key in stored)
    return [
        {"ts": datetime.fromtimestamp(ts, UTC).strftime("%H:%M"), "expected": want[ts], "stored": got[ts]}
        for ts in sorted(want)
    ] + [
        {"ts": datetime.fromtimestamp(ts, UTC).strftime("%H:%M"), "expected": 0, "stored": n}
        for ts, n in sorted(have.items())
        if ts not in want
    ]


# --- the stack -------------------------------------------------------------------------------------


class MemorySampler:
    """The stack's PSS by component and the load average, every ``every_s`` seconds, in a thread."""

    def __init__(self, every_s: float) -> None:
        self.every_s, self.samples = every_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.time()
            try:
                snapshot = stack_memory.sample()
            except SystemExit:  # the stack went down: say so in the figures, keep sampling
                snapshot = {}
            self.samples.append(
                {
                    "t": round(at, 1),
                    "loadavg": list(os.getloadavg()),
                    "pss": stack_memory.total(snapshot, "pss"),
                    "rss": stack_memory.total(snapshot, "rss"),
                    "components": {name: v["pss"] for name, v in snapshot.items()},
                }
            )
            self._stop.wait(max(0.0, self.every_s - (time.time() - at)))

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(60)
        samples = [s for s in self.samples if s["pss"]]
        if not samples:
            return {"samples": 0}
        totals = [s["pss"] for s in samples]
        peak = max(samples, key=lambda s: s["pss"])
        names = {name for s in samples for name in s["components"]}
        loads = [s["loadavg"][0] for s in self.samples]
        return {
            "samples": len(samples),
            "every_s": self.every_s,
            "pss_max_bytes": peak["pss"],
            "pss_p95_bytes": percentile(totals, 95),
            "pss_median_bytes": statistics.median(totals),
            "rss_max_bytes": max(s["rss"] for s in samples),
            "peak_at": peak["t"],
            "components": {
                name: {
                    "pss_max_bytes": max(s["components"].get(name, 0) for s in samples),
                    "pss_at_peak_bytes": peak["components"].get(name, 0),
                }
                for name in sorted(names, key=lambda n: -peak["components"].get(n, 0))
            },
            "loadavg_during": {"max": max(loads), "mean": round(statistics.fmean(loads), 2)},
            "series": [{"t": s["t"], "pss": s["pss"], "load1": s["loadavg"][0]} for s in self.samples],
        }


def stored_counts(settings: Any, since_ts: int) -> dict[int, int]:
    with clients.pg_connect(settings, "reader") as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM ts)::bigint, count(*) FROM market.bars_1m WHERE ts >= to_timestamp(%s) "
            "GROUP BY 1",
            (since_ts,),
        ).fetchall()
    return {int(ts): int(n) for ts, n in rows}


def stored_window(settings: Any, first_ts: int, end_ts: int) -> tuple[list[tuple], bool]:
    """(symbol, ts, written_at, has indicators, bar's commit, indicators' commit, same transaction) of
    every bar with ts in [first_ts, end_ts), and whether the server tracks commit timestamps (the
    commits are None when it does not)."""
    with clients.pg_connect(settings, "reader") as conn:
        on = pg_commit.tracking(conn)
        rows = conn.execute(
            "SELECT b.symbol, extract(epoch FROM b.ts)::bigint, extract(epoch FROM b.written_at)::float8, "
            f"(i.symbol IS NOT NULL), {pg_commit.commit_epoch('b', on)}, {pg_commit.commit_epoch('i', on)}, "
            "(b.xmin = i.xmin) FROM market.bars_1m b "
            "LEFT JOIN market.indicators_1m i ON i.symbol = b.symbol AND i.ts = b.ts "
            "WHERE b.ts >= to_timestamp(%s) AND b.ts < to_timestamp(%s)",
            (first_ts, end_ts),
        ).fetchall()
    return rows, on


def visible_times(rows: list[tuple]) -> tuple[dict, dict, dict[str, int]]:
    """From :func:`stored_window`'s rows with indicators: per (symbol, ts) when the row with its
    indicators became visible (the later commit; ``written_at`` where a commit is unknown) and when
    its write started (``written_at``), and the counts of bars whose commit is unknown and whose
    indicators row was committed by another transaction than the bar."""
    visible, started, counts = {}, {}, {"commit_unknown": 0, "indicators_other_transaction": 0}
    for symbol, ts, written, has, bar_commit, ind_commit, same in rows:
        if not has:
            continue
        key = (symbol, int(ts))
        started[key] = float(written)
        visible[key], known = pg_commit.visible_at(float(written), bar_commit, ind_commit)
        counts["commit_unknown"] += not known
        counts["indicators_other_transaction"] += not same
    return visible, started, counts


def stream_batches(settings: Any, since: float, until: float) -> dict[str, Any]:
    with clients.pg_connect(settings, "reader") as conn:
        rows = conn.execute(
            "SELECT rows_in, bars_upserted, processing_ms, extract(epoch FROM committed_at)::float8 "
            "FROM ops.stream_batches WHERE query_name = %s AND committed_at >= to_timestamp(%s) "
            "AND committed_at < to_timestamp(%s) ORDER BY committed_at",
            (settings.stream_query_name, since, until),
        ).fetchall()
    if not rows:
        return {"batches": 0}
    processing = [float(r[2] or 0) / 1000 for r in rows]
    rows_in = [int(r[0] or 0) for r in rows]
    return {
        "batches": len(rows),
        "per_minute": round(len(rows) / max((until - since) / 60, 1e-9), 2),
        "rows_in_total": sum(rows_in),
        "rows_in_p50": percentile(rows_in, 50),
        "rows_in_max": max(rows_in),
        "processing_p50_s": _round(percentile(processing, 50)),
        "processing_p95_s": _round(percentile(processing, 95)),
        "processing_max_s": _round(max(processing)),
        "busy_share": round(sum(processing) / max(until - since, 1e-9), 3),
    }


def redis_latest(settings: Any, symbols: list[str], last_ts: int) -> dict[str, Any]:
    """Every symbol's latest hash at or after ``last_ts`` (the window's last bar)?"""
    redis = settings.redis_client(decode_responses=True)
    try:
        pipe = redis.pipeline(transaction=False)
        for symbol in symbols:
            pipe.hget(settings.redis_latest_key(symbol), "ts_ms")
        values = pipe.execute()
    finally:
        redis.close()
    behind = [s for s, v in zip(symbols, values, strict=True) if v is None or int(v) // 1000 < last_ts]
    return {"symbols": len(symbols), "behind": len(behind), "behind_first": behind[:10]}


def verify_window(settings: Any, first_ts: int, end_ts: int, calendar: str) -> dict[str, Any]:
    """stockpipe.verify over the topic's messages of the window's bars (read from a little before)."""
    started = time.monotonic()
    since = datetime.fromtimestamp(first_ts - 120, UTC)
    messages = verify.read_topic(settings, settings.kafka_topic, since, timeout_s=900)
    inside = []
    fetched: dict[tuple[str, int], float] = {}
    for message in messages:
        try:
            ts = int(contract.parse_ts(message["ts"]).timestamp())
        except (KeyError, TypeError, ValueError):
            continue
        if first_ts <= ts < end_ts:
            inside.append(message)
            try:
                at = contract.parse_ts(message["fetched_at"]).timestamp()
            except (KeyError, TypeError, ValueError):
                continue
            key = (message.get("symbol"), ts)
            fetched[key] = min(at, fetched.get(key, at))
    reports = verify.build_reports(inside, calendar, contract.Policy.load(settings), max_span_days=2)
    return {
        "messages": len(inside),
        "symbols": len(reports),
        "gaps": sum(len(r.gaps) for r in reports.values()),
        "duplicates": sum(r.duplicates for r in reports.values()),
        "corrections": sum(r.corrections for r in reports.values()),
        "invalid": dict(reports.invalid),
        "first_gaps": sorted(f"{r.symbol} {g:%H:%M}" for r in reports.values() for g in r.gaps[:1])[:10],
        "seconds": round(time.monotonic() - started, 1),
        "_fetched": fetched,
    }


def universe(settings: Any, stats: dict[str, Any], seen: set[str]) -> tuple[list[str], str]:
    """The symbols AM.* streams: the simulator's universe (its size from the running simulator), or
    with a real feed the symbols stored during the warm-up."""
    if settings.uses_simulator:
        from stockpipe.sources.simulator.model import market_universe

        size = int((stats.get("websocket") or {}).get("universe_size") or settings.simulator_universe_size)
        return list(market_universe(size)), f"simulator universe ({size})"
    return sorted(seen), "symbols stored during the warm-up (real feed)"


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def log(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {message}", flush=True)


# --- the run ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=TARGET_MINUTES, help="minute closes measured (default 30)")
    parser.add_argument("--warmup-max-s", type=float, default=600, help="most seconds to wait for a whole burst")
    parser.add_argument(
        "--warmup-min-s",
        type=float,
        default=240,
        help="least seconds from the start before the window (the JVM's JIT warms up; as alerts_latency's default)",
    )
    parser.add_argument("--drain-max-s", type=float, default=180, help="most seconds to wait for the last bars")
    parser.add_argument("--sample-s", type=float, default=30, help="seconds between memory samples")
    parser.add_argument("--talib-symbols", default="all", help="'all' or a random sample of N symbols")
    parser.add_argument("--wait-stream-s", type=float, default=300, help="most seconds to wait for the Spark driver")
    args = parser.parse_args(argv)
    if args.minutes < 1:
        raise SystemExit("--minutes must be at least 1")

    settings = load_settings()
    if not settings.market_wide:
        raise SystemExit(START_HINT)
    started = time.time()
    loadavg_start = list(os.getloadavg())
    stack_memory.stack_pids()  # the stack of this checkout runs (else: a sentence)
    if settings.uses_simulator:
        check_simulator_websocket(settings)
    stack_memory.wait_for_stream(args.wait_stream_s, settle_s=30)
    stats = admin(settings, "GET", "/_admin/stats") if settings.uses_simulator else {}
    calendar = settings.calendar_mode
    arrivals = BarArrivals(settings)
    sampler = MemorySampler(args.sample_s)
    try:
        # 1. warm-up: a whole minute's burst stored
        symbols, universe_from = universe(settings, stats, set())
        log(
            f"warm-up: waiting for one minute's {len(symbols):,} bars in PostgreSQL (at most {args.warmup_max_s:.0f} s)"
        )
        deadline, whole = started + args.warmup_max_s, None
        while time.time() < deadline:
            counts = stored_counts(settings, int(started) - 180)
            # a minute that closed after the start: a stream restarted meanwhile (stream_health restarts one
            # whose first, seeding batch is slow) must have caught up, not just have stored an older burst
            full = [ts for ts, n in counts.items() if n >= len(symbols) and ts + 60 >= started]
            if full:
                whole = max(full)
                break
            newest = max(counts.items(), default=(0, 0))
            log(f"  newest minute stored: {newest[1]:,} bars" if newest[0] else "  no bar stored yet")
            time.sleep(10)
        if whole is None:
            log("warm-up: no whole burst stored within --warmup-max-s; measuring anyway")
        elif time.time() < started + args.warmup_min_s:
            log(f"warm-up: a whole burst stored; the window starts {args.warmup_min_s:.0f} s after the start (JIT)")
            time.sleep(max(0.0, started + args.warmup_min_s - time.time()))
        window_start = (int(time.time()) // 60 + 1) * 60  # the next minute close
        window_end = window_start + 60 * args.minutes
        first_ts, end_ts = window_start - 60, window_end - 60  # bars closing in [window_start, window_end)
        minutes = [int(m.timestamp()) for m in verify.expected_minutes(
            datetime.fromtimestamp(first_ts, UTC), datetime.fromtimestamp(end_ts - 60, UTC), calendar)]  # fmt: skip
        if not minutes:
            raise SystemExit(f"the {calendar} calendar has no trading minute in the window: run it during a session")
        expected = [(s, ts) for ts in minutes for s in symbols]
        log(
            f"window: {args.minutes} minute closes {datetime.fromtimestamp(window_start, UTC):%H:%M}–"
            f"{datetime.fromtimestamp(window_end, UTC):%H:%M} UTC, {len(expected):,} bars expected "
            f"({len(symbols):,} symbols, {universe_from}, {calendar} calendar)"
        )
        # 2. the window, then the drain
        while time.time() < window_end:
            time.sleep(min(60.0, max(0.5, window_end - time.time())))
            counts = stored_counts(settings, first_ts)
            done = [ts for ts in minutes if ts + 60 <= time.time() - 5]
            if done:
                last = max(done)
                log(f"  bar {_hm(last)}: {counts.get(last, 0):,} of {len(symbols):,} stored")
        drain_deadline = window_end + args.drain_max_s
        while time.time() < drain_deadline:
            counts = stored_counts(settings, first_ts)
            if all(counts.get(ts, 0) >= len(symbols) for ts in minutes):
                break
            time.sleep(5)
        ended = time.time()
        time.sleep(2)
    finally:
        arrivals.close()
        memory = sampler.stop()
    loadavg_end = list(os.getloadavg())

    # 3. what was stored, when
    log("reading the window's bars from PostgreSQL ...")
    rows, tracking = stored_window(settings, first_ts, end_ts)
    if not tracking:
        log(pg_commit.OFF_NOTE)
    visible, written, commit_counts = visible_times(rows)
    without_indicators = sum(1 for row in rows if not row[3])
    stored = set(written)
    expected_set = set(expected)
    pg_delays = [visible[key] - (key[1] + 60) for key in expected if key in visible]
    pg_started_delays = [written[key] - (key[1] + 60) for key in expected if key in written]
    redis_by_bar = close_delays(expected, arrivals.first)
    redis_delays = list(redis_by_bar.values())
    by_minute = latency_by_minute(
        {
            "postgres": {key: visible[key] - (key[1] + 60) for key in expected if key in visible},
            "redis": redis_by_bar,
        }
    )
    received = sum(1 for (s, ts) in arrivals.first if first_ts <= ts < end_ts)
    missing = sorted(expected_set - stored, key=lambda k: (k[1], k[0]))
    log("verify over the topic's messages of the window ...")
    checked = verify_window(settings, first_ts, end_ts, calendar)
    fetched = checked.pop("_fetched")
    producer_delays = [fetched[key] - (key[1] + 60) for key in expected if key in fetched]
    latest = redis_latest(settings, symbols, minutes[-1])
    batches = stream_batches(settings, window_start, ended)

    # 4. TA-Lib over the stored bars of the window
    window_symbols = sorted({s for s, _ in stored})
    if args.talib_symbols == "all":
        talib_symbols = window_symbols
    else:
        count = min(int(args.talib_symbols), len(window_symbols))
        talib_symbols = sorted(random.Random(TALIB_SEED).sample(window_symbols, count))
    log(f"TA-Lib over {len(talib_symbols):,} symbols' stored series ...")
    talib = talib_compare(
        settings, talib_symbols, datetime.fromtimestamp(first_ts, UTC), datetime.fromtimestamp(end_ts, UTC)
    )
    talib["sample"] = "all" if args.talib_symbols == "all" else f"random {len(talib_symbols)} (seed {TALIB_SEED})"
    if args.talib_symbols != "all":
        talib["symbols"] = talib_symbols

    result: dict[str, Any] = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": f"{os.cpu_count()} cpu, {platform.platform()}, Python {platform.python_version()}",
        "params": {
            "symbols": len(symbols),
            "universe": universe_from,
            "minutes": args.minutes,
            "calendar": calendar,
            "feed": settings.feed,
            "websocket_symbols": settings.websocket_symbols,
            "sample_s": args.sample_s,
            "talib_symbols": args.talib_symbols,
            "trigger": getattr(settings, "stream_trigger_s", None),
            "warmup_min_s": args.warmup_min_s,
        },
        "started_at": started,
        "warmup_whole_burst": None if whole is None else datetime.fromtimestamp(whole, UTC).strftime("%H:%M"),
        "window_start": window_start,
        "window_end": window_end,
        "ended_at": ended,
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg_end,
        "bars": {
            "expected": len(expected),
            "stored": len(stored & expected_set),
            "without_indicators": without_indicators,
            "unexpected": len(stored - expected_set),
            "missing": len(missing),
            "missing_first": [f"{s} {datetime.fromtimestamp(ts, UTC):%H:%M}" for s, ts in missing[:20]],
            "per_minute": per_minute(expected, stored),
        },
        "postgres": {**summary(pg_delays), "measure": pg_commit.COMMITTED if tracking else pg_commit.FALLBACK,
                     "track_commit_timestamp": tracking, **commit_counts},
        "postgres_write_started": summary(pg_started_delays),
        "latency_by_minute": by_minute,
        "redis": {**summary(redis_delays), "received_on_channel": received},
        "producer": summary(producer_delays),
        "redis_latest": latest,
        "verify": checked,
        "talib": talib,
        "memory": memory,
        "stream_batches": batches,
        "simulator_websocket": (admin(settings, "GET", "/_admin/stats") if settings.uses_simulator else {}).get(
            "websocket"),
    }  # fmt: skip
    result["targets"] = targets(result)
    print_table(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    p, bars = r["params"], r["bars"]
    size_ok = p["symbols"] >= TARGET_SYMBOLS and p["minutes"] >= TARGET_MINUTES
    pg, redis, memory = r["postgres"], r["redis"], r["memory"]
    pg_name = "committed" if pg.get("track_commit_timestamp", True) else "write started"
    all_pg = pg["n"] == bars["expected"]
    all_redis = redis["n"] == bars["expected"]
    rows = [
        (f"close → PostgreSQL ({pg_name}) p95 (s)", f"≤ {TARGET_PG_P95_S:g} s, every bar",
         f"{_s(pg['p95_s'])} (p50 {_s(pg['p50_s'])}, max {_s(pg['max_s'])}; {pg['n']:,}/{bars['expected']:,} bars)",
         pg["p95_s"] is not None and pg["p95_s"] <= TARGET_PG_P95_S and all_pg),
        ("close → Redis latest p95 (s)", f"≤ {TARGET_REDIS_P95_S:g} s, every bar",
         f"{_s(redis['p95_s'])} (p50 {_s(redis['p50_s'])}, max {_s(redis['max_s'])}; "
         f"{redis['n']:,}/{bars['expected']:,})",
         redis["p95_s"] is not None and redis["p95_s"] <= TARGET_REDIS_P95_S and all_redis),
        ("bars missing in PostgreSQL / gaps (verify)", "0 / 0", f"{bars['missing']:,} / {r['verify']['gaps']:,}",
         bars["missing"] == 0 and r["verify"]["gaps"] == 0),
        ("duplicates (verify)", "0", f"{r['verify']['duplicates']:,}", r["verify"]["duplicates"] == 0),
        ("indicators equal TA-Lib", "equal (1e-9)",
         f"{'equal' if r['talib']['equal'] else 'DIFFER'} over {r['talib']['bars_compared']:,} bars of "
         f"{r['talib']['symbols_compared']:,} symbols ({r['talib']['sample']})",
         r["talib"]["equal"] and r["talib"]["bars_compared"] > 0),
        ("whole stack PSS max (GiB)", f"≤ {TARGET_PSS_BYTES / GIB:g} GiB",
         f"{_gib(memory.get('pss_max_bytes'))} (p95 {_gib(memory.get('pss_p95_bytes'))}, "
         f"{memory.get('samples', 0)} samples)",
         memory.get("pss_max_bytes") is not None and memory["pss_max_bytes"] <= TARGET_PSS_BYTES),
    ]  # fmt: skip
    return [
        {"figure": figure, "target": target, "measured": measured, "met": bool(met), "at_issue_size": size_ok}
        for figure, target, measured, met in rows
    ]


def print_table(r: dict[str, Any]) -> None:
    p = r["params"]
    size = f"{p['symbols']:,} symbols × {p['minutes']} min"
    if p["symbols"] < TARGET_SYMBOLS or p["minutes"] < TARGET_MINUTES:
        size += f" (reduced: the issue asks for {TARGET_SYMBOLS:,} × ≥ {TARGET_MINUTES} min)"
    print(f"\nmarket live over the WebSocket, {size}, commit {r['commit']}")
    header = f"{'figure':<44} {'target':<22} {'met':<7} measured"
    print(header + "\n" + "-" * 120)
    for row in r["targets"]:
        print(f"{row['figure']:<44} {row['target']:<22} {'met' if row['met'] else 'MISSED':<7} {row['measured']}")
    b, m = r["stream_batches"], r["memory"]
    print(f"\nproducer (close → fetched_at) p50/p95: {_s(r['producer']['p50_s'])} / {_s(r['producer']['p95_s'])}")
    pg, started = r["postgres"], r.get("postgres_write_started") or {}
    if started.get("n"):
        print(
            f"close → PostgreSQL, write started (written_at, as in runs before the commit was measured) p50/p95/max: "
            f"{_s(started['p50_s'])} / {_s(started['p95_s'])} / {_s(started['max_s'])}"
        )
    if not pg.get("track_commit_timestamp", True):
        print(pg_commit.OFF_NOTE)
    elif pg.get("commit_unknown") or pg.get("indicators_other_transaction"):
        print(
            f"PostgreSQL commits: {pg.get('commit_unknown', 0):,} bars without a known commit (written_at used), "
            f"{pg.get('indicators_other_transaction', 0):,} whose indicators row another transaction wrote (the later "
            "commit counts)"
        )
    minutes = [m for m in r.get("latency_by_minute") or [] if m.get("postgres") or m.get("redis")]
    if minutes:

        def p95(m: dict[str, Any], name: str) -> str:
            value = (m.get(name) or {}).get("p95_s")
            return "-" if value is None else f"{value:.2f}"

        print("per minute, p95 close → PostgreSQL / → Redis (s): " + ", ".join(
            f"{m['ts']} {p95(m, 'postgres')}/{p95(m, 'redis')}" for m in minutes
        ))  # fmt: skip
    print(
        f"Redis: {r['redis']['received_on_channel']:,} window bars received on the channel; latest hashes behind "
        f"the last bar: {r['redis_latest']['behind']} of {r['redis_latest']['symbols']:,}"
    )
    print(
        f"verify: {r['verify']['messages']:,} messages, {r['verify']['symbols']:,} symbols, "
        f"{r['verify']['corrections']} corrections, invalid {r['verify']['invalid'] or 0}"
    )
    if b.get("batches"):
        print(
            f"stream: {b['batches']} micro-batches ({b['per_minute']}/min), rows in p50 {b['rows_in_p50']:.0f} / max "
            f"{b['rows_in_max']}, processing p50/p95/max {_s(b['processing_p50_s'])} / {_s(b['processing_p95_s'])} / "
            f"{_s(b['processing_max_s'])}, busy {b['busy_share']:.0%}"
        )
    during = m.get("loadavg_during") or {}
    print(
        f"load average (1 min): start {r['loadavg_start'][0]:.1f}, during max {during.get('max', 0):.1f} / mean "
        f"{during.get('mean', 0):.1f}, end {r['loadavg_end'][0]:.1f}"
    )
    if m.get("components"):
        print("PSS by component at the peak (max over the run):")
        for name, v in m["components"].items():
            print(f"  {name:<36} {_gib(v['pss_at_peak_bytes']):>9} ({_gib(v['pss_max_bytes'])})")
    lagging = [x for x in r["bars"]["per_minute"] if x["stored"] != x["expected"]]
    if lagging:
        print(
            "minutes not stored whole: " + ", ".join(f"{x['ts']} {x['stored']}/{x['expected']}" for x in lagging[:10])
        )


def _hm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f} GiB"


if __name__ == "__main__":
    raise SystemExit(main())
