"""Malformed and hostile messages in the bars topic, interleaved with a steady series.

Every hostile record must land in the dead-letter topic exactly once, with its raw bytes, a
reason and its Kafka origin; the valid bars around them must be stored exactly as sent with
TA-Lib-exact indicators, as if the hostile records had never been there. That includes records
that are valid JSON of the right shape but out of contract (invariant 6): trades beyond the int4
column or not an integer, a vwap of the wrong type, a ts or fetched_at in 2999, a ts in 1970, a
symbol off the watchlist. None of them may be stored, pin a Redis ``latest`` key, or change what
``python -m stockpipe.verify`` reports; verify gives each the reason the stream gave it.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import pytest

from stockpipe import contract, verify
from tests.integration import streamkit as kit
from tests.reliability import harness

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.spark]

SQL = "'; DROP TABLE market.bars_1m; --"


def hostile_messages(good: dict) -> list[tuple[bytes | None, bytes | None, str | None]]:
    """(key, value, expected reason substring or None when any reason will do)."""

    def variant(**changes) -> bytes:
        bar = dict(good)
        for name, value in changes.items():
            if value is ...:
                bar.pop(name)
            else:
                bar[name] = value
        return json.dumps(bar, allow_nan=True).encode()

    key = good["symbol"].encode()
    huge_text = json.dumps(dict(good, source="x" * 900_000)).encode()  # a ~0.9 MB record
    return [
        # huge values
        (key, variant(close=...)[:-1] + b', "close": 1e400}', "not a finite number"),
        (key, variant(volume=...)[:-1] + b', "volume": 1e999}', "volume is not a finite number"),
        (key, variant(open=-1e308), "open must be positive"),
        (key, variant(open=1e300, high=1e300, close=1e300), "a price is above 1e+09"),
        (key, variant(volume=1e300), "volume is above 1e+15"),
        (key, huge_text.replace(b'"v": 1', b'"v": 99999999999999999999999'), None),
        # wrong types
        (key, variant(close="12.5abc"), "non-numeric close"),
        (key, variant(open=True), None),
        (key, variant(volume=[1, 2]), None),
        (key, variant(high={"$gt": 0}), None),
        (key, variant(ts=1764000000000), None),
        (key, variant(symbol=12345), "symbol is not a ticker"),
        (key, variant(v="1"), None),
        (key, b'"just a string"', "not a JSON object"),
        (key, b"null", "not a JSON object"),
        (key, b"", "not a JSON object"),
        (key, None, "not a JSON object"),  # a tombstone
        # SQL-looking strings
        (key, variant(symbol="AAPL" + SQL), "symbol is not a ticker"),
        (key, variant(ts="2026-11-24T14:31:00Z" + SQL), "unparseable ts"),
        (SQL.encode(), variant(symbol="x); DELETE FROM market.bars_1m; --"), "symbol is not a ticker"),
        # NaN / Inf
        (key, variant(close=float("nan")), "close is not a finite number"),
        (key, variant(high=float("inf")), "high is not a finite number"),
        (key, variant(low=float("-inf")), "low is not a finite number"),
        (key, variant(vwap=float("nan")), "vwap is not a positive finite number"),
        # negative volume / trades
        (key, variant(volume=-1.0), "volume is negative"),
        (key, variant(trades=-3), "trades is not a whole number"),
        # unknown / invalid symbols
        (b"aapl", variant(symbol="aapl"), "symbol is not a ticker"),
        (key, variant(symbol=""), "symbol is not a ticker"),
        (key, variant(symbol="A" * 40), "symbol is not a ticker"),
        (key, variant(symbol="ÄPFEL"), "symbol is not a ticker"),
        (key, variant(symbol=...), "missing field symbol"),
        # invalid UTF-8 (in the whole value, inside a string, in the key)
        (key, b"\xff\xfe\xfd" + variant(), "not a JSON object"),
        (key, variant(symbol="AA@PL").replace(b"@", b"\xc3\x28"), "symbol is not a ticker"),
        (b"\xff\xfe", b"\x80\x81\x82{", "not a JSON object"),
        # structurally broken
        (key, b'{"v": 1, "symbol": "AAPL", "ts": ', "not a JSON object"),
        (key, b"[" * 5000 + b"]" * 5000, "not a JSON object"),
        # valid JSON, out of contract (issue 11): each a variant of a bar that IS stored, so a
        # stored variant would change its values (or add a row, or pin Redis latest)
        (key, variant(trades=3_000_000_000), "trades is not a whole number from 0 to 2147483647"),
        (key, variant(trades=1.5), "trades is not a whole number from 0 to 2147483647"),
        (key, variant(vwap="abc"), "vwap is not a positive finite number"),
        (key, variant(ts="2999-01-01T00:00:00Z"), "ts is more than 2 minutes in the future"),
        (key, variant(fetched_at="2999-01-01T00:00:00.000000Z"), "fetched_at is more than 2 minutes in the future"),
        (key, variant(ts="1970-01-01T00:00:00Z"), "ts is older than the oldest bar kept"),
        (b"ZZZQ", variant(symbol="ZZZQ"), "symbol is not on the watchlist"),
    ]


def test_hostile_messages_go_to_the_dlq_and_nothing_else_changes(
    spark, settings, pg_conn, redis_client, tmp_path, monkeypatch
):
    s = settings.model_copy(
        update={"stream_checkpoint": str(tmp_path / "checkpoint"), "stream_max_offsets_per_trigger": 2000}
    )
    # The stream's contract policy is this test's settings' (watchlist + the test database's
    # market.symbols), whatever settings the query passes to parse_records.
    from stockpipe.streaming import parse

    policy = contract.Policy.load(s)
    monkeypatch.setattr(parse, "contract_policy", lambda _settings=None: policy)
    series = {sym: kit.random_bars(sym, kit.SESSION_OPEN, 80, seed=300 + n) for n, sym in enumerate(kit.SYMBOLS)}
    # A valid bar whose free-text field looks like SQL is data: stored verbatim.
    series["MSFT"][40] = dict(series["MSFT"][40], source="simulator" + SQL)
    hostile = hostile_messages(series["AAPL"][0])
    script = kit.Script()
    messages: list[tuple[bytes | None, bytes | None]] = []
    h = 0
    for i in range(80):
        for sym in kit.SYMBOLS:
            script.bar(series[sym][i])
            messages.append(script.messages[-1])
        if i % 2 == 0 and h < len(hostile):  # hostile records spread over the whole series
            messages.append(hostile[h][:2])
            h += 1
    messages += [m[:2] for m in hostile[h:]]

    rules = harness.add_alert_rules(s)  # a hostile record that got through could fire (or retract) one

    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": s.kafka_bootstrap, "linger.ms": 5, "message.max.bytes": 2_000_000})
    for key, value in messages:
        producer.produce(s.kafka_topic, key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0

    started = time.monotonic()
    kit.drain(spark, s)
    drained_s = time.monotonic() - started

    result = harness.Result(f"hostile messages ({len(hostile)} kinds) in a steady series")
    frame, failures = harness.measure(s, script, result)
    failures += harness.measure_alerts(s, frame, rules, result)
    letters = kit.dead_letters(s, expected=len(hostile), timeout_s=60)
    result.dead_letters = len(letters)
    result.recover_s = None
    result.notes = f"{len(letters)}/{len(hostile)} in the DLQ; drained in {drained_s:.1f} s"
    harness.record(result)
    if failures:
        raise failures[0]
    assert result.lost == 0 and result.duplicated == 0 and result.extra["unexpected_rows"] == 0
    assert result.alerts and result.alerts_missed == 0 and result.alerts_duplicated == 0

    assert len(letters) == len(hostile), [x["error"] for x in letters]
    by_raw: dict[bytes, list[dict]] = {}
    for letter in letters:
        raw = base64.b64decode(letter["raw"]) if letter["raw_encoding"] == "base64" else letter["raw"].encode()
        by_raw.setdefault(raw, []).append(letter)
        assert letter["error"], letter
        assert letter["origin"]["topic"] == s.kafka_topic and letter["origin"]["offset"] >= 0
    by_raw_all = {raw: list(found) for raw, found in by_raw.items()}
    for _key, value, reason in hostile:
        matches = by_raw.get(value or b"", [])
        assert matches, f"no dead letter for {value[:80] if value else value!r}"
        letter = matches.pop(0)
        if reason is not None:
            assert reason in letter["error"], f"{value[:80]!r}: {letter['error']!r} does not say {reason!r}"
    # The tables the SQL-looking strings name are intact, and the odd source is stored verbatim.
    (sources,) = pg_conn.execute(
        "SELECT array_agg(DISTINCT source) FROM market.bars_1m WHERE symbol = 'MSFT'"
    ).fetchone()
    assert "simulator" + SQL in sources
    (batches,) = pg_conn.execute("SELECT sum(dead_letters) FROM ops.stream_batches").fetchone()
    assert batches == len(hostile)

    # Nothing of the out-of-contract records is stored or pins Redis: every symbol's latest is its
    # last scripted bar (not 2999), the unknown symbol has no row and no key.
    for sym in kit.SYMBOLS:
        assert redis_client.hget(f"stockpipe:latest:{sym}", "ts") == series[sym][-1]["ts"], sym
    assert not redis_client.exists("stockpipe:latest:ZZZQ")
    (rows_outside,) = pg_conn.execute(
        "SELECT count(*) FROM market.bars_1m WHERE symbol <> ALL(%s) OR ts < %s OR ts > %s OR trades < 0"
        " OR fetched_at > now() + interval '2 minutes'",
        (kit.SYMBOLS, kit.SESSION_OPEN, kit.SESSION_OPEN + timedelta(minutes=79)),
    ).fetchone()
    assert rows_outside == 0

    # verify reads the same topic fast (no enumeration up to 2999), judges every record as the
    # stream did (same reason), and sees the five symbols' 80 minutes without a gap.
    started = time.monotonic()
    values = verify.read_topic(s, s.kafka_topic, None, timeout_s=60, raw=True)
    reports = verify.build_reports(values, "demo", policy)
    assert time.monotonic() - started < 60
    assert set(reports) == set(kit.SYMBOLS)
    assert all(len(r.minutes) == 80 and r.gaps == [] and r.duplicates == 0 for r in reports.values())
    assert sum(reports.invalid.values()) == len(hostile)
    for value, letters_for_value in by_raw_all.items():
        for letter in letters_for_value:
            assert contract.value_reason(value or None, policy) == letter["error"], value[:80]
