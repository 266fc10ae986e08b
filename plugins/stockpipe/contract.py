"""The Kafka message contract (DESIGN.md): one minute bar per message, key = symbol.

``{"v":1,"symbol":"AAPL","ts":"2026-11-24T14:31:00Z","open":..,"high":..,"low":..,"close":..,
"volume":..,"vwap":..,"trades":..,"source":"polygon|simulator","fetched_at":"…Z"}``

**One validation, two engines.** What a valid bar is lives in two tables below: :data:`FIELDS`
(each field's kind: JSON integer, JSON number, text matching a pattern, ISO-8601 UTC time) and
:data:`RULES` (ordered checks over those fields, each with the one-sentence reason a bar that fails
it is a dead letter). Nothing else decides validity. Both engines are generated from the tables:

- Python (:func:`invalid_reason`, :func:`value_reason`): the producer, the backfill, ``verify``;
  compiled into one function per policy (:mod:`stockpipe.contract_compiled`, the same rules and
  reasons) where bars come by the ten thousand a second (the WebSocket feed's bursts);
- Spark (:func:`spark_reason`): the stream (``stockpipe.streaming.parse``), as one CASE expression
  over a typed ``from_json`` parse of the value (plus a text parse only for records with a field of
  the wrong type), no Python UDF.

A bar's reason is the message of the first rule it breaks, in :data:`RULES` order, in both engines.
NULL (an absent or ``null`` field, or one of the wrong type) never passes a check silently: an
optional field (vwap, trades) may be absent or ``null``; present, it must be valid.

Deployment policy (:class:`Policy`, from the settings): the symbols accepted (the watchlist plus
``market.symbols``, or any with ``STOCKPIPE_ACCEPT_ANY_SYMBOL``) and the oldest accepted ``ts``
(``STOCKPIPE_OLDEST_BAR_DATE``, and ``now − STOCKPIPE_RETENTION_DAYS`` when that is > 0). ``ts``
and ``fetched_at`` may be at most :data:`MAX_FUTURE` ahead of the validating process's clock (the
stream's: its micro-batch time).

Where the engines' JSON readers differ (bytes-level only, never for the producer, which validates
the dict it encodes): Spark's reader ignores text after the closing ``}`` and, for a repeated key,
keeps the last value of the field's type; Python rejects trailing text and keeps the last value.
``+Infinity`` is a number (not finite) to Spark and not JSON to Python. Each is a dead letter in
one and either stored or dead-lettered in the other, never a silently changed value.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pyspark.sql import Column

    from stockpipe.config import Settings

log = logging.getLogger("stockpipe.contract")

VERSION = 1
PRICE_FIELDS = ("open", "high", "low", "close")

# Sanity bounds: far beyond any listed stock (the dearest trades near 1e6 a share), yet small
# enough that every indicator (sums of squares over 50 bars included) stays finite.
MAX_PRICE = 1e9
MAX_VOLUME = 1e15
#: market.bars_1m.trades is a PostgreSQL ``integer``.
MAX_INT4 = 2_147_483_647
#: How far ``ts`` / ``fetched_at`` may be ahead of the validating clock (clock skew, a bar that
#: closed a moment ago). A later time would pin Redis ``latest`` or win every future correction.
MAX_FUTURE = timedelta(minutes=2)
#: Default of STOCKPIPE_OLDEST_BAR_DATE: the oldest bar accepted when retention keeps everything.
DEFAULT_OLDEST_BAR = date(1990, 1, 1)

#: Patterns of the text fields, unanchored: Python full-matches them, Spark anchors with ^ and \z
#: (Java's $ would accept a trailing newline). No non-string JSON value's text can match them
#: (Spark reads a number, boolean, object or array in a string field as its JSON text).
SYMBOL_PATTERN = r"[A-Z][A-Z0-9.\-]{0,11}"
TIME_PATTERN = r"(?!0000)[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|\+00:00)"
SOURCE_PATTERN = r"(?!(?:true|false)$)[A-Za-z][^\x00-\x1f\x7f]{0,63}"
SYMBOL_RE = re.compile(SYMBOL_PATTERN)
#: Strings that JSON readers take for a (non-finite) number: Spark's (Jackson's) reads these in a
#: double field, so the contract counts them as numbers that are not finite, in both engines.
NON_FINITE_STRINGS = {
    "NaN": math.nan, "Infinity": math.inf, "+Infinity": math.inf, "-Infinity": -math.inf,
    "+INF": math.inf, "-INF": -math.inf,
}  # fmt: skip
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS_PER_MINUTE = 60_000_000


def format_ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_fetched_at(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def to_micros(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)


# --- the fields ----------------------------------------------------------------------------------
Kind = Literal["integer", "number", "text", "time"]


@dataclass(frozen=True)
class FieldSpec:
    """``integer``: a JSON integer (not 1.0, not "1", not true); ``number``: a JSON number
    (integer or not; NaN/Infinity, bare or as the strings of :data:`NON_FINITE_STRINGS`, are
    numbers, just not finite ones); ``text``: a JSON string
    matching ``pattern``; ``time``: a JSON string matching :data:`TIME_PATTERN` that is a real
    UTC time (no 24:00, no Feb 30)."""

    name: str
    kind: Kind
    pattern: str | None = None


FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec("v", "integer"),
        FieldSpec("symbol", "text", SYMBOL_PATTERN),
        FieldSpec("ts", "time", TIME_PATTERN),
        *(FieldSpec(name, "number") for name in (*PRICE_FIELDS, "volume", "vwap")),
        FieldSpec("trades", "integer"),
        FieldSpec("source", "text", SOURCE_PATTERN),
        FieldSpec("fetched_at", "time", TIME_PATTERN),
    )
}


# --- the rule language: a few terms that evaluate in Python and compile to Spark -------------------
# Python values: int/float for numbers, str for text, epoch microseconds (int) for times, None for
# absent or invalid; conditions are three-valued (True/False/None) like SQL, and a rule passes
# only on True — in both engines.
class Term:
    def py(self, env: _PyEnv) -> Any:
        raise NotImplementedError

    def spark(self, env: SparkEnv) -> Column:
        raise NotImplementedError

    # comparisons build conditions
    def __le__(self, other: Term | float) -> Cond:
        return Cmp("<=", self, _term(other))

    def __lt__(self, other: Term | float) -> Cond:
        return Cmp("<", self, _term(other))

    def __ge__(self, other: Term | float) -> Cond:
        return Cmp(">=", self, _term(other))

    def __gt__(self, other: Term | float) -> Cond:
        return Cmp(">", self, _term(other))

    def eq(self, other: Term | float) -> Cond:
        return Cmp("==", self, _term(other))


class Cond(Term):
    def __and__(self, other: Cond) -> Cond:
        return Both(self, other)

    def __or__(self, other: Cond) -> Cond:
        return Either(self, other)


def _term(value: Term | float) -> Term:
    return value if isinstance(value, Term) else Lit(value)


@dataclass(frozen=True, eq=False)
class Lit(Term):
    value: Any

    def py(self, env):
        return self.value

    def spark(self, env):
        from pyspark.sql import functions as F

        return F.lit(self.value)


@dataclass(frozen=True, eq=False)
class Val(Term):
    """The field's value, NULL unless it is present and of its kind."""

    name: str

    def py(self, env):
        return env.value(self.name)

    def spark(self, env):
        return env.value(self.name)


@dataclass(frozen=True, eq=False)
class Greatest(Term):
    terms: tuple[Term, ...]

    def py(self, env):
        values = [t.py(env) for t in self.terms]
        return None if any(v is None for v in values) else max(values)

    def spark(self, env):
        from pyspark.sql import functions as F

        # F.greatest skips NULLs; a NULL operand must make the result NULL, as in Python
        values = [t.spark(env) for t in self.terms]
        any_null = values[0].isNull()
        for value in values[1:]:
            any_null = any_null | value.isNull()
        return F.when(~any_null, F.greatest(*values))


@dataclass(frozen=True, eq=False)
class Least(Term):
    terms: tuple[Term, ...]

    def py(self, env):
        values = [t.py(env) for t in self.terms]
        return None if any(v is None for v in values) else min(values)

    def spark(self, env):
        from pyspark.sql import functions as F

        values = [t.spark(env) for t in self.terms]
        any_null = values[0].isNull()
        for value in values[1:]:
            any_null = any_null | value.isNull()
        return F.when(~any_null, F.least(*values))


@dataclass(frozen=True, eq=False)
class NowPlus(Term):
    """The validating clock (epoch µs) plus ``offset``: Python's ``now``, the stream's batch time."""

    offset: timedelta

    def py(self, env):
        return env.now_us + self.offset // timedelta(microseconds=1)

    def spark(self, env):
        from pyspark.sql import functions as F

        return env.now_us + F.lit(self.offset // timedelta(microseconds=1))


@dataclass(frozen=True, eq=False)
class OldestTs(Term):
    """The oldest accepted ts (epoch µs): the later of the policy's fixed date and now − retention."""

    def py(self, env):
        policy = env.policy
        if policy.retention is None:
            return policy.oldest_us
        return max(policy.oldest_us, env.now_us - policy.retention // timedelta(microseconds=1))

    def spark(self, env):
        from pyspark.sql import functions as F

        policy = env.policy
        if policy.retention is None:
            return F.lit(policy.oldest_us)
        window = env.now_us - F.lit(policy.retention // timedelta(microseconds=1))
        return F.greatest(F.lit(policy.oldest_us), window)


_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}


@dataclass(frozen=True, eq=False)
class Cmp(Cond):
    op: str
    left: Term
    right: Term

    def py(self, env):
        a, b = self.left.py(env), self.right.py(env)
        if a is None or b is None:
            return None
        return _OPS[self.op](a, b)

    def spark(self, env):
        a, b = self.left.spark(env), self.right.spark(env)
        return {"<=": a <= b, "<": a < b, ">=": a >= b, ">": a > b, "==": a == b}[self.op]


@dataclass(frozen=True, eq=False)
class Both(Cond):
    a: Cond
    b: Cond

    def py(self, env):
        x, y = self.a.py(env), self.b.py(env)
        if x is False or y is False:
            return False
        return None if x is None or y is None else True

    def spark(self, env):
        return self.a.spark(env) & self.b.spark(env)


@dataclass(frozen=True, eq=False)
class Either(Cond):
    a: Cond
    b: Cond

    def py(self, env):
        x, y = self.a.py(env), self.b.py(env)
        if x is True or y is True:
            return True
        return None if x is None or y is None else False

    def spark(self, env):
        return self.a.spark(env) | self.b.spark(env)


@dataclass(frozen=True, eq=False)
class Present(Cond):
    """The field is in the object and not ``null`` (whatever its type)."""

    name: str

    def py(self, env):
        return env.present(self.name)

    def spark(self, env):
        return env.present(self.name)


@dataclass(frozen=True, eq=False)
class Absent(Cond):
    name: str

    def py(self, env):
        return not env.present(self.name)

    def spark(self, env):
        return ~env.present(self.name)


@dataclass(frozen=True, eq=False)
class Valid(Cond):
    """The field is present and of its kind (see :class:`FieldSpec`)."""

    name: str

    def py(self, env):
        return env.value(self.name) is not None

    def spark(self, env):
        return env.value(self.name).isNotNull()


@dataclass(frozen=True, eq=False)
class Finite(Cond):
    name: str

    def py(self, env):
        value = env.value(self.name)
        return None if value is None else math.isfinite(value)

    def spark(self, env):
        from pyspark.sql import functions as F

        value = env.value(self.name)
        return ~F.isnan(value) & (F.abs(value) != F.lit(float("inf")))


@dataclass(frozen=True, eq=False)
class OnMinute(Cond):
    name: str

    def py(self, env):
        value = env.value(self.name)
        return None if value is None else value % _MICROS_PER_MINUTE == 0

    def spark(self, env):
        return env.value(self.name) % _MICROS_PER_MINUTE == 0


@dataclass(frozen=True, eq=False)
class Listed(Cond):
    """The symbol is one the policy accepts (always, with ``accept_any_symbol``)."""

    name: str

    def py(self, env):
        symbols = env.policy.symbols
        value = env.value(self.name)
        if symbols is None:
            return True
        return None if value is None else value in symbols

    def spark(self, env):
        from pyspark.sql import functions as F

        symbols = env.policy.symbols
        if symbols is None:
            return F.lit(True)
        return env.value(self.name).isin(sorted(symbols))


@dataclass(frozen=True)
class Rule:
    check: Cond
    reason: str


def _number_rules(name: str) -> tuple[Rule, ...]:
    return (
        Rule(Valid(name), f"missing or non-numeric {name}"),
        Rule(Finite(name), f"{name} is not a finite number"),
    )


def _optional(name: str, check: Cond) -> Cond:
    return Absent(name) | (Valid(name) & check)


#: The contract, in the order a bar is checked: the first rule it breaks is its reason.
RULES: tuple[Rule, ...] = (
    Rule(Valid("v") & Val("v").eq(VERSION), f"unsupported or missing contract version v (expected {VERSION})"),
    Rule(Present("symbol"), "missing field symbol"),
    Rule(Valid("symbol"), "symbol is not a ticker (A-Z, 0-9, '.', '-', at most 12)"),
    Rule(Listed("symbol"), "symbol is not on the watchlist (STOCKPIPE_WATCHLIST, market.symbols)"),
    Rule(Valid("ts"), "missing or unparseable ts (ISO-8601 UTC expected, e.g. 2026-11-24T14:31:00Z)"),
    Rule(OnMinute("ts"), "ts is not on a minute boundary"),
    Rule(Val("ts") <= NowPlus(MAX_FUTURE), "ts is more than 2 minutes in the future"),
    Rule(
        Val("ts") >= OldestTs(),
        "ts is older than the oldest bar kept (STOCKPIPE_RETENTION_DAYS, STOCKPIPE_OLDEST_BAR_DATE)",
    ),
    Rule(Valid("fetched_at"), "missing or unparseable fetched_at (ISO-8601 UTC expected)"),
    Rule(Val("fetched_at") <= NowPlus(MAX_FUTURE), "fetched_at is more than 2 minutes in the future"),
    *(rule for name in (*PRICE_FIELDS, "volume") for rule in _number_rules(name)),
    Rule(Val("open") > 0, "open must be positive"),
    Rule(Val("close") > 0, "close must be positive"),
    Rule(Val("low") > 0, "low must be positive"),
    Rule(Val("high") >= Greatest((Val("open"), Val("close"))), "high is below max(open, close)"),
    Rule(Val("low") <= Least((Val("open"), Val("close"))), "low is above min(open, close)"),
    Rule(Val("volume") >= 0, "volume is negative"),
    Rule(Val("high") <= MAX_PRICE, f"a price is above {MAX_PRICE:g}"),  # high is the greatest price
    Rule(Val("volume") <= MAX_VOLUME, f"volume is above {MAX_VOLUME:g}"),
    # vwap and trades are optional, as in Polygon's aggregates (``vw``, ``n``) and in bars_1m
    Rule(
        _optional("vwap", Finite("vwap") & (Val("vwap") > 0) & (Val("vwap") <= MAX_PRICE)),
        f"vwap is not a positive finite number (at most {MAX_PRICE:g})",
    ),
    Rule(
        _optional("trades", (Val("trades") >= 0) & (Val("trades") <= MAX_INT4)),
        f"trades is not a whole number from 0 to {MAX_INT4}",
    ),
    Rule(Present("source"), "missing field source"),
    Rule(Valid("source"), "source is not a name (a letter, then at most 63 printable characters)"),
)
NOT_AN_OBJECT = "value is not a JSON object"


# --- deployment policy ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """What the settings add to the rules: which symbols, how old a bar may be."""

    symbols: frozenset[str] | None = None  # None: any symbol
    oldest_us: int = to_micros(datetime.combine(DEFAULT_OLDEST_BAR, datetime.min.time(), UTC))
    retention: timedelta | None = None  # None: keep all

    @classmethod
    def from_settings(cls, settings: Settings, known_symbols: Iterable[str] = ()) -> Policy:
        symbols = None if settings.accept_any_symbol else frozenset(settings.watchlist) | frozenset(known_symbols)
        oldest = datetime.combine(settings.oldest_bar_date, datetime.min.time(), UTC)
        retention = timedelta(days=settings.retention_days) if settings.retention_days > 0 else None
        return cls(symbols=symbols, oldest_us=to_micros(oldest), retention=retention)

    @classmethod
    def load(cls, settings: Settings) -> Policy:
        """:meth:`from_settings` plus the symbols of ``market.symbols`` (read now, once)."""
        return cls.from_settings(settings, () if settings.accept_any_symbol else known_symbols(settings))


def known_symbols(settings: Settings) -> list[str]:
    """The symbols in ``market.symbols``; none (and a warning) when PostgreSQL can't be read: the
    watchlist alone then decides, which is what the producer sends."""
    import psycopg

    from stockpipe.clients import pg_connect

    try:
        with pg_connect(settings, "writer", connect_timeout=5, autocommit=True) as conn:
            return [row[0] for row in conn.execute("SELECT symbol FROM market.symbols").fetchall()]
    except psycopg.Error as error:
        log.warning("market.symbols unreadable (%s); only the watchlist's symbols are accepted", error)
        return []


# --- the Python engine ------------------------------------------------------------------------------
def _py_value(spec: FieldSpec, raw: Any) -> Any:
    """The field's value if ``raw`` is of its kind, else None."""
    if raw is None:
        return None
    if spec.kind == "integer":
        return raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    if spec.kind == "number":
        if isinstance(raw, str):
            return NON_FINITE_STRINGS.get(raw)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None
        try:
            return float(raw)
        except OverflowError:  # an integer beyond any double: JSON's reader makes it ±Infinity
            return math.inf if raw > 0 else -math.inf
    if not isinstance(raw, str) or re.fullmatch(spec.pattern, raw) is None:
        return None
    if spec.kind == "text":
        return raw
    try:
        return to_micros(parse_ts(raw))
    except ValueError:
        return None


class _PyEnv:
    def __init__(self, message: dict[str, Any], policy: Policy, now_us: int) -> None:
        self.message, self.policy, self.now_us = message, policy, now_us
        self._values: dict[str, Any] = {}

    def present(self, name: str) -> bool:
        return self.message.get(name) is not None

    def value(self, name: str) -> Any:
        if name not in self._values:
            self._values[name] = _py_value(FIELDS[name], self.message.get(name))
        return self._values[name]


def _default_policy() -> Policy:
    from stockpipe.config import get_settings

    return Policy.from_settings(get_settings())


def message_reason(message: Any, policy: Policy | None = None, now: datetime | None = None) -> str | None:
    """Why the decoded JSON value ``message`` is a dead letter under ``policy``, or None."""
    if not isinstance(message, dict):
        return NOT_AN_OBJECT
    env = _PyEnv(message, policy or _default_policy(), to_micros(now or datetime.now(UTC)))
    for rule in RULES:
        if rule.check.py(env) is not True:
            return rule.reason
    return None


def invalid_reason(
    message: dict[str, Any], settings: Settings | None = None, *, now: datetime | None = None
) -> str | None:
    """Why this bar must go to the dead-letter topic, or None when it is valid.

    ``settings``: whose watchlist (and STOCKPIPE_ACCEPT_ANY_SYMBOL) and ts window apply. Without
    them the process's settings give the ts window and any symbol is accepted: such callers (the
    backfill, a rerun, the simulator's tests) validate bars of symbols they chose themselves. The
    symbols of ``market.symbols`` are not consulted here (use :func:`message_reason` with
    :meth:`Policy.load`, as the stream and verify do); a producer only sends its watchlist's."""
    if settings is None:
        from stockpipe.config import get_settings

        policy = replace(Policy.from_settings(get_settings()), symbols=None)
    else:
        policy = Policy.from_settings(settings)
    return message_reason(message, policy, now)


def decode(raw: bytes | str | None) -> Any:
    """A Kafka value as JSON, the way the stream reads it (invalid UTF-8 becomes U+FFFD), or
    :data:`UNDECODABLE`."""
    if raw is None:
        return UNDECODABLE
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return UNDECODABLE


class _Undecodable:
    def __repr__(self) -> str:
        return "UNDECODABLE"


UNDECODABLE: Any = _Undecodable()


def value_reason(raw: bytes | str | None, policy: Policy | None = None, now: datetime | None = None) -> str | None:
    """Why the Kafka value ``raw`` is a dead letter, or None (see :func:`message_reason`)."""
    return message_reason(decode(raw), policy, now)


# --- the Spark engine -------------------------------------------------------------------------------
# One from_json parse per record (the ``main`` schema: each field with its kind's type) decides a
# valid bar. When a field has the wrong type, Spark nulls that field (and only it) and sets
# ``_corrupt``; only then a second parse (``fallback``: every field as text) tells a field that is
# present with the wrong type from an absent one, and JSON that is no object from a wrong type.
def spark_schemas():
    """(main, fallback) schemas of the value's ``from_json`` parses (options
    :data:`SPARK_JSON_OPTIONS`): ``main`` reads integers as long, numbers as double, the rest as
    string, plus ``_corrupt`` (set when the value is not JSON or a field not of its type);
    ``fallback`` reads every field as text (NULL only when absent or ``null``) plus ``_corrupt``
    (set only when the value is not a JSON object)."""
    from pyspark.sql import types as T

    kinds = {"integer": T.LongType(), "number": T.DoubleType(), "text": T.StringType(), "time": T.StringType()}
    corrupt = T.StructField("_corrupt", T.StringType())
    main = T.StructType([T.StructField(s.name, kinds[s.kind]) for s in FIELDS.values()] + [corrupt])
    fallback = T.StructType([T.StructField(name, T.StringType()) for name in FIELDS] + [corrupt])
    return main, fallback


SPARK_JSON_OPTIONS = {"mode": "PERMISSIVE", "allowNonNumericNumbers": "true", "columnNameOfCorruptRecord": "_corrupt"}


def spark_now() -> Column:
    """The validating clock in epoch µs: in a stream, its micro-batch time."""
    from pyspark.sql import functions as F

    return F.unix_micros(F.current_timestamp())


class SparkEnv:
    """The fields of one parsed value as Spark columns (:meth:`value`: NULL unless of its kind);
    ``main`` and ``fallback`` are the two parses (see :func:`spark_schemas`); ``now_us`` is the
    clock (default :func:`spark_now`).

    A stream should pass ``now_us`` as a column computed in an earlier projection (as
    ``stockpipe.streaming.parse`` does), not the expression itself: Spark writes the micro-batch
    time into the generated Java code as a constant, so a validation that contains it is a new
    class every micro-batch, compiled again (~50-100 ms a batch for the whole rule table); a column
    reference keeps that code the same, and Spark's code cache serves it."""

    def __init__(self, main: Column, fallback: Column, policy: Policy, now_us: Column | None = None) -> None:
        self.main, self.fallback, self.policy = main, fallback, policy
        self.now_us = spark_now() if now_us is None else now_us
        self._values: dict[str, Column] = {}

    def present(self, name: str) -> Column:
        from pyspark.sql import functions as F

        if FIELDS[name].kind in ("text", "time"):  # a string field reads any JSON value, as text
            return self.main[name].isNotNull()
        return self.main[name].isNotNull() | F.coalesce(self.fallback[name].isNotNull(), F.lit(False))

    def value(self, name: str) -> Column:
        if name not in self._values:
            self._values[name] = spark_value(FIELDS[name], self.main)
        return self._values[name]

    def is_object(self) -> Column:
        from pyspark.sql import functions as F

        return F.coalesce(
            self.main.isNotNull() & (self.main["_corrupt"].isNull() | self.fallback["_corrupt"].isNull()),
            F.lit(False),
        )


def _anchored(pattern: str) -> str:
    return rf"^(?:{pattern})\z"


def spark_value(spec: FieldSpec, main: Column) -> Column:
    """The field's value (long, double, string, or epoch µs for times), NULL unless of its kind."""
    from pyspark.sql import functions as F

    column = main[spec.name]
    if spec.kind in ("integer", "number"):
        return column  # NULL unless the JSON value had the type (or is a NON_FINITE_STRINGS string)
    matches = column.rlike(_anchored(spec.pattern))
    if spec.kind == "text":
        return F.when(matches, column)
    return F.when(matches, F.unix_micros(F.try_to_timestamp(column)))


def spark_fallback(main: Column, text: Column) -> Column:
    """The second parse, only where ``main`` has ``_corrupt`` set (else NULL)."""
    from pyspark.sql import functions as F

    _main_schema, fallback_schema = spark_schemas()
    return F.when(main["_corrupt"].isNotNull(), F.from_json(text, fallback_schema, SPARK_JSON_OPTIONS))


def spark_reason(main: Column, fallback: Column, policy: Policy, now_us: Column | None = None) -> Column:
    """The reason (first broken rule) as a Spark column, NULL for a valid bar; ``main`` and
    ``fallback`` are the value's parses (:func:`spark_schemas`, :func:`spark_fallback`), ``now_us``
    the clock (see :class:`SparkEnv`)."""
    from pyspark.sql import functions as F

    env = SparkEnv(main, fallback, policy, now_us)
    expr = F.when(~env.is_object(), F.lit(NOT_AN_OBJECT))
    for rule in RULES:
        # a NULL check fails, as in Python
        expr = expr.when(~F.coalesce(rule.check.spark(env), F.lit(False)), F.lit(rule.reason))
    return expr


# --- encoding and dead letters ----------------------------------------------------------------------
def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=True).encode()


def dead_letter(raw: bytes | str, error: str, origin: dict[str, Any]) -> bytes:
    """A dead letter: the raw bytes (as text, or base64 when not UTF-8), the error and the origin."""
    if isinstance(raw, bytes):
        try:
            raw_text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            import base64

            raw_text, encoding = base64.b64encode(raw).decode(), "base64"
    else:
        raw_text, encoding = raw, "utf-8"
    return json.dumps(
        {
            "error": error,
            "raw": raw_text,
            "raw_encoding": encoding,
            "origin": origin,
            "failed_at": format_fetched_at(datetime.now(UTC)),
        }
    ).encode()
