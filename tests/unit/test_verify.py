"""python -m stockpipe.verify judges only contract-valid bars and never lists an unbounded span."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from stockpipe import contract, verify

START = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)


def bar(minute: int, **changes) -> dict:
    message = {
        "v": 1, "symbol": "AAPL", "ts": contract.format_ts(START + timedelta(minutes=minute)), "open": 10.0,
        "high": 11.0, "low": 9.5, "close": 10.5, "volume": 1200, "vwap": 10.2, "trades": 31,
        "source": "simulator", "fetched_at": "2026-11-24T15:00:01.000000Z",
    }  # fmt: skip
    message.update(changes)
    return message


@pytest.mark.timeout(30)
def test_a_year_2999_bar_is_counted_invalid_and_verify_finishes_fast():
    messages = [bar(0), bar(1), bar(3), bar(4, ts="2999-01-01T00:00:00Z"), bar(5, fetched_at="2999-01-01T00:00:00Z")]
    started = time.monotonic()
    reports = verify.build_reports(messages, "demo")  # was: ~510 million expected minutes, a hang
    assert time.monotonic() - started < 5
    assert reports["AAPL"].last == START + timedelta(minutes=3)
    assert [g.minute for g in reports["AAPL"].gaps] == [32]
    assert reports.invalid == {
        "ts is more than 2 minutes in the future": 1,
        "fetched_at is more than 2 minutes in the future": 1,
    }


@pytest.mark.timeout(30)
def test_raw_records_are_judged_like_the_stream_judges_them():
    values = [
        json.dumps(bar(0)).encode(),
        json.dumps(bar(1)).encode(),
        json.dumps(bar(2, trades=3_000_000_000)).encode(),
        json.dumps(bar(2, trades=1.5)).encode(),
        json.dumps(bar(2, vwap="abc")).encode(),
        json.dumps(bar(2, ts="1970-01-01T00:00:00Z")).encode(),
        json.dumps(bar(2, symbol="ZZZQ")).encode(),
        b"[" * 5000 + b"]" * 5000,  # deeper than Python's recursion limit
        b"\xff\xfe not json",
        None,  # a tombstone
    ]
    policy = contract.Policy(symbols=frozenset({"AAPL"}))
    reports = verify.build_reports(values, "demo", policy)
    assert set(reports) == {"AAPL"} and reports["AAPL"].messages == 2 and reports["AAPL"].gaps == []
    assert reports.invalid == {
        "trades is not a whole number from 0 to 2147483647": 2,
        "vwap is not a positive finite number (at most 1e+09)": 1,
        "ts is older than the oldest bar kept (STOCKPIPE_RETENTION_DAYS, STOCKPIPE_OLDEST_BAR_DATE)": 1,
        "symbol is not on the watchlist (STOCKPIPE_WATCHLIST, market.symbols)": 1,
        "value is not a JSON object": 3,
    }


@pytest.mark.timeout(30)
def test_a_span_beyond_the_maximum_stops_with_a_sentence():
    old_but_valid = bar(0, ts="2000-01-03T14:30:00Z")
    started = time.monotonic()
    with pytest.raises(verify.SpanTooLong) as stopped:
        verify.build_reports([old_but_valid, bar(1)], "nyse")
    assert time.monotonic() - started < 5
    sentence = str(stopped.value)
    assert "AAPL's valid bars span 9822 days" in sentence and "--since" in sentence and "\n" not in sentence
    with pytest.raises(verify.SpanTooLong):
        verify.build_reports([bar(0)], "demo", max_span_days=100_000)
    with pytest.raises(verify.SpanTooLong):
        verify.expected_minutes(START - timedelta(days=400), START, "demo")
    assert len(verify.expected_minutes(START, START + timedelta(days=1), "demo")) == 1441


def test_cli_refuses_a_huge_max_span_before_reading_kafka():
    with pytest.raises(SystemExit) as stopped:
        verify.main(["--max-span-days", "100000"])
    assert str(stopped.value) == "--max-span-days 100000: use 1 to 366."
