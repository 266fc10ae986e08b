"""Streaming job: Kafka ``stock-prices`` → TA-Lib-exact indicators → PostgreSQL + Redis.

    .venv/bin/python spark_jobs/stream_indicators.py [--available-now]

Settings come from ``STOCKPIPE_*`` environment variables / ``.env`` (see ``python -m
stockpipe.config``): topic, checkpoint (``STOCKPIPE_STREAM_CHECKPOINT``), trigger interval
(``STOCKPIPE_STREAM_TRIGGER_S``), Spark master, recompute horizon. Runs until SIGTERM/SIGINT (which
stop it after the running micro-batch); restarting resumes from the checkpoint. The same file works
with ``spark-submit`` (Airflow's SparkSubmitOperator) when the stockpipe package is installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from stockpipe.config import load_settings  # noqa: E402
from stockpipe.logs import setup_logging  # noqa: E402
from stockpipe.streaming.query import run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--available-now", action="store_true", help="process what the topic holds now, then exit")
    args = parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_json)
    run(settings, available_now=args.available_now)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
