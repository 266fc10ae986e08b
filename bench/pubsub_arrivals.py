"""Benchmark (not a test): how late does the benchmarks' pub/sub reader stamp the messages of a
whole-market burst? The size of the measurement artifact in bench/market_live.py's close → Redis.

    .venv/bin/python bench/pubsub_arrivals.py [--messages 10000] [--rounds 5] [--redis-db 13]

A publisher process (this script with ``--publisher``) publishes ``--messages`` latest-state messages
(``stockpipe.storage.redis_latest.encode_rows`` of rows shaped like the sink's market.latest_1m rows,
every indicator set: ~1 KB of JSON each) in one burst, the way the sink does: the check-and-set
script (500 symbols a call, hashes in ``--redis-db`` under ``stockpipe-bench-arrivals:``, deleted at
the end), all calls in one pipeline, on a channel of its own (pub/sub channels are not per database:
never ``stockpipe:bars``). In this process, one reader at a time is subscribed, alternating rounds:

* **old** — the former ``BarArrivals``: redis-py ``PubSub.get_message()`` + ``json.loads`` per
  message, then ``time.time()``;
* **new** — ``bench.websocket_feed.BarArrivals``: the socket read in bulk, each chunk stamped on
  receipt, RESP and JSON parsed while the socket is idle.

Per round: the delay of the p50 / p95 / last message's stamp after the publish finished (the
pipeline's reply received by the publisher; same clock). The median over the rounds is printed per
reader; the difference is what the old reader added to the last messages of a burst.

Prints a table and writes bench/results/pubsub_arrivals.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
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

from bench.websocket_feed import BarArrivals, percentile  # noqa: E402
from stockpipe.config import load_settings  # noqa: E402
from stockpipe.indicators import INDICATOR_COLUMNS  # noqa: E402
from stockpipe.storage.redis_latest import _SET_IF_NEWER_MANY, SYMBOLS_PER_CALL, encode_rows  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "pubsub_arrivals.json"
PREFIX = "stockpipe-bench-arrivals:"


class OldArrivals:
    """The former BarArrivals (until this benchmark): stamps after redis-py's parse and json.loads."""

    def __init__(self, settings: Any, channel: str) -> None:
        self.first: dict[tuple[str, int], float] = {}
        self._pubsub = settings.redis_client(socket_timeout=5).pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=1.0)
            if not message:
                continue
            arrived = time.time()
            try:
                bar = json.loads(message["data"])
                key = (bar["symbol"], int(bar["ts_ms"]) // 1000)
            except (ValueError, KeyError, TypeError):
                continue
            self.first.setdefault(key, arrived)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()


def latest_rows(count: int, seed: int = 14) -> list[dict[str, Any]]:
    """Rows as the sink's latest_1m upsert returns them (every indicator set), one per symbol."""
    rng = random.Random(seed)
    ts = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)
    rows = []
    for i in range(count):
        price = rng.uniform(5, 500)
        row: dict[str, Any] = {
            "symbol": f"B{i:05d}",
            "ts": ts,
            "open": round(price, 4),
            "high": round(price * 1.001, 4),
            "low": round(price * 0.999, 4),
            "close": round(price * rng.uniform(0.999, 1.001), 4),
            "volume": float(rng.randint(100, 50_000)),
            "vwap": round(price, 4),
            "trades": rng.randint(1, 500),
            "source": "simulator-websocket",
            "fetched_at": ts + timedelta(seconds=60.25 + rng.random() * 0.1),
            "written_at": ts + timedelta(seconds=61.5 + rng.random()),
        }
        for name in INDICATOR_COLUMNS:
            row[name] = rng.uniform(0, 100) if name == "rsi_14" else price * rng.uniform(0.98, 1.02)
        rows.append(row)
    return rows


def publisher(channel: str) -> int:
    """Publish the burst on each line of stdin; print (start, end) of each as JSON."""
    settings = load_settings()
    client = settings.redis_client(socket_timeout=30)
    script = client.register_script(_SET_IF_NEWER_MANY)
    count = int(os.environ["BENCH_ARRIVALS_MESSAGES"])
    encoded = encode_rows(latest_rows(count))
    calls = []
    for start in range(0, count, SYMBOLS_PER_CALL):
        chunk = encoded[start : start + SYMBOLS_PER_CALL]
        args: list[Any] = [channel]
        for _, ts_ms, version, message, fields in chunk:
            args += (ts_ms, version, message, json.dumps(fields, separators=(",", ":")))
        calls.append(([f"{PREFIX}latest:{symbol}" for symbol, *_ in chunk], args))
    sizes = [len(message) for _, _, _, message, _ in encoded]
    script(keys=calls[0][0][:1], args=calls[0][1][:5])  # load the script (EVALSHA from here on)
    print(json.dumps({"ready": True, "message_bytes_mean": statistics.fmean(sizes)}), flush=True)
    messages = [message for _, _, _, message, _ in encoded]
    for line in sys.stdin:
        pipe = client.pipeline(transaction=False)
        if line.strip() == "publish":  # the fastest burst Redis can deliver: PUBLISH after PUBLISH
            for message in messages:
                pipe.publish(channel, message)
        else:  # as the sink does: the check-and-set script, 500 symbols a call
            for keys, args in calls:
                script(keys=keys, args=args, client=pipe)
        started = time.time()
        published = sum(pipe.execute())
        print(json.dumps({"start": started, "end": time.time(), "published": published}), flush=True)
    client.delete(*[key for keys, _ in calls for key in keys])
    client.close()
    return 0


def round_figures(stamps: list[float], burst: dict[str, float], expected: int) -> dict[str, Any]:
    after = [t - burst["end"] for t in stamps]
    return {
        "received": len(stamps),
        "expected": expected,
        "publish_s": round(burst["end"] - burst["start"], 4),
        "p50_after_publish_s": _r(percentile(after, 50)),
        "p95_after_publish_s": _r(percentile(after, 95)),
        "last_after_publish_s": _r(max(after) if after else None),
    }


FIGURES = ("publish_s", "p50_after_publish_s", "p95_after_publish_s", "last_after_publish_s")


def synthetic(settings: Any, redis_url: str, messages: int, rounds: int, modes: list[str]) -> dict[str, Any]:
    """Each mode: ``rounds`` bursts per reader, old and new alternating."""
    channel = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "STOCKPIPE_REDIS_URL": redis_url, "BENCH_ARRIVALS_MESSAGES": str(messages)}
    child = subprocess.Popen(
        [sys.executable, __file__, "--publisher", channel], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        text=True, cwd=ROOT,
    )  # fmt: skip
    readers = {"old": lambda: OldArrivals(settings, channel), "new": lambda: BarArrivals(settings, channel)}
    runs: list[dict[str, Any]] = []
    try:
        ready = json.loads(child.stdout.readline())
        for mode in modes:
            for i in range(rounds * 2):
                name = ("old", "new")[i % 2]
                reader = readers[name]()
                time.sleep(0.5)  # subscribed (the new one waits for the confirmation itself)
                load = os.getloadavg()[0]
                child.stdin.write(mode + "\n")
                child.stdin.flush()
                burst = json.loads(child.stdout.readline())
                deadline = time.time() + 60
                while len(reader.first) < messages and time.time() < deadline:
                    time.sleep(0.05)
                reader.close()
                figures = round_figures(list(reader.first.values()), burst, messages)
                runs.append({"mode": mode, "reader": name, "load1": load, **figures})
                print(
                    f"{mode:<8} round {i // 2 + 1} {name}: {figures['received']:,} received, publish "
                    f"{figures['publish_s']:.3f} s, after it p50/p95/last {figures['p50_after_publish_s']:.3f} / "
                    f"{figures['p95_after_publish_s']:.3f} / {figures['last_after_publish_s']:.3f} s",
                    flush=True,
                )
    finally:
        child.stdin.close()
        child.wait(60)
    summary: dict[str, Any] = {}
    for mode in modes:
        for name in ("old", "new"):
            mine = [r for r in runs if r["mode"] == mode and r["reader"] == name]
            row: dict[str, Any] = {key: _r(statistics.median(r[key] for r in mine)) for key in FIGURES}
            row.update(rounds=len(mine), all_received=all(r["received"] == r["expected"] for r in mine))
            summary[f"{mode}/{name}"] = row
    return {"message_bytes_mean": round(ready["message_bytes_mean"], 1), "summary": summary, "rounds": runs}


def reader_process(name: str, channel: str, seconds: float, out: str) -> int:
    """One reader on ``channel`` for ``seconds``; its first arrivals as JSON in ``out``."""
    settings = load_settings()
    reader = (OldArrivals if name == "old" else BarArrivals)(settings, channel)
    print("subscribed", flush=True)
    time.sleep(seconds)
    reader.close()
    Path(out).write_text(json.dumps([[s, ts, at] for (s, ts), at in reader.first.items()]))
    return 0


def live(settings: Any, minutes: int) -> dict[str, Any]:
    """Both readers, each in a process of its own, on the stack's ``stockpipe:bars`` (read only) over
    ``minutes`` minute closes: per bar, the old reader's stamp − the new one's."""
    import tempfile

    seconds = (int(time.time()) // 60 + 1 + minutes) * 60 + 20 - time.time()
    procs, outs = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-arrivals-") as tmp:
        for name in ("old", "new"):
            outs[name] = f"{tmp}/{name}.json"
            procs[name] = subprocess.Popen(
                [sys.executable, __file__, "--reader", name, "--channel", settings.redis_bars_channel,
                 "--seconds", str(seconds), "--out", outs[name]], stdout=subprocess.PIPE, text=True, cwd=ROOT,
            )  # fmt: skip
        for proc in procs.values():
            proc.stdout.readline()
        print(f"live: both readers on {settings.redis_bars_channel} for {seconds:.0f} s ({minutes} minute closes)")
        for proc in procs.values():
            proc.wait(seconds + 120)
        stamps = {}
        for name, path in outs.items():
            stamps[name] = {(s, ts): at for s, ts, at in json.loads(Path(path).read_text())}
    both = sorted(set(stamps["old"]) & set(stamps["new"]))
    diff = [stamps["old"][k] - stamps["new"][k] for k in both]
    bursts: dict[int, list[tuple[str, int]]] = {}
    for key in both:
        bursts.setdefault(key[1], []).append(key)
    per_burst = []
    for ts, keys in sorted(bursts.items()):
        if len(keys) < 100:
            continue  # a refill's stragglers, not a minute's burst
        row = {"ts": datetime.fromtimestamp(ts, UTC).strftime("%H:%M"), "bars": len(keys)}
        for name in ("old", "new"):
            after = [stamps[name][k] - (ts + 60) for k in keys]
            row[name] = {"p50_s": _r(percentile(after, 50)), "p95_s": _r(percentile(after, 95))}
            row[name]["last_s"] = _r(max(after))
        per_burst.append(row)
    return {
        "minutes": minutes,
        "bars_both": len(both),
        "bars_old_only": len(set(stamps["old"]) - set(stamps["new"])),
        "bars_new_only": len(set(stamps["new"]) - set(stamps["old"])),
        "old_minus_new_s": {"p50": _r(percentile(diff, 50)), "p95": _r(percentile(diff, 95)),
                            "max": _r(max(diff) if diff else None), "min": _r(min(diff) if diff else None)},
        "bursts": per_burst,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per reader and publish mode (alternating)")
    parser.add_argument("--modes", default="script,publish", help="publish modes: script (as the sink), publish")
    parser.add_argument("--redis-db", type=int, default=13, help="where the burst's hashes go (deleted at the end)")
    parser.add_argument(
        "--live-minutes", type=int, default=0, help="also both readers on the running stack's channel (read only)"
    )
    parser.add_argument("--publisher", help=argparse.SUPPRESS)
    parser.add_argument("--reader", help=argparse.SUPPRESS)
    parser.add_argument("--channel", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publisher:
        return publisher(args.publisher)
    if args.reader:
        return reader_process(args.reader, args.channel, args.seconds, args.out)

    base = load_settings()
    redis_url = base.redis_url.rsplit("/", 1)[0] + f"/{args.redis_db}"
    settings = base.model_copy(update={"redis_url": redis_url})
    modes = [m for m in args.modes.split(",") if m]
    result: dict[str, Any] = {
        "finished_at": None,
        "machine": f"{os.cpu_count()} cpu, {platform.platform()}, Python {platform.python_version()}",
        "params": {"messages": args.messages, "rounds": args.rounds, "modes": modes, "redis_db": args.redis_db,
                   "live_minutes": args.live_minutes},
        "loadavg_start": list(os.getloadavg()),
    }  # fmt: skip
    result["synthetic"] = synthetic(settings, redis_url, args.messages, args.rounds, modes)
    if args.live_minutes:
        result["live"] = live(base, args.live_minutes)
    result["loadavg_end"] = list(os.getloadavg())
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")

    syn = result["synthetic"]
    print(
        f"\npub/sub reader stamp lag: {args.messages:,} messages of ~{syn['message_bytes_mean']:.0f} B in one burst, "
        f"{args.rounds} rounds each (median), seconds after the publish finished"
    )
    header = f"{'publish/reader':<16} {'publish':>8} {'p50':>8} {'p95':>8} {'last':>8}  all received"
    print(header + "\n" + "-" * len(header))
    for name, s in syn["summary"].items():
        print(
            f"{name:<16} {s['publish_s']:>8.3f} {s['p50_after_publish_s']:>8.3f} {s['p95_after_publish_s']:>8.3f} "
            f"{s['last_after_publish_s']:>8.3f}  {s['all_received']}"
        )
    for mode in modes:
        old, new = syn["summary"][f"{mode}/old"], syn["summary"][f"{mode}/new"]
        print(
            f"{mode}: old − new p50 {old['p50_after_publish_s'] - new['p50_after_publish_s']:+.3f} s, p95 "
            f"{old['p95_after_publish_s'] - new['p95_after_publish_s']:+.3f} s, last "
            f"{old['last_after_publish_s'] - new['last_after_publish_s']:+.3f} s"
        )
    if "live" in result:
        lv = result["live"]
        d = lv["old_minus_new_s"]
        print(
            f"\nlive ({lv['minutes']} minute closes on the stack, {lv['bars_both']:,} bars seen by both): "
            f"old stamp − new stamp per bar p50 {_f(d['p50'])} s, p95 {_f(d['p95'])} s, max {_f(d['max'])} s"
        )
        for b in lv["bursts"]:
            print(
                f"  bar {b['ts']} ({b['bars']:,}): close → stamp p50/p95/last old {b['old']['p50_s']:.2f} / "
                f"{b['old']['p95_s']:.2f} / {b['old']['last_s']:.2f} s, new {b['new']['p50_s']:.2f} / "
                f"{b['new']['p95_s']:.2f} / {b['new']['last_s']:.2f} s"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


if __name__ == "__main__":
    raise SystemExit(main())
