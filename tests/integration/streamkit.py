"""Helpers of the streaming and backfill tests: scripted bar series, Kafka I/O, the TA-Lib oracle.

Not a test module. The oracle is the point: whatever the stream did, ``assert_invariants`` checks
the stored result against TA-Lib run over the stored bars, the expected winner of every
``(symbol, ts)``, and Redis against PostgreSQL.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import redis
import talib
from confluent_kafka import Consumer, Producer

from stockpipe.config import Settings

SYMBOLS = ["AAPL", "GOOGL", "MSFT", "AMZN", "TSLA"]
# 2026-11-24 09:30 New York = 14:30 UTC: a regular session of 390 minutes.
SESSION_OPEN = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
INDICATORS = [
    "sma_5", "sma_20", "sma_50", "ema_12", "ema_26", "rsi_14", "macd", "macd_signal", "macd_hist",
    "bb_upper", "bb_middle", "bb_lower", "vwap_session",
]  # fmt: skip


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_us(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Script:
    """Messages to send, in order, and the bar each (symbol, ts) must end up with."""

    messages: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    expected: dict[tuple[str, datetime], dict] = field(default_factory=dict)
    dead: list[str] = field(default_factory=list)  # substrings of the expected errors, in order sent

    def bar(self, bar: dict, *, wins: bool = True) -> None:
        """Send ``bar``; ``wins``: it is what (symbol, ts) must hold afterwards."""
        self.messages.append((bar["symbol"].encode(), json.dumps(bar).encode()))
        if wins:
            self.expected[(bar["symbol"], _parse(bar["ts"]))] = bar

    def raw(self, key: bytes | None, value: bytes, error: str) -> None:
        self.messages.append((key, value))
        self.dead.append(error)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def random_bars(symbol: str, start: datetime, n: int, seed: int, fetched_at: datetime | None = None) -> list[dict]:
    """A random walk of ``n`` minute bars from ``start`` (contract messages)."""
    rng = np.random.default_rng(seed)
    price = 50.0 + 200.0 * rng.random()
    bars = []
    for i in range(n):
        ts = start + timedelta(minutes=i)
        open_ = price
        close = max(1.0, price * math.exp(rng.normal(0, 0.002)))
        # Runs of equal closes exercise RSI's zero-change path.
        if rng.random() < 0.05:
            close = open_
        high = max(open_, close) * (1 + abs(rng.normal(0, 0.0008)))
        low = min(open_, close) * (1 - abs(rng.normal(0, 0.0008)))
        volume = float(rng.integers(100, 50_000))
        bars.append(
            {
                "v": 1, "symbol": symbol, "ts": iso(ts), "open": round(open_, 4), "high": round(high, 4),
                "low": round(low, 4), "close": round(close, 4), "volume": volume,
                "vwap": round((low + high + close) / 3, 4), "trades": int(volume // 50) + 1,
                "source": "simulator", "fetched_at": iso_us(fetched_at or ts + timedelta(seconds=61)),
            }
        )  # fmt: skip
        price = close
    return bars


def revised(bar: dict, seconds: float, close_factor: float) -> dict:
    """The same bar fetched ``seconds`` later (earlier if negative) with another close."""
    out = dict(bar)
    out["close"] = round(bar["close"] * close_factor, 4)
    out["high"] = max(out["high"], out["close"], out["open"])
    out["low"] = min(out["low"], out["close"], out["open"])
    out["fetched_at"] = iso_us(_parse(bar["fetched_at"]) + timedelta(seconds=seconds))
    return out


def malformed(script: Script, symbol: str, ts: datetime) -> None:
    """One of each kind of dead letter."""
    good = random_bars(symbol, ts, 1, seed=7)[0]

    def variant(**changes) -> bytes:
        bar = dict(good)
        for name, value in changes.items():
            if value is ...:
                bar.pop(name)
            else:
                bar[name] = value
        return json.dumps(bar).encode()

    script.raw(symbol.encode(), b"\x00\xffnot json at all", "not a JSON object")
    script.raw(symbol.encode(), b"[1, 2, 3]", "not a JSON object")
    script.raw(symbol.encode(), variant(close=...), "missing or non-numeric close")
    script.raw(symbol.encode(), variant(open="abc"), "missing or non-numeric open")
    script.raw(symbol.encode(), variant(close=float("nan")), "close is not a finite number")
    script.raw(symbol.encode(), variant(high=good["low"] / 2), "high is below max(open, close)")
    script.raw(symbol.encode(), variant(low=good["high"] * 2), "low is above min(open, close)")
    script.raw(symbol.encode(), variant(volume=-5.0), "volume is negative")
    script.raw(symbol.encode(), variant(ts=iso(ts).replace(":00Z", ":30Z")), "not on a minute boundary")
    script.raw(symbol.encode(), variant(ts="yesterday"), "unparseable ts")
    script.raw(b"bad", variant(symbol="bad symbol!"), "symbol is not a ticker")
    script.raw(symbol.encode(), variant(v=2), "contract version")


def produce(settings: Settings, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    for key, value in messages:
        producer.produce(settings.kafka_topic, key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0, "Kafka did not acknowledge the test messages"


def dead_letters(settings: Settings, expected: int, timeout_s: float = 30) -> list[dict]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-dlq-{settings.kafka_dlq_topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.kafka_dlq_topic])
    letters: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(letters) < expected:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            letters.append(json.loads(message.value()))
        # Anything beyond `expected` is a duplicate the test should see too.
        extra_deadline = time.monotonic() + 1
        while time.monotonic() < extra_deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                letters.append(json.loads(message.value()))
    finally:
        consumer.close()
    return letters


def stored(conn: psycopg.Connection) -> pd.DataFrame:
    """bars_1m LEFT JOIN indicators_1m, ordered by symbol, ts."""
    rows = conn.execute(
        f"SELECT b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades, b.source, "
        f"b.fetched_at, (i.symbol IS NOT NULL) AS has_indicators, {', '.join('i.' + c for c in INDICATORS)} "
        "FROM market.bars_1m b LEFT JOIN market.indicators_1m i ON i.symbol = b.symbol AND i.ts = b.ts "
        "ORDER BY b.symbol, b.ts"
    ).fetchall()
    columns = ["symbol", "ts", "open", "high", "low", "close", "volume", "vwap", "trades", "source",
               "fetched_at", "has_indicators", *INDICATORS]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    for name in ["open", "high", "low", "close", "volume", "vwap", *INDICATORS]:
        frame[name] = pd.to_numeric(frame[name]).astype("float64")
    return frame


def talib_indicators(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    """TA-Lib over one symbol's stored series (ts order); vwap_session per New York date."""
    close = bars["close"].to_numpy(dtype=np.float64)
    macd, signal, hist = talib.MACD(close, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0, 0)
    day = pd.to_datetime(bars["ts"], utc=True).dt.tz_convert("America/New_York").dt.date
    pv = (bars["vwap"] * bars["volume"]).groupby(day).cumsum()
    vol = bars["volume"].groupby(day).cumsum()
    vwap_session = np.where(vol > 0, pv / vol.where(vol > 0), np.nan)
    return {
        "sma_5": talib.SMA(close, 5), "sma_20": talib.SMA(close, 20), "sma_50": talib.SMA(close, 50),
        "ema_12": talib.EMA(close, 12), "ema_26": talib.EMA(close, 26), "rsi_14": talib.RSI(close, 14),
        "macd": macd, "macd_signal": signal, "macd_hist": hist,
        "bb_upper": upper, "bb_middle": middle, "bb_lower": lower, "vwap_session": vwap_session,
    }  # fmt: skip


def assert_talib_exact(frame: pd.DataFrame) -> None:
    """Invariant 1 over every symbol in ``frame`` (see :func:`stored`)."""
    assert frame["has_indicators"].all(), "bars without an indicators row:\n" + str(
        frame.loc[~frame["has_indicators"], ["symbol", "ts"]].head()
    )
    for symbol, bars in frame.groupby("symbol"):
        bars = bars.reset_index(drop=True)
        for name, expected in talib_indicators(bars).items():
            actual = bars[name].to_numpy(dtype=np.float64)
            np.testing.assert_array_equal(
                np.isnan(actual), np.isnan(expected), err_msg=f"{symbol} {name}: NULL where TA-Lib has a value or v.v."
            )
            np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=0, err_msg=f"{symbol} {name}")


def assert_latest_values(frame: pd.DataFrame, expected: dict[tuple[str, datetime], dict]) -> None:
    """Exactly the expected (symbol, ts) rows, each with the winning message's values."""
    keys = list(zip(frame["symbol"], frame["ts"], strict=True))
    assert len(keys) == len(set(keys))
    assert set(keys) == set(expected), (
        f"missing {sorted(set(expected) - set(keys))[:5]}, unexpected {sorted(set(keys) - set(expected))[:5]}"
    )
    # a dict of plain rows: a pandas .loc per key costs ~0.2 ms, 10-20 s for the alerts test's 50,000 bars
    by_key = {(row["symbol"], row["ts"]): row for row in frame.to_dict("records")}
    for (symbol, ts), bar in expected.items():
        row = by_key[(symbol, ts)]
        for name in ("open", "high", "low", "close", "volume", "vwap"):
            assert row[name] == bar[name], f"{symbol} {ts} {name}: {row[name]} != {bar[name]}"
        assert row["trades"] == bar["trades"] and row["source"] == bar["source"]
        assert row["fetched_at"] == _parse(bar["fetched_at"]), f"{symbol} {ts}: not the latest fetched_at"


def assert_redis_matches(client: redis.Redis, frame: pd.DataFrame) -> None:
    """Redis latest == the last PostgreSQL row of each symbol."""
    for symbol, bars in frame.groupby("symbol"):
        last = bars.iloc[-1]
        latest = client.hgetall(f"stockpipe:latest:{symbol}")
        assert latest, f"no Redis latest state for {symbol}"
        assert latest["ts"] == iso(last["ts"].to_pydatetime()), f"{symbol}: Redis ts {latest['ts']} != {last['ts']}"
        for name in ("open", "high", "low", "close", "volume", *INDICATORS):
            value = last[name]
            if isinstance(value, float) and math.isnan(value):
                assert name not in latest, f"{symbol} {name}: NULL in PostgreSQL, {latest.get(name)} in Redis"
            else:
                assert float(latest[name]) == value, f"{symbol} {name}: Redis {latest[name]} != {value}"


def assert_invariants(conn: psycopg.Connection, client: redis.Redis, script: Script) -> pd.DataFrame:
    frame = stored(conn)
    assert_latest_values(frame, script.expected)
    assert_talib_exact(frame)
    assert_redis_matches(client, frame)
    return frame


def drain(spark, settings: Settings, writer=None) -> None:
    """Run the streaming query until everything in the topic is processed (availableNow), then stop."""
    from stockpipe.streaming.query import start_stream

    query, writer = start_stream(spark, settings, available_now=True, writer=writer)
    try:
        query.awaitTermination(300)
    finally:
        if query.isActive:
            query.stop()
        writer.close()
    if query.exception() is not None:
        raise query.exception()
