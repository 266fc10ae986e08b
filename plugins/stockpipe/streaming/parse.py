"""Kafka records → typed bars, with the reason a record is a dead letter (the Kafka contract).

Every record comes out of :func:`parse_records` as one row: the bar's typed fields plus ``error``
(NULL for a valid bar, else the first rule it breaks) and its origin (topic, partition, offset, raw
key and value). Valid rows are keyed by their symbol's state bucket (:func:`state_bucket`) for the
stateful operator; invalid ones share the :data:`DLQ_GROUP` key and pass through it untouched, so
one query (and one checkpoint) covers both.

The rules are not here: ``error`` is :func:`stockpipe.contract.spark_reason`, generated from the
same rule table as the producer's and ``verify``'s Python check. A record is parsed once (typed);
only a record with a field of the wrong type is parsed a second time (every field as text), so
that such a field is a dead letter with its reason, never a silent NULL. A handful of column
expressions, no Python UDF.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from stockpipe import contract
from stockpipe.config import Settings

CONTRACT_VERSION = contract.VERSION
# Not a ticker (see contract.SYMBOL_PATTERN) nor a bucket, so dead letters never share a state key with bars.
DLQ_GROUP = "~dlq"
BUCKET_PREFIX = "~b"
SYMBOL_PATTERN = rf"^{contract.SYMBOL_PATTERN}$"

MAIN_SCHEMA, FALLBACK_SCHEMA = contract.spark_schemas()
PRICE_FIELDS = contract.PRICE_FIELDS

# Columns the stateful operator receives (see stockpipe.streaming.operator.INPUT_COLUMNS).
PARSED_COLUMNS = [
    "gkey", "symbol", "ts_ms", "open", "high", "low", "close", "volume", "vwap", "trades", "source",
    "fetched_us", "error", "topic", "kpartition", "koffset", "raw_key", "raw_value",
]  # fmt: skip


_LABELS: dict[tuple[int, int], tuple[str, ...]] = {}  # (buckets, modulus) -> labels, see bucket_labels


def bucket_labels(spark: SparkSession, buckets: int, modulus: int = 64) -> list[str]:
    """The ``gkey`` of each state bucket, chosen so the buckets spread evenly over the shuffle partitions.

    Spark places a group in partition ``pmod(hash(gkey), P)``; with plain labels (``~b0``..``~b15``)
    12 of 16 land in one of 2 partitions, and that task paces every micro-batch. Bucket ``b`` gets
    the first label ``~b<n>`` with ``pmod(hash(label), 64) == b % 64``, so any P dividing 64 (1, 2,
    4, …) gets an equal share. The labels depend on the bucket count only (frozen into the
    checkpoint), not on P; Spark's own ``hash`` computes them, so they match its partitioner.
    Spark's ``hash`` is Murmur3 with a fixed seed, the same in every session: a process computes the
    labels of a bucket count once (a Spark job of ~1-3 s), not at every query start.
    """
    cached = _LABELS.get((buckets, modulus))
    if cached is not None:
        return list(cached)
    candidates = (
        spark.range(buckets * modulus)
        .selectExpr("id", f"pmod(hash(concat('{BUCKET_PREFIX}', cast(id AS string))), {modulus}) AS slot")
        .orderBy("id")
        .collect()
    )
    free: dict[int, list[int]] = {}
    for row in candidates:
        free.setdefault(int(row.slot), []).append(int(row.id))
    labels = []
    for bucket in range(buckets):
        pool = free.get(bucket % modulus)
        if not pool:
            raise RuntimeError(f"no state-bucket label left for bucket {bucket} of {buckets}")
        labels.append(f"{BUCKET_PREFIX}{pool.pop(0)}")
    _LABELS[(buckets, modulus)] = tuple(labels)
    return labels


def state_bucket(symbol: Column, labels: list[str]) -> Column:
    """The state group of ``symbol``: its bucket ``pmod(xxhash64(symbol), len(labels))``'s label."""
    index = F.pmod(F.xxhash64(symbol), F.lit(len(labels))) + F.lit(1)
    return F.element_at(F.array(*(F.lit(label) for label in labels)), index.cast("int"))


def batch_clock_us(topic: Column) -> Column:
    """The validating clock (the micro-batch time, epoch µs) as a column whose generated code is the
    same in every micro-batch, so Spark's code cache serves the stream's first stage.

    In a stream, Spark replaces ``current_timestamp()`` by the micro-batch time *after* optimising
    each micro-batch's plan, as a timestamp literal, and a timestamp literal is written into the
    generated Java source as a ``long`` (``value_9 = 1796182264516000L;``). So any generated code
    that reads the clock is new every micro-batch, and Janino compiles it (and the JIT compiles it
    again): the stage's ~125 kB class when the optimizer inlined the clock into the contract's
    validation, and — until session 6 — the ~25 kB projection computing this column (it runs
    outside whole-stage codegen, beside ``from_json``): 30-210 ms of compilation and a stream of
    JIT work each micro-batch (``CodegenMetrics`` counted one compilation per batch).

    Here the clock goes through ``transform`` (a higher-order function: Spark evaluates it
    interpreted, from an object the generated code holds by reference), so no generated source
    contains it; ``topic`` is unused (kept for the callers). It is not foldable before the
    replacement (the clock is non-deterministic then) and costs well under a microsecond per record.
    Same value, same batch time (replays included: the batch time is in the offset log)."""
    del topic
    return F.transform(F.array(contract.spark_now()), lambda micros: micros)[0]


def contract_policy(settings: Settings | None = None) -> contract.Policy:
    """The stream's contract policy: the settings' watchlist plus the symbols of ``market.symbols``
    as read now. The stream reads them once, when its query starts: a symbol added to
    market.symbols later is accepted after the next restart of the job (or at once, when it is on
    the watchlist, or with STOCKPIPE_ACCEPT_ANY_SYMBOL)."""
    if settings is None:
        from stockpipe.config import get_settings

        settings = get_settings()
    return contract.Policy.load(settings)


def parse_records(
    kafka: DataFrame,
    labels: list[str] | None = None,
    settings: Settings | None = None,
    policy: contract.Policy | None = None,
) -> DataFrame:
    """Kafka source rows (key, value, topic, partition, offset, ...) → :data:`PARSED_COLUMNS`.

    ``labels``: the state buckets' keys (:func:`bucket_labels`); default one bucket. ``policy``:
    the contract's deployment policy; default :func:`contract_policy` of ``settings`` (default: the
    process's settings), read once here, at query start."""
    labels = labels or [f"{BUCKET_PREFIX}0"]
    policy = policy or contract_policy(settings)
    text = F.col("value").cast("string")
    parsed = kafka.select(
        F.col("key").alias("raw_key"),
        F.col("value").alias("raw_value"),
        F.col("topic"),
        F.col("partition").alias("kpartition"),
        F.col("offset").alias("koffset"),
        F.from_json(text, MAIN_SCHEMA, contract.SPARK_JSON_OPTIONS).alias("bar"),
        batch_clock_us(F.col("topic")).alias("now_us"),
    )
    # the second parse, only for records with a field of the wrong type (its own projection, so it
    # runs at most once per record)
    checked = parsed.select(
        "*", contract.spark_fallback(F.col("bar"), F.col("raw_value").cast("string")).alias("fallback")
    )
    bar, fallback, now_us = F.col("bar"), F.col("fallback"), F.col("now_us")
    env = contract.SparkEnv(bar, fallback, policy, now_us)
    with_error = checked.select(
        "*",
        env.value("ts").alias("ts_us"),
        env.value("fetched_at").alias("fetched_us"),
        contract.spark_reason(bar, fallback, policy, now_us).alias("error"),
    )
    valid = F.col("error").isNull()
    return with_error.select(
        F.when(valid, state_bucket(F.col("bar.symbol"), labels)).otherwise(F.lit(DLQ_GROUP)).alias("gkey"),
        F.col("bar.symbol").alias("symbol"),
        F.floor(F.col("ts_us") / 1000).cast("long").alias("ts_ms"),
        *(F.col(f"bar.{name}").alias(name) for name in ("open", "high", "low", "close", "volume", "vwap", "trades")),
        F.col("bar.source").alias("source"),
        F.col("fetched_us"),
        F.col("error"),
        F.col("topic"),
        F.col("kpartition"),
        F.col("koffset"),
        # The raw bytes only travel with dead letters; a valid bar is fully described by its fields.
        F.when(valid, F.lit(None)).otherwise(F.col("raw_key")).alias("raw_key"),
        F.when(valid, F.lit(None)).otherwise(F.col("raw_value")).alias("raw_value"),
    )
