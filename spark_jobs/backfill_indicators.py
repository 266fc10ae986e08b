"""Backfill job: recompute indicators of stored bars for symbols and a date range (same sink).

    .venv/bin/python spark_jobs/backfill_indicators.py --symbols AAPL,MSFT --start 2026-11-23 --end 2026-11-24
    .venv/bin/python spark_jobs/backfill_indicators.py --repair

``--start``/``--end`` are New York session dates, inclusive (whole days, extended hours included);
symbols default to the watchlist. ``--repair`` backfills each symbol with open ``ops.repair_queue``
entries from its earliest one to now. Each symbol is recomputed from its first stored bar, which
is what makes the result exact (see ``stockpipe.streaming.backfill``).
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta

from stockpipe.config import load_settings
from stockpipe.logs import setup_logging
from stockpipe.streaming.backfill import backfill, repair_ranges, session_range
from stockpipe.streaming.spark import BATCH_JAVA_OPTIONS, spark_session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", help="comma-separated symbols (default: STOCKPIPE_WATCHLIST)")
    parser.add_argument("--start", type=date.fromisoformat, help="first session date (YYYY-MM-DD)")
    parser.add_argument("--end", type=date.fromisoformat, help="last session date (default: --start)")
    parser.add_argument("--repair", action="store_true", help="close the open ops.repair_queue entries")
    args = parser.parse_args(argv)
    if not args.repair and args.start is None:
        parser.error("give --start (and optionally --end), or --repair")
    settings = load_settings(**({"watchlist": args.symbols} if args.symbols else {}))
    setup_logging(settings.log_level, settings.log_json)
    spark = spark_session(settings, app_name="backfill_indicators", java_options=BATCH_JAVA_OPTIONS)
    try:
        if args.repair:
            until = datetime.now(UTC) + timedelta(days=1)
            for symbol, first in sorted(repair_ranges(settings).items()):
                backfill(spark, settings, [symbol], first, until)
        else:
            start, end = session_range(args.start, args.end or args.start)
            backfill(spark, settings, settings.watchlist, start, end)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
