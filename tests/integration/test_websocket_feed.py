"""The WebSocket feed (issue 14): the official ``massive.WebSocketClient`` against the simulator's
WebSocket API, and the producer's push feed into real Kafka and Redis.

Time runs fast: the simulator and the producer share a clock a day in the past that runs
:data:`SPEED` times faster than the wall clock (a market minute every 2 s), so minute closes
come quickly and every bar stays older than the contract's "2 minutes in the future" bound.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from massive import RESTClient, WebSocketClient
from massive.exceptions import AuthError

from stockpipe import contract, verify
from stockpipe.producer.core import CHECKPOINT_KEY, MarketProducer
from stockpipe.producer.websocket import WebSocketFeed
from stockpipe.sources.simulator import FaultRequest, start_in_thread
from tests.integration.simkit import on_simulator

pytestmark = pytest.mark.integration

SPEED = 30.0  # market seconds per wall second
KEY = "test-key-websocket"


class FastClock:
    """Market time a day ago, :data:`SPEED` times faster than the wall clock; starts 50 s into a minute."""

    def __init__(self) -> None:
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
        self.start = start.timestamp() + 50
        self.t0 = time.time()

    def unix(self) -> float:
        return self.start + (time.time() - self.t0) * SPEED

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.unix(), UTC)

    def wall_of(self, market_s: float) -> float:
        """The wall-clock time at which the market clock reads ``market_s``."""
        return self.t0 + (market_s - self.start) / SPEED


@pytest.fixture
def clock() -> FastClock:
    return FastClock()


@pytest.fixture
def simulator(clock):
    with start_in_thread(seed=5, clock="demo", now=clock.unix, universe_size=30) as sim:
        yield sim


def host_of(sim) -> str:
    return sim.url.removeprefix("http://")


def collect(client: WebSocketClient, enough, timeout_s: float = 30.0) -> list:
    """Run ``client`` until ``enough(messages)`` or the timeout; the messages it handed over."""
    got: list = []

    async def handle(messages):
        got.extend(messages if isinstance(messages, list) else [messages])
        if enough(got):
            await client.close()

    async def main():
        try:
            await asyncio.wait_for(client.connect(handle), timeout_s)
        except TimeoutError:
            await client.close()

    asyncio.run(main())
    return got


# --- the simulator's WebSocket API, through the official client -----------------------------------------
def test_massive_client_connects_unchanged_and_gets_am_events_equal_to_rest(simulator):
    client = WebSocketClient(KEY, feed=host_of(simulator), market="stocks", secure=False, max_reconnects=0)
    client.subscribe("AM.AAPL", "AM.MSFT")
    aggs = collect(client, lambda got: len(got) >= 6)
    assert len(aggs) >= 6
    assert {a.symbol for a in aggs} == {"AAPL", "MSFT"} and {a.event_type for a in aggs} == {"AM"}
    rest = RESTClient(KEY, base=simulator.url)
    for agg in aggs:
        assert agg.end_timestamp - agg.start_timestamp == 60_000
        (bar,) = rest.get_aggs(agg.symbol, 1, "minute", agg.start_timestamp, agg.start_timestamp)
        assert (agg.open, agg.high, agg.low, agg.close, agg.volume, agg.vwap) == (
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            bar.vwap,
        )
        assert agg.accumulated_volume >= agg.volume and agg.official_open_price > 0 and agg.average_size >= 1
    minutes = sorted({a.start_timestamp for a in aggs})
    assert minutes == list(range(minutes[0], minutes[-1] + 1, 60_000))  # every minute, none skipped


def test_status_messages_use_massives_wording(simulator):
    client = WebSocketClient(KEY, feed=host_of(simulator), market="stocks", secure=False, raw=True, max_reconnects=0)
    client.subscribe("AM.AAPL", "T.AAPL")
    frames = collect(client, lambda got: any('"AM"' in f for f in got))
    statuses = [e for f in frames for e in json.loads(f) if e["ev"] == "status"]
    assert {"ev": "status", "status": "success", "message": "subscribed to: AM.AAPL"} in statuses
    assert any(s["status"] == "error" and "T.AAPL" in s["message"] for s in statuses)


@pytest.mark.parametrize(
    ("plan", "feed_path", "key", "refusal"),
    [
        ("advanced", "", "not a key!", "authentication failed"),
        ("basic", "", KEY, "doesn't include websocket access"),
        ("basic", "/delayed", KEY, "doesn't include websocket access"),
        ("starter", "", KEY, "doesn't include real-time data"),
    ],
    ids=["bad-key", "basic-real-time", "basic-delayed", "starter-real-time"],
)
def test_auth_failed_for_a_bad_key_or_a_plan_without_the_cluster(clock, plan, feed_path, key, refusal):
    with start_in_thread(clock="demo", now=clock.unix, plan=plan, universe_size=10) as sim:
        client = WebSocketClient(key, feed=host_of(sim) + feed_path, market="stocks", secure=False, max_reconnects=0)
        client.subscribe("AM.AAPL")
        with pytest.raises(AuthError, match=refusal):
            asyncio.run(asyncio.wait_for(client.connect(lambda _m: asyncio.sleep(0)), 10))


def test_starter_plan_streams_the_delayed_cluster_15_minutes_late(clock):
    with start_in_thread(clock="demo", now=clock.unix, plan="starter", universe_size=10) as sim:
        client = WebSocketClient(KEY, feed=host_of(sim) + "/delayed", market="stocks", secure=False, max_reconnects=0)
        client.subscribe("AM.AAPL")
        received_at = []
        aggs = collect(client, lambda got: received_at.append(clock.unix()) or len(got) >= 2)
        assert aggs
        lag_s = received_at[0] - aggs[0].end_timestamp / 1000
        assert 15 * 60 <= lag_s < 15 * 60 + 60  # the minute that closed 15 minutes ago


def test_one_connection_per_key_and_cluster(simulator):
    first = WebSocketClient(KEY, feed=host_of(simulator), market="stocks", secure=False, max_reconnects=0)
    first.subscribe("AM.AAPL")
    second_frames: list = []

    async def main():
        streaming = asyncio.create_task(first.connect(lambda _m: asyncio.sleep(0)))
        await asyncio.sleep(1.0)
        second = WebSocketClient(KEY, feed=host_of(simulator), market="stocks", secure=False, raw=True)
        second.max_reconnects = 0
        with pytest.raises(Exception):  # noqa: B017 - the server closes it (1008) after max_connections
            await asyncio.wait_for(second.connect(lambda m: asyncio.sleep(0, second_frames.append(m))), 10)
        await first.close()
        await streaming

    with httpx.Client() as http:
        asyncio.run(main())
        stats = http.get(simulator.url + "/_admin/stats", headers=simulator.admin_headers).json()["websocket"]
    assert stats["connections"] == 2


def test_am_star_streams_the_whole_universe_listed_by_reference_tickers(simulator):
    rest = RESTClient(KEY, base=simulator.url)
    listed = [t.ticker for t in rest.list_tickers(market="stocks", limit=7)]  # pages of 7 via next_url
    assert len(listed) == 30 and listed == sorted(listed) and "AAPL" in listed
    client = WebSocketClient(KEY, feed=host_of(simulator), market="stocks", secure=False, max_reconnects=0)
    client.subscribe("AM.*")
    aggs = collect(client, lambda got: len(got) >= 60)
    first_minute = min(a.start_timestamp for a in aggs)
    assert sorted(a.symbol for a in aggs if a.start_timestamp == first_minute) == listed


# --- the producer's WebSocket feed, into real Kafka -------------------------------------------------------
def feed_settings(settings, simulator, **changes):
    values = {"feed": "websocket", "backfill_start_minutes": 3, "retry_base_s": 0.1, "websocket_stall_s": 3.0}
    return on_simulator(settings, simulator, KEY, **{**values, **changes})


def run_feed(s, clock, seconds: float, during=None, until=None) -> WebSocketFeed:
    """Run the producer's WebSocket feed for ``seconds`` (``during(feed)`` runs meanwhile), or less:
    once ``until(feed)`` holds, half a market minute more (the stop lands between two minute closes,
    not in a frame being sent and checkpointed)."""
    feed = WebSocketFeed(s, rest=MarketProducer(s, clock=clock), clock=clock, backoff_max_s=1.0)
    stop = threading.Event()
    runner = threading.Thread(target=feed.run, args=(stop,), daemon=True)
    runner.start()
    deadline = time.monotonic() + seconds
    try:
        if during:
            during(feed)
        while time.monotonic() < deadline and not (until and until(feed)):
            time.sleep(0.1)
        if until and until(feed):
            time.sleep(30 / SPEED)
    finally:
        stop.set()
        runner.join(20)
    assert not runner.is_alive()
    return feed


def streamed(feed: WebSocketFeed, timeout_s: float = 10.0) -> None:
    """Wait until the feed is connected and has pushed a minute of each watched symbol."""
    deadline = time.monotonic() + timeout_s
    while feed.stats["sent"] < len(feed.settings.watchlist) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert feed.stats["sent"] >= len(feed.settings.watchlist), f"nothing pushed in {timeout_s} s: {feed.stats}"


def minutes_by_symbol(s) -> dict[str, dict[datetime, list[dict]]]:
    found: dict[str, dict[datetime, list[dict]]] = {}
    for message in verify.read_topic(s, s.kafka_topic, None, timeout_s=20):
        ts = contract.parse_ts(message["ts"])
        found.setdefault(message["symbol"], {}).setdefault(ts, []).append(message)
    return found


def assert_no_gap(s, simulator, found, clock) -> None:
    """Every minute from each symbol's first bar to the last that closed before the end is in the
    topic, with the simulator's REST values."""
    rest = RESTClient(KEY, base=simulator.url)
    for symbol in s.watchlist:
        minutes = sorted(found[symbol])
        expected = [minutes[0] + timedelta(minutes=i) for i in range(int((minutes[-1] - minutes[0]).seconds / 60) + 1)]
        assert minutes == expected, f"{symbol}: missing {sorted(set(expected) - set(minutes))}"
        start_ms = int(minutes[0].timestamp() * 1000)
        end_ms = int(minutes[-1].timestamp() * 1000)
        for bar in rest.get_aggs(symbol, 1, "minute", start_ms, end_ms, limit=5000):
            ts = datetime.fromtimestamp(bar.timestamp / 1000, UTC)
            for message in found[symbol][ts]:
                assert (message["open"], message["close"], message["volume"]) == (bar.open, bar.close, bar.volume)


def test_websocket_feed_sends_each_pushed_bar_to_kafka_and_moves_the_checkpoint(
    settings, simulator, clock, redis_client
):
    s = feed_settings(settings, simulator)
    feed = run_feed(s, clock, 12.0, until=lambda f: f.stats["sent"] >= 10)  # ~5 market minutes
    found = minutes_by_symbol(s)
    assert set(found) == {"AAPL", "MSFT"}
    pushed = [m for bars in found.values() for ms in bars.values() for m in ms if m["source"] == "simulator-websocket"]
    assert len(pushed) >= 8 and feed.stats["connections"] == 1 and feed.stats["dead_letters"] == 0
    assert all(m["trades"] is None and contract.invalid_reason(m, s) is None for m in pushed)
    assert_no_gap(s, simulator, found, clock)
    for symbol in s.watchlist:  # the checkpoint is the newest bar Kafka confirmed
        assert redis_client.hget(CHECKPOINT_KEY, symbol) == contract.format_ts(max(found[symbol]))


@pytest.mark.parametrize(
    "fault",
    [{"ws_drop": 2}, {"ws_stall_s": 6.0}],  # a stall of twice websocket_stall_s (3 s)
    ids=["dropped-twice", "stalled"],
)
def test_a_lost_connection_is_refilled_over_rest_without_losing_a_bar(settings, simulator, clock, redis_client, fault):
    s = feed_settings(settings, simulator)

    def inject(feed):
        streamed(feed)
        simulator.state.apply_faults(FaultRequest(**fault))

    drops, mark = fault.get("ws_drop", 1), {}  # a stall ends in one reconnection

    def recovered(f) -> bool:
        """Every drop reconnected and refilled (one refill at the start), then a bar pushed again."""
        if f.stats["connections"] < 1 + drops or f.stats["refills"] < 1 + drops:
            return False
        return f.stats["sent"] > mark.setdefault("sent", f.stats["sent"])

    feed = run_feed(s, clock, 16.0, during=inject, until=recovered)
    assert feed.stats["connections"] >= 2 and feed.stats["refills"] >= 2
    found = minutes_by_symbol(s)
    assert_no_gap(s, simulator, found, clock)
    refilled = {ts for bars in found.values() for ts, ms in bars.items() if {m["source"] for m in ms} == {"simulator"}}
    assert refilled  # minutes the WebSocket never delivered came over REST


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("not_json", "WebSocket frame is not JSON"), ("high_below_low", "high is below max(open, close)")],
)
def test_a_malformed_frame_is_a_dead_letter_with_its_reason_and_its_bars_are_refilled(
    settings, simulator, clock, redis_client, kind, reason
):
    s = feed_settings(settings, simulator)

    def inject(feed):
        streamed(feed)
        simulator.state.apply_faults(FaultRequest(ws_malformed=1, ws_malformed_kind=kind))

    feed = run_feed(s, clock, 10.0, during=inject, until=lambda f: f.stats["dead_letters"] and f.stats["refills"] >= 2)
    letters = verify.read_topic(s, s.kafka_dlq_topic, None, timeout_s=20)
    assert letters and all(letter["error"].startswith(reason) for letter in letters), letters
    assert feed.stats["dead_letters"] == len(letters)
    assert_no_gap(s, simulator, minutes_by_symbol(s), clock)


def test_the_producer_service_runs_the_websocket_feed_with_stockpipe_feed_websocket(settings, pg_conn):
    """``python -m stockpipe.producer`` with STOCKPIPE_FEED=websocket (what market_producer runs):
    the pushed bars reach Kafka, SIGTERM ends it cleanly, its minute is one ops.ingest_cycles row."""
    import os
    import signal
    import subprocess
    import sys

    offset = 52 - time.time() % 60  # the simulator's market clock: a minute closes ~8 s after the start
    pg_conn.execute("TRUNCATE ops.ingest_cycles")
    with start_in_thread(seed=5, clock="demo", now=lambda: time.time() + offset, universe_size=10) as sim:
        env = {
            **os.environ,
            "STOCKPIPE_FEED": "websocket",
            "STOCKPIPE_PG_DATABASE": settings.pg_database,
            "STOCKPIPE_REDIS_URL": settings.redis_url,
            "STOCKPIPE_KAFKA_TOPIC": settings.kafka_topic,
            "STOCKPIPE_KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
            "STOCKPIPE_SIMULATOR_PORT": sim.url.rsplit(":", 1)[1],
            "STOCKPIPE_SIMULATOR_CLOCK": "demo",
            "STOCKPIPE_WATCHLIST": "AAPL,MSFT",
            "STOCKPIPE_PRODUCER_METRICS_PORT": "0",
            "STOCKPIPE_RATE_LIMIT_PER_MINUTE": "1000",
            "STOCKPIPE_BACKFILL_START_MINUTES": "3",
        }
        command = [sys.executable, "-m", "stockpipe.producer"]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []

        def read() -> None:
            for line in process.stdout:
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wanted = {(s, source) for s in ("AAPL", "MSFT") for source in ("simulator", "simulator-websocket")}

        def refilled_and_pushed() -> bool:
            """The log lines, and a refilled and a pushed bar of each symbol in Kafka (the pushed
            minute closes ~8 s after the start): then SIGTERM, not after a fixed 16 s."""
            output = "".join(lines)
            if "subscribed to: AM.AAPL" not in output or "refill over REST: 2 symbols" not in output:
                return False
            sent = verify.read_topic(settings, settings.kafka_topic, None, timeout_s=10)
            return wanted <= {(m["symbol"], m["source"]) for m in sent}

        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline and not refilled_and_pushed():
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        reader.join(10)
        output = "".join(lines)
    assert process.returncode == 0, output[-3000:]
    assert "subscribed to: AM.AAPL" in output and "refill over REST: 2 symbols" in output, output[-3000:]
    messages = verify.read_topic(settings, settings.kafka_topic, None, timeout_s=20)
    assert {m["symbol"] for m in messages if m["source"] == "simulator-websocket"} == {"AAPL", "MSFT"}
    assert {m["symbol"] for m in messages if m["source"] == "simulator"} == {"AAPL", "MSFT"}  # the refill
    assert pg_conn.execute("SELECT count(*) FROM ops.ingest_cycles").fetchone()[0] >= 1


def test_websocket_feed_on_the_delayed_cluster_of_a_starter_plan(settings, clock, redis_client):
    from stockpipe.producer import plan

    with start_in_thread(seed=5, clock="demo", now=clock.unix, plan="starter", universe_size=10) as sim:
        s = feed_settings(settings, sim, websocket_cluster="delayed")
        feed = run_feed(s, clock, 10.0, until=lambda f: f.stats["sent"] >= 2)
        found = minutes_by_symbol(s)
        pushed = [
            ts
            for bars in found.values()
            for ts, ms in bars.items()
            if "simulator-websocket" in {m["source"] for m in ms}
        ]
        assert pushed and feed.stats["connections"] == 1
        assert all(clock() - ts >= timedelta(minutes=16) for ts in pushed)  # 15 minutes late, plus the minute itself
        assert_no_gap(s, sim, found, clock)
        assert plan.read(redis_client)["plan"] == "delayed"


def test_websocket_feed_with_am_star_streams_every_symbol_of_the_market(settings, simulator, clock, redis_client):
    # AM.* implies STOCKPIPE_ACCEPT_ANY_SYMBOL (config); a model copy skips validators, so it is given here
    s = feed_settings(settings, simulator, websocket_symbols="all", accept_any_symbol=True)
    feed = run_feed(s, clock, 8.0, until=lambda f: f.stats["sent"] >= 30)  # a minute of the 30 symbols
    found = minutes_by_symbol(s)
    universe = [t.ticker for t in RESTClient(KEY, base=simulator.url).list_tickers(limit=1000)]
    assert feed.subscriptions() == ["AM.*"] and set(found) == set(universe) and len(universe) == 30
    assert feed.stats["dead_letters"] == 0
