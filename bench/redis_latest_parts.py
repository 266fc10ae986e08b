"""Benchmark (not a test): where the time of the sink's Redis step goes — one whole-market write of
the latest state (10,000 symbols) with the sink's check-and-set script, and the same script with one
part taken out at a time, on the stack's Redis.

    .venv/bin/python bench/redis_latest_parts.py [--symbols 10000] [--rounds 5] [--redis-db 13]

Rows shaped like the sink's (every column of market.latest_1m, every indicator set) are encoded by
``stockpipe.storage.redis_latest.encode_rows`` and sent as the sink sends them: 500 symbols a script
call (``SYMBOLS_PER_CALL``), the calls in order. Each write is a newer minute than the last, so every
symbol's check-and-set passes and every part of the script runs (a write of an older minute is
skipped by the check: it costs almost nothing, which a benchmark must not mistake for speed). Hashes
live in ``--redis-db`` under ``stockpipe-bench-parts:`` (deleted at the end), messages go to a
channel of their own (pub/sub channels are not per database: never ``stockpipe:bars``) with one
subscriber draining it, as the live stack has.

Variants, interleaved round by round (the box is shared; the median over the rounds is printed):

* ``sink script`` — ``redis_latest._SET_IF_NEWER_MANY`` as the sink runs it (the baseline);
* ``without DEL`` / ``without PUBLISH`` — that call removed;
* ``without HSET`` — no hash written (the JSON array of fields is not decoded either);
* ``decode, no HSET`` — the array decoded by cjson, not written;
* ``one string instead of the hash`` — the field array stored with one SET;
* ``hashtable encoding`` — the sink script with ``hash-max-listpack-entries 0`` (CONFIG SET for the
  run, restored after): Redis' dict instead of its listpack for the small hashes.

and the design that would take the hash write off the critical path, measured in the same rounds:

* ``shadow + RENAME`` — *before the commit* (while PostgreSQL works; not on the critical path) each
  symbol's new hash without ``written_at`` is written to a shadow key and its message, less
  ``written_at``, to a staging hash; *after the commit* one script call per 500 symbols sets
  ``written_at`` in the shadow, runs the same check-and-set against the latest hash, ``RENAME``s the
  shadow over it and publishes the message. Both phases are timed; the figures of the table are
  the after-commit phase. A check at the end writes one minute both ways and compares the hashes and
  the messages text for text.

Per variant: the wall time of the write (client and server), the script's own time in Redis
(``INFO commandstats``: evalsha usec) and the Redis process' CPU (user + system) over the write and
0.3 s after it (its AOF writes included). Prints a table and writes
bench/results/redis_latest_parts.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from stockpipe.config import load_settings  # noqa: E402
from stockpipe.indicators import INDICATOR_COLUMNS  # noqa: E402
from stockpipe.storage import redis_latest as rl  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "redis_latest_parts.json"
PREFIX = "stockpipe-bench-parts:"
CHANNEL = "stockpipe-bench-parts"
BAR_COLUMNS = ["open", "high", "low", "close", "volume", "vwap"]

SINK = rl._SET_IF_NEWER_MANY
HSET = "redis.call('HSET', key, unpack(cjson.decode(ARGV[pos + 3])))"
VARIANTS: dict[str, tuple[str, dict[str, str] | None]] = {
    "sink script": (SINK, None),
    "without DEL": (SINK.replace("redis.call('DEL', key)", ""), None),
    "without PUBLISH": (SINK.replace("redis.call('PUBLISH', ARGV[1], ARGV[pos + 2])", ""), None),
    "without HSET": (SINK.replace(HSET, ""), None),
    "decode, no HSET": (SINK.replace(HSET, "local fields = cjson.decode(ARGV[pos + 3])"), None),
    "one string instead of the hash": (
        SINK.replace("redis.call('DEL', key)", "").replace(HSET, "redis.call('SET', key .. ':s', ARGV[pos + 3])"),
        None,
    ),
    "hashtable encoding": (SINK, {"hash-max-listpack-entries": "0"}),
    # DEL only when the row lacks a field (a NULL indicator): a complete row's HSET overwrites every
    # field the hash can have (26 of them, 52 strings in the array)
    "DEL only for incomplete rows": (
        SINK.replace(
            "redis.call('DEL', key)\n    " + HSET,
            "local fields = cjson.decode(ARGV[pos + 3])\n    if #fields < 52 then redis.call('DEL', key) end\n"
            "    redis.call('HSET', key, unpack(fields))",
        ),
        None,
    ),
}
_VERSION = SINK.split("local changed")[0]  # the script's version() of a fetched_at text
STAGE_SHADOW = """
for i = 2, #KEYS do
  local pos = 4 * i - 7
  redis.call('DEL', KEYS[i])
  redis.call('HSET', KEYS[i], unpack(cjson.decode(ARGV[pos + 1])))
  redis.call('HSET', KEYS[1], 'h:' .. ARGV[pos], ARGV[pos + 2], 't:' .. ARGV[pos], ARGV[pos + 3])
end
return #KEYS - 1
"""
PROMOTE_SHADOW = (
    _VERSION
    + """
local changed = 0
for i = 1, (#KEYS - 1) / 2 do
  local key, shadow, symbol, at = KEYS[2 * i], KEYS[2 * i + 1], ARGV[2 * i], ARGV[2 * i + 1]
  local new = redis.call('HMGET', shadow, 'ts_ms', 'fetched_at')
  local stored = redis.call('HMGET', key, 'ts_ms', 'fetched_at')
  local current, incoming = tonumber(stored[1]), tonumber(new[1])
  local older = current and (current > incoming or (current == incoming and new[2]
                and stored[2] and version(stored[2]) > version(new[2])))
  if older then
    redis.call('DEL', shadow)
  else
    redis.call('HSET', shadow, 'written_at', at)
    redis.call('RENAME', shadow, key)
    local parts = redis.call('HMGET', KEYS[1], 'h:' .. symbol, 't:' .. symbol)
    redis.call('PUBLISH', ARGV[1], parts[1] .. '"' .. at .. '"' .. parts[2])
    changed = changed + 1
  end
end
return changed
"""
)
SHADOW = "shadow + RENAME"


def shadow_parts(row: dict, message: str, fields: list[str]) -> tuple[str, str, str, str]:
    """One row for the shadow design: its written_at text, the hash's field array without it, and its
    message before and after the written_at value."""
    at = rl._iso(row["written_at"])
    pairs = [(f, v) for f, v in zip(fields[0::2], fields[1::2], strict=True) if f != "written_at"]
    head, tail = message.split('"written_at":"' + at + '"')
    return at, rl._fields_json([x for pair in pairs for x in pair]), head + '"written_at":', tail


for _name, (_script, _) in VARIANTS.items():
    assert _name == "sink script" or _script != SINK or _, f"variant {_name!r} did not change the script"


def rows(symbols: int, minute: int) -> list[dict]:
    """One minute of the market, as market.latest_1m rows (columns in its order)."""
    ts = datetime(2027, 1, 4, 14, 30, tzinfo=UTC) + timedelta(minutes=minute)
    out = []
    for i in range(symbols):
        row: dict = {"symbol": f"B{i:05d}", "ts": ts}
        row.update({name: round(random.uniform(5, 500), 4) for name in BAR_COLUMNS})
        row.update(trades=random.randint(1, 5000), source="simulator")
        row.update(fetched_at=ts + timedelta(seconds=60.2 + i / 1e5), written_at=ts + timedelta(seconds=61.7))
        row.update({name: random.uniform(-5, 500) for name in INDICATOR_COLUMNS})
        out.append(row)
    return out


def same_texts(client, sink_script, shadow_write, minute_rows: list[dict]) -> bool:
    """Write ``minute_rows`` with the sink's script and with the shadow design (keys of their own)
    and compare the hashes and the published messages text for text."""
    subscriber = client.pubsub()
    subscriber.subscribe(CHANNEL)
    subscriber.get_message(timeout=5)

    def messages() -> list[str]:
        got = []
        while (message := subscriber.get_message(timeout=1.0)) is not None:
            if message["type"] == "message":
                got.append(message["data"].decode())
        return sorted(got)

    encoded = rl.encode_rows(minute_rows)
    for start in range(0, len(encoded), rl.SYMBOLS_PER_CALL):
        chunk = encoded[start : start + rl.SYMBOLS_PER_CALL]
        call: list = [CHANNEL]
        for _, stamp, version, message, fields in chunk:
            call += (stamp, version, message, rl._fields_json(fields))
        sink_script(keys=[PREFIX + "a:" + symbol for symbol, *_ in chunk], args=call)
    by_sink = messages()
    shadow_write(minute_rows, PREFIX + "b:")
    by_shadow = messages()
    symbols = [row["symbol"] for row in minute_rows]
    hashes_equal = all(
        client.hgetall(PREFIX + "a:" + symbol) == client.hgetall(PREFIX + "b:" + symbol) for symbol in symbols
    )
    subscriber.close()
    return hashes_equal and by_sink == by_shadow and len(by_sink) == len(symbols)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-db", type=int, default=13)
    args = parser.parse_args()

    base = load_settings()
    client = base.redis_client(db=args.redis_db, socket_timeout=30)
    server = psutil.Process(int(client.info("server")["process_id"]))
    scripts = {name: client.register_script(script) for name, (script, _) in VARIANTS.items()}
    subscriber = base.redis_client(db=args.redis_db).pubsub()
    subscriber.subscribe(CHANNEL)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            subscriber.get_message(timeout=0.5)

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    saved = {k: v for k, v in client.config_get("hash-max-listpack-entries").items()}
    minute = 0
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in [*VARIANTS, SHADOW]}
    before_commit: list[dict[str, float]] = []
    stage, promote = client.register_script(STAGE_SHADOW), client.register_script(PROMOTE_SHADOW)
    staging = PREFIX + "staging"

    def measured_call(send) -> dict[str, float]:
        client.config_resetstat()
        cpu0 = sum(server.cpu_times()[:2])
        t0 = time.perf_counter()
        send()
        wall = time.perf_counter() - t0
        time.sleep(0.3)
        cpu = sum(server.cpu_times()[:2]) - cpu0
        script_us = client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)
        return {"wall_ms": wall * 1000, "script_ms": script_us / 1000, "cpu_ms": cpu * 1000}

    def shadow_write(minute_rows: list[dict], prefix: str = PREFIX) -> dict[str, dict[str, float]]:
        parts = [
            (prefix + symbol, symbol, *shadow_parts(row, message, fields))
            for row, (symbol, _, _, message, fields) in zip(minute_rows, rl.encode_rows(minute_rows), strict=True)
        ]
        chunks = [parts[i : i + rl.SYMBOLS_PER_CALL] for i in range(0, len(parts), rl.SYMBOLS_PER_CALL)]

        def before() -> None:
            for chunk in chunks:
                call: list = []
                for _, symbol, _, fields, head, tail in chunk:
                    call += (symbol, fields, head, tail)
                stage(keys=[staging] + [key + ":shadow" for key, *_ in chunk], args=call)

        def after() -> None:
            for chunk in chunks:
                keys, call = [staging], [CHANNEL]
                for key, symbol, at, *_ in chunk:
                    keys += (key, key + ":shadow")
                    call += (symbol, at)
                promote(keys=keys, args=call)
            client.delete(staging)

        return {"before": measured_call(before), "after": measured_call(after)}

    try:
        for round_no in range(args.rounds + 1):  # round 0: warm-up, not counted
            for name, (_, config) in VARIANTS.items():
                minute += 1
                encoded = [
                    (PREFIX + symbol, stamp, version, message, rl._fields_json(fields))
                    for symbol, stamp, version, message, fields in rl.encode_rows(rows(args.symbols, minute))
                ]
                for key, value in (config or saved).items():
                    client.config_set(key, value)
                client.config_resetstat()
                cpu0 = sum(server.cpu_times()[:2])
                t0 = time.perf_counter()
                for start in range(0, len(encoded), rl.SYMBOLS_PER_CALL):
                    chunk = encoded[start : start + rl.SYMBOLS_PER_CALL]
                    call: list = [CHANNEL]
                    for _, stamp, version, message, fields in chunk:
                        call += (stamp, version, message, fields)
                    scripts[name](keys=[key for key, *_ in chunk], args=call)
                wall = time.perf_counter() - t0
                time.sleep(0.3)
                cpu = sum(server.cpu_times()[:2]) - cpu0
                script_us = client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)
                if config:
                    for key, value in saved.items():
                        client.config_set(key, value)
                if round_no:
                    measured[name].append({"wall_ms": wall * 1000, "script_ms": script_us / 1000, "cpu_ms": cpu * 1000})
            minute += 1
            shadow = shadow_write(rows(args.symbols, minute))
            if round_no:
                measured[SHADOW].append(shadow["after"])
                before_commit.append(shadow["before"])
            print(f"round {round_no} done", file=sys.stderr, flush=True)
        faithful = same_texts(client, scripts["sink script"], shadow_write, rows(min(args.symbols, 2000), minute + 1))
    finally:
        stop.set()
        drainer.join(5)
        for key, value in saved.items():
            client.config_set(key, value)
        keys = list(client.scan_iter(match=PREFIX + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        subscriber.close()

    summary = {
        name: {k: round(statistics.median(m[k] for m in runs), 1) for k in ("wall_ms", "script_ms", "cpu_ms")}
        for name, runs in measured.items()
    }
    early = {k: round(statistics.median(m[k] for m in before_commit), 1) for k in ("wall_ms", "script_ms", "cpu_ms")}
    sink = summary["sink script"]
    print(f"\n{args.symbols:,} symbols a write, median of {args.rounds} rounds (ms)\n")
    print("| variant | wall | script in Redis | Redis CPU | script vs the sink's |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, figures in summary.items():
        share = figures["script_ms"] / sink["script_ms"] if sink["script_ms"] else float("nan")
        wall, script, cpu = figures["wall_ms"], figures["script_ms"], figures["cpu_ms"]
        print(f"| {name} | {wall:.0f} | {script:.0f} | {cpu:.0f} | {share:.2f}× |")
    print(
        f"\n{SHADOW}: before the commit (overlapped with PostgreSQL) wall {early['wall_ms']:.0f}, script "
        f"{early['script_ms']:.0f}, Redis CPU {early['cpu_ms']:.0f} ms; the table's row is after the commit. "
        f"Hashes and messages the same as the sink script's, text for text: {faithful}"
    )
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{psutil.cpu_count()} cpu, {platform.platform()}, Python {platform.python_version()}",
        "redis_version": client.info("server")["redis_version"],
        "appendonly": client.config_get("appendonly").get("appendonly"),
        "loadavg": list(psutil.getloadavg()),
        "symbols": args.symbols,
        "rounds": args.rounds,
        "summary": summary,
        "shadow_before_commit": early,
        "shadow_same_texts": faithful,
        "runs": measured,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
