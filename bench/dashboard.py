"""Benchmark (not a test): server-side render time of every dashboard page on a year of data.

    .venv/bin/python bench/dashboard.py [--calendar nyse|demo] [--symbols 5] [--repeat 3] [--reload]

Loads a year of 1-minute bars (+ their indicators, computed by stockpipe.indicators) for 5 symbols
into the database ``stockpipe_bench`` (reused when already loaded; ``--reload`` rebuilds it),
refreshes the 5 m / 1 h / 1 d rollups like postgres_maintenance does, writes the latest state to
Redis db 14 with the streaming sink's writer and a day of 1-second micro-batches to
ops.stream_batches. Then it renders each page with Streamlit's AppTest: *cold* (caches and
connections cleared, what the first visitor waits for) and *warm* (the next rerun within the
caches' ttl), the symbol page once per range. Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from stockpipe.calendar import trading_calendar  # noqa: E402
from stockpipe.config import load_settings  # noqa: E402
from stockpipe.indicators import INDICATOR_COLUMNS, compute_frame  # noqa: E402
from stockpipe.storage.migrate import migrate  # noqa: E402

DATABASE = "stockpipe_bench"  # + "_demo" for the 24/7 calendar
REDIS_DB = 14
SYMBOLS = ["AAPL", "GOOGL", "MSFT", "AMZN", "TSLA", "NVDA", "META", "NFLX"]
BAR_COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume", "vwap", "trades", "source", "fetched_at"]
TARGET_S = 1.0


def minute_index(calendar: str, end: datetime) -> pd.DatetimeIndex:
    """Every bar start of the sessions of the year before ``end``."""
    cal = trading_calendar(calendar)
    sessions = cal.sessions_between((end - timedelta(days=365)).date(), end.date())
    starts = [pd.date_range(s.open, min(s.close, end), freq="1min", inclusive="left") for s in sessions]
    return starts[0].append(starts[1:]) if starts else pd.DatetimeIndex([], tz="UTC")


def year_of_bars(symbol: str, index: pd.DatetimeIndex, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(index)
    close = (50 + seed * 40) * np.exp(np.cumsum(rng.normal(0, 0.0007, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 0.0004, n)) * close
    high, low = np.maximum(open_, close) + spread, np.minimum(open_, close) - spread
    return pd.DataFrame(
        {
            "symbol": symbol,
            "ts": index,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.integers(500, 50_000, n).astype("float64"),
            "vwap": (high + low + close) / 3,
            "trades": rng.integers(5, 400, n),
            "source": "simulator",
            "fetched_at": index + pd.Timedelta(seconds=61),
        }
    )


def _copy(conn: psycopg.Connection, table: str, frame: pd.DataFrame) -> None:
    columns = list(frame.columns)
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in frame.itertuples(index=False):
            copy.write_row([None if isinstance(v, float) and v != v else v for v in row])


def load(settings, database: str, calendar: str, symbols: list[str], reload: bool) -> tuple[int, float]:
    """Load the bench database; returns (bars, seconds spent loading; 0 when reused)."""
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    index = minute_index(calendar, end)
    expected = len(index) * len(symbols)
    if reload:
        with psycopg.connect(settings.pg_dsn("admin", "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    migrate(settings, database, wait_s=30)
    with psycopg.connect(settings.pg_dsn("writer", database), autocommit=True) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM market.bars_1m").fetchone()
        if stored >= expected * 0.98:  # loaded by an earlier run (a few minutes ago at most)
            return stored, 0.0
        t0 = time.perf_counter()
        conn.execute("TRUNCATE market.bars_1m, market.indicators_1m, market.symbols, ops.stream_batches")
        for n, symbol in enumerate(symbols):
            bars = year_of_bars(symbol, index, n + 1)
            full, _ = compute_frame(bars)
            _copy(conn, "market.bars_1m", full[BAR_COLUMNS])
            _copy(conn, "market.indicators_1m", full[["symbol", "ts", *INDICATOR_COLUMNS]])
            conn.execute(
                "INSERT INTO market.symbols (symbol, name, exchange, currency, source) "
                "VALUES (%s, %s, 'XNAS', 'usd', 'simulator')",
                (symbol, f"{symbol} Corp."),
            )
            print(f"  loaded {symbol}: {len(bars):,} bars", flush=True)
        now = pd.Timestamp(end)
        seconds = pd.date_range(end=now, periods=86_400, freq="1s")
        batches = pd.DataFrame(
            {
                "query_name": settings.stream_query_name,
                "batch_id": np.arange(len(seconds)),
                "rows_in": 5,
                "bars_upserted": 5,
                "dead_letters": 0,
                "input_rows_per_s": 5.0,
                "processing_ms": 150.0,
                "latency_p50_ms": 900.0,
                "latency_p95_ms": 1400.0,
                "committed_at": seconds,
            }
        )
        _copy(conn, "ops.stream_batches", batches)
        for view in ("market.bars_5m", "market.bars_1h", "market.bars_1d"):
            conn.execute(f"REFRESH MATERIALIZED VIEW {view}")
        conn.execute("ANALYZE")
        return expected, time.perf_counter() - t0


def write_latest(settings, database: str, symbols: list[str]) -> None:
    from stockpipe.storage.postgres import PostgresSink
    from stockpipe.storage.redis_latest import LatestWriter

    bench = settings.model_copy(update={"pg_database": database})
    sink, writer = PostgresSink(bench), LatestWriter(bench)
    writer.client.flushdb()
    with sink.connection().transaction():  # loaded beside the sink: its market.latest_1m rows
        sink.connection().execute("SELECT market.refresh_latest()")
    writer.write(sink.latest_rows(symbols))
    sink.close()
    writer.close()


def measure(page: str | None, range_key: str | None, repeat: int) -> dict[str, float]:
    """Median of ``repeat`` cold runs (caches and connections cleared right before) and of the
    warm rerun that follows each (everything cached within the ttl)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    cold, warm = [], []
    for _ in range(repeat):
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
        at.run()
        if page:
            at.switch_page(f"pages/{page}.py")
            at.run()
        if range_key:
            at.radio(key="range").set_value(range_key)
        st.cache_data.clear()
        st.cache_resource.clear()
        for timings in (cold, warm):
            t0 = time.perf_counter()
            at.run()
            timings.append(time.perf_counter() - t0)
            problems = [e.value for e in at.exception] + [e.value for e in at.error]
            if problems:
                raise SystemExit(f"page {page or 'overview'} {range_key or ''} failed: {problems[0]}")
    return {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calendar",
        choices=["nyse", "demo"],
        default="nyse",
        help="nyse: ~98k bars/symbol (real sessions); demo: 525k bars/symbol (24/7 simulator)",
    )
    parser.add_argument("--symbols", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reload", action="store_true", help="drop and reload the bench database")
    args = parser.parse_args()

    base = load_settings()
    symbols = SYMBOLS[: args.symbols]
    database = DATABASE if args.calendar == "nyse" else f"{DATABASE}_demo"
    print(f"loading {database}: a year of 1-minute bars ({args.calendar} sessions) for {', '.join(symbols)}")
    bars, load_s = load(base, database, args.calendar, symbols, args.reload)
    print(f"  {bars:,} bars " + (f"loaded in {load_s:.0f} s" if load_s else "(reused)"))
    redis_url = base.redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    os.environ.update(
        {"STOCKPIPE_PG_DATABASE": database, "STOCKPIPE_REDIS_URL": redis_url, "STOCKPIPE_WATCHLIST": ",".join(symbols)}
    )
    write_latest(load_settings(), database, symbols)

    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    cases = [("overview", None, None), ("pipeline", "pipeline", None), ("kafka", "kafka", None)]
    cases += [(f"symbol {r}", "symbol", r) for r in ("1D", "5D", "1M", "6M", "1Y")]
    results = []
    print(f"\n{'page':<14}{'cold (s)':>10}{'warm (s)':>10}  target < {TARGET_S:.0f} s")
    for name, page, range_key in cases:
        timing = measure(page, range_key, args.repeat)
        ok = "ok" if timing["cold_s"] < TARGET_S else "SLOW"
        print(f"{name:<14}{timing['cold_s']:>10.3f}{timing['warm_s']:>10.3f}  {ok}", flush=True)
        results.append({"page": name, **timing})

    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "benchmark": "dashboard",
        "at": stamp,
        "calendar": args.calendar,
        "symbols": symbols,
        "database": database,
        "bars": bars,
        "repeat": args.repeat,
        "target_s": TARGET_S,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "python": platform.python_version(),
        "loadavg_before": loadavg_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    path = out / f"dashboard-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
