"""Benchmark (not a test): resident memory of the whole local stack, idle and under a burst of bars.

    .venv/bin/python bench/stack_memory.py [--idle-s 20] [--burst-s 60] [--rate 1000] [--no-load]
        [--wait-stream-s 300]

The stack is every process under the supervisord of this checkout (``infra/supervisord.conf``):
PostgreSQL (postmaster + backends), Redis, Kafka, the simulator, the Airflow api-server, scheduler
(+ LocalExecutor workers and the task runners, among them market_stream's, whose children are the
Spark driver JVM and its Python processes), dag-processor and triggerer, the dashboard, the
exporter and Prometheus (and the producer when ``producer_mode=supervisor``). Other supervisord
trees on the box (e.g. a CI clone under /tmp) are ignored.

Per process it reads RSS and PSS (psutil ``memory_full_info``; /proc/<pid>/smaps_rollup without
psutil). RSS counts shared pages (PostgreSQL's shared_buffers, the JVMs' and Python's shared
libraries) once per process, so the RSS sum overstates what the stack occupies; PSS splits each
shared page between the processes mapping it, so the PSS sum is what the stack really holds. The
target (idle stack ≤ 5 GiB) is judged on the PSS sum; the RSS sum is printed next to it as the
upper bound (it counts e.g. the forked Airflow executor workers' copy-on-write pages 6 times).

* **idle** — the stack as it runs normally (the producer's cycle and the stream, no extra load):
  ``--idle-s`` seconds of samples every 2 s; per component the median, the total's max.
* **under load** — the same plus a burst of ``--rate`` synthetic bars/s for ``--burst-s`` seconds
  into the live bars topic (valid contract messages, key = symbol, for BENCH0..BENCH99, minute
  bars ending at the current minute), sampled every 2 s during the burst and 20 s after it; per
  component and total the max. The stream stores these bars in the live ``stockpipe`` database
  (dev stack: acceptable; they are tagged source=simulator and symbols BENCH*).

Before sampling it waits (``--wait-stream-s``, 300 s) for market_stream's Spark driver: right after
`make up`, Airflow needs a minute or two to start it. Prints a table per component and writes
bench/results/stack_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from stockpipe import contract  # noqa: E402
from stockpipe.config import load_settings  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the venv; /proc is the fallback
    psutil = None

GIB = 1024**3
TARGET_IDLE_BYTES = 5 * GIB
CONF = str(ROOT / "infra" / "supervisord.conf")
SPARK_DRIVER = "spark driver JVM (market_stream)"
ORDER = [
    "supervisord",
    "postgres",
    "redis",
    "kafka",
    "simulator",
    "producer",
    "airflow api-server",
    "airflow scheduler",
    "airflow executor workers",
    "airflow task runners",
    "airflow dag-processor",
    "airflow triggerer",
    "spark driver JVM (market_stream)",
    "spark driver python",
    "spark python workers",
    "dashboard",
    "exporter",
    "prometheus",
    "other",
]


# --- process tree -----------------------------------------------------------------------------


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    return children


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def stack_pids() -> list[int]:
    """The supervisord of this checkout and all its descendants."""
    roots = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and "supervisord" in _cmdline(int(p)) and CONF in _cmdline(int(p))
    ]
    if not roots:
        raise SystemExit(f"no supervisord running with {CONF}; start the stack with `make up`")
    children, pids, todo = _proc_children(), [], list(roots)
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def component(cmd: str) -> str:
    if "supervisord" in cmd:
        return "supervisord"
    if cmd.startswith("postgres") or "/postgresql/" in cmd:
        return "postgres"
    if "redis-server" in cmd:
        return "redis"
    if "kafka.Kafka" in cmd:
        return "kafka"
    if "java" in cmd and "pyspark" in cmd:
        return SPARK_DRIVER
    if "spark_jobs/" in cmd:
        return "spark driver python"
    if "pyspark.daemon" in cmd or "pyspark.worker" in cmd:
        return "spark python workers"
    if "stockpipe.sources.simulator" in cmd:
        return "simulator"
    if "stockpipe.producer" in cmd:
        return "producer"
    if "stockpipe.monitoring.exporter" in cmd:
        return "exporter"
    if "prometheus" in cmd:
        return "prometheus"
    if "streamlit" in cmd:
        return "dashboard"
    if "api_server" in cmd or "api-server" in cmd:
        return "airflow api-server"
    if "LocalExecutor" in cmd:
        return "airflow executor workers"
    if "airflow worker" in cmd:
        return "airflow task runners"
    if "scheduler" in cmd and "airflow" in cmd:
        return "airflow scheduler"
    if "dag-processor" in cmd or "dag_processor" in cmd:
        return "airflow dag-processor"
    if "triggerer" in cmd:
        return "airflow triggerer"
    return "other"


def _memory(pid: int) -> tuple[int, int] | None:
    """(rss, pss) in bytes, or None when the process is gone."""
    if psutil is not None:
        try:
            info = psutil.Process(pid).memory_full_info()
            return info.rss, getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    values[key] = int(rest.split()[0]) * 1024
    except OSError:
        return None
    return values.get("Rss", 0), values.get("Pss", values.get("Rss", 0))


def sample() -> dict[str, dict[str, int]]:
    """component -> {rss, pss, processes} right now."""
    out: dict[str, dict[str, int]] = {}
    for pid in stack_pids():
        memory = _memory(pid)
        if memory is None:
            continue
        entry = out.setdefault(component(_cmdline(pid)), {"rss": 0, "pss": 0, "processes": 0})
        entry["rss"] += memory[0]
        entry["pss"] += memory[1]
        entry["processes"] += 1
    return out


def wait_for_stream(timeout_s: float, settle_s: float) -> None:
    """Wait until market_stream's Spark driver runs under this stack (Airflow starts it a minute or two
    after `make up`): without it the biggest part of the stack would be missing from the figures. A
    driver that has just started gets ``settle_s`` more for its first micro-batches."""
    started = time.monotonic()
    next_note = started
    while not any(component(_cmdline(pid)) == SPARK_DRIVER for pid in stack_pids()):
        waited = time.monotonic() - started
        if waited > timeout_s:
            raise SystemExit(
                f"market_stream's Spark driver is not running after {timeout_s:.0f} s: start Airflow (`make up`) "
                "and check that the market_stream DAG is unpaused in the Airflow UI (or pass --wait-stream-s 0)"
            )
        if time.monotonic() >= next_note:
            print(f"waiting for market_stream's Spark driver ({waited:.0f} of {timeout_s:.0f} s) ...", flush=True)
            next_note += 30
        time.sleep(1)
    if time.monotonic() - started > 1:
        print(f"market_stream's Spark driver is up; {settle_s:.0f} s for its first micro-batches ...", flush=True)
        time.sleep(settle_s)


def others() -> list[str]:
    """Command lines of the stack's processes no component claims (for the JSON)."""
    return [f"{pid}: {_cmdline(pid)[:160]}" for pid in stack_pids() if component(_cmdline(pid)) == "other"]


def total(snapshot: dict[str, dict[str, int]], key: str) -> int:
    return sum(v[key] for v in snapshot.values())


def collect(seconds: float, every: float = 2.0, stop: threading.Event | None = None) -> list[dict]:
    samples, end = [], time.monotonic() + seconds
    while time.monotonic() < end and not (stop and stop.is_set()):
        samples.append(sample())
        time.sleep(every)
    return samples


def summarize(samples: list[dict], how) -> dict[str, dict[str, float]]:
    names = {name for s in samples for name in s}
    summary = {}
    for name in names:
        present = [s[name] for s in samples if name in s]
        summary[name] = {k: how([p[k] for p in present]) for k in ("rss", "pss", "processes")}
    return summary


# --- load --------------------------------------------------------------------------------------


def burst(settings, rate: float, seconds: float, symbols: int, report: dict) -> None:
    """``rate`` valid bars/s for ``seconds`` into the bars topic, BENCH0..BENCH<symbols-1>."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20, "client.id": "bench-stack-memory"}
    )
    total_bars = int(rate * seconds)
    per_symbol = -(-total_bars // symbols)
    first = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=per_symbol)
    sent, errors, t0 = 0, [], time.monotonic()
    tick = 0.01
    while sent < total_bars:
        due = min(total_bars, int((time.monotonic() - t0) * rate) + 1)
        while sent < due:
            minute, s = divmod(sent, symbols)
            price = 100.0 + s + 0.01 * (minute % 50)
            now = datetime.now(UTC)
            message = {
                "v": contract.VERSION,
                "symbol": f"BENCH{s}",
                "ts": contract.format_ts(first + timedelta(minutes=minute)),
                "open": price,
                "high": price + 0.05,
                "low": price - 0.05,
                "close": price + 0.01,
                "volume": 1000 + minute,
                "vwap": price,
                "trades": 10,
                "source": "simulator",
                "fetched_at": contract.format_fetched_at(now),
            }
            assert contract.invalid_reason(message) is None
            producer.produce(
                settings.kafka_topic,
                key=message["symbol"].encode(),
                value=contract.encode(message),
                on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
            )
            sent += 1
        producer.poll(0)
        time.sleep(tick)
    producer.flush(30)
    elapsed = time.monotonic() - t0
    report.update(
        {
            "sent": sent,
            "seconds": elapsed,
            "rate": sent / elapsed,
            "delivery_errors": len(errors),
            "first_ts": first.isoformat(),
            "symbols": symbols,
        }
    )


def stream_batches(settings, since: datetime) -> dict:
    """What the stream did with the burst: micro-batches since ``since`` (ops.stream_batches)."""
    import psycopg

    with psycopg.connect(settings.pg_dsn("reader"), connect_timeout=10) as conn:
        rec = conn.execute(
            "SELECT count(*), sum(rows_in), max(processing_ms), max(latency_p95_ms), "
            "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_p95_ms) "
            "FROM ops.stream_batches WHERE query_name = %s AND committed_at >= %s",
            (settings.stream_query_name, since),
        ).fetchone()
        (bench_bars,) = conn.execute(
            "SELECT count(*) FROM market.bars_1m WHERE symbol LIKE 'BENCH%%' AND written_at >= %s", (since,)
        ).fetchone()
    return {
        "batches": rec[0],
        "rows_in": int(rec[1] or 0),
        "max_processing_ms": rec[2],
        "max_batch_latency_p95_ms": rec[3],
        "bench_bars_stored": bench_bars,
    }


# --- report ------------------------------------------------------------------------------------


def machine() -> dict:
    return {
        "nproc": os.cpu_count(),
        "arch": platform.machine(),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "?"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "free_g": subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.strip(),
        "python": platform.python_version(),
    }


def mib(n: float) -> str:
    return f"{n / 1024**2:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--burst-s", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="synthetic bars/s during the burst")
    parser.add_argument("--symbols", type=int, default=100, help="BENCH0..BENCH<n-1>")
    parser.add_argument("--after-s", type=float, default=20.0, help="keep sampling after the burst")
    parser.add_argument("--no-load", action="store_true", help="idle only")
    parser.add_argument(
        "--wait-stream-s",
        type=float,
        default=300.0,
        help="wait this long for market_stream's Spark driver before measuring (0: measure without it)",
    )
    parser.add_argument("--settle-s", type=float, default=60.0, help="after the driver has just started")
    args = parser.parse_args()
    settings = load_settings()
    if args.wait_stream_s > 0:
        wait_for_stream(args.wait_stream_s, args.settle_s)

    load_idle = machine()["loadavg"]
    print(f"idle: sampling the stack for {args.idle_s:.0f} s ...", flush=True)
    idle_samples = collect(args.idle_s)
    idle = summarize(idle_samples, statistics.median)
    idle_rss = max(total(s, "rss") for s in idle_samples)
    idle_pss = max(total(s, "pss") for s in idle_samples)

    loaded, load_info, load_rss, load_pss, load_load, stream = {}, {}, 0, 0, None, {}
    if not args.no_load:
        print(
            f"under load: {args.rate:.0f} bars/s for {args.burst_s:.0f} s into {settings.kafka_topic} "
            f"(BENCH0..BENCH{args.symbols - 1}) ...",
            flush=True,
        )
        started = datetime.now(UTC)
        stop = threading.Event()
        samples: list[dict] = []
        sampler = threading.Thread(target=lambda: samples.extend(collect(10_000, stop=stop)), daemon=True)
        sampler.start()
        burst(settings, args.rate, args.burst_s, args.symbols, load_info)
        load_load = machine()["loadavg"]
        time.sleep(args.after_s)
        stop.set()
        sampler.join()
        loaded = summarize(samples, max)
        load_rss = max(total(s, "rss") for s in samples)
        load_pss = max(total(s, "pss") for s in samples)
        try:
            stream = stream_batches(settings, started)
        except Exception as error:  # noqa: BLE001 - a report, not a test
            stream = {"error": str(error)}
        print(
            f"  sent {load_info['sent']:,} bars in {load_info['seconds']:.1f} s "
            f"({load_info['rate']:,.0f}/s, {load_info['delivery_errors']} delivery errors); stream: {stream}"
        )

    print(
        f"\nresident memory of the local stack (MiB); load avg idle {load_idle}"
        + (f", end of burst {load_load}" if load_load else "")
    )
    header = f"{'component':<34}{'procs':>6}{'idle RSS':>10}{'idle PSS':>10}"
    header += f"{'load RSS':>10}{'load PSS':>10}" if loaded else ""
    print(header)
    rows = []
    for name in sorted(set(idle) | set(loaded), key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        i, lo = idle.get(name, {"rss": 0, "pss": 0, "processes": 0}), loaded.get(name)
        procs = int(max(i["processes"], lo["processes"] if lo else 0))
        line = f"{name:<34}{procs:>6}{mib(i['rss']):>10}{mib(i['pss']):>10}"
        if loaded:
            line += f"{mib(lo['rss']) if lo else '-':>10}{mib(lo['pss']) if lo else '-':>10}"
        print(line)
        rows.append({"component": name, "idle": i, "load": lo})
    line = f"{'TOTAL (max over samples)':<34}{'':>6}{mib(idle_rss):>10}{mib(idle_pss):>10}"
    if loaded:
        line += f"{mib(load_rss):>10}{mib(load_pss):>10}"
    print(line)
    met = idle_pss <= TARGET_IDLE_BYTES
    print(
        f"\nidle stack: RSS {idle_rss / GIB:.2f} GiB, PSS {idle_pss / GIB:.2f} GiB; target ≤ 5 GiB (PSS): "
        + ("met" if met else "NOT met")
        + (f"; under load: RSS {load_rss / GIB:.2f} GiB, PSS {load_pss / GIB:.2f} GiB" if loaded else "")
    )

    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "stack_memory",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "units": "bytes",
        "target_idle_bytes": TARGET_IDLE_BYTES,
        "target_judged_on": "pss",
        "met": met,
        "met_on_rss_sum": idle_rss <= TARGET_IDLE_BYTES,
        "other_processes": others(),
        "idle": {
            "seconds": args.idle_s,
            "samples": len(idle_samples),
            "total_rss_max": idle_rss,
            "total_pss_max": idle_pss,
            "loadavg": load_idle,
        },
        "load": (
            {
                "burst": load_info,
                "samples": len(samples),
                "total_rss_max": load_rss,
                "total_pss_max": load_pss,
                "loadavg_end_of_burst": load_load,
                "stream": stream,
            }
            if loaded
            else None
        ),
        "components": rows,
        "machine": machine(),
        "psutil": psutil is not None,
    }
    path = out / "stack_memory.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
