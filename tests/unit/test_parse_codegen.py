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
