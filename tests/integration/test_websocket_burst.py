"""The WebSocket feed's burst path into real Kafka and Redis: frames of many ``AM`` events, good and
bad mixed, confirmed by the separate confirmation thread (no simulator needed: the frames are
handed to the feed as the ``massive`` client hands them over)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from stockpipe import clients, contract, verify
from stockpipe.producer.core import CHECKPOINT_KEY, HOLE_KEY, MarketProducer
from stockpipe.producer.websocket import _ADVANCE_LUA, ALL, WebSocketFeed, am_message

pytestmark = pytest.mark.integration

MINUTE = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)


def am(symbol, minute: datetime = MINUTE, **changes) -> dict:
    event = {"ev": "AM", "sym": symbol, "v": 1200, "av": 99000, "op": 10.0, "vw": 10.2, "o": 10.1, "c": 10.3,
             "h": 10.4, "l": 10.0, "a": 10.05, "z": 12, "s": int(minute.timestamp() * 1000),
             "e": int(minute.timestamp() * 1000) + 60_000}  # fmt: skip
    return {**event, **changes}


def burst_settings(settings, **changes):
    values = {"feed": "websocket", "websocket_symbols": "all", "accept_any_symbol": True, "watchlist": ["AAPL"]}
    return settings.model_copy(update={**values, **changes})


def handle(feed: WebSocketFeed, *frames: str) -> None:
    """The frames as the client hands them over, back to back; then the confirmation thread's work."""

    async def main():
        for frame in frames:
            await feed._on_frame(frame)

    asyncio.run(main())
    feed._stop.set()
    feed._confirm_loop()  # returns once every frame handed over is confirmed (or refilled)


def test_a_frame_delivers_its_good_events_and_dead_letters_each_bad_one_with_its_reason(settings, redis_client):
    s = burst_settings(settings)
    feed = WebSocketFeed(s, rest=MarketProducer(s))
    good = [am("AAPL"), am("MSFT", o=10, h=11, l=9, c=10, vw=None), am("NVDA")]
    bad = {
        "HILO": (am("HILO", h=9.0), "high is below max(open, close)"),
        "NOS": ({k: v for k, v in am("NOS").items() if k != "s"}, "AM event without an integer 's'"),
        "ZNAN": (am("ZNAN", o=float("nan")), "open is not a finite number"),
        "lower": (am("lower"), "symbol is not a ticker"),
        None: (42, "WebSocket event is not a JSON object"),
    }
    events = [good[0], bad["HILO"][0], good[1], bad["NOS"][0], bad["ZNAN"][0], bad[None][0], bad["lower"][0]]
    events += [{"ev": "status", "status": "success", "message": "authenticated"}, good[2]]
    handle(feed, json.dumps(events))  # NaN as the literal Massive never sends: the json module reads it

    sent = verify.read_topic(s, s.kafka_topic, None, timeout_s=20)
    expected = [am_message(event, "simulator-websocket", datetime.now(UTC)) for event in good]
    strip = lambda messages: sorted((dict(m, fetched_at=None) for m in messages), key=lambda m: m["symbol"])  # noqa: E731
    assert strip(sent) == strip(expected)
    assert all(contract.invalid_reason(m, s) is None for m in sent)
    letters = verify.read_topic(s, s.kafka_dlq_topic, None, timeout_s=20)
    by_symbol = {letter["origin"].get("symbol"): letter["error"] for letter in letters}
    assert len(letters) == len(bad) and set(by_symbol) == set(bad)
    for symbol, (_event, reason) in bad.items():
        assert by_symbol[symbol].startswith(reason), (symbol, by_symbol[symbol])
    assert feed.stats["sent"] == 3 and feed.stats["dead_letters"] == 5
    for event in good:  # confirmed by Kafka: the checkpoint moved
        assert redis_client.hget(CHECKPOINT_KEY, event["sym"]) == contract.format_ts(MINUTE)
    assert feed._refill_symbols is ALL or {"HILO", "NOS", "ZNAN"} <= feed._refill_symbols
    summary = {r.symbol: (r.sent, r.dead_letters) for r in feed._minute_results.values()}
    assert summary["AAPL"] == (1, 0) and summary["HILO"] == (0, 1) and summary["?"] == (0, 1)


def test_frames_read_before_kafka_confirmed_the_previous_ones_are_all_confirmed_in_order(settings, redis_client):
    s = burst_settings(settings)
    feed = WebSocketFeed(s, rest=MarketProducer(s))
    symbols = [f"S{i:03d}" for i in range(300)]
    minutes = [MINUTE + timedelta(minutes=i) for i in range(3)]
    frames = [json.dumps([am(symbol, minute) for symbol in symbols[part::2]]) for minute in minutes for part in (0, 1)]
    handle(feed, *frames)
    sent = verify.read_topic(s, s.kafka_topic, None, timeout_s=30)
    assert len(sent) == len(symbols) * len(minutes) and feed.stats["dead_letters"] == 0
    per_symbol: dict[str, list[str]] = {}
    for message in sent:  # the topic in partition order: per symbol (key), the minutes in order
        per_symbol.setdefault(message["symbol"], []).append(message["ts"])
    assert all(ts == [contract.format_ts(m) for m in minutes] for ts in per_symbol.values())
    checkpoints = redis_client.hgetall(CHECKPOINT_KEY)
    assert {symbol: checkpoints.get(symbol) for symbol in symbols} == dict.fromkeys(
        symbols, contract.format_ts(minutes[-1])
    )


def test_frames_kafka_never_confirmed_keep_their_checkpoints_and_are_refilled(settings, redis_client):
    s = burst_settings(settings)
    away = s.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})  # nothing listens there
    kafka = clients.kafka_producer(
        away, "producer", **{"message.timeout.ms": 1500, "delivery.report.only.error": True, "log_level": 0}
    )
    feed = WebSocketFeed(s, rest=MarketProducer(s), kafka_producer=kafka, delivery_timeout_s=5)
    before = contract.format_ts(MINUTE - timedelta(minutes=3))
    redis_client.hset(CHECKPOINT_KEY, "AAPL", before)
    handle(feed, json.dumps([am("AAPL"), am("MSFT")]), json.dumps([am("AAPL", MINUTE + timedelta(minutes=1))]))
    assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == before and redis_client.hget(CHECKPOINT_KEY, "MSFT") is None
    assert feed._refill_symbols is ALL or {"AAPL", "MSFT"} <= feed._refill_symbols


def test_a_dead_lettered_bar_moves_no_checkpoint_and_an_invalid_symbol_gets_none(settings, redis_client):
    """A bar the contract refused is not checkpointed: an AM event years ahead must not pin its
    symbol's checkpoint in the future (every later refill would fetch nothing), and a symbol that
    fails the symbol rules never becomes a checkpoint key (a refill of all would spend REST calls on it)."""
    s = burst_settings(settings, accept_any_symbol=False, websocket_symbols="watchlist", watchlist=["AAPL", "MSFT"])
    feed = WebSocketFeed(s, rest=MarketProducer(s))
    before = contract.format_ts(MINUTE - timedelta(minutes=3))
    redis_client.hset(CHECKPOINT_KEY, "AAPL", before)
    future = MINUTE.replace(year=MINUTE.year + 5)
    older = MINUTE - timedelta(minutes=1)
    events = [am("AAPL", future), am("MSFT", h=1.0), am("lower"), am("UNLISTED"), am("MSFT", older)]
    handle(feed, json.dumps(events))
    letters = verify.read_topic(s, s.kafka_dlq_topic, None, timeout_s=20)
    assert len(letters) == 4 and feed.stats["sent"] == 1
    assert redis_client.hgetall(CHECKPOINT_KEY) == {
        "AAPL": before,  # not the bar 5 years ahead
        "MSFT": contract.format_ts(older),  # the valid bar, not the refused newer one
    }
    assert feed._refill_symbols == {"AAPL", "MSFT"}  # the refused bars' minutes come over REST


def test_a_refill_of_all_skips_keys_the_symbol_rules_refuse(settings, redis_client):
    """Checkpoint or hole keys that are no ticker (left by older code, which checkpointed dead-lettered
    bars) are not refilled: each would cost a REST call at every refill of all."""
    s = burst_settings(settings)
    feed = WebSocketFeed(s, rest=MarketProducer(s))
    ts = contract.format_ts(MINUTE)
    redis_client.hset(CHECKPOINT_KEY, mapping={"AAPL": ts, "MSFT": ts, "lower": ts, "BRK.B": ts, "": ts})
    redis_client.hset(HOLE_KEY, mapping={"NVDA": f"{ts}|{ts}", "not a ticker": f"{ts}|{ts}"})
    assert feed._refill_targets(ALL) == ["AAPL", "BRK.B", "MSFT", "NVDA"]


def test_hostile_events_are_dead_letters_and_the_rest_of_the_frame_is_delivered(settings, redis_client):
    """Values the conversions refuse (a start time beyond any calendar: OSError, OverflowError; a lone
    surrogate as the symbol: UnicodeEncodeError on the key) and a frame nested too deeply to read
    (RecursionError) are dead letters with their reasons; they never end the connection."""
    s = burst_settings(settings)
    feed = WebSocketFeed(s, rest=MarketProducer(s))
    hostile = [am("BIG", s=10**20), am("HUGE", s=10**400), am("NEG", s=-(10**15)), am("\ud800")]
    deep = "[" * 100_000 + "]" * 100_000
    later = MINUTE + timedelta(minutes=1)
    handle(feed, json.dumps([am("AAPL"), *hostile, am("MSFT")]), deep, json.dumps([am("AAPL", later)]))
    sent = verify.read_topic(s, s.kafka_topic, None, timeout_s=20)
    assert sorted((m["symbol"], m["ts"]) for m in sent) == [
        ("AAPL", contract.format_ts(MINUTE)),
        ("AAPL", contract.format_ts(later)),
        ("MSFT", contract.format_ts(MINUTE)),
    ]
    letters = verify.read_topic(s, s.kafka_dlq_topic, None, timeout_s=20)
    reasons = sorted(letter["error"] for letter in letters)
    assert len(letters) == 5 and feed.stats["dead_letters"] == 5, reasons
    assert sum(r.startswith("AM event's 's' (the minute's start in ms) is not a time") for r in reasons) == 3
    assert "WebSocket frame is not JSON (nested too deeply to read)" in reasons
    assert sum(r.startswith("symbol is not a ticker") for r in reasons) == 1
    assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == contract.format_ts(later)


@pytest.mark.parametrize("symbols", ["all", "watchlist"])
def test_input_no_symbol_can_be_tied_to_refills_the_whole_market_at_most_once_in_a_while(
    settings, redis_client, symbols
):
    """A frame that is not JSON or is nested too deeply, an AM event whose ``sym`` is no string:
    whose bars they carried is unknown. With AM.* the first refills every symbol, the next ones
    within UNKNOWN_REFILL_INTERVAL_S none (was: each one, so one such frame a minute kept the
    rate-limited REST budget busy with 10,000-symbol refills); with a watchlist each one."""
    s = burst_settings(settings, websocket_symbols=symbols)
    feed = WebSocketFeed(s, rest=MarketProducer(s))
    asyncio.run(feed._on_frame("not JSON"))
    assert feed._refill_symbols is ALL
    feed._refill_symbols = set()  # the refill thread took it
    deep, no_symbol = "[" * 100_000 + "]" * 100_000, json.dumps([am(5, s="x"), am(None, s=None), am("AAPL")])
    handle(feed, '{"ev": "AM", "sym":', deep, no_symbol)
    assert feed.stats["dead_letters"] == 5 and feed.stats["sent"] == 1
    assert feed._refill_symbols == (set() if symbols == "all" else ALL)


def test_a_bar_kafka_never_confirmed_is_refilled_though_newer_frames_were_confirmed(settings, redis_client):
    """The 10:00 frame times out, the 10:01 … 10:06 frames are confirmed, then the (rate-limited)
    refill reaches the symbol: it must resend 10:00. The checkpoint stays before the hole and the
    refill starts at it (else: checkpoint 10:06, refill from 10:02, 10:00 lost for good)."""
    from stockpipe.sources.simulator import start_in_thread
    from tests.integration.simkit import on_simulator

    now = MINUTE + timedelta(minutes=10)
    with start_in_thread(seed=5, clock="demo", now=lambda: now.timestamp(), universe_size=10) as sim:
        s = on_simulator(burst_settings(settings), sim, "test-key-hole", watchlist=["AAPL"])
        away = s.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})  # nothing listens there
        options = {"message.timeout.ms": 1500, "delivery.report.only.error": True}
        dead = clients.kafka_producer(away, "producer", **options, log_level=0)
        live = clients.kafka_producer(s, "producer", **options)
        feed = WebSocketFeed(s, rest=MarketProducer(s, clock=lambda: now), kafka_producer=dead, delivery_timeout_s=5)
        before = contract.format_ts(MINUTE - timedelta(minutes=1))
        redis_client.hset(CHECKPOINT_KEY, "AAPL", before)
        handle(feed, json.dumps([am("AAPL")]))  # 10:00: Kafka never confirms it
        assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == before and "AAPL" in feed._refill_symbols
        feed.kafka, feed._stop = live, threading.Event()
        handle(feed, *(json.dumps([am("AAPL", MINUTE + timedelta(minutes=i))]) for i in range(1, 7)))
        checkpoint, hole = redis_client.hget(CHECKPOINT_KEY, "AAPL"), redis_client.hget(HOLE_KEY, "AAPL")
        feed._stop = threading.Event()
        feed._refill(["AAPL"])  # the refill reaches the symbol now
        sent = verify.read_topic(s, s.kafka_topic, None, timeout_s=20)
        assert (contract.format_ts(MINUTE), "simulator") in {(m["ts"], m["source"]) for m in sent}  # not lost
        assert checkpoint == before  # the confirmed 10:01 … 10:06 did not carry it past the hole
        assert hole == f"{contract.format_ts(MINUTE)}|{contract.format_ts(MINUTE)}"
        newest = contract.format_ts(now - timedelta(minutes=1))
        assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == newest and redis_client.hget(HOLE_KEY, "AAPL") is None
        feed._stop = threading.Event()
        handle(feed, json.dumps([am("AAPL", now)]))  # the hole refilled: pushes move the checkpoint again
        assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == contract.format_ts(now)


def test_a_hole_the_checkpoint_script_failed_to_record_is_recorded_by_the_next_call(settings, redis_client):
    """10:00 times out and the script call that was to record its hole fails (Redis away); Redis is
    back for 10:01 … 10:06, which are confirmed. The hole must be recorded then (kept in memory until
    a call succeeded), before those checkpoints move: was thrown away, so the checkpoint went to 10:06,
    the refill read from 10:02, and 10:00 was never resent."""
    from stockpipe.sources.simulator import start_in_thread
    from tests.integration.simkit import on_simulator

    now = MINUTE + timedelta(minutes=10)
    with start_in_thread(seed=5, clock="demo", now=lambda: now.timestamp(), universe_size=10) as sim:
        s = on_simulator(burst_settings(settings), sim, "test-key-lost-hole", watchlist=["AAPL"])
        away = s.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})  # nothing listens there
        options = {"message.timeout.ms": 1500, "delivery.report.only.error": True}
        dead = clients.kafka_producer(away, "producer", **options, log_level=0)
        live = clients.kafka_producer(s, "producer", **options)
        feed = WebSocketFeed(s, rest=MarketProducer(s, clock=lambda: now), kafka_producer=dead, delivery_timeout_s=5)
        before = contract.format_ts(MINUTE - timedelta(minutes=1))
        redis_client.hset(CHECKPOINT_KEY, "AAPL", before)
        script = feed._advance_script
        redis_away = s.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}).redis_client(decode_responses=True)
        feed._advance_script = redis_away.register_script(_ADVANCE_LUA)  # the script call fails
        handle(feed, json.dumps([am("AAPL")]))  # 10:00: Kafka never confirms it
        assert redis_client.hget(HOLE_KEY, "AAPL") is None  # not recorded (yet)
        feed.kafka, feed._advance_script, feed._stop = live, script, threading.Event()
        handle(feed, *(json.dumps([am("AAPL", MINUTE + timedelta(minutes=i))]) for i in range(1, 7)))
        ts = contract.format_ts(MINUTE)
        assert redis_client.hget(HOLE_KEY, "AAPL") == f"{ts}|{ts}" and not feed._pending_holes
        assert redis_client.hget(CHECKPOINT_KEY, "AAPL") == before  # 10:01 … 10:06 did not pass the hole
        assert "AAPL" in feed._refill_symbols
        feed._stop = threading.Event()
        feed._refill(["AAPL"])
        sent = verify.read_topic(s, s.kafka_topic, None, timeout_s=20)
        assert (ts, "simulator") in {(m["ts"], m["source"]) for m in sent}  # 10:00 resent over REST
        assert redis_client.hget(HOLE_KEY, "AAPL") is None


def test_the_refill_of_a_bar_kafka_never_confirmed_is_requested_once_its_hole_is_written(settings, redis_client):
    """The refill thread may start the moment a refill is requested: requested before the hole was
    written, it could read its window before the hole existed, and the hole then written would stay
    (freezing the symbol's checkpoint until some later refill). Each request must find the hole."""
    s = burst_settings(settings)
    away = s.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})  # nothing listens there
    options = {"message.timeout.ms": 1500, "delivery.report.only.error": True}
    feed = WebSocketFeed(
        s,
        rest=MarketProducer(s),
        kafka_producer=clients.kafka_producer(away, "producer", **options, log_level=0),
        delivery_timeout_s=5,
    )
    requested, request = [], feed.request_refill

    def request_refill(symbols):  # what a refill starting at once would find
        requested.append((symbols, redis_client.hget(HOLE_KEY, "AAPL")))
        request(symbols)

    feed.request_refill = request_refill
    handle(feed, json.dumps([am("AAPL")]))
    ts = contract.format_ts(MINUTE)
    assert requested == [({"AAPL"}, f"{ts}|{ts}")]
    assert feed._refill_symbols == {"AAPL"}


@pytest.mark.parametrize(
    ("hole", "window", "left"),
    [
        (("10:00", "10:00"), ("09:56", "10:07"), None),  # covered: cleared
        (("10:00", "10:06"), ("09:56", "10:06"), ("10:06", "10:06")),  # 10:06 not fetched yet: it stays
        (("10:00", "10:02"), ("10:01", "10:07"), ("10:00", "10:02")),  # recorded after the window began
    ],
    ids=["covered", "partly", "older-than-the-window"],
)
def test_a_delivered_fetch_clears_only_the_part_of_a_hole_it_covered(settings, redis_client, hole, window, left):
    at = lambda hhmm: contract.format_ts(MINUTE.replace(hour=int(hhmm[:2]), minute=int(hhmm[3:])))  # noqa: E731
    producer = MarketProducer(settings)
    redis_client.hset(HOLE_KEY, "AAPL", f"{at(hole[0])}|{at(hole[1])}")
    start, end = (MINUTE.replace(hour=int(t[:2]), minute=int(t[3:])) for t in window)
    assert producer.hole("AAPL") == contract.parse_ts(at(hole[0]))
    producer._covered("AAPL", start, end, end - timedelta(minutes=1))  # REST returned every minute
    assert redis_client.hget(HOLE_KEY, "AAPL") == (left and f"{at(left[0])}|{at(left[1])}")


@pytest.mark.parametrize(
    ("hole", "newest", "left"),
    [
        (("10:08", "10:09"), None, ("10:08", "10:09")),  # REST returned nothing: kept
        (("10:08", "10:09"), "10:07", ("10:08", "10:09")),  # only bars before the hole: kept
        (("10:08", "10:09"), "10:08", ("10:09", "10:09")),  # up to 10:08: 10:09 stays
        (("10:03", "10:04"), None, None),  # older than the overlap (5 min) before the end: settled
    ],
    ids=["nothing", "bars-before-it", "part-of-it", "settled"],
)
def test_a_fetch_clears_a_hole_only_as_far_as_rest_returned_bars(settings, redis_client, hole, newest, left):
    """The refill may run before REST published the hole's minute: clearing the whole window [10:03,
    10:10) then lost the bar for good (the checkpoint moves past it, nothing resends it)."""
    at = lambda hhmm: MINUTE.replace(hour=int(hhmm[:2]), minute=int(hhmm[3:]))  # noqa: E731
    producer = MarketProducer(settings)
    redis_client.hset(HOLE_KEY, "AAPL", "|".join(contract.format_ts(at(t)) for t in hole))
    producer._covered("AAPL", at("10:03"), at("10:10"), newest and at(newest))
    assert redis_client.hget(HOLE_KEY, "AAPL") == (left and "|".join(contract.format_ts(at(t)) for t in left))


def test_a_hole_rest_has_not_published_yet_stays_until_a_fetch_returns_its_bar(settings, redis_client):
    """The refill reaches the symbol at 10:10, before REST published its hole's minute 10:09 (it
    appears 2 minutes after its close): the fetch returns 10:01 … 10:08. The hole must stay (was:
    cleared, the window [10:01, 10:10) covered it, and 10:09 was never resent) and the symbol be
    refilled again; the refill at 10:13 returns 10:09 and clears it."""
    from stockpipe.sources.simulator import start_in_thread
    from stockpipe.sources.simulator.faults import FaultRequest, LateBarSpec
    from tests.integration.simkit import on_simulator

    clock = {"now": MINUTE + timedelta(minutes=10)}
    late, ts = MINUTE + timedelta(minutes=9), contract.format_ts(MINUTE + timedelta(minutes=9))
    with start_in_thread(seed=5, clock="demo", now=lambda: clock["now"].timestamp(), universe_size=10) as sim:
        sim.state.apply_faults(FaultRequest(late_bars=[LateBarSpec(symbol="AAPL", ts=late, delay_s=120)]))
        s = on_simulator(burst_settings(settings), sim, "test-key-late-hole", watchlist=["AAPL"])
        feed = WebSocketFeed(s, rest=MarketProducer(s, clock=lambda: clock["now"]))
        redis_client.hset(CHECKPOINT_KEY, "AAPL", contract.format_ts(MINUTE + timedelta(minutes=5)))
        redis_client.hset(HOLE_KEY, "AAPL", f"{ts}|{ts}")
        feed._refill(["AAPL"])  # 10:01 … 10:08
        assert redis_client.hget(HOLE_KEY, "AAPL") == f"{ts}|{ts}"
        assert feed._refill_symbols == {"AAPL"}  # again shortly
        clock["now"] += timedelta(minutes=3)
        feed._refill(sorted(feed._refill_symbols))  # 10:09 … 10:12
        assert redis_client.hget(HOLE_KEY, "AAPL") is None
        sent = [m["ts"] for m in verify.read_topic(s, s.kafka_topic, None, timeout_s=20)]
        assert ts in sent  # resent over REST once published


def test_confirmation_waits_while_kafka_delivers_though_its_queue_never_empties(settings, redis_client):
    """Kafka slower than the input for longer than the delivery timeout: the queue (which also holds
    the frames read since) is never empty, yet every message is delivered well within the timeout.
    Nothing may be purged then (was: the flush never reached 0, so everything in flight, later frames
    too, was purged and refilled: a refill storm)."""
    s = burst_settings(settings)
    slow = {"batch.num.messages": 1, "max.in.flight.requests.per.connection": 1, "linger.ms": 0}  # 1 msg a request
    options = {"message.timeout.ms": 2000, "delivery.report.only.error": True, **slow}
    feed = WebSocketFeed(s, rest=MarketProducer(s), kafka_producer=clients.kafka_producer(s, "producer", **options))
    feed.delivery_timeout_s = 2.0
    symbols = [f"S{i:03d}" for i in range(100)]
    minutes: list[datetime] = []

    async def input_faster_than_kafka() -> None:
        deadline = time.monotonic() + 3 * feed.delivery_timeout_s
        while time.monotonic() < deadline and len(minutes) < 2500:  # all of them in the past
            if len(feed.kafka) < 300:  # a frame whenever fewer than ~0.1 s of messages are queued
                minutes.append(MINUTE - timedelta(days=1, minutes=-len(minutes)))
                await feed._on_frame(json.dumps([am(symbol, minutes[-1]) for symbol in symbols]))
            else:
                await asyncio.sleep(0.002)

    confirmer = threading.Thread(target=feed._confirm_loop, daemon=True)
    confirmer.start()
    try:
        asyncio.run(input_faster_than_kafka())
        feed.kafka.flush(10)
    finally:
        feed._stop.set()
        confirmer.join(30)
    assert not confirmer.is_alive() and len(minutes) > 20
    sent = verify.read_topic(s, s.kafka_topic, None, timeout_s=30)
    assert len(sent) == feed.stats["sent"] == len(symbols) * len(minutes)  # none purged
    assert not feed._refill_symbols  # no frame failed
    checkpoints = redis_client.hgetall(CHECKPOINT_KEY)
    assert {symbol: checkpoints.get(symbol) for symbol in symbols} == dict.fromkeys(
        symbols, contract.format_ts(minutes[-1])
    )
