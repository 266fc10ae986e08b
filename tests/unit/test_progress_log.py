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
    # rate-micro-batch: a batch at every trigger (~10 a second); the "rate" source's offsets move once
    # a second, so its batches came a second apart (12 s for 12 batches), never two between two polls
    query = (
        spark.readStream.format("rate-micro-batch")
        .option("rowsPerBatch", 20)
        .load()
        .writeStream.queryName("test_progress_log")
        .trigger(processingTime="100 milliseconds")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .foreachBatch(lambda batch, batch_id: None)
        .start()
    )
    # Polled more slowly than batches end: the batches between two polls come from recentProgress.
    progress = ProgressLog(query, interval_s=0.7)

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress test_progress_log")]

    with caplog.at_level(logging.INFO, logger="stockpipe.streaming.query"):
        progress.start()
        try:
            deadline = time.monotonic() + 60
            while len(logged()) < 12 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            progress.stop()
            query.stop()
    lines = logged()
    batches = [int(re.search(r" batch (\d+):", line).group(1)) for line in lines]
    assert len(batches) >= 12, lines
    assert batches == list(range(batches[0], batches[0] + len(batches))), batches
    assert all("triggerExecution" in line for line in lines)


def test_the_batch_after_an_idle_spell_is_logged(tmp_path, caplog):
    """While a query idles Spark reports a progress with the id of the next batch; the next batch
    with data reports that id again and must still get its line."""
    from stockpipe.config import load_settings
    from stockpipe.streaming.query import ProgressLog
    from stockpipe.streaming.spark import spark_session

    spark = spark_session(load_settings(), app_name="stockpipe-tests")
    source = tmp_path / "in"
    source.mkdir()
    spark.conf.set("spark.sql.streaming.noDataProgressEventInterval", "200ms")
    try:
        query = (
            spark.readStream.text(str(source))
            .writeStream.queryName("test_progress_idle")
            .trigger(processingTime="100 milliseconds")
            .option("checkpointLocation", str(tmp_path / "checkpoint"))
            .foreachBatch(lambda batch, batch_id: batch.count())  # rows are counted when read
            .start()
        )
    finally:
        spark.conf.unset("spark.sql.streaming.noDataProgressEventInterval")
    progress = ProgressLog(query, interval_s=0.05)

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress test_progress_idle")]

    with caplog.at_level(logging.INFO, logger="stockpipe.streaming.query"):
        progress.start()
        try:
            for i in range(3):
                staged = tmp_path / f"part-{i}.txt"
                staged.write_text("a\nb\n")
                staged.rename(source / staged.name)  # whole files only
                deadline = time.monotonic() + 30
                while sum(" 2 input rows" in line for line in lines()) <= i and time.monotonic() < deadline:
                    time.sleep(0.05)
                # idle until a no-data progress (Spark reports one every 200 ms) is logged: the next
                # batch with data then reports its id again (was: a fixed second)
                idle = sum(" 0 input rows" in line for line in lines())
                while sum(" 0 input rows" in line for line in lines()) <= idle and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            progress.stop()
            query.stop()
    logged = lines()
    assert sum(" 2 input rows" in line for line in logged) == 3, logged
    assert any(" 0 input rows" in line for line in logged), logged
