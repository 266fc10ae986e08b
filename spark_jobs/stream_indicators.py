"""Streaming job: Kafka ``stock-prices`` → TA-Lib-exact indicators → PostgreSQL + Redis.

    .venv/bin/python spark_jobs/stream_indicators.py [--available-now]

Settings come from ``STOCKPIPE_*`` environment variables / ``.env`` (see ``python -m
stockpipe.config``): topic, checkpoint (``STOCKPIPE_STREAM_CHECKPOINT``), trigger interval
(``STOCKPIPE_STREAM_TRIGGER_S``), Spark master, recompute horizon. Runs until SIGTERM/SIGINT (which
stop it after the running micro-batch); restarting resumes from the checkpoint. The same file works
with ``spark-submit`` (Airflow's SparkSubmitOperator): the stockpipe package is installed in the venv
whose python runs the driver and the workers (PYSPARK_PYTHON).
"""

from __future__ import annotations

import argparse

from stockpipe.config import load_settings
from stockpipe.logs import setup_logging
from stockpipe.streaming.query import run


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
