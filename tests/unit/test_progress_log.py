"""The streaming job's per-batch progress line (stockpipe.streaming.query.ProgressLog): one line per
micro-batch with Spark's timings, none skipped, read by polling the query's JSON progress — not by
a Python StreamingQueryListener, whose per-event py4j copy cost ~95 ms of JVM CPU per batch."""

from __future__ import annotations

import logging
import re
import time

import pytest

pytestmark = pytest.mark.spark


def test_one_line_per_micro_batch_none_skipped(tmp_path, caplog):
    from stockpipe.config import load_settings
    from stockpipe.streaming.query import ProgressLog
    from stockpipe.streaming.spark import spark_session

    spark = spark_session(load_settings(), app_name="stockpipe-tests")
    query = (
        spark.readStream.format("rate")
        .option("rowsPerSecond", 20)
        .load()
        .writeStream.queryName("test_progress_log")
        .trigger(processingTime="100 milliseconds")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .foreachBatch(lambda batch, batch_id: None)
        .start()
    )
    # Polled more slowly than batches end: the batches between two polls come from recentProgress.
    progress = ProgressLog(query, interval_s=0.7)
    with caplog.at_level(logging.INFO, logger="stockpipe.streaming.query"):
        progress.start()
        try:
            deadline = time.monotonic() + 60
            while progress.last_batch < 12 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            progress.stop()
            query.stop()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress test_progress_log")]
    batches = [int(re.search(r" batch (\d+):", line).group(1)) for line in lines]
    assert len(batches) >= 12, lines
    assert batches == list(range(batches[0], batches[0] + len(batches))), batches
    assert all("triggerExecution" in line for line in lines)
