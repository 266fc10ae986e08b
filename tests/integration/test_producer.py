"""The producer against the real simulator (in a thread), real Kafka and real Redis."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from stockpipe import verify
from stockpipe.producer.core import CHECKPOINT_KEY, META_KEY, MarketProducer
from stockpipe.sources.simulator import FaultRequest, start_in_thread
from tests.integration.simkit import on_simulator

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
KEY = "test-key-producer"


class Clock:
    """One clock shared by the simulator and the producer, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def unix(self) -> float:
        return self.now.timestamp()


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(round(seconds, 3))


@pytest.fixture
def clock() -> Clock:
    return Clock(START + timedelta(seconds=5))


@pytest.fixture
def simulator(clock):
    with start_in_thread(seed=11, clock="demo", now=clock.unix) as sim:
        yield sim


def make_settings(settings, simulator, **changes):
    return on_simulator(settings, simulator, KEY, **{"retry_base_s": 0.1, "backfill_start_minutes": 30, **changes})


def read_messages(settings, topic):
    return verify.read_topic(settings, topic, None, timeout_s=20)


def test_bars_flow_with_no_gap_across_a_restart(settings, simulator, clock, redis_client):
    s = make_settings(settings, simulator)
    first = MarketProducer(s, clock=clock)
    summary = first.run_cycle()
    assert summary.sent == 60 and not summary.failed  # 30 closed minutes × 2 symbols
    first.close()

    clock.now += timedelta(minutes=7)  # the producer was down for a few cycles
    restarted = MarketProducer(s, clock=clock)
    summary = restarted.run_cycle()
    assert summary.sent == 14 and not summary.failed  # the 7 missed minutes, nothing twice
    restarted.close()

    reports = verify.build_reports(read_messages(s, s.kafka_topic), "demo")
    assert set(reports) == {"AAPL", "MSFT"}
    for report in reports.values():
        assert report.gaps == [] and report.duplicates == 0
        assert report.first == START - timedelta(minutes=30)
        assert report.last == START + timedelta(minutes=6)
    assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == "2026-11-24T15:06:00Z"


def test_first_start_covers_the_session_from_its_open(settings, simulator, clock, redis_client):
    # demo clock: the session is the New York day, open at 05:00 UTC; 15:00 UTC is 10:00 there
    s = make_settings(settings, simulator, backfill_start_minutes=0)
    first = MarketProducer(s, clock=clock)
    summary = first.run_cycle()
    assert summary.sent == 2 * 600 and not summary.failed  # no hole before the first start
    bar_calls = [r for r in simulator.state.log.requests(KEY) if "/range/" in r["path"]]
    assert len(bar_calls) == 2  # one call per symbol covers the day
    first.close()

    clock.now += timedelta(minutes=7)  # down for a few cycles: resumes from the checkpoint as before
    summary = MarketProducer(s, clock=clock).run_cycle()
    assert summary.sent == 14 and not summary.failed

    reports = verify.build_reports(read_messages(s, s.kafka_topic), "demo")
    for report in reports.values():
        assert report.gaps == [] and report.duplicates == 0
        assert report.first == datetime(2026, 11, 24, 5, 0, tzinfo=UTC)
        assert report.last == START + timedelta(minutes=6)


def test_first_start_after_the_close_takes_the_whole_session(settings, redis_client):
    after_the_close = datetime(2026, 11, 24, 22, 0, 5, tzinfo=UTC)  # Tuesday, 17:00 in New York
    with start_in_thread(seed=11, clock="nyse", now=after_the_close.timestamp) as nyse:
        s = make_settings(settings, nyse, backfill_start_minutes=0, watchlist=["AAPL"], simulator_clock="nyse")
        summary = MarketProducer(s, clock=lambda: after_the_close).run_cycle()
    assert summary.sent == 390 and not summary.failed  # 09:30-16:00 ET
    assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == "2026-11-24T20:59:00Z"


def test_window_ends_after_the_rate_limit_grants_the_call(settings, simulator, clock, redis_client):
    # One call per (1 + 1 s guard band): MSFT's fetch waits for its slot while the market moves on.
    s = make_settings(settings, simulator, rate_limit_per_minute=1, rate_limit_window_s=1)
    for symbol in s.watchlist:  # details cached: the bars are the only calls
        redis_client.set(META_KEY.format(symbol=symbol), json.dumps({"name": symbol}))

    def waiting(seconds: float) -> None:
        time.sleep(seconds)
        clock.now += timedelta(minutes=1)

    summary = MarketProducer(s, clock=clock, sleep=waiting).run_cycle()
    assert not summary.failed
    assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == "2026-11-24T14:59:00Z"
    newest_closed = clock.now.replace(second=0) - timedelta(minutes=1)
    assert newest_closed > START - timedelta(minutes=1)  # the wait let at least one more minute close
    # the newest bar closed when MSFT's call was granted is in (was: the cycle's start left it out)
    assert redis_client.hget(CHECKPOINT_KEY, "MSFT") == f"{newest_closed:%Y-%m-%dT%H:%M:%SZ}"


def test_messages_follow_the_contract(settings, simulator, clock):
    s = make_settings(settings, simulator, watchlist=["TSLA"], backfill_start_minutes=3)
    MarketProducer(s, clock=clock).run_cycle()
    consumer = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "t-contract"})
    parts = consumer.list_topics(s.kafka_topic, timeout=10).topics[s.kafka_topic].partitions
    consumer.assign([TopicPartition(s.kafka_topic, p, OFFSET_BEGINNING) for p in parts])
    got = []
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    while len(got) < 3 and datetime.now(UTC) < deadline:
        msg = consumer.poll(1)
        if msg is not None and not msg.error():
            got.append(msg)
    consumer.close()
    assert len(got) == 3
    assert {m.key() for m in got} == {b"TSLA"}
    assert len({m.partition() for m in got}) == 1  # keyed by symbol → one partition
    value = json.loads(got[0].value())
    assert set(value) == {
        "v",
        "symbol",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "trades",
        "source",
        "fetched_at",
    }
    assert value["source"] == "simulator" and value["ts"].endswith(":00Z") and value["fetched_at"].endswith("Z")


def test_two_producers_never_exceed_the_shared_rate_limit(settings, simulator, clock):
    # 4 calls per 1 s window instead of 5 per minute, so the test takes seconds, not minutes.
    s = make_settings(
        settings,
        simulator,
        rate_limit_per_minute=4,
        rate_limit_window_s=1,
        watchlist=["AAPL", "MSFT", "AMZN", "TSLA", "GOOGL", "NVDA"],
    )
    producers = [MarketProducer(s, clock=clock) for _ in range(2)]
    threads = [threading.Thread(target=p.run_cycle) for p in producers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    calls = sorted(r["ts"] for r in simulator.state.log.requests(KEY))
    assert len(calls) >= 12  # metadata + bars for 6 symbols, at least once
    most_in_any_window = max(sum(1 for c in calls if t <= c < t + 1) for t in calls)
    assert most_in_any_window <= 4


def test_retry_schedule_under_injected_5xx(settings, simulator, clock):
    s = make_settings(settings, simulator, watchlist=["AAPL"])
    sleep = RecordingSleep()
    producer = MarketProducer(s, clock=clock, sleep=sleep)
    producer.symbol_metadata("AAPL")  # reference data is never faulted; keep it out of the count
    simulator.state.apply_faults(FaultRequest(status_5xx=3))
    summary = producer.run_cycle()
    assert sleep.calls == [0.1, 0.2, 0.4]  # 1 s, 2 s, 4 s scaled by retry_base_s
    assert summary.sent == 30 and not summary.failed


def test_exhausted_retries_skip_the_symbol_and_the_next_cycle_fills_the_gap(settings, simulator, clock):
    s = make_settings(settings, simulator, watchlist=["AAPL", "MSFT"])
    producer = MarketProducer(s, clock=clock, sleep=RecordingSleep())
    assert producer.run_cycle().failed == []  # checkpoints at 14:59
    clock.now += timedelta(minutes=1)
    simulator.state.apply_faults(FaultRequest(status_5xx=4))  # AAPL: 1 try + 3 retries, all fail
    summary = producer.run_cycle()
    assert summary.failed == ["AAPL"]
    assert [r.sent for r in summary.results] == [0, 1]  # MSFT went on
    clock.now += timedelta(minutes=2)
    assert producer.run_cycle().failed == []
    reports = verify.build_reports(read_messages(s, s.kafka_topic), "demo")
    assert reports["AAPL"].gaps == [] and reports["AAPL"].duplicates == 0
    assert len(reports["AAPL"].minutes) == 33  # 14:30 … 15:02


def test_429_retry_after_is_honoured(settings, simulator, clock):
    s = make_settings(settings, simulator, watchlist=["AAPL"])
    sleep = RecordingSleep()
    producer = MarketProducer(s, clock=clock, sleep=sleep)
    producer.symbol_metadata("AAPL")
    simulator.state.apply_faults(FaultRequest(status_429=1, retry_after=3))
    summary = producer.run_cycle()
    assert sleep.calls == [0.3]  # Retry-After 3 s (× retry_base_s), longer than the 1 s backoff
    assert summary.sent == 30


def test_malformed_bar_goes_to_the_dlq_and_the_rest_flows(settings, simulator, clock):
    s = make_settings(settings, simulator, watchlist=["AAPL"], backfill_start_minutes=10)
    producer = MarketProducer(s, clock=clock)
    producer.symbol_metadata("AAPL")
    simulator.state.apply_faults(FaultRequest(malformed=1, malformed_kind="negative_volume"))
    summary = producer.run_cycle()
    assert summary.dead_letters == 1 and summary.sent == 9
    letters = [json.loads(json.dumps(m)) for m in read_messages(s, s.kafka_dlq_topic)]
    assert len(letters) == 1
    assert letters[0]["error"] == "volume is negative"
    assert json.loads(letters[0]["raw"])["symbol"] == "AAPL"


def test_metadata_comes_from_the_cache_within_the_ttl(settings, simulator, clock, pg_conn):
    s = make_settings(settings, simulator, watchlist=["AAPL", "MSFT"])
    producer = MarketProducer(s, clock=clock)
    producer.run_cycle()
    clock.now += timedelta(minutes=1)
    MarketProducer(s, clock=clock).run_cycle()  # a new process: the cache is Redis, not memory
    paths = [r["path"] for r in simulator.state.log.requests(KEY)]
    assert sum(p.startswith("/v3/reference/tickers/") for p in paths) == 2  # once per symbol
    assert sum(p.startswith("/v2/aggs/") for p in paths) == 4  # prices are never cached
    rows = pg_conn.execute("SELECT symbol, name FROM market.symbols ORDER BY symbol").fetchall()
    assert [r[0] for r in rows] == ["AAPL", "MSFT"] and all(r[1] for r in rows)


def test_unknown_symbol_is_skipped_with_a_warning(settings, simulator, clock, caplog):
    s = make_settings(settings, simulator, watchlist=["ZZZQ", "AAPL"])
    with caplog.at_level(logging.WARNING):
        summary = MarketProducer(s, clock=clock).run_cycle()
    assert summary.failed == ["ZZZQ"]
    assert summary.results[1].sent == 30
    assert any("unknown symbol ZZZQ" in r.getMessage() for r in caplog.records)


def test_kafka_down_keeps_the_checkpoint_and_loses_nothing(settings, simulator, clock, redis_client):
    s = make_settings(settings, simulator, watchlist=["AAPL"])
    MarketProducer(s, clock=clock).run_cycle()
    checkpoint = redis_client.hget(CHECKPOINT_KEY, "AAPL")
    clock.now += timedelta(minutes=2)
    dead = Producer(
        {
            "bootstrap.servers": "127.0.0.1:1",
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": 1500,
            "log_level": 2,
        }
    )
    summary = MarketProducer(s, clock=clock, kafka_producer=dead, delivery_timeout_s=2).run_cycle()
    assert summary.failed == ["AAPL"] and summary.results[0].error == "kafka unavailable"
    assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == checkpoint
    clock.now += timedelta(minutes=1)
    assert MarketProducer(s, clock=clock).run_cycle().sent == 3
    reports = verify.build_reports(read_messages(s, s.kafka_topic), "demo")
    assert reports["AAPL"].gaps == [] and reports["AAPL"].duplicates == 0
    assert len(reports["AAPL"].minutes) == 33


def test_corrected_bar_is_resent_and_unchanged_bars_are_not(settings, simulator, clock):
    s = make_settings(settings, simulator, watchlist=["AAPL"], backfill_start_minutes=5)
    producer = MarketProducer(s, clock=clock)
    producer.run_cycle()
    corrected = START - timedelta(minutes=2)
    simulator.state.apply_faults(
        FaultRequest.model_validate({"corrections": [{"symbol": "AAPL", "ts": corrected.isoformat()}]})
    )
    clock.now += timedelta(minutes=1)
    summary = producer.run_cycle()
    assert summary.sent == 2  # the new minute and the corrected one
    reports = verify.build_reports(read_messages(s, s.kafka_topic), "demo")
    assert reports["AAPL"].corrections == 1 and reports["AAPL"].duplicates == 0


def test_api_key_never_reaches_the_logs(settings, simulator, clock, caplog):
    s = make_settings(settings, simulator, watchlist=["AAPL"], simulator_api_key="sEcReT-kEy-123")
    simulator.state.apply_faults(FaultRequest(status_5xx=2, status_429=1))
    with caplog.at_level(logging.DEBUG):
        MarketProducer(s, clock=clock, sleep=RecordingSleep()).run_cycle()
    assert caplog.records
    assert all("sEcReT-kEy-123" not in r.getMessage() for r in caplog.records)


def test_verify_detects_a_gap_and_a_duplicate(settings):
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    base = {
        "v": 1,
        "symbol": "AAPL",
        "open": 10.0,
        "high": 11.0,
        "low": 9.0,
        "close": 10.5,
        "volume": 100,
        "vwap": 10.2,
        "trades": 5,
        "source": "simulator",
        "fetched_at": "2026-11-24T15:00:01Z",
    }
    for minute in (0, 1, 3, 3):  # minute 2 missing, minute 3 twice with the same values
        message = dict(base, ts=f"2026-11-24T14:0{minute}:00Z")
        producer.produce(settings.kafka_topic, key=b"AAPL", value=json.dumps(message).encode())
    producer.flush(10)
    reports = verify.build_reports(verify.read_topic(settings, settings.kafka_topic, None), "demo")
    assert [g.minute for g in reports["AAPL"].gaps] == [2]
    assert reports["AAPL"].duplicates == 1
    import os
    import subprocess
    import sys

    env = dict(os.environ, STOCKPIPE_KAFKA_TOPIC=settings.kafka_topic)
    proc = subprocess.run(
        [sys.executable, "-m", "stockpipe.verify"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 gaps, 1 duplicates: FAIL" in proc.stdout
