"""Benchmark (not a test): the WebSocket feed against REST polling, live on the running stack
(`make up`: simulator in real time, market_stream running), 5 watchlist symbols — issue 14's targets
"Live, WebSocket, 5 symbols: minute close → Redis p95 ≤ 2 s" and "Disconnect storm (drop every 60 s
for 10 minutes): 0 bars lost, rate limit never exceeded".

    .venv/bin/python bench/websocket_feed.py [--rest-min 5] [--websocket-min 5] [--storm-min 10] [--quick]

While it runs, the stack's own producer is paused (Airflow DAGs ``market_producer`` and
``market_ingest``, restored at the end, even on failure) and the benchmark runs its own
``python -m stockpipe.producer`` (same checkpoints, topic, stream and limiter as the stack's), one
phase after the other:

1. **rest** (baseline) — ``STOCKPIPE_FEED=rest``, the stack's polling policy and rate limit;
2. **websocket** — ``STOCKPIPE_FEED=websocket``: the simulator pushes ``AM`` events at each minute close;
3. **storm** — the websocket feed while the simulator drops the connection at every minute close
   (``ws_drop`` = the storm's minutes): each minute's bars come from the REST refill after the reconnect.
   By default it runs beside the stack, not on it (``--storm-on-stack`` to run it there): an
   in-process simulator in real time, its own API key (so its own rate-limit budget, at the stack's
   limit), bars topic and Redis database (``BENCH_REDIS_DB``, default 5: one no test or benchmark flushes
   meanwhile, or the limiter forgets its calls), the feed in a thread; lost = bars of the window
   missing from its topic. The stack keeps running meanwhile.

Per bar whose minute closed inside a phase's window: **Redis** = first arrival on the pub/sub channel
``stockpipe:bars`` of that bar or a newer one of the symbol − (ts + 60 s) (stamped as the bytes
arrive: :class:`BarArrivals`); **PostgreSQL** = the commit of the row's last write (bar and
indicators, bench/pg_commit.py; ``written_at`` when ``track_commit_timestamp`` is off, said so) −
(ts + 60 s) in ``market.bars_1m`` (a REST refill of a pushed bar moves it; ``written_at`` − (ts + 60 s)
is kept as "write started"); **Kafka** = the first time the producer sent the bar (its CreateTime) − (ts + 60 s),
the producer's share of the Redis figure; **lost** = bars of the window missing from
``market.bars_1m`` after the drain; **max/60s** = the most market-data calls the simulator logged
for the stack's key in any rolling 60 s (must stay ≤ the rate limit).

Prints a table and writes bench/results/websocket_feed.json.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import select
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import httpx  # noqa: E402
import psutil  # noqa: E402

from bench import pg_commit  # noqa: E402
from stockpipe import clients  # noqa: E402
from stockpipe.airflow.restart import dag_is_paused, set_dag_paused  # noqa: E402
from stockpipe.config import load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "websocket_feed.json"
PRODUCER_DAGS = ("market_producer", "market_ingest")
ADMIN_HEADER = "X-Admin-Token"
TARGET_P95_S = 2.0
#: Beside the stack: other symbols than the stack's, whose stream publishes on the same Redis channel
#: (pub/sub channels are not per database).
BESIDE_WATCHLIST = ["NVDA", "META", "NFLX", "JPM", "KO"]


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_s": _round(percentile(values, 50)),
        "p95_s": _round(percentile(values, 95)),
        "max_s": _round(max(values) if values else None),
        "mean_s": _round(statistics.fmean(values) if values else None),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def most_in_any_window(times: list[float], window_s: float = 60.0) -> int:
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window_s:
            first += 1
        best = max(best, last - first + 1)
    return best


class BarArrivals:
    """First arrival (unix time) of each (symbol, ts) on ``stockpipe:bars`` (or ``channel``).

    The arrival is stamped when the bytes reach this process, with no per-message work before it: a
    thread reads the subscription's socket in bulk (up to :data:`CHUNK_BYTES` a read) and stamps each
    chunk as it is received; a message's arrival is the stamp of the chunk that holds its last byte.
    The RESP framing and the JSON are parsed only while the socket has nothing waiting, one chunk at a
    time (and what is left at :meth:`close`), so parsing never delays a stamp by more than one chunk's
    parse (~1 ms). The former reader (redis-py ``PubSub.get_message`` + ``json.loads`` per message,
    then the stamp) fell behind a burst that arrives faster than ~25–30 µs a message: the last of
    10,000 ``PUBLISH`` in one pipeline ~0.2 s late; ~0.01 s as the sink publishes (bench/pubsub_arrivals.py)."""

    CHUNK_BYTES = 65536

    def __init__(self, settings: Any, channel: str | None = None, ready_timeout_s: float = 10.0) -> None:
        self.first: dict[tuple[str, int], float] = {}
        self.messages = self.chunks = self.undecodable = 0
        self.lost: str | None = None  # why the subscription ended before close(), if it did
        self.channel = channel or settings.redis_bars_channel
        self._client = settings.redis_client(socket_timeout=5)
        self._conn = self._client.connection_pool.make_connection()  # its own socket: AUTH, SELECT done
        self._conn.connect()
        self._conn.send_command("SUBSCRIBE", self.channel)
        self._sock = self._conn._sock
        self._sock.setblocking(False)
        self._pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self._buffer = bytearray()
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bar-arrivals")
        self._thread.start()
        if not self._subscribed.wait(ready_timeout_s):
            self.close()
            raise SystemExit(f"Redis did not confirm the subscription to {self.channel} within {ready_timeout_s:g} s")

    def _run(self) -> None:
        sock, chunk = self._sock, self.CHUNK_BYTES
        while not self._stop.is_set():
            try:
                data = sock.recv(chunk)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                if self._pending:  # nothing waiting: parse one chunk, then look at the socket again
                    self._parse(*self._pending.popleft())
                else:
                    select.select([sock], [], [], 0.5)
                continue
            except OSError as error:
                self.lost = f"the subscription's connection failed at {datetime.now(UTC):%H:%M:%S} UTC ({error})"
                break
            at = time.time()
            if not data:
                self.lost = f"Redis closed the subscription's connection at {datetime.now(UTC):%H:%M:%S} UTC"
                break
            self._pending.append((at, data))
        if self.lost and not self._stop.is_set():
            print(f"BarArrivals: {self.lost}; later arrivals are missing", file=sys.stderr, flush=True)

    def _parse(self, at: float, data: bytes) -> None:
        """Append one chunk to the unparsed tail; every frame that ends in it arrived at ``at``."""
        self.chunks += 1
        buffer = self._buffer
        buffer += data
        pos = 0
        while True:
            parsed = resp_value(buffer, pos)
            if parsed is None:
                break
            frame, pos = parsed
            if not isinstance(frame, list) or len(frame) < 3 or not isinstance(frame[0], bytes):
                continue
            kind = frame[0].lower()
            if kind == b"subscribe":
                self._subscribed.set()
            elif kind == b"message":
                self.messages += 1
                try:
                    bar = json.loads(frame[2])
                    key = (bar["symbol"], int(bar["ts_ms"]) // 1000)
                except (ValueError, KeyError, TypeError):
                    self.undecodable += 1
                    continue
                self.first.setdefault(key, at)
        del buffer[:pos]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        while self._pending:  # what arrived but was not parsed yet (off the clock)
            self._parse(*self._pending.popleft())
        self._conn.disconnect()
        self._client.close()


def resp_value(buffer: bytes | bytearray, pos: int) -> tuple[Any, int] | None:
    """One RESP2/RESP3 value at ``pos`` → (value, position after it), or None when incomplete.
    Arrays (``*``, push ``>``) → lists; bulk strings → bytes (None for ``$-1``); integers → int;
    simple strings and errors → bytes."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, head = buffer[pos : pos + 1], bytes(buffer[pos + 1 : end])
    pos = end + 2
    if kind == b"$":
        size = int(head)
        if size < 0:
            return None, pos
        if len(buffer) < pos + size + 2:
            return None
        return bytes(buffer[pos : pos + size]), pos + size + 2
    if kind in (b"*", b">", b"~"):
        count, items = int(head), []
        for _ in range(max(count, 0)):
            parsed = resp_value(buffer, pos)
            if parsed is None:
                return None
            item, pos = parsed
            items.append(item)
        return (items if count >= 0 else None), pos
    if kind == b":":
        return int(head), pos
    return head, pos  # + simple string, - error, and RESP3's scalars as their text


def other_producers() -> list[int]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if "stockpipe.producer" in cmdline and "-m" in cmdline and process.pid != os.getpid():
            found.append(process.pid)
    return found


def admin(settings: Any, method: str, path: str, **kwargs: Any) -> Any:
    headers = {ADMIN_HEADER: settings.simulator_admin_token.get_secret_value()}
    response = httpx.request(method, f"{settings.simulator_url}{path}", headers=headers, timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()


def check_simulator_websocket(settings: Any) -> None:
    """The stack's simulator must speak the WebSocket protocol (one started before it did: restart it)."""
    if "websocket" not in admin(settings, "GET", "/_admin/stats"):
        raise SystemExit(
            f"the simulator at {settings.simulator_url} has no WebSocket API yet: "
            "supervisorctl -c infra/supervisord.conf restart simulator"
        )


def run_phase(
    settings: Any,
    name: str,
    env: dict[str, str],
    warmup_s: float,
    steady_s: float,
    drain_s: float,
    log_dir: Path,
    check: Any = None,
) -> dict[str, Any]:
    started = time.time()
    log_path = log_dir / f"bench-websocket-feed-{name}.log"
    storm_minutes = int(env.pop("_STORM_MINUTES", "0"))
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stockpipe.producer"],
            cwd=ROOT,
            env={**os.environ, "STOCKPIPE_PRODUCER_METRICS_PORT": "0", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            window_start = (int((started + warmup_s) // 60) + 1) * 60  # whole minutes
            window_end = window_start + steady_s
            if storm_minutes:  # the drops start at the window's first minute close
                time.sleep(max(0.0, window_start - 20 - time.time()))
                admin(settings, "POST", "/_admin/faults", json={"ws_drop": storm_minutes})
            while time.time() < window_end + drain_s:
                if process.poll() is not None:
                    raise SystemExit(f"the producer of phase {name} exited ({process.returncode}); see {log_path}")
                if check:
                    check()
                time.sleep(1)
        finally:
            if storm_minutes:
                admin(settings, "POST", "/_admin/faults", json={"ws_drop": 0})
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    text = log_path.read_text(errors="replace")
    return {
        "name": name,
        "env": env,
        "storm_drops": storm_minutes,
        "started_at": started,
        "window_start": window_start,
        "window_end": window_end,
        "ended_at": time.time(),
        "log": str(log_path),
        "connections": text.count("WebSocket: connecting"),
        "refills": text.count("refill over REST"),
    }


def kafka_arrivals(settings: Any, since: float, until: float) -> dict[tuple[str, int], float]:
    """First time (the producer's CreateTime) each (symbol, ts) was sent to the bars topic in [since, until]."""
    import uuid

    from confluent_kafka import TopicPartition

    consumer = clients.kafka_consumer(settings, "verify", **{"group.id": f"bench-ws-{uuid.uuid4().hex[:8]}"})
    first: dict[tuple[str, int], float] = {}
    try:
        topic = settings.kafka_topic
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, int(since * 1000)) for p in metadata.partitions], timeout=10
        )
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in starts}
        pending = {tp.partition for tp in starts if 0 <= tp.offset < ends[tp.partition]}
        consumer.assign([tp for tp in starts if tp.partition in pending])
        deadline = time.time() + 60
        while pending and time.time() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            if message.offset() + 1 >= ends[message.partition()]:
                pending.discard(message.partition())
            sent_at = message.timestamp()[1] / 1000
            if sent_at > until:
                continue
            try:
                bar = json.loads(message.value())
                key = (bar["symbol"], int(datetime.fromisoformat(bar["ts"].replace("Z", "+00:00")).timestamp()))
            except (ValueError, KeyError, TypeError):
                continue
            first[key] = min(sent_at, first.get(key, sent_at))
    finally:
        consumer.close()
    return first


def measure(settings: Any, phase: dict[str, Any], arrivals: BarArrivals) -> None:
    symbols = list(settings.watchlist)
    first_close, last_close = phase["window_start"], phase["window_end"]
    expected = [(s, close - 60) for s in symbols for close in range(int(first_close), int(last_close), 60)]
    redis_delays = []
    for symbol, ts in expected:  # Redis keeps the latest bar: a newer one covers an older one
        landed = [at for (s, t), at in arrivals.first.items() if s == symbol and t >= ts]
        if landed:
            redis_delays.append(min(landed) - (ts + 60))
    with clients.pg_connect(settings, "reader") as conn:
        on = pg_commit.tracking(conn)
        rows = conn.execute(
            "SELECT b.symbol, extract(epoch FROM b.ts)::bigint, extract(epoch FROM b.written_at), b.source, "
            f"{pg_commit.commit_epoch('b', on)}, {pg_commit.commit_epoch('i', on)} FROM market.bars_1m b "
            "LEFT JOIN market.indicators_1m i ON i.symbol = b.symbol AND i.ts = b.ts "
            "WHERE b.symbol = ANY(%s) AND b.ts >= to_timestamp(%s) AND b.ts < to_timestamp(%s)",
            (symbols, first_close - 60, last_close - 60),
        ).fetchall()
    stored = {(s, int(ts)) for s, ts, *_ in rows}
    sent = kafka_arrivals(settings, phase["started_at"], phase["ended_at"])
    kafka_delays = [sent[key] - (key[1] + 60) for key in expected if key in sent]
    pg_delays = [pg_commit.visible_at(float(w), cb, ci)[0] - (ts + 60) for _, ts, w, _, cb, ci in rows]
    pg_started = [float(w) - (ts + 60) for _, ts, w, *_ in rows]
    requests = admin(
        settings,
        "GET",
        "/_admin/requests",
        params={"api_key": settings.simulator_api_key.get_secret_value(), "since": phase["started_at"]},
    )
    calls = sorted(r["ts"] for r in requests["requests"] if r["ts"] <= phase["ended_at"])
    phase.update(
        expected_bars=len(expected),
        redis=summary(redis_delays),
        kafka=summary(kafka_delays),
        postgres=summary(pg_delays),
        lost=sorted(f"{s} {datetime.fromtimestamp(ts, UTC):%H:%M}" for s, ts in set(expected) - stored),
        sources={source: sum(1 for row in rows if row[3] == source) for source in {row[3] for row in rows}},
        postgres_measure=pg_commit.COMMITTED if on else pg_commit.FALLBACK,
        postgres_write_started=summary(pg_started),
        simulator_calls=len(calls),
        most_calls_in_any_60s=most_in_any_window(calls),
        redis_delays_s=[round(d, 2) for d in redis_delays],
    )


@contextlib.contextmanager
def beside_the_stack(settings: Any, log_dir: Path):
    """A pipeline of its own next to the stack: an in-process simulator in real time, a bars topic,
    a PostgreSQL database (``BENCH_PG_DATABASE``, default stockpipe_bench_ws; dropped at the end), a
    Redis database (``BENCH_LATENCY_REDIS_DB``, default 4) and a streaming job of its own
    (spark_jobs/stream_indicators.py). Yields (settings, env of its producers, check)."""
    import shutil
    import tempfile
    import uuid

    from pydantic import SecretStr

    from stockpipe.admin import admin_client, ensure_topics
    from stockpipe.sources.simulator import start_in_thread
    from stockpipe.storage.migrate import migrate

    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"bench-ws-latency-{suffix}", f"bench-ws-latency-{suffix}.dlq"
    database = os.environ.get("BENCH_PG_DATABASE", "stockpipe_bench_ws")
    redis_url = settings.redis_url.rsplit("/", 1)[0] + "/" + os.environ.get("BENCH_LATENCY_REDIS_DB", "4")
    key = f"bench-ws-latency-{suffix}"
    checkpoint = tempfile.mkdtemp(prefix="bench-ws-checkpoint-")
    with start_in_thread(clock="demo", universe_size=100) as sim:
        host, port = sim.url.removeprefix("http://").split(":")
        s = settings.model_copy(
            update={"simulator_host": host, "simulator_port": int(port), "polygon_api_key": None,
                    "simulator_api_key": SecretStr(key), "simulator_admin_token": SecretStr(sim.admin_token),
                    "kafka_topic": topic, "kafka_dlq_topic": dlq, "redis_url": redis_url, "pg_database": database,
                    "watchlist": BESIDE_WATCHLIST}
        )  # fmt: skip
        env = {
            "STOCKPIPE_SIMULATOR_HOST": host,
            "STOCKPIPE_SIMULATOR_PORT": port,
            "STOCKPIPE_POLYGON_API_KEY": "",
            "STOCKPIPE_SIMULATOR_API_KEY": key,
            "STOCKPIPE_KAFKA_TOPIC": topic,
            "STOCKPIPE_KAFKA_DLQ_TOPIC": dlq,
            "STOCKPIPE_REDIS_URL": redis_url,
            "STOCKPIPE_PG_DATABASE": database,
            "STOCKPIPE_WATCHLIST": ",".join(BESIDE_WATCHLIST),
            "STOCKPIPE_BACKFILL_START_MINUTES": "5",  # no day-long backlog for the fresh stream to chew first
        }
        ensure_topics(s, {topic: s.kafka_partitions, dlq: 1}, wait_s=30)
        migrate(s, database, wait_s=30)
        redis = s.redis_client()
        redis.flushdb()
        job_log = open(log_dir / "bench-websocket-feed-stream.log", "wb")  # noqa: SIM115
        job = subprocess.Popen(
            [sys.executable, str(ROOT / "spark_jobs" / "stream_indicators.py")],
            env={**os.environ, **env, "STOCKPIPE_STREAM_CHECKPOINT": checkpoint,
                 "STOCKPIPE_STREAM_QUERY_NAME": "bench_websocket_feed",
                 "STOCKPIPE_STREAM_STARTING_OFFSETS": "earliest"},
            stdout=job_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )  # fmt: skip

        def check() -> None:
            if job.poll() is not None:
                raise SystemExit(f"the streaming job exited ({job.returncode}); see {job_log.name}")

        try:
            time.sleep(45)  # the JVM, the first (empty) micro-batches
            check()
            yield s, env, check
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGTERM)
                try:
                    job.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(job.pid, signal.SIGKILL)
            job_log.close()
            client = admin_client(s)
            for future in client.delete_topics([topic, dlq], operation_timeout=30).values():
                try:
                    future.result(timeout=30)
                except Exception:  # already gone
                    pass
            redis.flushdb()
            redis.close()
            with clients.pg_connect(s, "admin", "postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            shutil.rmtree(checkpoint, ignore_errors=True)


def storm_beside_the_stack(settings: Any, minutes: int, warmup_s: float, drain_s: float) -> dict[str, Any]:
    """The disconnect storm on an in-process simulator, a topic and a Redis database of its own."""
    import uuid

    from pydantic import SecretStr

    from stockpipe import verify
    from stockpipe.admin import admin_client, ensure_topics
    from stockpipe.producer.core import MarketProducer
    from stockpipe.producer.websocket import WebSocketFeed
    from stockpipe.sources.simulator import FaultRequest, start_in_thread

    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"bench-ws-storm-{suffix}", f"bench-ws-storm-{suffix}.dlq"
    redis_url = settings.redis_url.rsplit("/", 1)[0] + "/" + os.environ.get("BENCH_REDIS_DB", "5")
    key = f"bench-ws-storm-{suffix}"
    with start_in_thread(clock="demo", universe_size=100) as sim:
        host, port = sim.url.removeprefix("http://").split(":")
        values = {"simulator_host": host, "simulator_port": int(port), "polygon_api_key": None, "feed": "websocket",
                  "simulator_api_key": SecretStr(key), "kafka_topic": topic, "kafka_dlq_topic": dlq,
                  "redis_url": redis_url, "backfill_start_minutes": 5}  # fmt: skip
        s = settings.model_copy(update=values)
        ensure_topics(s, {topic: s.kafka_partitions, dlq: 1}, wait_s=30)
        redis = s.redis_client(decode_responses=True)
        redis.flushdb()
        started = time.time()
        try:
            feed = WebSocketFeed(s, rest=MarketProducer(s))
            stop = threading.Event()
            runner = threading.Thread(target=feed.run, args=(stop,), daemon=True)
            runner.start()
            window_start = (int((started + warmup_s) // 60) + 1) * 60
            window_end = window_start + 60 * minutes
            time.sleep(max(0.0, window_start - 20 - time.time()))
            sim.state.apply_faults(FaultRequest(ws_drop=minutes))
            time.sleep(max(0.0, window_end + drain_s - time.time()))
            stop.set()
            runner.join(30)
            ended = time.time()
            messages = verify.read_topic(s, topic, None, timeout_s=30)
            letters = verify.read_topic(s, dlq, None, timeout_s=10)
        finally:
            client = admin_client(s)
            for future in client.delete_topics([topic, dlq], operation_timeout=30).values():
                try:
                    future.result(timeout=30)
                except Exception:  # already gone
                    pass
            redis.flushdb()
            redis.close()
        calls = sorted(r["ts"] for r in sim.state.log.requests(key))
        websocket = sim.state.stream.describe()
    symbols = list(s.watchlist)
    expected = [(sym, close - 60) for sym in symbols for close in range(int(window_start), int(window_end), 60)]
    delivered: dict[tuple[str, int], float] = {}
    for message in messages:
        ts = int(datetime.fromisoformat(message["ts"].replace("Z", "+00:00")).timestamp())
        at = datetime.fromisoformat(message["fetched_at"].replace("Z", "+00:00")).timestamp()
        delivered[(message["symbol"], ts)] = min(at, delivered.get((message["symbol"], ts), at))
    delays = [delivered[k] - (k[1] + 60) for k in expected if k in delivered]
    return {
        "name": "storm",
        "where": "beside the stack (in-process simulator, own topic, key and Redis database)",
        "env": {"STOCKPIPE_FEED": "websocket"},
        "storm_drops": minutes,
        "started_at": started,
        "window_start": window_start,
        "window_end": window_end,
        "ended_at": ended,
        "connections": feed.stats["connections"],
        "refills": feed.stats["refills"],
        "simulator_websocket": websocket,
        "expected_bars": len(expected),
        "lost": sorted(f"{sym} {datetime.fromtimestamp(ts, UTC):%H:%M}" for sym, ts in set(expected) - set(delivered)),
        "dead_letters": len(letters),
        "fetched": summary(delays),  # close → fetched (REST refill after the reconnect)
        "simulator_calls": len(calls),
        "most_calls_in_any_60s": most_in_any_window(calls),
        "calls_s": [round(t - window_start, 2) for t in calls],  # arrival at the simulator, from the window's start
        "sources": {src: sum(1 for m in messages if m["source"] == src) for src in {m["source"] for m in messages}},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup-s", type=float, default=60)
    parser.add_argument("--rest-min", type=float, default=5)
    parser.add_argument("--websocket-min", type=float, default=5)
    parser.add_argument("--storm-min", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="1-minute windows, 20 s warm-up (a dry run)")
    parser.add_argument("--phases", default="rest,websocket,storm", help="comma-separated")
    parser.add_argument("--storm-on-stack", action="store_true", help="the storm on the stack (its producer paused)")
    parser.add_argument(
        "--beside", action="store_true", help="rest and websocket beside the stack (own simulator, topic, stream job)"
    )
    args = parser.parse_args()
    if args.quick:
        args.warmup_s, args.rest_min, args.websocket_min, args.storm_min = 20, 1, 1, 2

    settings = load_settings()
    symbols = len(settings.watchlist)
    limit = settings.rate_limit_per_minute
    phases_spec = [
        ("rest", {"STOCKPIPE_FEED": "rest"}, args.rest_min, 90),
        ("websocket", {"STOCKPIPE_FEED": "websocket"}, args.websocket_min, 30),
        ("storm", {"STOCKPIPE_FEED": "websocket", "_STORM_MINUTES": str(args.storm_min)}, args.storm_min, 60),
    ]
    phases_spec = [spec for spec in phases_spec if spec[0] in args.phases.split(",")]
    storm_beside = "storm" in args.phases.split(",") and not args.storm_on_stack
    if storm_beside:
        phases_spec = [spec for spec in phases_spec if spec[0] != "storm"]
    log_dir = Path(os.environ.get("STOCKPIPE_LOCAL") or ROOT / ".local") / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    phases: list[dict[str, Any]] = []
    if phases_spec and args.beside:
        with beside_the_stack(settings, log_dir) as (own, env_beside, check):
            arrivals = BarArrivals(own)
            for name, env, minutes, drain in phases_spec:
                print(
                    f"phase {name} beside the stack: {env} — {args.warmup_s:.0f} s warm-up, {minutes:g} min, "
                    f"{drain} s drain"
                )
                phase = run_phase(own, name, {**env_beside, **env}, args.warmup_s, minutes * 60, drain, log_dir, check)
                phase["where"] = "beside the stack (in-process simulator, own topic, stream job, databases)"
                phase["env"] = env
                phases.append(phase)
            time.sleep(2)
            arrivals.close()
            for phase in phases:
                measure(own, phase, arrivals)
    elif phases_spec:
        running = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
        if any("live_freshness.py" in line for line in running):
            raise SystemExit("bench/live_freshness.py is running on this stack: run this benchmark after it")
        check_simulator_websocket(settings)
        print(f"websocket feed: {symbols} symbols, rate limit {limit} calls/min; pausing {', '.join(PRODUCER_DAGS)}")
        paused_before = {dag: dag_is_paused(settings, dag) for dag in PRODUCER_DAGS}
        arrivals = BarArrivals(settings)
        try:
            for dag in PRODUCER_DAGS:
                set_dag_paused(settings, dag, True)
            deadline = time.time() + 180
            while other_producers() and time.time() < deadline:
                time.sleep(2)
            if other_producers():
                raise SystemExit(f"another producer is still running (pids {other_producers()}): stop it first")
            for name, env, minutes, drain in phases_spec:
                print(f"phase {name}: {env} — {args.warmup_s:.0f} s warm-up, {minutes:g} min measured, {drain} s drain")
                phases.append(run_phase(settings, name, dict(env), args.warmup_s, minutes * 60, drain, log_dir))
        finally:
            for dag, was_paused in paused_before.items():
                try:
                    set_dag_paused(settings, dag, was_paused)
                except Exception as error:  # say it; the operator must restore it by hand
                    print(f"could not restore {dag} (paused={was_paused}): {error}")
        time.sleep(2)
        arrivals.close()
        for phase in phases:
            measure(settings, phase, arrivals)
    if storm_beside:
        print(f"phase storm beside the stack: {args.storm_min} drops, one a minute")
        phases.append(storm_beside_the_stack(settings, args.storm_min, args.warmup_s, 60))

    # phases of earlier runs stay in the file (the storm may run beside another benchmark, the rest after it)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"phases": []}
    done = {phase["name"] for phase in phases}
    order = ["rest", "websocket", "storm"]
    results["phases"] = sorted(
        [p for p in results["phases"] if p["name"] not in done] + phases, key=lambda p: order.index(p["name"])
    )
    rest = next((p for p in results["phases"] if p["name"] == "rest"), None)
    header = (
        f"{'phase':<10} {'bars':>7} {'Kafka p50':>9} {'p95':>6} {'Redis p50':>9} {'p95':>6} {'max':>6} "
        f"{'PG p50':>7} {'p95':>6} {'lost':>4} {'conn':>4} {'max/60s':>7} {'p95 vs rest':>11}  target"
    )
    print("\n" + header + "\n" + "-" * len(header))
    none = summary([])
    for phase in results["phases"]:
        r, pg = phase.get("redis", none), phase.get("postgres", none)
        sent = phase.get("kafka") or phase.get("fetched") or none
        if phase["name"] == "websocket":
            target = f"Redis p95 ≤ {TARGET_P95_S:g} s"
            met = r["p95_s"] is not None and r["p95_s"] <= TARGET_P95_S and r["n"] == phase["expected_bars"]
        elif phase["name"] == "storm":
            target = f"0 lost, ≤ {limit} calls/60s"
            met = not phase["lost"] and phase["most_calls_in_any_60s"] <= limit
        else:
            target, met = "baseline", None
        phase.update(target=target, met=met)
        ratio = (
            f"{rest['redis']['p95_s'] / r['p95_s']:.1f}x"
            if rest and phase is not rest and r["p95_s"] and rest["redis"]["p95_s"]
            else "-"
        )
        verdict = "" if met is None else (" met" if met else " MISSED")
        bars = (
            f"{r['n']:>3}/{phase['expected_bars']:<3}"
            if "redis" in phase
            else f"{sent['n']:>3}/{phase['expected_bars']:<3}"
        )
        print(
            f"{phase['name']:<10} {bars} {_s(sent['p50_s']):>9} {_s(sent['p95_s']):>6} {_s(r['p50_s']):>9} "
            f"{_s(r['p95_s']):>6} {_s(r['max_s']):>6} {_s(pg['p50_s']):>7} {_s(pg['p95_s']):>6} "
            f"{len(phase['lost']):>4} {phase['connections']:>4} {phase['most_calls_in_any_60s']:>7} {ratio:>11}  "
            f"{target}{verdict}"
        )
    for phase in results["phases"]:
        if phase["lost"]:
            print(f"{phase['name']}: missing: {', '.join(phase['lost'][:20])}")
        print(
            f"{phase['name']}: bars by source {phase['sources']}" + (f" ({phase['where']})" if "where" in phase else "")
        )
        if phase.get("postgres_measure"):
            started = phase.get("postgres_write_started") or {}
            print(
                f"{phase['name']}: PostgreSQL = {phase['postgres_measure']}; write started (written_at) p50/p95 "
                f"{_s(started.get('p50_s'))} / {_s(started.get('p95_s'))}"
            )
    results.update(
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=f"{os.cpu_count()} cpu, {platform.platform()}, Python {platform.python_version()}",
        loadavg=os.getloadavg(),
        params={"symbols": symbols, "rate_limit_per_minute": limit, "warmup_s": args.warmup_s,
                "minutes": {"rest": args.rest_min, "websocket": args.websocket_min, "storm": args.storm_min}},
    )  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


if __name__ == "__main__":
    raise SystemExit(main())
