"""The contract's one rule table, run by both engines on the same cases.

Every case of :data:`CASES` is judged by the Python engine (the producer's, the backfill's and
verify's check) and by the Spark engine (the stream's column expression): both must give the
expected reason, the same one. The Spark half needs a local SparkSession (marked ``spark``).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from stockpipe import contract
from stockpipe.contract import Policy

NOW = datetime.now(UTC)
MINUTE = NOW.replace(second=0, microsecond=0)
POLICY = Policy(symbols=frozenset({"AAPL", "MSFT"}))
ANY_SYMBOL = Policy(symbols=None)
RETENTION_30D = Policy(symbols=frozenset({"AAPL"}), retention=timedelta(days=30))

GOOD = {
    "v": 1, "symbol": "AAPL", "ts": "2026-11-24T14:31:00Z", "open": 10.0, "high": 11.0, "low": 9.5,
    "close": 10.5, "volume": 1200, "vwap": 10.2, "trades": 31, "source": "simulator",
    "fetched_at": "2026-11-24T14:32:01.123456Z",
}  # fmt: skip

# reasons
VERSION = "unsupported or missing contract version v (expected 1)"
NOT_OBJECT = "value is not a JSON object"
NOT_TICKER = "symbol is not a ticker (A-Z, 0-9, '.', '-', at most 12)"
NOT_LISTED = "symbol is not on the watchlist (STOCKPIPE_WATCHLIST, market.symbols)"
BAD_TS = "missing or unparseable ts (ISO-8601 UTC expected, e.g. 2026-11-24T14:31:00Z)"
FUTURE_TS = "ts is more than 2 minutes in the future"
OLD_TS = "ts is older than the oldest bar kept (STOCKPIPE_RETENTION_DAYS, STOCKPIPE_OLDEST_BAR_DATE)"
BAD_FETCHED = "missing or unparseable fetched_at (ISO-8601 UTC expected)"
FUTURE_FETCHED = "fetched_at is more than 2 minutes in the future"
VWAP = "vwap is not a positive finite number (at most 1e+09)"
TRADES = "trades is not a whole number from 0 to 2147483647"
SOURCE = "source is not a name (a letter, then at most 63 printable characters)"


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Case:
    id: str
    value: bytes | None  # the Kafka value
    reason: str | None
    policy: Policy = POLICY
    message: dict | None = field(default=None)  # the dict the producer would validate, if any


def bar(id: str, reason: str | None, policy: Policy = POLICY, **changes) -> Case:
    message = dict(GOOD)
    for name, value in changes.items():
        if value is ...:
            message.pop(name)
        else:
            message[name] = value
    return Case(id, json.dumps(message, allow_nan=True).encode(), reason, policy, message)


def raw(id: str, value: bytes | None, reason: str | None, policy: Policy = POLICY) -> Case:
    return Case(id, value, reason, policy)


def text(changes: str) -> bytes:
    """GOOD with some fields replaced by literal JSON text (for tokens json.dumps can't write)."""
    body = json.dumps({k: v for k, v in GOOD.items() if f'"{k}"' not in changes})
    return (body[:-1] + ", " + changes + "}").encode()


CASES = [
    # valid bars
    bar("valid", None),
    bar("valid_without_vwap_and_trades", None, vwap=..., trades=...),
    bar("valid_null_vwap_and_trades", None, vwap=None, trades=None),
    bar("valid_trades_at_int4_max", None, trades=2_147_483_647),
    bar("valid_ts_with_offset_and_fraction", None, ts="2026-11-24T14:31:00.000+00:00"),
    bar("valid_ts_one_minute_ahead", None, ts=iso(MINUTE + timedelta(minutes=1))),
    bar("valid_sql_looking_source_is_data", None, source="simulator'; DROP TABLE market.bars_1m; --"),
    bar("valid_integer_prices", None, open=10, high=11, low=9, close=10, volume=0),
    bar("valid_any_symbol_when_allowed", None, ANY_SYMBOL, symbol="ZZZQ"),
    bar("valid_within_retention", None, RETENTION_30D, ts=iso(MINUTE - timedelta(days=29))),
    # issue 11: out-of-contract values that were stored (or silently NULLed)
    bar("trades_3e9_wraps_int4", TRADES, trades=3_000_000_000),
    bar("trades_1_5", TRADES, trades=1.5),
    bar("trades_1_0_is_not_a_json_integer", TRADES, trades=1.0),
    bar("trades_string", TRADES, trades="31"),
    bar("trades_boolean", TRADES, trades=True),
    bar("trades_negative", TRADES, trades=-3),
    bar("trades_beyond_int64", TRADES, trades=10**20),
    bar("vwap_abc", VWAP, vwap="abc"),
    bar("vwap_numeric_string", VWAP, vwap="10.2"),
    bar("vwap_nan", VWAP, vwap=float("nan")),
    bar("vwap_zero", VWAP, vwap=0),
    bar("vwap_above_max", VWAP, vwap=2e9),
    bar("ts_2999_pins_redis_latest", FUTURE_TS, ts="2999-01-01T00:00:00Z"),
    bar("ts_an_hour_ahead", FUTURE_TS, ts=iso(MINUTE + timedelta(hours=1))),
    bar("fetched_at_2999_wins_every_correction", FUTURE_FETCHED, fetched_at="2999-01-01T00:00:00.000000Z"),
    bar("ts_1970_far_in_the_past", OLD_TS, ts="1970-01-01T00:00:00Z"),
    bar("ts_year_1", OLD_TS, ts="0001-01-01T00:00:00Z"),
    bar("ts_older_than_retention", OLD_TS, RETENTION_30D, ts=iso(MINUTE - timedelta(days=31))),
    bar("unknown_symbol", NOT_LISTED, symbol="ZZZQ"),
    bar("symbol_with_trailing_newline", NOT_TICKER, symbol="AAPL\n"),
    # version
    bar("version_2", VERSION, v=2),
    bar("version_float", VERSION, v=1.0),
    bar("version_boolean", VERSION, v=True),
    bar("version_string", VERSION, v="1"),
    bar("version_missing", VERSION, v=...),
    raw("empty_object", b"{}", VERSION),
    # symbol
    bar("symbol_missing", "missing field symbol", symbol=...),
    bar("symbol_lower_case", NOT_TICKER, symbol="aapl"),
    bar("symbol_number", NOT_TICKER, symbol=12345),
    bar("symbol_boolean", NOT_TICKER, symbol=True),
    bar("symbol_object", NOT_TICKER, symbol={"$ne": ""}),
    bar("symbol_sql", NOT_TICKER, symbol="AAPL'; DROP TABLE x; --"),
    bar("symbol_too_long", NOT_TICKER, symbol="A" * 13),
    bar("symbol_non_ascii", NOT_TICKER, symbol="ÄPFEL"),
    raw("symbol_nan_token", text('"symbol": NaN'), NOT_TICKER),
    # ts
    bar("ts_not_on_a_minute", "ts is not on a minute boundary", ts="2026-11-24T14:31:30Z"),
    bar("ts_fraction_not_on_a_minute", "ts is not on a minute boundary", ts="2026-11-24T14:31:00.5Z"),
    bar("ts_word", BAD_TS, ts="yesterday"),
    bar("ts_epoch_millis", BAD_TS, ts=1764000000000),
    bar("ts_without_zone", BAD_TS, ts="2026-11-24T14:31:00"),
    bar("ts_with_space", BAD_TS, ts="2026-11-24 14:31:00Z"),
    bar("ts_other_zone", BAD_TS, ts="2026-11-24T09:31:00-05:00"),
    bar("ts_february_30", BAD_TS, ts="2026-02-30T00:00:00Z"),
    bar("ts_hour_24", BAD_TS, ts="2026-11-24T24:00:00Z"),
    bar("ts_year_0", BAD_TS, ts="0000-01-01T00:00:00Z"),
    bar("ts_trailing_sql", BAD_TS, ts="2026-11-24T14:31:00Z'; --"),
    bar("ts_missing", BAD_TS, ts=...),
    # fetched_at
    bar("fetched_at_word", BAD_FETCHED, fetched_at="now"),
    bar("fetched_at_missing", BAD_FETCHED, fetched_at=...),
    # prices and volume
    bar("close_missing", "missing or non-numeric close", close=...),
    bar("close_numeric_string", "missing or non-numeric close", close="10.5"),
    # the strings Spark's reader takes for non-finite numbers are that, in both engines
    bar("close_quoted_nan", "close is not a finite number", close="NaN"),
    bar("close_quoted_infinity", "close is not a finite number", close="Infinity"),
    bar("close_quoted_plus_inf", "close is not a finite number", close="+INF"),
    bar("close_quoted_inf_word", "missing or non-numeric close", close="INF"),
    bar("vwap_quoted_nan", VWAP, vwap="NaN"),
    bar("open_boolean", "missing or non-numeric open", open=True),
    bar("high_object", "missing or non-numeric high", high={"$gt": 0}),
    bar("volume_array", "missing or non-numeric volume", volume=[1, 2]),
    bar("close_nan", "close is not a finite number", close=float("nan")),
    bar("high_infinity", "high is not a finite number", high=float("inf")),
    bar("low_minus_infinity", "low is not a finite number", low=float("-inf")),
    raw("close_1e400", text('"close": 1e400'), "close is not a finite number"),
    bar("close_huge_integer", "close is not a finite number", close=10**400),
    bar("low_missing", "missing or non-numeric low", low=None),
    bar("open_infinity", "open is not a finite number", open=float("inf")),
    bar("volume_nan", "volume is not a finite number", volume=float("nan")),
    bar("open_negative", "open must be positive", open=-1e308),
    bar("close_zero", "close must be positive", close=0),
    bar("low_zero", "low must be positive", low=0.0),
    bar("high_below", "high is below max(open, close)", high=10.4),
    bar("low_above", "low is above min(open, close)", low=10.1),
    bar("volume_negative", "volume is negative", volume=-1),
    bar("price_above_max", "a price is above 1e+09", open=1e300, high=1e300, close=1e300),
    bar("volume_above_max", "volume is above 1e+15", volume=1e300),
    # source
    bar("source_missing", "missing field source", source=...),
    bar("source_empty", SOURCE, source=""),
    bar("source_number", SOURCE, source=5),
    bar("source_boolean", SOURCE, source=True),
    bar("source_control_character", SOURCE, source="sim\nulator"),
    # not JSON objects
    raw("tombstone", None, NOT_OBJECT),
    raw("empty", b"", NOT_OBJECT),
    raw("null", b"null", NOT_OBJECT),
    raw("string", b'"just a string"', NOT_OBJECT),
    raw("array", b"[1, 2, 3]", NOT_OBJECT),
    raw("array_of_a_bar", b"[" + json.dumps(GOOD).encode() + b"]", NOT_OBJECT),
    raw("truncated", b'{"v": 1, "symbol": "AAPL", "ts": ', NOT_OBJECT),
    raw("deep_nesting", b"[" * 5000 + b"]" * 5000, NOT_OBJECT),
    raw("invalid_utf8_prefix", b"\xff\xfe\xfd" + json.dumps(GOOD).encode(), NOT_OBJECT),
    raw(
        "invalid_utf8_in_symbol", json.dumps(dict(GOOD, symbol="AA@PL")).encode().replace(b"@", b"\xc3\x28"), NOT_TICKER
    ),  # fmt: skip
]
CASES_BY_ID = {case.id: case for case in CASES}
assert len(CASES_BY_ID) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_python_engine(case: Case):
    assert contract.value_reason(case.value, case.policy, NOW) == case.reason
    if case.message is not None:  # the producer validates the dict it is about to encode
        assert contract.message_reason(case.message, case.policy, NOW) == case.reason


@pytest.fixture(scope="module")
def spark_reasons() -> dict[str, str | None]:
    """Every case through the stream's parse (one DataFrame per policy): case id → error."""
    from stockpipe.config import load_settings
    from stockpipe.streaming.parse import parse_records
    from stockpipe.streaming.spark import spark_session

    spark = spark_session(load_settings(), app_name="stockpipe-tests")
    reasons: dict[str, str | None] = {}
    for policy in {case.policy for case in CASES}:
        cases = [case for case in CASES if case.policy == policy]
        rows = [(case.id.encode(), case.value, "t", 0, n) for n, case in enumerate(cases)]
        frame = spark.createDataFrame(rows, "key binary, value binary, topic string, partition int, offset long")
        for row in parse_records(frame, policy=policy).select("raw_key", "koffset", "error").collect():
            reasons[cases[row.koffset].id] = row.error
    return reasons


@pytest.mark.spark
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_spark_engine(case: Case, spark_reasons):
    assert spark_reasons[case.id] == case.reason


@pytest.mark.spark
def test_spark_keeps_the_valid_bar_values(spark_reasons):
    from stockpipe.config import load_settings
    from stockpipe.streaming.parse import parse_records
    from stockpipe.streaming.spark import spark_session

    spark = spark_session(load_settings(), app_name="stockpipe-tests")
    frame = spark.createDataFrame([(b"AAPL", json.dumps(GOOD).encode(), "t", 0, 0)],
                                  "key binary, value binary, topic string, partition int, offset long")  # fmt: skip
    row = parse_records(frame, policy=POLICY).collect()[0]
    assert row.error is None and row.symbol == "AAPL" and row.source == "simulator"
    assert row.ts_ms == int(datetime(2026, 11, 24, 14, 31, tzinfo=UTC).timestamp() * 1000)
    assert row.fetched_us == int(datetime(2026, 11, 24, 14, 32, 1, 123456, tzinfo=UTC).timestamp() * 1e6)
    assert (row.open, row.high, row.low, row.close, row.volume, row.vwap, row.trades) == (
        10.0, 11.0, 9.5, 10.5, 1200.0, 10.2, 31,
    )  # fmt: skip


def test_every_rule_has_one_sentence_and_a_case():
    reasons = [rule.reason for rule in contract.RULES] + [contract.NOT_AN_OBJECT]
    assert len(set(reasons)) == len(reasons)
    for reason in reasons:
        assert reason and "\n" not in reason and not reason.endswith(".")
    covered = {case.reason for case in CASES}
    assert set(reasons) - covered == set(), "a rule without a case in CASES"


def test_invalid_reason_uses_the_given_settings_watchlist():
    from stockpipe.config import load_settings

    settings = load_settings(watchlist=["NVDA"])
    assert contract.invalid_reason(dict(GOOD, symbol="NVDA"), settings) is None
    assert contract.invalid_reason(GOOD, settings) == NOT_LISTED
    assert contract.invalid_reason(GOOD, settings.model_copy(update={"accept_any_symbol": True})) is None
    # without settings (the backfill, a rerun: symbols chosen by the caller) any ticker is accepted
    assert contract.invalid_reason(dict(GOOD, symbol="ZZZQ")) is None
    assert contract.invalid_reason(dict(GOOD, ts="2999-01-01T00:00:00Z")) == FUTURE_TS


def test_retention_moves_the_oldest_ts():
    from stockpipe.config import load_settings

    settings = load_settings(retention_days=7, oldest_bar_date="2000-01-01")
    policy = Policy.from_settings(settings)
    eight_days_ago = dict(GOOD, ts=iso(MINUTE - timedelta(days=8)), fetched_at=iso(MINUTE))
    assert contract.message_reason(eight_days_ago, policy, NOW) == OLD_TS
    assert contract.message_reason(dict(eight_days_ago, ts=iso(MINUTE - timedelta(days=6))), policy, NOW) is None
    floor = Policy.from_settings(load_settings(oldest_bar_date="2000-01-01"))
    assert contract.message_reason(dict(GOOD, ts="1999-12-31T23:59:00Z"), floor, NOW) == OLD_TS
    assert contract.message_reason(dict(GOOD, ts="2000-01-01T00:00:00Z"), floor, NOW) is None


def test_python_check_is_fast():
    started = time.perf_counter()
    for _ in range(2000):
        contract.message_reason(GOOD, POLICY, NOW)
    assert time.perf_counter() - started < 1.0  # the producer checks every bar it sends


def test_dead_letter_keeps_raw_bytes_error_and_origin():
    raw_bytes = b"\xff\xfe not utf-8"
    letter = json.loads(contract.dead_letter(raw_bytes, "bad json", {"topic": "t", "partition": 1, "offset": 7}))
    assert letter["raw_encoding"] == "base64"
    assert letter["error"] == "bad json" and letter["origin"]["offset"] == 7
    assert base64.b64decode(letter["raw"]) == raw_bytes
