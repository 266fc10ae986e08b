"""Benchmark (not a test): one whole-market ``AM.*`` burst from the WebSocket into Kafka — the
producer's share of issue 14's "live 10,000 symbols: minute close → PostgreSQL p95 ≤ 3 s".

    .venv/bin/python bench/websocket_burst.py [--universe 10000] [--bursts 4] [--rounds 2]
        [--speed 6] [--impls baseline,new] [--baseline-rev 300b262]

Beside the stack, changing nothing of it: a simulator in a child process (its own loopback port,
``universe_size`` symbols, all of them trading every minute) on a market clock a day in the past
that runs ``--speed`` times faster than the wall clock (a minute close every 60/speed s); in this
process the producer's real :class:`~stockpipe.producer.websocket.WebSocketFeed` (the official
``massive`` client, ``AM.*``, the contract, the idempotent producer, checkpoints in Redis database
``STOCKPIPE_TEST_REDIS_DB``, default 2) into Kafka topics of its own (``LogAppendTime``, so a
record's timestamp is when the broker appended it; deleted at the end, even on failure).

Implementations, measured in the same run, phase after phase (``--rounds`` × each of ``--impls``,
a new connection each, the first burst of a phase dropped as warm-up):

- **baseline**: the feed as it was at ``--baseline-rev`` (its ``websocket.py`` loaded from git);
- **new**: the feed of the working tree.

Per burst (one minute close): **push** = the simulator's sending of the burst's frames (start → end,
wall); **in Kafka** = push start → the last record's append time (the whole burst in Kafka);
**close → fetched_at** first / last (wall seconds after the minute closed on the market clock);
**events/s** = events / (first frame received → last frame confirmed); **CPU µs/event** = this
process's CPU time (all threads: Python, the WebSocket client, librdkafka) from the first frame's
arrival to the last frame's confirmation, per event — the main A/B figure on a shared box.

Prints a table and writes bench/results/websocket_burst.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

RESULTS = ROOT / "bench" / "results" / "websocket_burst.json"
KEY = "bench-key-websocket-burst"
BASELINE_REV = "300b262"  # the feed before the burst work (issue 14, "Market live")


class FastClock:
    """Market time a day ago, ``speed`` times faster than the wall clock (picklable: both processes
    build it from the same numbers)."""

    def __init__(self, speed: float, start: float | None = None, t0: float | None = None) -> None:
        if start is None:
            now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
            start = now.timestamp() + 45
        self.speed, self.start, self.t0 = speed, start, time.time() if t0 is None else t0

    def unix(self) -> float:
        return self.start + (time.time() - self.t0) * self.speed

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.unix(), UTC)

    def wall_of(self, market_s: float) -> float:
        return self.t0 + (market_s - self.start) / self.speed


# --- the simulator, in a child process ----------------------------------------------------------------
def _simulator_main(clock_args: tuple, universe: int, out: Any, stop: Any) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from stockpipe.sources.simulator import start_in_thread
    from stockpipe.sources.simulator.stream import MinuteFeed

    clock = FastClock(*clock_args)
    original = MinuteFeed._send

    async def timed_send(self, session, frames):
        started = time.time()
        await original(self, session, frames)
        out.put({"push_start": started, "push_end": time.time(), "frames": len(frames)})

    MinuteFeed._send = timed_send
    with start_in_thread(seed=14, clock="demo", now=clock.unix, universe_size=universe) as sim:
        out.put({"url": sim.url})
        stop.wait()


# --- the feed under test --------------------------------------------------------------------------------
def baseline_module(rev: str):
    source = subprocess.run(
        ["git", "show", f"{rev}:plugins/stockpipe/producer/websocket.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    spec = importlib.util.spec_from_loader("stockpipe.producer._websocket_baseline", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    exec(compile(source, f"{rev}:websocket.py", "exec"), module.__dict__)  # noqa: S102 - our own file at rev
    return module


def run_phase(impl: str, module: Any, settings: Any, clock: FastClock, bursts: int) -> list[dict]:
    """Run the feed until ``bursts`` + 1 bursts were handled; per frame (arrival, end, cpu at both, events)."""
    from stockpipe.producer.core import MarketProducer

    feed = module.WebSocketFeed(settings, rest=MarketProducer(settings, clock=clock), clock=clock, backoff_max_s=1.0)
    gc.unfreeze()  # as a fresh producer process: the new feed freezes its start-up heap (settle_heap)
    if hasattr(module, "settle_heap"):
        module.settle_heap()
    frames: list[dict] = []
    original = feed._on_frame

    async def timed(frame):
        arrived, cpu0 = time.time(), time.process_time()
        await original(frame)
        am = frame.count('"ev":"AM"') if isinstance(frame, str) else 0
        if am:
            frames.append(
                {"arrived": arrived, "done": time.time(), "cpu0": cpu0, "cpu1": time.process_time(), "am": am}
            )

    feed._on_frame = timed
    stop = threading.Event()
    runner = threading.Thread(target=feed.run, args=(stop,), daemon=True)
    runner.start()
    deadline = time.monotonic() + (bursts + 3) * 60 / clock.speed + 60
    try:
        while time.monotonic() < deadline and len(group_bursts(frames)) < bursts + 2:
            time.sleep(0.2)
    finally:
        stop.set()
        runner.join(30)
    done = group_bursts(frames)
    print(f"  {impl}: {len(done)} bursts seen, stats {feed.stats}", flush=True)
    return done[1 : bursts + 1]  # the first: warm-up (connection, refill); the last may be cut by the stop


def group_bursts(frames: list[dict]) -> list[list[dict]]:
    groups: list[list[dict]] = []
    for frame in sorted(frames, key=lambda f: f["arrived"]):
        if groups and frame["arrived"] - groups[-1][-1]["done"] < 1.0:
            groups[-1].append(frame)
        else:
            groups.append([frame])
    return groups


def read_topic(settings: Any, topic: str) -> list[tuple[float, dict]]:
    """(broker append time in s, message) of every record of ``topic``."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from stockpipe import clients

    consumer = clients.kafka_consumer(settings, "verify", **{"group.id": f"bench-burst-{uuid.uuid4().hex[:8]}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign(partitions)
        out = []
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(10000, 1.0):
                if msg.error():
                    continue
                out.append((msg.timestamp()[1] / 1000, json.loads(msg.value())))
                if msg.offset() + 1 >= ends[msg.partition()]:
                    pending.discard(msg.partition())
        return out
    finally:
        consumer.close()


def measure(burst: list[dict], pushes: list[dict], records: list[tuple[float, dict]], clock: FastClock) -> dict:
    from stockpipe import contract

    first, last = burst[0], burst[-1]
    events = sum(f["am"] for f in burst)
    push = max((p for p in pushes if p["push_start"] <= first["arrived"] + 0.05), key=lambda p: p["push_start"])
    window = [(t, m) for t, m in records if first["arrived"] - 0.5 <= t <= last["done"] + 5.0]
    minute = statistics.mode(m["ts"] for _, m in window)
    mine = [(t, m) for t, m in window if m["ts"] == minute]
    close_wall = clock.wall_of(contract.parse_ts(minute).timestamp() + 60)
    fetched = sorted(
        clock.wall_of(datetime.fromisoformat(m["fetched_at"].replace("Z", "+00:00")).timestamp()) for _, m in mine
    )
    appended = sorted(t for t, _ in mine)
    busy = last["done"] - first["arrived"]
    cpu = last["cpu1"] - first["cpu0"]
    return {
        "minute": minute,
        "events": events,
        "in_kafka": len(mine),
        "frames": len(burst),
        "push_s": round(push["push_end"] - push["push_start"], 3),
        "push_to_last_in_kafka_s": round(appended[-1] - push["push_start"], 3),
        "close_to_first_fetched_s": round(fetched[0] - close_wall, 3),
        "close_to_last_fetched_s": round(fetched[-1] - close_wall, 3),
        "first_frame_to_confirmed_s": round(busy, 3),
        "events_per_s": round(events / max(busy, 1e-3)),
        "cpu_us_per_event": round(cpu / events * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--universe", type=int, default=10_000)
    parser.add_argument("--bursts", type=int, default=4, help="bursts measured per phase (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--speed", type=float, default=6.0, help="market seconds per wall second")
    parser.add_argument("--impls", default="baseline,new")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    args = parser.parse_args()

    from pydantic import SecretStr

    from stockpipe.admin import admin_client
    from stockpipe.config import load_settings
    from stockpipe.producer import websocket as new_module
    from stockpipe.producer.core import CHECKPOINT_KEY

    impls = args.impls.split(",")
    modules = {"new": new_module}
    if "baseline" in impls:
        modules["baseline"] = baseline_module(args.baseline_rev)
    clock = FastClock(args.speed)
    ctx = mp.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_simulator_main, args=((clock.speed, clock.start, clock.t0), args.universe, out, stop))
    child.start()
    url = out.get(timeout=120)["url"]
    host, port = url.removeprefix("http://").split(":")

    base = load_settings()
    redis_db = int(os.environ.get("STOCKPIPE_TEST_REDIS_DB", "2"))
    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"bench-burst-{suffix}", f"bench-burst-{suffix}.dlq"
    settings = base.model_copy(
        update={
            "simulator_host": host,
            "simulator_port": int(port),
            "polygon_api_key": None,
            "simulator_api_key": SecretStr(KEY),
            "watchlist": ["AAPL"],
            "rate_limit_per_minute": 1000,
            "feed": "websocket",
            "websocket_symbols": "all",
            "accept_any_symbol": True,
            "backfill_start_minutes": 2,
            "kafka_topic": topic,
            "kafka_dlq_topic": dlq,
            "redis_url": base.redis_url.rsplit("/", 1)[0] + f"/{redis_db}",
            "pg_database": os.environ.get("STOCKPIPE_TEST_DATABASE", base.pg_database),
            "producer_metrics_port": 0,
        }
    )
    from confluent_kafka.admin import NewTopic

    admin = admin_client(settings)
    config = {"message.timestamp.type": "LogAppendTime", "retention.ms": str(3600_000)}
    for future in admin.create_topics(
        [NewTopic(topic, settings.kafka_partitions, 1, config=config), NewTopic(dlq, 1, 1, config=config)]
    ).values():
        future.result(timeout=30)
    redis = settings.redis_client(decode_responses=True)
    results: dict[str, list[dict]] = {impl: [] for impl in impls}
    load: list[float] = []
    try:
        for round_no in range(args.rounds):
            for impl in impls:
                redis.delete(CHECKPOINT_KEY)
                print(f"round {round_no + 1}, {impl} …", flush=True)
                load.append(os.getloadavg()[0])
                bursts = run_phase(impl, modules[impl], settings, clock, args.bursts)
                pushes = []
                while not out.empty():
                    pushes.append(out.get())
                results[impl].append({"bursts": bursts, "pushes": pushes})
        records = read_topic(settings, topic)
        letters = read_topic(settings, dlq)
    finally:
        stop.set()
        child.join(20)
        if child.is_alive():
            child.terminate()
        redis.delete(CHECKPOINT_KEY)
        for future in admin.delete_topics([topic, dlq], operation_timeout=30).values():
            try:
                future.result(timeout=30)
            except Exception as error:  # noqa: BLE001 - reported, the run's figures stand
                print(f"could not delete a topic: {error}")

    rows: dict[str, list[dict]] = {}
    for impl, phases in results.items():
        all_pushes = [p for phase in phases for p in phase["pushes"]]
        rows[impl] = [measure(b, all_pushes, records, clock) for phase in phases for b in phase["bursts"]]
    figures = ("cpu_us_per_event", "events_per_s", "push_s", "push_to_last_in_kafka_s", "close_to_first_fetched_s",
               "close_to_last_fetched_s", "first_frame_to_confirmed_s")  # fmt: skip
    summary = {
        impl: {name: round(statistics.median(r[name] for r in burst_rows), 3) for name in figures}
        | {"bursts": len(burst_rows), "lost": sum(r["events"] - r["in_kafka"] for r in burst_rows)}
        for impl, burst_rows in rows.items()
        if burst_rows
    }
    print(f"\n{args.universe:,} symbols, AM.*, {len(letters)} dead letters; medians over the measured bursts")
    names = ("bursts", "lost", *figures)
    print(f"{'':<26}" + "".join(f"{impl:>12}" for impl in summary))
    for name in names:
        print(f"{name:<26}" + "".join(f"{summary[impl][name]:>12,}" for impl in summary))
    if "baseline" in summary and "new" in summary:
        ratio = summary["baseline"]["cpu_us_per_event"] / summary["new"]["cpu_us_per_event"]
        print(f"CPU per event: {ratio:.1f}x less with the new feed")
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "websocket_burst",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "load_1m_at_phase_starts": load,
                "args": vars(args),
                "dead_letters": len(letters),
                "summary": summary,
                "bursts": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
