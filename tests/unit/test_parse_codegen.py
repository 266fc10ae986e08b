"""The stream's first stage (Kafka record → contract validation → state bucket) generates the same
Java code in every micro-batch, so Spark's code cache serves it instead of compiling ~125 kB of
source each batch (see stockpipe.streaming.parse.batch_clock_us)."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.spark

GOOD = {
    "v": 1, "symbol": "AAPL", "ts": "2026-11-24T14:31:00Z", "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5,
    "volume": 100, "vwap": 1.2, "trades": 3, "source": "simulator", "fetched_at": "2026-11-24T14:32:00Z",
}  # fmt: skip


def generated_code(spark, frame, settings, policy) -> list[str]:
    from stockpipe.streaming.parse import PARSED_COLUMNS, parse_records

    plan = parse_records(frame.select("*"), ["~b0", "~b1"], settings, policy).select(*PARSED_COLUMNS)
    codes = plan._jdf.queryExecution().debug().codegenToSeq()
    return [codes.apply(i)._2() for i in range(codes.size())]


def test_the_validation_code_is_the_same_at_another_clock_reading():
    from stockpipe import contract
    from stockpipe.config import load_settings
    from stockpipe.streaming.spark import spark_session

    settings = load_settings()
    spark = spark_session(settings, app_name="stockpipe-tests")
    schema = "key binary, value binary, topic string, partition int, offset long"
    frame = spark.createDataFrame([(b"AAPL", json.dumps(GOOD).encode(), "t", 0, 0)], schema)
    policy = contract.Policy.from_settings(settings, ())
    first = generated_code(spark, frame, settings, policy)
    time.sleep(0.01)  # another micro-batch time: Spark reads the clock once per query
    second = generated_code(spark, frame, settings, policy)
    assert sum(len(code) for code in first) > 50_000  # the validation is in there
    assert first == second


def test_a_running_stream_compiles_no_code_after_its_first_micro_batches(tmp_path):
    """In a stream the clock is a new literal each micro-batch (Spark replaces current_timestamp()
    after optimising the batch's plan); no generated class may contain it, or each micro-batch
    compiles one anew (the projection beside from_json did, until session 6: one compilation of
    ~25 kB of Java per batch, counted by Spark's CodegenMetrics)."""
    from pyspark.sql import functions as F

    from stockpipe import contract
    from stockpipe.config import load_settings
    from stockpipe.streaming.parse import PARSED_COLUMNS, parse_records
    from stockpipe.streaming.spark import spark_session

    settings = load_settings()
    spark = spark_session(settings, app_name="stockpipe-tests")
    policy = contract.Policy.from_settings(settings, ())
    records = (  # rate-micro-batch: a batch at every trigger ("rate" moves its offsets once a second)
        spark.readStream.format("rate-micro-batch")
        .option("rowsPerBatch", 50)
        .load()
        .select(
            F.lit(b"AAPL").alias("key"),
            F.lit(json.dumps(GOOD).encode()).alias("value"),
            F.lit("t").alias("topic"),
            F.lit(0).alias("partition"),
            F.col("value").alias("offset"),
        )
    )
    plan = parse_records(records, ["~b0", "~b1"], settings, policy).select(*PARSED_COLUMNS)
    metrics = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics
    compiled: list[tuple[int, int, int]] = []  # (batch, rows, compilations so far)

    def count(batch, batch_id: int) -> None:
        rows = batch.filter(F.col("error").isNull()).count()
        compiled.append((batch_id, rows, metrics.METRIC_COMPILATION_TIME().getCount()))

    query = (
        plan.writeStream.trigger(processingTime="200 milliseconds")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .foreachBatch(count)
        .start()
    )
    try:
        deadline = time.monotonic() + 90
        while sum(1 for _, rows, _ in compiled if rows) < 8 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        query.stop()
    with_rows = [entry for entry in compiled if entry[1]]
    assert len(with_rows) >= 8, compiled
    warm = with_rows[3:]  # the first micro-batches compile the stage's classes once
    assert warm[-1][2] - warm[0][2] == 0, f"compilations after warm-up: {warm}"
