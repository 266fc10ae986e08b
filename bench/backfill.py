"""Benchmark (not a test): backfill of 1 trading day × 500 symbols with indicators vs a naive baseline.

    .venv/bin/python bench/backfill.py [--symbols 500 | --quick] [--baseline-budget-s 180]

Generates one NYSE regular session (390 one-minute bars per symbol, 2026-11-24) per symbol with the
market simulator's deterministic model (``stockpipe.sources.simulator.model.day_bars``, seed 42) and
COPYs them into ``market.bars_1m`` of the dedicated database ``stockpipe_bench_backfill`` (created
by ``stockpipe.storage.migrate.migrate``; the live ``stockpipe`` database is not touched; the latest
state goes to Redis db 13). Then, in the same run:

* **backfill** — the real batch job: a SparkSession (``spark_session`` with the project settings,
  ``local[2]``, and the batch jobs' ``BATCH_JAVA_OPTIONS``, as ``spark_jobs/backfill_indicators.py``
  starts it) and ``stockpipe.streaming.backfill.backfill`` over the day: one Spark task per core,
  each reading its group of symbols' stored bars from their first bar with one query, running them
  through the stream's ``SymbolIndicators`` and upserting the rows with ``PostgresSink`` (the
  stream's sink). Timed end to end, SparkSession start included (what
  ``spark_jobs/backfill_indicators.py`` costs), and the ``backfill()`` call alone.
* **naive baseline** — per symbol: SELECT its bars, a pandas frame, TA-Lib (SMA 5/20/50, EMA 12/26,
  RSI 14, MACD 12/26/9, BBANDS 20/2) + a pandas session VWAP, then one ``INSERT`` per row with
  psycopg into a plain table (``public.naive_indicators``, primary key (symbol, ts)), committed per
  symbol. When it would exceed ``--baseline-budget-s`` it stops after the symbol in progress and
  the total is extrapolated linearly from the symbols done (said so in the table).

Both results are compared (max |difference| of each indicator over the symbols the baseline did).
Prints a table (metric, value, baseline, ratio, target, met?) and writes bench/results/backfill.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from stockpipe.config import load_settings  # noqa: E402
from stockpipe.indicators import INDICATOR_COLUMNS  # noqa: E402
from stockpipe.sources.simulator.model import day_bars  # noqa: E402
from stockpipe.storage.migrate import migrate  # noqa: E402
from stockpipe.streaming.backfill import session_range  # noqa: E402

DATABASE = "stockpipe_bench_backfill"
REDIS_DB = 13
SEED = 42
DAY = date(2026, 11, 24)  # a Tuesday, regular NYSE session 09:30-16:00 New York = 14:30-21:00 UTC
FIRST_MINUTE = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
MINUTES = 390
TARGET_S = 60.0
TARGET_RATIO = 5.0
BAR_COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume", "vwap", "trades", "source", "fetched_at"]
NAIVE_TABLE = "public.naive_indicators"


def symbol_names(n: int) -> list[str]:
    """B + three letters (BAAA, BAAB, ...): valid for the contract and the simulator, never ZZZ."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return ["B" + letters[i // 676 % 26] + letters[i // 26 % 26] + letters[i % 26] for i in range(n)]


def bars_frame(symbols: list[str]) -> pd.DataFrame:
    first_s = int(FIRST_MINUTE.timestamp())
    parts = []
    for symbol in symbols:
        b = day_bars(SEED, symbol, DAY, first_s, MINUTES)
        ts = pd.to_datetime(b.start_s, unit="s", utc=True)
        parts.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts": ts,
                    "open": b.open,
                    "high": b.high,
                    "low": b.low,
                    "close": b.close,
                    "volume": b.volume.astype("float64"),
                    "vwap": b.vwap,
                    "trades": b.trades,
                    "source": "simulator",
                    "fetched_at": ts + pd.Timedelta(seconds=61),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[BAR_COLUMNS]


def load_bars(settings, symbols: list[str]) -> tuple[int, float]:
    """(Re)load the day's bars with COPY; truncates bars and indicators first."""
    migrate(settings, DATABASE, wait_s=30)
    frame = bars_frame(symbols)
    t0 = time.perf_counter()
    with psycopg.connect(settings.pg_dsn("writer", DATABASE), autocommit=True) as conn:
        conn.execute("TRUNCATE market.bars_1m, market.indicators_1m, ops.repair_queue")
        conn.execute("SELECT market.ensure_month_partitions(%s, %s)", (FIRST_MINUTE, FIRST_MINUTE))
        buffer = io.StringIO()
        frame.to_csv(buffer, header=False, index=False, date_format="%Y-%m-%d %H:%M:%S%z")
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY market.bars_1m ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT csv)") as copy,
        ):
            copy.write(buffer.getvalue())
        conn.execute("ANALYZE market.bars_1m")
        (stored,) = conn.execute("SELECT count(*) FROM market.bars_1m").fetchone()
    return stored, time.perf_counter() - t0


def run_backfill(settings, symbols: list[str]) -> dict:
    from stockpipe.streaming.backfill import backfill
    from stockpipe.streaming.spark import BATCH_JAVA_OPTIONS, spark_session

    start, end = session_range(DAY, DAY)
    t0 = time.perf_counter()
    spark = spark_session(settings, app_name="bench_backfill", java_options=BATCH_JAVA_OPTIONS)
    spark_s = time.perf_counter() - t0
    try:
        result = backfill(spark, settings, symbols, start, end)
    finally:
        spark.stop()
    total_s = time.perf_counter() - t0
    with psycopg.connect(settings.pg_dsn("writer", DATABASE)) as conn:
        (written,) = conn.execute("SELECT count(*) FROM market.indicators_1m").fetchone()
    return {
        "total_s": total_s,
        "spark_start_s": spark_s,
        "backfill_call_s": result.seconds,
        "rows": result.rows,
        "indicator_rows_stored": written,
    }


# --- naive baseline ---------------------------------------------------------------------------


def naive_indicators(bars: pd.DataFrame) -> pd.DataFrame:
    import talib

    close = bars["close"].to_numpy(dtype="float64")
    out = pd.DataFrame({"symbol": bars["symbol"], "ts": bars["ts"]})
    out["sma_5"] = talib.SMA(close, 5)
    out["sma_20"] = talib.SMA(close, 20)
    out["sma_50"] = talib.SMA(close, 50)
    out["ema_12"] = talib.EMA(close, 12)
    out["ema_26"] = talib.EMA(close, 26)
    out["rsi_14"] = talib.RSI(close, 14)
    out["macd"], out["macd_signal"], out["macd_hist"] = talib.MACD(close, 12, 26, 9)
    out["bb_upper"], out["bb_middle"], out["bb_lower"] = talib.BBANDS(close, 20, 2.0, 2.0)
    session = bars["ts"].dt.tz_convert("America/New_York").dt.date
    pv = (bars["vwap"] * bars["volume"]).groupby(session).cumsum()
    out["vwap_session"] = pv / bars["volume"].groupby(session).cumsum()
    return out


def run_baseline(settings, symbols: list[str], budget_s: float) -> dict:
    columns = ["symbol", "ts", *INDICATOR_COLUMNS]
    with psycopg.connect(settings.pg_dsn("admin", DATABASE), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {NAIVE_TABLE}")
        conn.execute(
            f"CREATE TABLE {NAIVE_TABLE} (symbol text NOT NULL, ts timestamptz NOT NULL, "
            + ", ".join(f"{c} double precision" for c in INDICATOR_COLUMNS)
            + ", PRIMARY KEY (symbol, ts))"
        )
        conn.execute(f"GRANT ALL ON {NAIVE_TABLE} TO {settings.pg_writer_user}")
    insert = f"INSERT INTO {NAIVE_TABLE} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    done, rows = [], 0
    t0 = time.perf_counter()
    with psycopg.connect(settings.pg_dsn("writer", DATABASE)) as conn:
        for symbol in symbols:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT symbol, ts, open, high, low, close, volume, vwap FROM market.bars_1m "
                    "WHERE symbol = %s ORDER BY ts",
                    (symbol,),
                )
                bars = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
                bars["ts"] = pd.to_datetime(bars["ts"], utc=True)
                result = naive_indicators(bars)
                for record in result.itertuples(index=False):
                    cur.execute(insert, [None if isinstance(v, float) and v != v else v for v in record])
            conn.commit()
            done.append(symbol)
            rows += len(result)
            if time.perf_counter() - t0 > budget_s and len(done) < len(symbols):
                break
    measured_s = time.perf_counter() - t0
    total_s = measured_s * len(symbols) / len(done)
    return {
        "measured_s": measured_s,
        "symbols_measured": len(done),
        "rows_measured": rows,
        "total_s": total_s,
        "extrapolated": len(done) < len(symbols),
        "symbols_done": done,
    }


def compare(settings, symbols: list[str]) -> dict:
    """Max |backfill - baseline| per indicator, and rows where only one side is NULL."""
    parts = ", ".join(f"max(abs(b.{c} - n.{c})) AS {c}" for c in INDICATOR_COLUMNS)
    nulls = " + ".join(f"((b.{c} IS NULL) <> (n.{c} IS NULL))::int" for c in INDICATOR_COLUMNS)
    with psycopg.connect(settings.pg_dsn("writer", DATABASE)) as conn:
        cur = conn.execute(
            f"SELECT count(*), sum({nulls}), {parts} FROM market.indicators_1m b "
            f"JOIN {NAIVE_TABLE} n USING (symbol, ts) WHERE symbol = ANY(%s)",
            (symbols,),
        )
        record = cur.fetchone()
    return {
        "rows_compared": record[0],
        "null_mismatches": int(record[1] or 0),
        "max_abs_diff": {c: record[2 + i] for i, c in enumerate(INDICATOR_COLUMNS)},
    }


def machine() -> dict:
    load = os.getloadavg()
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "arch": platform.machine(),
        "loadavg": [round(x, 2) for x in load],
        "free_g": mem,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500, help="number of symbols (default 500)")
    parser.add_argument("--quick", action="store_true", help="50 symbols")
    parser.add_argument(
        "--baseline-budget-s",
        type=float,
        default=180.0,
        help="stop the naive baseline after this long and extrapolate (default 180)",
    )
    args = parser.parse_args()
    n = 50 if args.quick else args.symbols
    symbols = symbol_names(n)

    base = load_settings()
    redis_url = base.redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    os.environ.update({"STOCKPIPE_PG_DATABASE": DATABASE, "STOCKPIPE_REDIS_URL": redis_url})
    settings = load_settings(watchlist=",".join(symbols[:50]))  # watchlist is not used by backfill()
    load_before = machine()["loadavg"]
    print(f"loading {DATABASE}: {n} symbols × {MINUTES} bars of {DAY} (simulator model, seed {SEED})", flush=True)
    bars, load_s = load_bars(settings, symbols)
    print(f"  {bars:,} bars COPied in {load_s:.1f} s", flush=True)

    print("backfill (Spark, stockpipe.streaming.backfill) ...", flush=True)
    fill = run_backfill(settings, symbols)
    print(
        f"  {fill['total_s']:.1f} s ({fill['spark_start_s']:.1f} s SparkSession start, "
        f"{fill['backfill_call_s']:.1f} s backfill()); {fill['indicator_rows_stored']:,} indicator rows",
        flush=True,
    )

    print(f"naive baseline (pandas + TA-Lib, row-by-row INSERT; budget {args.baseline_budget_s:.0f} s) ...", flush=True)
    naive = run_baseline(settings, symbols, args.baseline_budget_s)
    print(
        f"  {naive['symbols_measured']} symbols in {naive['measured_s']:.1f} s"
        + (f" → {naive['total_s']:.0f} s extrapolated to {n}" if naive["extrapolated"] else ""),
        flush=True,
    )
    check = compare(settings, naive["symbols_done"])
    worst = max((v for v in check["max_abs_diff"].values() if v is not None), default=0.0)
    load_after = machine()["loadavg"]

    ratio = naive["total_s"] / fill["total_s"]
    ratio_call = naive["total_s"] / fill["backfill_call_s"]
    base_note = (
        f"{naive['total_s']:.1f} (extrapolated from {naive['symbols_measured']} symbols, {naive['measured_s']:.0f} s)"
        if naive["extrapolated"]
        else f"{naive['total_s']:.1f}"
    )
    rows = [
        (
            "backfill wall time incl. Spark start (s)",
            f"{fill['total_s']:.1f}",
            base_note,
            f"{ratio:.1f}×",
            f"≤ {TARGET_S:.0f} s, ≥ {TARGET_RATIO:.0f}×",
            "yes" if fill["total_s"] <= TARGET_S and ratio >= TARGET_RATIO else "NO",
        ),
        (
            "backfill() call only (s)",
            f"{fill['backfill_call_s']:.1f}",
            base_note,
            f"{ratio_call:.1f}×",
            f"≤ {TARGET_S:.0f} s, ≥ {TARGET_RATIO:.0f}×",
            "yes" if fill["backfill_call_s"] <= TARGET_S and ratio_call >= TARGET_RATIO else "NO",
        ),
        ("bars/s", f"{bars / fill['total_s']:,.0f}", f"{bars / naive['total_s']:,.0f}", f"{ratio:.1f}×", "", ""),
        (
            "indicator rows written",
            f"{fill['indicator_rows_stored']:,}",
            f"{naive['rows_measured']:,} (measured)",
            "",
            f"= {bars:,} bars",
            "yes" if fill["indicator_rows_stored"] == bars else "NO",
        ),
        (
            "max |backfill − TA-Lib| (all indicators)",
            f"{worst:.2e}",
            f"{check['rows_compared']:,} rows",
            "",
            "≤ 1e-6",
            "yes" if worst <= 1e-6 and check["null_mismatches"] == 0 else "NO",
        ),
    ]
    print(f"\nbackfill of {DAY}: {n} symbols × {MINUTES} bars = {bars:,} bars; load avg {load_before} → {load_after}")
    header = ("metric", "value", "baseline", "ratio", "target", "met?")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(6)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))

    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    naive_json = {k: v for k, v in naive.items() if k != "symbols_done"}
    report = {
        "benchmark": "backfill",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "database": DATABASE,
        "day": DAY.isoformat(),
        "symbols": n,
        "bars": bars,
        "bars_load_s": load_s,
        "backfill": fill,
        "baseline": naive_json,
        "ratio": ratio,
        "ratio_backfill_call": ratio_call,
        "comparison": check,
        "targets": {"backfill_s": TARGET_S, "ratio": TARGET_RATIO},
        "met": {"time": fill["total_s"] <= TARGET_S, "ratio": ratio >= TARGET_RATIO},
        "machine": {**machine(), "loadavg_before": load_before, "loadavg_after": load_after},
        "table": [dict(zip(header, r, strict=True)) for r in rows],
    }
    path = out / "backfill.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
