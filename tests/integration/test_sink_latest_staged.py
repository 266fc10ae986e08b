"""The sink's Redis fast path (issue 14) against a real PostgreSQL and Redis: each symbol's newest
row, encoded from the operator's rows while PostgreSQL works, with ``written_at`` spliced in after
the commit, lands in Redis text for text as the existing path writes the row latest_1m holds — and
every row that is not the staged one (re-emitted, stale, late, a -0.0 the indicators upsert kept as
0.0, ...) goes the existing way."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest

from stockpipe.indicators import INDICATOR_COLUMNS
from stockpipe.storage import redis_latest
from stockpipe.storage.postgres import PostgresSink, latest_candidates, staged_latest
from stockpipe.storage.redis_latest import BARS_CHANNEL, LatestWriter
from stockpipe.streaming.operator import _PANDAS_TYPES
from stockpipe.streaming.sink import BatchWriter

pytestmark = pytest.mark.integration

T0 = int(pd.Timestamp("2026-11-25 15:00", tz="UTC").value // 1_000_000)
MINUTE = 60_000
ODD = [math.nan, -0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, 100.0, 1e-7, math.inf, -math.inf, 1 / 3]
FAST = [f"F{i:04d}" for i in range(2 * redis_latest.SYMBOLS_PER_CALL + 21)]


def bar(symbol: str, ts_ms: int, i: int = 0, *, kind: str = "bar", changed: bool = True, fetched_s: float = 61.0):
    row = {
        "kind": kind, "symbol": symbol, "ts_ms": ts_ms, "open": 10.0 + i / 7, "high": 11.0 + i, "low": 9.5,
        "close": ODD[1 + (i + 4) % (len(ODD) - 1)] if i % 3 else 10.25 + i / 3, "volume": float(1000 + i),
        "vwap": ODD[i % len(ODD)], "trades": None if i % 5 == 0 else 7 + i,
        "source": "sim-é" if i % 2 else "massive", "fetched_us": ts_ms * 1000 + int(fetched_s * 1e6) + i,
        "bar_changed": changed, "epoch": None,
    }  # fmt: skip
    if not changed:  # a re-emitted row: the operator sends no bar values
        row.update(open=math.nan, high=math.nan, low=math.nan)
    for n, name in enumerate(INDICATOR_COLUMNS):
        row[name] = math.nan if (n + i) % 5 == 0 else ODD[(n + i) % len(ODD)] * (n + 1) or 1.5
    return row


def frame(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    return out.astype({name: _PANDAS_TYPES[name] for name in out.columns if _PANDAS_TYPES[name] is not object})


def captured(redis_client, subscriber, symbols: list[str]) -> tuple[dict, dict]:
    """Every latest hash of ``symbols`` and the messages published (by symbol, text)."""
    messages: dict[str, list[str]] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = subscriber.get_message(timeout=0.5)
        if message is None:
            break
        if message["type"] == "message":
            messages.setdefault(json.loads(message["data"])["symbol"], []).append(message["data"])
    hashes = {s: redis_client.hgetall(f"stockpipe:latest:{s}") for s in symbols}
    return hashes, messages


def test_staged_rows_land_in_redis_as_the_stored_rows_do(settings, pg_conn, redis_client):
    sink = PostgresSink(settings)
    t1, t2, t3 = T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE
    zero = bar("ZERO", t1, 3)
    zero["sma_5"] = 0.0
    seed = [bar(s, T0, i) for i, s in enumerate(FAST)] + [
        bar("MULTI", T0),
        bar("LATEMIX", T0),
        bar("REEM", t1, 5),
        bar("STALE", t1, 6, fetched_s=100.0),
        zero,
        bar("OLDER", t2, 8),
        bar("DUPKEY", T0),
    ]
    sink.write(frame(seed))

    negative_zero = bar("ZERO", t1, 13, fetched_s=120.0)
    negative_zero["sma_5"] = -0.0  # the indicators upsert finds it equal to the stored 0.0: keeps 0.0
    reemitted = bar("REEM", t1, 15, changed=False)
    batch = [bar(s, t1, i + 1, fetched_s=61.5) for i, s in enumerate(FAST)] + [
        bar("MULTI", t1, 1),
        bar("MULTI", t2, 2),
        bar("MULTI", t3, 3),
        bar("LATEMIX", T0 - 3600_000, 4, kind="late"),
        bar("LATEMIX", t1, 5),
        reemitted,
        bar("STALE", t1, 16, fetched_s=70.0),  # older than the stored version: not upserted
        negative_zero,
        bar("OLDER", t1, 18, fetched_s=90.0),  # older than latest_1m's row: latest_1m keeps it
        bar("DUPKEY", t1, 19, kind="late"),  # the late row writes the bar; the bar row not
        bar("DUPKEY", t1, 20, changed=False),
    ]
    rows = frame(batch)
    staged = staged_latest(latest_candidates(rows), sink.connection().info.timezone)
    result = sink.write(rows, staged=lambda: staged)
    fast = {*FAST, "MULTI", "LATEMIX"}
    fallback = {"REEM", "STALE", "ZERO", "DUPKEY"}
    assert set(result.latest_staged) == fast
    assert {r["symbol"] for r in result.latest} == fallback
    assert "ZERO" not in staged and "DUPKEY" not in staged  # a zero indicator; two rows of the newest ts

    everything = sorted(fast | fallback | {"OLDER"})
    subscriber = redis_client.pubsub()
    subscriber.subscribe(BARS_CHANNEL)
    subscriber.get_message(timeout=5)
    writer = BatchWriter(settings)
    try:
        writer._redis_pending = set()  # a running job (not the first batch's catch-up of every symbol)
        assert writer.write_latest(result.latest, lambda: staged, result.latest_staged)
        fast_hashes, fast_messages = captured(redis_client, subscriber, everything)

        # the existing path: the rows latest_1m holds (what its RETURNING gave), encoded after the commit
        redis_client.flushdb()
        stored = sink.latest_rows(sorted(fast | fallback))
        assert LatestWriter(settings).write(stored) == len(fast | fallback)
        slow_hashes, slow_messages = captured(redis_client, subscriber, everything)
    finally:
        subscriber.close()
        writer.close()
        sink.close()

    assert fast_hashes == slow_hashes
    assert fast_messages == slow_messages
    assert set(fast_messages) == fast | fallback and all(len(m) == 1 for m in fast_messages.values())
    assert fast_hashes["OLDER"] == {}
    # what the stored rows say: the -0.0 kept as 0.0, the stale bar's stored version, the re-emitted bar's
    assert fast_hashes["ZERO"]["sma_5"] == "0.0"
    assert fast_hashes["STALE"]["fetched_at"].startswith("2026-11-25T15:02:40")
    assert fast_hashes["MULTI"]["ts"] == "2026-11-25T15:03:00Z"
    written_at = {r[0]: r[1] for r in pg_conn.execute("SELECT symbol, written_at FROM market.latest_1m")}
    assert fast_hashes["F0001"]["written_at"] == redis_latest._iso(written_at["F0001"])
    assert np.float64(float(fast_hashes["F0003"]["vwap"])).tobytes() == np.float64(ODD[4]).tobytes()


def test_write_frame_sends_the_staged_rows_after_the_commit(settings, pg_conn, redis_client):
    """The sink's own path (``BatchWriter.write_frame``): the operator's frame with its stats rows, the
    encoder thread; Redis then holds latest_1m's rows text for text (fast and fallback symbols)."""
    symbols = [f"W{i:04d}" for i in range(700)]

    def batch(ts_ms: int, first: int, records: list[dict]) -> pd.DataFrame:
        stats = {"kind": "stats", "topic": settings.kafka_topic, "kpartition": 0, "koffset_first": first}
        stats.update(koffset=first + len(records) - 1, n_input=len(records))
        return frame([*records, stats])

    writer = BatchWriter(settings)
    try:
        writer.write_frame(batch(T0, 0, [bar(s, T0, i) for i, s in enumerate(symbols)]), 0, started=time.monotonic())
        records = [bar(s, T0 + MINUTE, i + 3, fetched_s=62.0) for i, s in enumerate(symbols[:600])]
        records += [bar(s, T0, i, changed=False) for i, s in enumerate(symbols[600:])]  # re-emitted: fallback
        writer.write_frame(batch(T0 + MINUTE, len(symbols), records), 1, started=time.monotonic())
    finally:
        writer.close()
    stored = {r["symbol"]: r for r in PostgresSink(settings).latest_rows(symbols)}
    for symbol, _, _, message, fields in redis_latest.encode_rows(list(stored.values())):
        assert redis_client.hgetall(f"stockpipe:latest:{symbol}") == dict(zip(fields[0::2], fields[1::2], strict=True))
        assert json.loads(message)["ts"] == ("2026-11-25T15:01:00Z" if symbol < "W0600" else "2026-11-25T15:00:00Z")
