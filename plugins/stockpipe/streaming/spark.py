"""The SparkSession both jobs run in: loopback only, UTC, small shuffle, local connector jars."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stockpipe.config import Settings


def connector_jars(settings: Settings) -> list[str]:
    folder = Path(settings.spark_jars_dir)
    jars = sorted(str(path) for path in folder.glob("*.jar"))
    if not any("spark-sql-kafka" in jar for jar in jars):
        raise SystemExit(
            f"The Spark Kafka connector is missing from {folder}; fetch it with `make install` "
            "(mvn dependency:copy-dependencies from infra/pom.xml)."
        )
    return jars


#: Driver JVM options of the batch jobs (the backfill): their work runs in Python tasks and no row
#: crosses the JVM, so the JIT's optimising C2 tier only slows start-up. C1 alone made SparkSession
#: start + first job ~3-5 s faster on the 2-core dev box. Not for the stream: its Kafka source and
#: parsing run in the JVM, for hours.
BATCH_JAVA_OPTIONS = ("-XX:TieredStopAtLevel=1",)

#: JVM options of the driver and the executors of every job. ``-XX:-DontCompileHugeMethods``: the
#: stream's first stage (Kafka record → from_json → the contract's validation → state bucket) is
#: one generated ``processNext`` above HotSpot's 8,000-bytecode limit, which the JIT otherwise never
#: compiles: JFR showed it *interpreted*, 31 % of the JVM's samples at 10,000 symbols
#: (bench/market_scale.py --profile py-spy; docs/benchmarks.md, "Market scale").
JVM_OPTIONS = (
    "-XX:G1PeriodicGCInterval=60000",
    "-XX:MinHeapFreeRatio=10",
    "-XX:MaxHeapFreeRatio=30",
    "-XX:-DontCompileHugeMethods",
)


def spark_session(settings: Settings, app_name: str = "stockpipe", java_options: Sequence[str] = ()):
    """Build (or reuse) the SparkSession for ``settings``.

    Everything binds to 127.0.0.1 (invariant 5): the driver and its block manager (STOCKPIPE_SPARK_DRIVER_HOST,
    which only a multi-host cluster moves off loopback); the UI is off.
    Python workers run the interpreter of this process (the project venv). ``java_options`` are
    added to the driver JVM's (e.g. :data:`BATCH_JAVA_OPTIONS`); they only apply when this call
    starts the JVM (not under spark-submit, nor to a session that already runs).
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.jars", ",".join(connector_jars(settings)))
        .config("spark.driver.memory", settings.spark_driver_memory)
        # Give idle heap back to the OS (G1 keeps what a busy spell grew it to otherwise).
        .config(
            "spark.driver.extraJavaOptions",
            " ".join([*JVM_OPTIONS, *java_options]),
        )
        .config("spark.driver.bindAddress", settings.spark_driver_host)
        .config("spark.driver.host", settings.spark_driver_host)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.streaming.stateStore.stateSchemaCheck", "true")
        # Per-symbol state is small and hot; keep two versions in memory, snapshot often.
        .config("spark.sql.streaming.maxBatchesToRetainInMemory", "2")
        .config("spark.sql.streaming.stateStore.minDeltasForSnapshot", "10")
        .config("spark.python.worker.reuse", "true")
        .config("spark.sql.adaptive.enabled", "false")
        # The contract's validation is one large CASE expression; constraint propagation over its
        # aliases cost ~350 ms per micro-batch (foreachBatch's LogicalRDD rewrites them every batch)
        # and infers nothing useful here.
        .config("spark.sql.constraintPropagation.enabled", "false")
    )
    if settings.spark_master.startswith("spark://"):
        builder = standalone_options(builder, settings)
    if "://" not in settings.stream_checkpoint or settings.stream_checkpoint.startswith("file:"):
        # A local checkpoint: Hadoop's FileContext manager forks `stat`/`chmod` for every file it
        # writes (~150 ms per micro-batch in offsets, commits and state deltas); a local rename is
        # atomic, so the FileSystem-based manager is as safe and several times faster.
        builder = builder.config(
            "spark.sql.streaming.checkpointFileManagerClass",
            "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager",
        )
    return builder.getOrCreate()


def standalone_options(builder, settings: Settings):
    """A ``spark://`` master (the local standalone cluster, or another): each job takes at most
    ``STOCKPIPE_SPARK_CORES_MAX`` cores — without a cap the streaming job would hold every core of
    the worker and a backfill would wait forever — and ``STOCKPIPE_SPARK_EXECUTOR_MEMORY``. The
    executors roll their logs (the worker keeps them in its work folder for as long as the job runs)."""
    return (
        builder.config("spark.cores.max", str(settings.spark_cores_max))
        .config("spark.executor.memory", settings.spark_executor_memory)
        .config("spark.executor.extraJavaOptions", " ".join(JVM_OPTIONS))
        .config("spark.executor.logs.rolling.strategy", "size")
        .config("spark.executor.logs.rolling.maxSize", str(16 * 1024 * 1024))
        .config("spark.executor.logs.rolling.maxRetainedFiles", "3")
    )
