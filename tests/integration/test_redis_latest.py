"""LatestWriter against a real Redis: the hashes and pub/sub messages the contract describes, written
many symbols per script call (the whole-market micro-batch), and never moved backwards."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from stockpipe.storage import redis_latest
from stockpipe.storage.redis_latest import BARS_CHANNEL, LatestWriter, _text, latest_message

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
ODD_FLOATS = [None, math.nan, -0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, 100.0, 1e-7, math.inf, -math.inf]


def row(i: int, minute: int = 0, close: float | None = None) -> dict:
    ts = T0 + timedelta(minutes=minute)
    return {
        "symbol": f"T{i:04d}",
        "ts": ts,
        "open": 10.0 + i,
        "high": 11.25 + i,
        "low": 9.5,
        "close": float(i) / 3 if close is None else close,
        "volume": 1234.0,
        "vwap": ODD_FLOATS[i % len(ODD_FLOATS)],
        "trades": 7 + i,
        "source": "sim-é" if i % 2 else "massive",
        "fetched_at": ts + timedelta(seconds=61, microseconds=i),
        "written_at": ts + timedelta(seconds=62, microseconds=i),
        "rsi_14": None if i % 3 else 55.5 + i / 7,
        "macd": math.nan if i % 4 == 0 else -1e-5 * i,
    }


def expected_hash(r: dict) -> dict[str, str]:
    """The contract's hash: every non-NULL value as text (floats by repr), ts_ms, NULLs absent."""
    message = latest_message(r)
    fields = {}
    for name, value in message.items():
        text = str(value) if name == "ts_ms" else _text(r.get(name, value))
        if text is not None:
            fields[name] = text
    return fields


def test_many_symbols_in_few_calls_write_the_contract_hashes_and_messages(base_settings, redis_client):
    rows = [row(i) for i in range(2 * redis_latest.SYMBOLS_PER_CALL + 37)]  # three script calls
    subscriber = redis_client.pubsub()
    subscriber.subscribe(BARS_CHANNEL)
    subscriber.get_message(timeout=5)  # the subscribe confirmation
    writer = LatestWriter(base_settings)
    try:
        assert writer.write(rows) == len(rows)
        for r in rows:
            stored = redis_client.hgetall(base_settings.redis_latest_key(r["symbol"]))
            assert stored == expected_hash(r), r["symbol"]
        # floats read back bit-identical (repr), including the odd ones
        assert float(redis_client.hget(base_settings.redis_latest_key("T0003"), "vwap")) == 5e-324
        assert redis_client.hget(base_settings.redis_latest_key("T0002"), "vwap") == "-0.0"
        received = []
        deadline = time.monotonic() + 10
        while len(received) < len(rows) and time.monotonic() < deadline:
            message = subscriber.get_message(timeout=1)
            if message and message["type"] == "message":
                received.append(message["data"])
        # each message is json.dumps of latest_message, text for text (NaN -> null, inf -> Infinity)
        assert received == [json.dumps(latest_message(r), separators=(",", ":")) for r in rows]
    finally:
        subscriber.close()
        writer.close()


def test_an_older_row_never_moves_a_symbol_back_and_a_newer_one_replaces_every_field(base_settings, redis_client):
    writer = LatestWriter(base_settings)
    try:
        key = base_settings.redis_latest_key("T0001")
        newer, older = row(1, minute=5, close=2.5), row(1, minute=4, close=1.5)
        assert writer.write([newer, row(2, minute=5)]) == 2
        assert writer.write([older, row(2, minute=6)]) == 1  # T0001 kept, T0002 advanced
        assert redis_client.hget(key, "close") == "2.5"
        assert redis_client.hget(base_settings.redis_latest_key("T0002"), "ts_ms") == str(
            int((T0 + timedelta(minutes=6)).timestamp() * 1000)
        )
        # a newer row whose indicator became NULL: the field goes (the hash is rewritten whole)
        newest = row(1, minute=6, close=3.5) | {"rsi_14": None}
        newer_with_rsi = row(3, minute=5) | {"symbol": "T0001", "rsi_14": 42.0}
        newer_with_rsi["ts"] = T0 + timedelta(minutes=5, seconds=30)
        assert writer.write([newer_with_rsi]) == 1
        assert redis_client.hget(key, "rsi_14") == "42.0"
        assert writer.write([newest]) == 1
        assert not redis_client.hexists(key, "rsi_14")
        assert redis_client.hgetall(key) == expected_hash(newest)
        # the same ts again is written (at least as new), an older one is not
        assert writer.write([newest]) == 1
        assert writer.write([older]) == 0
    finally:
        writer.close()


def test_rows_of_different_shapes_in_one_write(base_settings, redis_client):
    writer = LatestWriter(base_settings)
    try:
        plain = row(5)
        short = {k: v for k, v in row(6).items() if k not in ("rsi_14", "macd")}
        with_ts_ms = row(7) | {"ts_ms": 0}
        assert writer.write([plain, short, with_ts_ms]) == 3
        for r in (plain, short, with_ts_ms):
            assert redis_client.hgetall(base_settings.redis_latest_key(r["symbol"])) == expected_hash(r)
    finally:
        writer.close()


def test_an_unreachable_redis_fails_the_write_once_and_leaves_nothing_queued(base_settings):
    down = base_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    writer = LatestWriter(down)
    try:
        rows = [row(i) for i in range(3 * redis_latest.SYMBOLS_PER_CALL)]
        with pytest.raises(redis.exceptions.ConnectionError):
            writer.write(rows)
        # the calls queued behind the failed one were cancelled: the sender is idle at once
        assert writer._sender.submit(lambda: "idle").result(timeout=5) == "idle"
    finally:
        writer.close()


def test_an_older_version_of_the_same_bar_never_replaces_a_newer_one(base_settings, redis_client):
    """The backfill read version 1 of bar T (latest_rows), the stream then stored version 2 (newer
    fetched_at) and wrote Redis; the backfill's write lands last: Redis must keep version 2."""
    writer = LatestWriter(base_settings)
    try:
        key = base_settings.redis_latest_key("T0001")
        version_1 = row(1, minute=5, close=1.5)
        version_2 = version_1 | {"close": 2.5, "fetched_at": version_1["fetched_at"] + timedelta(seconds=30)}
        assert writer.write([version_2]) == 1
        assert writer.write([version_1]) == 0
        assert redis_client.hgetall(key) == expected_hash(version_2)
        # the same version again (e.g. its indicators recomputed) lands; a newer one too
        recomputed = version_2 | {"rsi_14": 61.0}
        assert writer.write([recomputed]) == 1
        assert redis_client.hget(key, "rsi_14") == "61.0"
        # fetched_at texts with and without microseconds compare as instants, not as strings
        whole = version_1 | {"ts": T0 + timedelta(minutes=6), "fetched_at": T0 + timedelta(minutes=7)}
        assert whole["fetched_at"].microsecond == 0
        earlier = whole | {"close": 0.5, "fetched_at": whole["fetched_at"] - timedelta(microseconds=1)}
        later = whole | {"close": 9.5, "fetched_at": whole["fetched_at"] + timedelta(microseconds=1)}
        assert writer.write([whole]) == 1
        assert writer.write([earlier]) == 0
        assert writer.write([later]) == 1
        assert writer.write([whole]) == 0
        assert redis_client.hget(key, "close") == "9.5"
        # a row without fetched_at is ordered by ts alone (as before)
        assert writer.write([{k: v for k, v in whole.items() if k != "fetched_at"}]) == 1
    finally:
        writer.close()
