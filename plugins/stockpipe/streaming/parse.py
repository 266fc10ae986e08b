"""Kafka records → typed bars, with the reason a record is a dead letter (the Kafka contract).

Every record comes out of :func:`parse_records` as one row: the bar's typed fields plus ``error``
(NULL for a valid bar, else the first rule it breaks) and its origin (topic, partition, offset, raw
key and value). Valid rows are keyed by their symbol's state bucket (:func:`state_bucket`) for the
stateful operator; invalid ones share the :data:`DLQ_GROUP` key and pass through it untouched, so
one query (and one checkpoint) covers both.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stockpipe.contract import MAX_PRICE, MAX_VOLUME

CONTRACT_VERSION = 1
# Not a ticker (see SYMBOL_PATTERN) nor a bucket, so dead letters never share a state key with bars.
DLQ_GROUP = "~dlq"
BUCKET_PREFIX = "~b"
SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,11}$"
MICROS_PER_MINUTE = 60_000_000

VALUE_SCHEMA = T.StructType(
    [
        T.StructField("v", T.LongType()),
        T.StructField("symbol", T.StringType()),
        T.StructField("ts", T.StringType()),
        T.StructField("open", T.DoubleType()),
        T.StructField("high", T.DoubleType()),
        T.StructField("low", T.DoubleType()),
        T.StructField("close", T.DoubleType()),
        T.StructField("volume", T.DoubleType()),
        T.StructField("vwap", T.DoubleType()),
        T.StructField("trades", T.LongType()),
        T.StructField("source", T.StringType()),
        T.StructField("fetched_at", T.StringType()),
    ]
)
PRICE_FIELDS = ("open", "high", "low", "close")

# Columns the stateful operator receives (see stockpipe.streaming.operator.INPUT_COLUMNS).
PARSED_COLUMNS = [
    "gkey", "symbol", "ts_ms", "open", "high", "low", "close", "volume", "vwap", "trades", "source",
    "fetched_us", "error", "topic", "kpartition", "koffset", "raw_key", "raw_value",
]  # fmt: skip


def _finite(column: Column) -> Column:
    return ~F.isnan(column) & (F.abs(column) != F.lit(float("inf")))


def _first_error(checks: list[tuple[Column, str]]) -> Column:
    """The message of the first failing check, NULL when all pass (a NULL check counts as failing)."""
    expr = None
    for ok, message in reversed(checks):
        failing = F.coalesce(~ok, F.lit(True))
        expr = F.when(failing, F.lit(message)) if expr is None else F.when(failing, F.lit(message)).otherwise(expr)
    return expr


def validation_error(bar: Column, ts: Column, fetched: Column) -> Column:
    """Why the parsed value ``bar`` is not a valid minute bar, or NULL."""
    checks: list[tuple[Column, str]] = [
        (bar["v"] == CONTRACT_VERSION, f"unsupported or missing contract version v (expected {CONTRACT_VERSION})"),
        (bar["symbol"].isNotNull(), "missing field symbol"),
        (bar["symbol"].rlike(SYMBOL_PATTERN), "symbol is not a ticker (A-Z, 0-9, '.', '-', at most 12)"),
        (ts.isNotNull(), "missing or unparseable ts (ISO-8601 UTC expected)"),
        (F.unix_micros(ts) % MICROS_PER_MINUTE == 0, "ts is not on a minute boundary"),
        (fetched.isNotNull(), "missing or unparseable fetched_at"),
    ]
    for name in (*PRICE_FIELDS, "volume"):
        checks.append((bar[name].isNotNull(), f"missing or non-numeric {name}"))
        checks.append((_finite(bar[name]), f"{name} is not a finite number"))
    checks += [
        (bar["open"] > 0, "open must be positive"),
        (bar["close"] > 0, "close must be positive"),
        (bar["low"] > 0, "low must be positive"),
        (bar["high"] >= F.greatest(bar["open"], bar["close"]), "high is below max(open, close)"),
        (bar["low"] <= F.least(bar["open"], bar["close"]), "low is above min(open, close)"),
        (bar["volume"] >= 0, "volume is negative"),
        (F.greatest(*(bar[name] for name in PRICE_FIELDS)) <= MAX_PRICE, f"a price is above {MAX_PRICE:g}"),
        (bar["volume"] <= MAX_VOLUME, f"volume is above {MAX_VOLUME:g}"),
        # vwap and trades are optional, as in Polygon's aggregates (``vw``, ``n``) and in bars_1m.
        (
            bar["vwap"].isNull() | (_finite(bar["vwap"]) & (bar["vwap"] > 0) & (bar["vwap"] <= MAX_PRICE)),
            "vwap is not a positive finite number (at most 1e9)",
        ),
        (bar["trades"].isNull() | (bar["trades"] >= 0), "trades is negative"),
        (bar["source"].isNotNull() & (F.length(bar["source"]) > 0), "missing field source"),
    ]
    return _first_error(checks)


def bucket_labels(spark: SparkSession, buckets: int, modulus: int = 64) -> list[str]:
    """The ``gkey`` of each state bucket, chosen so the buckets spread evenly over the shuffle partitions.

    Spark places a group in partition ``pmod(hash(gkey), P)``; with plain labels (``~b0``..``~b15``)
    12 of 16 land in one of 2 partitions, and that task paces every micro-batch. Bucket ``b`` gets
    the first label ``~b<n>`` with ``pmod(hash(label), 64) == b % 64``, so any P dividing 64 (1, 2,
    4, …) gets an equal share. The labels depend on the bucket count only (frozen into the
    checkpoint), not on P; Spark's own ``hash`` computes them, so they match its partitioner.
    """
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
    return labels


def state_bucket(symbol: Column, labels: list[str]) -> Column:
    """The state group of ``symbol``: its bucket ``pmod(xxhash64(symbol), len(labels))``'s label."""
    index = F.pmod(F.xxhash64(symbol), F.lit(len(labels))) + F.lit(1)
    return F.element_at(F.array(*(F.lit(label) for label in labels)), index.cast("int"))


def parse_records(kafka: DataFrame, labels: list[str] | None = None) -> DataFrame:
    """Kafka source rows (key, value, topic, partition, offset, ...) → :data:`PARSED_COLUMNS`.

    ``labels``: the state buckets' keys (:func:`bucket_labels`); default one bucket."""
    labels = labels or [f"{BUCKET_PREFIX}0"]
    text = F.col("value").cast("string")
    parsed = kafka.select(
        F.col("key").alias("raw_key"),
        F.col("value").alias("raw_value"),
        F.col("topic"),
        F.col("partition").alias("kpartition"),
        F.col("offset").alias("koffset"),
        F.from_json(text, VALUE_SCHEMA, {"mode": "PERMISSIVE", "allowNonNumericNumbers": "true"}).alias("bar"),
    )
    # Unparseable text, or JSON that is not an object, parses to NULL or to all-NULL fields.
    # (NaN/Infinity parse, so that they get their own reason below.)
    is_object = (
        F.col("bar").isNotNull()
        & F.coalesce(*(F.col(f"bar.{name}").cast("string") for name in VALUE_SCHEMA.fieldNames())).isNotNull()
    )
    ts = F.try_to_timestamp(F.col("bar.ts"))
    fetched = F.try_to_timestamp(F.col("bar.fetched_at"))
    error = F.when(~is_object, F.lit("value is not a JSON object")).otherwise(
        validation_error(F.col("bar"), ts, fetched)
    )
    with_error = parsed.select("*", ts.alias("ts"), fetched.alias("fetched"), error.alias("error"))
    valid = F.col("error").isNull()
    return with_error.select(
        F.when(valid, state_bucket(F.col("bar.symbol"), labels)).otherwise(F.lit(DLQ_GROUP)).alias("gkey"),
        F.col("bar.symbol").alias("symbol"),
        F.unix_millis(F.col("ts")).alias("ts_ms"),
        *(F.col(f"bar.{name}").alias(name) for name in ("open", "high", "low", "close", "volume", "vwap", "trades")),
        F.col("bar.source").alias("source"),
        F.unix_micros(F.col("fetched")).alias("fetched_us"),
        F.col("error"),
        F.col("topic"),
        F.col("kpartition"),
        F.col("koffset"),
        # The raw bytes only travel with dead letters; a valid bar is fully described by its fields.
        F.when(valid, F.lit(None)).otherwise(F.col("raw_key")).alias("raw_key"),
        F.when(valid, F.lit(None)).otherwise(F.col("raw_value")).alias("raw_value"),
    )
